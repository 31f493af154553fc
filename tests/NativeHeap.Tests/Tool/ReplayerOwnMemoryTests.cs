using System.Globalization;
using System.Text;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// A checkpoint shows the heap, not the replayer: a trace of 400,000 ids, each allocated and
/// freed at once (so the heap stays at one small block), has a checkpoint at its start and one
/// at its end. Whatever the replayer grows per id (its 3 MiB id table) would show between the
/// two; it must already be resident at the first. Each replay is a process of its own: the C
/// replayer (glibc) and the nativeheap command.
/// </summary>
public class ReplayerOwnMemoryTests
{
    private const int Ids = 400_000;

    /// <summary>Anonymous RSS the end may hold over the start: the heap's one block and page-level noise, well under the table's 3,125 KiB.</summary>
    private const long ToleranceKib = 512;

    private static string WriteTrace()
    {
        var sb = new StringBuilder("k start\n");
        for (int id = 1; id <= Ids; id++) sb.Append("m ").Append(id).Append(" 24\nf ").Append(id).Append('\n');
        sb.Append("k end\n");
        string path = Path.Combine(Directory.CreateTempSubdirectory("nh-own-memory").FullName, "many-ids.trace");
        File.WriteAllText(path, sb.ToString());
        return path;
    }

    /// <summary>anon_kib of the last checkpoint less that of the first.</summary>
    private static long Growth(string output)
    {
        var anon = output.Split('\n').Select(l => l.Split(' ')).Where(f => f.Length == 10 && f[1] == "k")
            .Select(f => long.Parse(f[3], CultureInfo.InvariantCulture)).ToList();
        Assert.True(anon.Count == 2, "expected two checkpoints in:\n" + output[^Math.Min(output.Length, 2000)..]);
        return anon[1] - anon[0];
    }

    private static void AssertFlat(Func<string, string> replay, string what)
    {
        string path = WriteTrace();
        try
        {
            long growth = Growth(replay(path));
            Assert.True(Math.Abs(growth) < ToleranceKib,
                $"{what}: anonymous RSS grew {growth} KiB between checkpoints of a trace whose heap stays empty");
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(path)!, recursive: true);
        }
    }

    [Fact]
    public void CReplayer_IdTableIsResidentBeforeTheFirstCheckpoint() =>
        AssertFlat(path => NativeTests.Run("replay", [path]), "native-tests/build/replay");

    [Fact]
    public void ManagedReplayer_IdTableIsResidentBeforeTheFirstCheckpoint() =>
        AssertFlat(path =>
        {
            ProcessResult r = Cli.Run(["replay", path]);
            Assert.True(r.ExitCode == 0, r.Error);
            return r.Output;
        }, "nativeheap replay");
}
