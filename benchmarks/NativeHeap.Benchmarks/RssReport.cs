using NativeHeap.Diagnostics;
using NativeHeap.Lab;

namespace NativeHeap.Benchmarks;

/// <summary>
/// Memory, not only time: each workload under each allocator in a fresh child process; peak
/// resident memory (VmHWM over the child's baseline), what stays resident right after every
/// block is freed, and after <see cref="IdleMs"/> more without a call (what a delayed purge,
/// NativeHeap's, mimalloc's or jemalloc's, gives back meanwhile), as KiB and as a ratio to
/// glibc through NativeMemory. Each allocator makes one
/// allocation before the baseline, so one-time costs (NativeHeap's JIT and first-use runtime
/// work, a few MiB) are not counted as the workload's.
/// <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- rss</c>
/// </summary>
internal static unsafe class RssReport
{
    private static readonly string[] Workloads = ["simple", "thread1", "thread2", "larson", "xmalloc", "mstress", "large"];
    private static readonly string[] Allocators = ["NativeMemory", "glibc", "NativeHeap", "mimalloc", "jemalloc"];
    /// <summary>Twice NativeHeap's default purge delay.</summary>
    private const int IdleMs = 2000;

    internal static int Parent()
    {
        var rows = new List<string>
        {
            "| workload | " + string.Join(" | ", Allocators.Select(a => $"{a} peak / retained / idle KiB")) + " | NativeHeap peak ratio |",
            "|---|" + string.Concat(Allocators.Select(_ => "---:|")) + "---:|",
        };
        bool failed = false;
        foreach (string w in Workloads)
        {
            var cells = new List<string>();
            long basePeak = 0, nhPeak = 0;
            foreach (string a in Allocators)
            {
                var (peak, retained, idle, error) = RunChild(w, a);
                if (error is not null)
                {
                    cells.Add($"missing: {error}");
                    failed |= !error.Contains("missing");
                    continue;
                }
                if (a == "NativeMemory") basePeak = peak;
                if (a == "NativeHeap") nhPeak = peak;
                cells.Add($"{peak:N0} / {retained:N0} / {idle:N0}");
            }
            string ratio = basePeak > 0 ? $"{(double)nhPeak / basePeak:F2}" : "-";
            rows.Add($"| {w} | {string.Join(" | ", cells)} | {ratio} |");
        }
        foreach (string row in rows) Console.WriteLine(row);
        return failed ? 1 : 0;
    }

    private static (long Peak, long Retained, long Idle, string? Error) RunChild(string workload, string allocator)
    {
        ProcessResult p = ChildProcess.RunSelf(["rss-child", workload, allocator], new ProcessOptions
        {
            Environment = [("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=65536"), ("DOTNET_TieredCompilation", "0")],
        }, typeof(RssReport).Assembly);
        if (p.ExitCode != 0) return (0, 0, 0, (p.Error.Trim().Split('\n').FirstOrDefault() ?? "").Trim());
        string[] f = p.Output.Trim().Split(' ');
        return (long.Parse(f[0]), long.Parse(f[1]), long.Parse(f[2]), null);
    }

    internal static int Child(string workload, string allocator) => allocator switch
    {
        "NativeMemory" => Run<NativeMemoryAllocator>(workload),
        "glibc" => Run<GlibcAllocator>(workload),
        "NativeHeap" => Run<NativeHeapAllocator>(workload),
        "mimalloc" => Run<MimallocAllocator>(workload),
        "jemalloc" => Run<JemallocAllocator>(workload),
        _ => throw new ArgumentException(allocator),
    };

    private static int Run<T>(string workload) where T : struct, IAllocator
    {
        if (T.Missing is { } why)
        {
            Console.Error.WriteLine($"missing: {why}");
            return 3;
        }
        // One-time costs first, for every allocator alike: NativeHeap's code compiled, and a
        // first allocation (its context, this thread's cache, the runtime's first finalizable
        // object: about 2 MiB of GC region). The peaks then compare the workloads.
        Precompile.Assembly();
        T.Free(T.Alloc(64));
        // The workloads' own managed objects (slot arrays, Random, threads' delegates) come
        // first too: the GC's first regions otherwise showed in whichever workload allocated
        // them, by ±200 KiB depending on what NativeHeap's start-up had allocated (parsing
        // NATIVEHEAP_TUNABLES or not).
        GC.KeepAlive(new nint[16 * 1024]);
        GC.KeepAlive(new Random(1));
        GC.KeepAlive(Enumerable.Range(0, 64).Select(i => new object()).ToList());
        ulong baseline = Statm.Read().ResidentBytes;
        ulong anon0 = Statm.Read().AnonymousBytes;
        // VmHWM from here on: the start-up's own high-water mark (the JIT's, the runtime's)
        // differed by ~150 KiB with and without NATIVEHEAP_TUNABLES set, and showed as the workload's peak.
        File.WriteAllText("/proc/self/clear_refs", "5");
        _ = workload switch
        {
            "simple" => Workloads<T>.Simple(),
            "thread1" => Workloads<T>.Thread(1),
            "thread2" => Workloads<T>.Thread(2),
            "larson" => Workloads<T>.Larson(),
            "xmalloc" => Workloads<T>.XMalloc(),
            "mstress" => Workloads<T>.MStress(),
            "large" => Workloads<T>.Large(),
            _ => throw new ArgumentException(workload),
        };
        long peakKib = (long)(HighWaterKib() - baseline / 1024);
        long retainedKib = ((long)Statm.Read().AnonymousBytes - (long)anon0) / 1024;
        Thread.Sleep(IdleMs);
        long idleKib = ((long)Statm.Read().AnonymousBytes - (long)anon0) / 1024;
        Console.WriteLine($"{peakKib} {retainedKib} {idleKib}");
        return 0;
    }

    /// <summary>VmHWM: the most resident memory this process has had, in KiB.</summary>
    private static ulong HighWaterKib()
    {
        string line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return ulong.Parse(line[6..].Trim().Split(' ')[0]);
    }
}
