using System.Buffers;
using System.Globalization;
using NativeHeap.Buffers;
using NativeHeap.Lab;

namespace NativeHeap.Benchmarks;

/// <summary>
/// The pools' memory after a burst: in a fresh child per pool and round, 1 GiB rented in 64 KiB
/// buffers (each written whole) and given back, then 30 s idle; anonymous RSS above the
/// pre-burst baseline at the peak and at 0, 1, 2, 5, 10, 20 and 30 s (medians of the rounds).
/// <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- pool-idle [--rounds N]</c>
/// </summary>
internal static class PoolIdle
{
    private static readonly double[] Seconds = [0, 1, 2, 5, 10, 20, 30];
    private static readonly string[] Pools = ["NativeHeapMemoryPool.Shared", "MemoryPool<byte>.Shared"];

    internal static int Parent(string[] args)
    {
        int rounds = args.SkipWhile(a => a != "--rounds").Skip(1).Select(int.Parse).FirstOrDefault(3);
        var samples = Pools.ToDictionary(p => p, _ => new List<long[]>());
        for (int round = 0; round < rounds; round++)
        {
            foreach (string pool in Pools)
            {
                ProcessResult r = ChildProcess.RunSelf(["pool-idle-child", pool], new ProcessOptions
                {
                    Environment = [("DOTNET_TieredCompilation", "0")],
                    RemoveEnvironment = [Tunables.Variable],
                }, typeof(PoolIdle).Assembly);
                if (r.ExitCode != 0)
                {
                    Console.Error.WriteLine($"pool-idle: {pool} child exited {r.ExitCode}: {r.Error}");
                    return 1;
                }
                samples[pool].Add(r.Output.Trim().Split(' ').Select(long.Parse).ToArray());
                Console.Error.WriteLine($"pool-idle: round {round + 1}, {pool}: {r.Output.Trim()}");
            }
        }
        Console.WriteLine($"| pool | peak | {string.Join(" | ", Seconds.Select(s => $"{s:0} s"))} |");
        Console.WriteLine($"|---|---:|{string.Concat(Seconds.Select(_ => "---:|"))}");
        foreach (string pool in Pools)
        {
            IEnumerable<string> cells = Enumerable.Range(0, Seconds.Length + 1)
                .Select(i => (Program.Median(samples[pool].Select(s => (double)s[i])) / 1024).ToString("N0", CultureInfo.InvariantCulture) + " KiB");
            Console.WriteLine($"| {pool} | {string.Join(" | ", cells)} |");
        }
        return 0;
    }

    /// <summary>One round for one pool: prints the peak and the curve, bytes above the baseline, on one line.</summary>
    internal static int Child(string pool)
    {
        MemoryPool<byte> p = pool.StartsWith("NativeHeap", StringComparison.Ordinal) ? NativeHeapMemoryPool.Shared : MemoryPool<byte>.Shared;
        PoolBurst.Run(p, 256, 65536); // compiled, caches and timers exist
        long baseline = PoolBurst.Settle(p);
        long peak = PoolBurst.Run(p, 16384, 65536);
        var curve = PoolBurst.Idle(baseline, Seconds);
        Console.WriteLine(string.Join(' ', curve.Select(c => c.Bytes).Prepend(peak)));
        return 0;
    }
}
