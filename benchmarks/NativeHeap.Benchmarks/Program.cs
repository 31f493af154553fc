using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace NativeHeap.Benchmarks;

/// <summary>
/// <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- --filter '*'</c>: the
/// BenchmarkDotNet suites (run benchmarks/setup.sh first for mimalloc and jemalloc).
/// Also: <c>rss</c> (peak and retained RSS per workload and allocator), <c>ci</c> (every
/// benchmark once, in process, tiny counts: what CI runs so the suite never rots),
/// <c>break-stress [--seconds N] [--use-brk 1|0]</c> (the shared-break stress test),
/// <c>c-workloads [--rounds N]</c> (the workloads in C under LD_PRELOAD of each allocator),
/// <c>mimalloc-bench [--rounds N] [--tiny] ...</c> (mimalloc-bench's programs under LD_PRELOAD of each allocator),
/// <c>pool-idle [--rounds N]</c> (the pools' anonymous RSS over 30 s idle after a 1 GiB burst),
/// <c>heap-metrics [--seconds N]</c> (what a read of the heap's metrics costs with 8 threads allocating),
/// <c>results ARTIFACTS RSS.md OUT.md MACHINE COMMAND</c> (writes RESULTS.md and its plot).
/// </summary>
public static class Program
{
    /// <summary>The libraries a C program is run under with LD_PRELOAD (NativeHeap's relative to the repository).</summary>
    internal const string NativeHeapPreload = "artifacts/native/libnativeheap-preload.so";
    internal const string MimallocPreload = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2";
    internal const string JemallocPreload = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

    /// <summary>jemalloc's TLS is static: glibc must reserve room for it when the process starts.</summary>
    internal const string JemallocTunables = "glibc.rtld.optional_static_tls=65536";

    public static int Main(string[] args)
    {
        switch (args.FirstOrDefault())
        {
            case "break-stress": return BreakStress.Parent(args);
            case "break-stress-child": return BreakStress.Child(int.Parse(args[1]));
            case "rss": return RssReport.Parent();
            case "rss-child": return RssReport.Child(args[1], args[2]);
            case "ci": return ShortRun();
            case "c-workloads": return CWorkloads.Run(args);
            case "mimalloc-bench": return MimallocBench.Run(args);
            case "pool-idle": return PoolIdle.Parent(args);
            case "pool-idle-child": return PoolIdle.Child(args[1]);
            case "heap-metrics": return HeapMetricsRead.Run(args);
            case "results": return ResultsReport.Write(args[1], args[2], args[3], args[4], args[5]);
        }
        // jemalloc needs its tunable in every benchmark process; "--short" runs BenchmarkDotNet's
        // ShortRun job (3 warm-ups, 3 iterations) for a whole-suite run that fits in half an hour.
        bool shortRun = args.Contains("--short");
        Job job = (shortRun ? Job.ShortRun : Job.Default).WithEnvironmentVariable("GLIBC_TUNABLES", JemallocTunables);
        var config = DefaultConfig.Instance.AddJob(job);
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args.Where(a => a != "--short").ToArray(), config);
        return 0;
    }

    /// <summary>Every benchmark once, in this process; nonzero if any failed (a missing allocator included).</summary>
    private static int ShortRun()
    {
        if (Environment.GetEnvironmentVariable("GLIBC_TUNABLES")?.Contains("optional_static_tls") != true)
        {
            Console.Error.WriteLine($"ci: set GLIBC_TUNABLES={JemallocTunables} before starting, or jemalloc cannot load");
            return 2;
        }
        var job = Job.Dry.WithToolchain(InProcessEmitToolchain.Instance);
        var config = DefaultConfig.Instance.AddJob(job).WithOptions(ConfigOptions.DisableOptimizationsValidator);
        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(["--filter", "*"], config);
        var failed = summaries.SelectMany(s => s.Reports).Where(r => !r.Success).ToList();
        foreach (var r in failed) Console.Error.WriteLine($"ci: {r.BenchmarkCase.DisplayInfo} failed");
        int total = summaries.Sum(s => s.Reports.Length);
        Console.WriteLine($"ci: {total - failed.Count} of {total} benchmarks ran");
        return failed.Count == 0 && total > 0 && summaries.All(s => !s.HasCriticalValidationErrors) ? 0 : 1;
    }

    /// <summary>The repository's root: the folder above this program that holds NativeHeap.sln.</summary>
    internal static string RepoRoot()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir != null && !File.Exists(Path.Combine(dir, "NativeHeap.sln"))) dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException("NativeHeap.sln not found above " + AppContext.BaseDirectory);
    }

    internal static double Median(IEnumerable<double> values)
    {
        double[] v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }
}
