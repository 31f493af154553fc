using System.Diagnostics.Metrics;

namespace NativeHeap.Buffers;

/// <summary>
/// The pools' metrics, in the shape of ASP.NET Core's <c>aspnetcore.memory_pool.*</c>: bytes
/// pooled now, and bytes allocated, evicted and rented so far, one measurement per pool tagged
/// with its name. Observable instruments: the pools count on their own (per thread, no atomics)
/// and a listener's collection sums those counts, so the fast paths pay nothing for metrics.
/// </summary>
internal static class PoolMetrics
{
    internal const string MeterName = "NativeHeap.MemoryPool";
    internal const string OwnerTag = "nativeheap.memory_pool.owner";

    private static readonly Meter s_meter = new(MeterName);

    internal static void EnsureCreated() => _ = s_instruments;

    private static readonly object[] s_instruments =
    [
        s_meter.CreateObservableUpDownCounter("nativeheap.memory_pool.pooled", () => Measure(s => s.PooledBytes), "By",
            "Number of bytes currently held by the memory pool and available for reuse."),
        s_meter.CreateObservableCounter("nativeheap.memory_pool.allocated", () => Measure(s => s.AllocatedBytes), "By",
            "Total number of bytes allocated by the memory pool."),
        s_meter.CreateObservableCounter("nativeheap.memory_pool.evicted", () => Measure(s => s.EvictedBytes), "By",
            "Total number of bytes that have been evicted from the memory pool."),
        s_meter.CreateObservableCounter("nativeheap.memory_pool.rented", () => Measure(s => s.RentedBytes), "By",
            "Total number of bytes rented from the memory pool."),
    ];

    private static IEnumerable<Measurement<long>> Measure(Func<NativeHeapMemoryPoolStatistics, long> figure)
    {
        foreach (NativeHeapMemoryPool pool in PoolEviction.Pools())
            yield return new Measurement<long>(figure(pool.GetStatistics()), new KeyValuePair<string, object?>(OwnerTag, pool.Name));
    }
}
