namespace NativeHeap.Buffers;

/// <summary>
/// The timer that runs every pool's eviction once a second, and the registry of pools the
/// timer and the metrics walk (weak: a pool nobody holds is collected). The timer runs only
/// while some pool holds idle blocks: a pool call that caches a block arms it (one static read
/// on the fast path), a tick that finds every pool empty stops it.
/// </summary>
internal static class PoolEviction
{
    internal static readonly TimeSpan Period = TimeSpan.FromSeconds(1);

    private static readonly Lock s_lock = new();
    private static readonly WeakRegistry<NativeHeapMemoryPool> s_pools = new();
    private static Timer? s_timer;       // under s_lock
    private static volatile bool s_armed;

    internal static bool Armed => s_armed;

    internal static void Register(NativeHeapMemoryPool pool) => s_pools.Add(pool);

    internal static void Arm()
    {
        lock (s_lock)
        {
            if (s_armed) return;
            s_armed = true;
            if (s_timer == null)
            {
                using (ExecutionContext.SuppressFlow()) s_timer = new Timer(_ => Tick(), null, Timeout.Infinite, Timeout.Infinite);
            }
            s_timer.Change(Period, Period);
        }
    }

    /// <summary>The live pools.</summary>
    internal static List<NativeHeapMemoryPool> Pools() => s_pools.Live();

    private static void Tick()
    {
        List<NativeHeapMemoryPool> pools = Pools();
        foreach (NativeHeapMemoryPool pool in pools)
            if (pool.EvictedByTimer) pool.Evict(all: false);
        if (pools.Exists(p => p.PooledBytes != 0)) return;
        lock (s_lock)
        {
            s_armed = false;
            // A Return that cached a block before this either shows in PooledBytes now or reads s_armed after it and arms again.
            Interlocked.MemoryBarrierProcessWide();
            if (pools.Exists(p => p.PooledBytes != 0)) s_armed = true;
            else s_timer!.Change(Timeout.Infinite, Timeout.Infinite);
        }
    }
}
