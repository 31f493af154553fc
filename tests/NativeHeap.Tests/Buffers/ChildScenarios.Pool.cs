using NativeHeap.Buffers;
using NativeHeap.Lab;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="PoolTests"/> that need a process of their own.</summary>
internal static partial class ChildScenarios
{
    /// <summary>
    /// The RSS goal on the shared pool: 1 GiB rented in 64 KiB buffers (each written
    /// whole) and given back, then idle; anonymous RSS is read each second until it is within
    /// 2 MiB of where it was before the burst and the pool is empty, or 30 s have passed.
    /// </summary>
    public static void PoolBurstRss()
    {
        NativeHeapMemoryPool pool = NativeHeapMemoryPool.Shared;
        PoolBurst.Run(pool, 256, 65536); // compiled; the thread's cache and the timer exist
        long baseline = PoolBurst.Settle(pool);
        Report("burst_kib", PoolBurst.Run(pool, 16384, 65536) / 1024);
        var curve = PoolBurst.Idle(baseline, Seconds(), above => Math.Abs(above) < 2 << 20 && pool.GetStatistics().PooledBytes == 0);
        Report("idle_s", curve[^1].Seconds.ToString("F0"));
        Report("idle_kib", curve[^1].Bytes / 1024);
        Report("pooled_bytes", pool.GetStatistics().PooledBytes);

        static IEnumerable<double> Seconds() => Enumerable.Range(1, 30).Select(s => (double)s);
    }
}
