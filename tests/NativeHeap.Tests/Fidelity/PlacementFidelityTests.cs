using System.Text;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// The proof that NativeHeap decides as glibc 2.36 does: the same trace, replayed on glibc
/// (native-tests/build/replay, a fresh C process) and on a fresh NativeHeap, must put every
/// block at the same offset from the first heap block, with the same usable size, and map
/// the same blocks. With the tcache on and off.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class PlacementFidelityTests
{
#if DEBUG
    // CI's Debug pass (glibc's asserts, Category=Allocator) compares half, to keep CI within
    // its 15 minutes; the Release pass compares all 1,000.
    private const int Traces = 500;
#else
    private const int Traces = 1000;
#endif

    /// <summary>Both heaps start on a 1 MiB boundary, so alignments up to 1 MiB compare.</summary>
    private const uint AlignBreak = 1 << 20;

    public static TheoryData<int> TcacheCounts => [7, 0];

    [Theory]
    [MemberData(nameof(TcacheCounts))]
    public void GeneratedTraces_PlaceEveryBlockAsGlibcDoes(int tcacheCount)
    {
        // The trace of a failure stays on disk, named in the message.
        string dir = Directory.CreateTempSubdirectory("nh-traces").FullName;
        for (int seed = 1; seed <= Traces; seed++)
        {
            string trace = TraceGenerator.Generate(seed, operations: 1500);
            string path = Path.Combine(dir, $"trace-{seed}.txt");
            File.WriteAllText(path, trace);
            CompareWithGlibc(path, trace, tcacheCount, $"seed {seed}");
            File.Delete(path);
        }
        Directory.Delete(dir);
    }

    [Fact]
    public void SeedProgram002_PlacesAsGlibc()
    {
        // seeds/002: 4000 x (malloc(52722), malloc(1)), freed in reverse, then malloc(2000) and free.
        var sb = new StringBuilder();
        for (int i = 0; i < 4000; i++) sb.Append($"m {2 * i} 52722\nm {2 * i + 1} 1\n");
        for (int i = 3999; i >= 0; i--) sb.Append($"f {2 * i}\nf {2 * i + 1}\n");
        sb.Append("m 9000 2000\nf 9000\nm 9001 2000\n");
        string dir = Directory.CreateTempSubdirectory("nh-seed").FullName;
        string path = Path.Combine(dir, "seed002.txt");
        File.WriteAllText(path, sb.ToString());
        CompareWithGlibc(path, sb.ToString(), 7, "seed 002, tcache on");
        CompareWithGlibc(path, sb.ToString(), 0, "seed 002, tcache off");
        Directory.Delete(dir, recursive: true);
    }

    internal static void CompareWithGlibc(string path, string trace, int tcacheCount, string what)
    {
        string glibc = NativeTests.Run("replay", [path],
            ("GLIBC_TUNABLES", $"glibc.malloc.tcache_count={tcacheCount}"), ("REPLAY_ALIGN_BREAK", AlignBreak.ToString()));
        string ours = ReplayOnFreshHeap(trace, tcacheCount);
        string[] a = glibc.Split('\n');
        string[] b = ours.Split('\n');
        for (int i = 0; i < Math.Max(a.Length, b.Length); i++)
        {
            string x = i < a.Length ? a[i] : "<missing>";
            string y = i < b.Length ? b[i] : "<missing>";
            if (x != y)
                Assert.Fail($"{what}: output line {i + 1} differs\n  glibc:      {x}\n  NativeHeap: {y}\n  trace kept at {path}");
        }
    }

    /// <summary>Replay on a private heap; a run disturbed by a foreign sbrk is repeated once, then reported.</summary>
    private static string ReplayOnFreshHeap(string trace, int tcacheCount)
    {
        byte[] bytes = Encoding.ASCII.GetBytes(trace);
        for (int attempt = 0; ; attempt++)
        {
            using var heap = new PrivateHeap(tcacheCount);
            var output = new MemoryStream();
            ReplayResult result = TraceReplayer.Replay(bytes, new ContextTarget(heap.Ctx), output, AlignBreak);
            if (result.ForeignBreaks == 0) return Encoding.ASCII.GetString(output.ToArray());
            Assert.True(attempt < 2, "glibc's malloc in the test host moved the break during every replay attempt");
        }
    }
}

/// <summary>Random traces in the replay format: mixed sizes 0-1 MiB skewed small, frees in random order, reallocs, callocs, memaligns, trims.</summary>
internal static class TraceGenerator
{
    internal static string Generate(int seed, int operations)
    {
        var rng = new Random(seed);
        var live = new List<int>();
        int nextId = 1;
        var sb = new StringBuilder();
        sb.Append("# generated, seed ").Append(seed).Append('\n');
        for (int op = 0; op < operations; op++)
        {
            int roll = rng.Next(100);
            if (live.Count > 0 && (roll < 30 || live.Count > 300))
            {
                int k = rng.Next(live.Count);
                sb.Append("f ").Append(live[k]).Append('\n');
                live[k] = live[^1];
                live.RemoveAt(live.Count - 1);
            }
            else if (live.Count > 0 && roll < 42)
            {
                int id = live[rng.Next(live.Count)];
                sb.Append("r ").Append(id).Append(' ').Append(Size(rng)).Append('\n');
            }
            else if (roll < 48)
            {
                int id = nextId++;
                sb.Append("c ").Append(id).Append(' ').Append(rng.Next(1, 16)).Append(' ').Append(Size(rng) / 8).Append('\n');
                live.Add(id);
            }
            else if (roll < 54)
            {
                int id = nextId++;
                // Kept below the mmap threshold: a mapped block's alignment slack depends on where
                // the kernel put the mapping, which differs between any two processes.
                sb.Append("a ").Append(id).Append(' ').Append(1 << rng.Next(3, 17)).Append(' ').Append(Size(rng) % 60000).Append('\n');
                live.Add(id);
            }
            else if (roll < 55)
            {
                sb.Append("t ").Append(rng.Next(3) == 0 ? 0 : rng.Next(200_000)).Append('\n');
            }
            else
            {
                int id = nextId++;
                sb.Append("m ").Append(id).Append(' ').Append(Size(rng)).Append('\n');
                live.Add(id);
            }
        }
        return sb.ToString();
    }

    private static int Size(Random rng)
    {
        int roll = rng.Next(100);
        if (roll < 50) return rng.Next(0, 129);
        if (roll < 75) return rng.Next(129, 1100);
        if (roll < 90) return rng.Next(1100, 65536);
        if (roll < 97) return rng.Next(65536, 300_000);
        return rng.Next(300_000, 1 << 20);
    }
}
