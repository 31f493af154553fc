using System.Globalization;
using System.Text.RegularExpressions;

namespace NativeHeap.Tests;

/// <summary>The nativeheap command: the main job, replay, info, and errors for the user.</summary>
public class CliTests
{
    [Fact]
    public void Scenarios_AllAgreeWithGlibc_AndWriteAPlotEach()
    {
        string dir = Directory.CreateTempSubdirectory("nh-plots").FullName;
        var r = Cli.Run(["scenarios", "--out", dir]);
        Assert.True(r.ExitCode == 0, r.Output + r.Error);
        Assert.Contains("agree at every checkpoint", r.Output);
        // The default profile beside them in every table: seed-002's 200 MiB that glibc keeps
        // (seven tcache chunks pin the top) it gives back once its purge delay has passed.
        Assert.Equal(12, Regex.Matches(r.Output, @"│\s*anon default\s*│\s*default, idle\s*│").Count);
        long glibc = TableCell(r.Output, "seed-002 (tcache on)", "after-malloc-2000-free", "anon glibc");
        long idle = TableCell(r.Output, "seed-002 (tcache on)", "after-malloc-2000-free", "default, idle");
        Assert.True(glibc > 150 * 1024, $"glibc kept {glibc} KiB");
        Assert.True(idle * 10 < glibc, $"the default profile once idle held {idle} KiB, glibc {glibc} KiB");
        foreach (string name in new[] { "seed-002", "seed-002-trim", "pinned-top", "module-unload", "mmap-threshold", "lazy-pages" })
        {
            foreach (string mode in new[] { "on", "off" })
            {
                var png = new FileInfo(Path.Combine(dir, $"{name}-tcache-{mode}.png"));
                Assert.True(png.Exists && png.Length > 10_000, $"{png.FullName} missing or empty");
                Assert.Equal(0x89, File.ReadAllBytes(png.FullName)[0]); // PNG signature
            }
        }
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>A number in a `scenarios` table: the row of <paramref name="checkpoint"/>, the column headed <paramref name="column"/>.</summary>
    private static long TableCell(string output, string title, string checkpoint, string column)
    {
        string[] lines = output.Split('\n');
        int start = Array.FindIndex(lines, l => l.Contains($"{title}: KiB over"));
        Assert.True(start >= 0, $"no table '{title}' in:\n{output}");
        static string[] Cells(string line) => [.. line.Split('│').Select(c => c.Trim())];
        string[] header = Cells(lines.Skip(start).First(l => l.Contains("│ checkpoint ")));
        int at = Array.IndexOf(header, column);
        Assert.True(at > 0, $"no column '{column}' in '{string.Join('|', header)}'");
        string cell = Cells(lines.Skip(start).First(l => Cells(l) is { Length: > 1 } c && c[1] == checkpoint))[at];
        return long.Parse(new string([.. cell.Where(ch => char.IsAsciiDigit(ch) || ch == '-')]), CultureInfo.InvariantCulture);
    }

    [Fact]
    public void Scenarios_UnknownName_IsAnErrorNamingTheKnownOnes()
    {
        var r = Cli.Run(["scenarios", "seed-003"]);
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("error: unknown scenario 'seed-003' (known: ", r.Error);
        Assert.Contains("pinned-top", r.Error);
        Assert.DoesNotContain("   at ", r.Error);
    }

    [Fact]
    public void Replay_MalformedLine_IsReportedWithItsNumber_BeforeAnythingRuns()
    {
        string file = Path.GetTempFileName();
        File.WriteAllText(file, "m 1 100\n# fine\nm 2 lots\n");
        var r = Cli.Run(["replay", file]);
        File.Delete(file);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"error: {file}: line 3: 'lots' is not a non-negative number", r.Error.Trim());
        Assert.Equal("", r.Output);
    }

    [Fact]
    public void Replay_MissingFile_IsAnError()
    {
        var r = Cli.Run(["replay", "/no/such/trace"]);
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("error: cannot open /no/such/trace", r.Error);
    }

    [Fact]
    public void Replay_PrintsPlacementsAndCheckpoints()
    {
        string file = Path.GetTempFileName();
        File.WriteAllText(file, "k start\nm 1 24\nm 2 24\nm 3 200000\nf 1\nk end\n");
        var r = Cli.Run(["replay", file]);
        File.Delete(file);
        Assert.True(r.ExitCode == 0, r.Error);
        string[] lines = r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^1 k start \d+ \d+ \d+ 0 0 0 0$", lines[0]);
        Assert.Equal("2 1 heap 0 24", lines[1]);
        Assert.Equal("3 2 heap 32 24", lines[2]);
        Assert.Equal("4 3 mmap - 200688", lines[3]);
        Assert.Matches(@"^6 k end \d+ \d+ \d+ 135168 \d+ \d+ 200704$", lines[4]);
        Assert.Equal("end", lines[5]);
    }

    [Fact]
    public void Info_PrintsMallinfoStatsAndXml_AfterATrace()
    {
        var r = Cli.Run(["info", "mmap-threshold"]);
        Assert.True(r.ExitCode == 0, r.Error);
        Assert.Contains("keepcost", r.Output);
        Assert.Contains("Arena 0:", r.Output);
        Assert.Contains("<malloc version=\"1\">", r.Output);
        Assert.Contains("</malloc>", r.Output);
    }
}
