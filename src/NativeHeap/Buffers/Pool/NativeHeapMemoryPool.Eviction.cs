namespace NativeHeap.Buffers;

public sealed unsafe partial class NativeHeapMemoryPool
{
    private readonly Lock _evictLock = new();

    /// <summary>Frees every idle block the pool holds now: the depot's and every thread's that is not inside a pool call this instant. Buffers still rented are not touched.</summary>
    public void Trim() => Evict(all: true);

    /// <summary>
    /// The pool's counters, as its metrics report them: bytes pooled now, and bytes allocated,
    /// evicted and rented since it was created. Each thread counts its own calls; this sums them,
    /// so a figure read while other threads rent may be a call or two out of date.
    /// </summary>
    public NativeHeapMemoryPoolStatistics GetStatistics()
    {
        long rented = Volatile.Read(ref _rented), allocated = Volatile.Read(ref _allocated), pooled = _depot.PooledBytes;
        foreach (PoolThreadCache cache in LiveCaches())
        {
            rented += cache.Rented;
            allocated += cache.Allocated;
            foreach (PooledBuffer? owner in cache.Slots)
                if (owner != null && owner.ParkedIn == cache.Id) pooled += owner.Capacity; // racy: a figure, not a balance
        }
        return new NativeHeapMemoryPoolStatistics(pooled, allocated, Volatile.Read(ref _evicted), rented);
    }

    /// <summary>Whether the once-a-second timer evicts this pool (true); a test that steps eviction by hand turns it off.</summary>
    internal bool EvictedByTimer { get; set; } = true;

    /// <summary>
    /// The eviction rule (see the class remarks): a thread cache untouched since the last call
    /// gives its owners to the depot; the depot frees half of each stack's low-water mark. With
    /// <paramref name="all"/>, every idle owner is taken and freed.
    /// </summary>
    internal void Evict(bool all)
    {
        var taken = new List<PooledBuffer>();
        lock (_evictLock)
        {
            var candidates = new List<PoolThreadCache>();
            foreach (PoolThreadCache cache in LiveCaches())
            {
                int seq = Volatile.Read(ref cache.Seq);
                bool idle = (seq & 1) == 0 && (all || seq == cache.SeenSeq);
                cache.SeenSeq = seq;
                if (idle && (cache.BareOwner != null || ((ReadOnlySpan<PooledBuffer?>)cache.Slots).ContainsAnyExcept((PooledBuffer?)null)))
                {
                    Volatile.Write(ref cache.Evicting, 1);
                    candidates.Add(cache);
                }
            }
            if (candidates.Count > 0)
            {
                // After this, a call that began earlier shows in Seq, and one that begins later sees Evicting (PoolThreadCache's handshake).
                Interlocked.MemoryBarrierProcessWide();
                foreach (PoolThreadCache cache in candidates)
                {
                    if (Volatile.Read(ref cache.Seq) == cache.SeenSeq)
                    {
                        for (int c = 0; c <= PoolSizeClass.Count; c++)
                        {
                            if (cache.Slots[c] is { } owner && owner.ParkedIn == cache.Id)
                            {
                                owner.ParkedIn = 0;
                                taken.Add(owner);
                            }
                            cache.Slots[c] = null;
                        }
                        if (cache.BareOwner != null) taken.Add(cache.BareOwner);
                        cache.BareOwner = null;
                    }
                    Volatile.Write(ref cache.Evicting, 0);
                }
            }

            var freed = new List<PooledBuffer>();
            foreach (PooledBuffer owner in taken)
            {
                // An idle thread's owners may still serve other threads: they join the depot and age there.
                if (all || _disposed || owner.State != PooledBuffer.Idle || owner.Class == PoolSizeClass.Bare || !_depot.TryPush(owner)) freed.Add(owner);
            }
            _depot.Evict(all || _disposed, freed);
            foreach (PooledBuffer owner in freed)
            {
                if (owner.State != PooledBuffer.Idle) continue; // rented: a racing double Dispose had put it in twice
                if (owner.Block != null)
                {
                    Interlocked.Add(ref _evicted, owner.Capacity);
                    FreeBlock(owner, uncached: true);
                }
                owner.Retire();
            }
        }
    }

    /// <summary>Pooled bytes now (the timer stops when every pool's is 0).</summary>
    internal long PooledBytes => GetStatistics().PooledBytes;

    /// <summary>An owner's finalizer: a forgotten rented one, or an idle one whose cache died with its thread.</summary>
    internal void Finalized(PooledBuffer owner)
    {
        if (owner.Block == null) return; // retired, or bare
        if (owner.State == PooledBuffer.Idle) Interlocked.Add(ref _evicted, owner.Capacity);
        FreeBlock(owner, uncached: true);
    }

    /// <summary>A dead thread's cache: its counts become the pool's.</summary>
    internal void FoldCounters(PoolThreadCache cache)
    {
        Interlocked.Add(ref _rented, cache.Rented);
        Interlocked.Add(ref _allocated, cache.Allocated);
    }

    private List<PoolThreadCache> LiveCaches() => _caches.Live();

    /// <summary>Frees the idle blocks and refuses later rents; buffers still rented stay valid and are freed at their Dispose. <see cref="Shared"/> ignores it.</summary>
    /// <param name="disposing">Unused: there is nothing managed to release.</param>
    protected override void Dispose(bool disposing)
    {
        if (_isShared || _disposed) return;
        _disposed = true;
        Evict(all: true);
        PoolIds.Release(_id);
    }
}

/// <summary>A <see cref="NativeHeapMemoryPool"/>'s counters (<see cref="NativeHeapMemoryPool.GetStatistics"/>), the figures its metrics report.</summary>
/// <param name="PooledBytes">Bytes of idle blocks the pool holds for reuse now (<c>nativeheap.memory_pool.pooled</c>).</param>
/// <param name="AllocatedBytes">Bytes of blocks the pool has malloc'd from NativeHeap (<c>.allocated</c>).</param>
/// <param name="EvictedBytes">Bytes of idle blocks freed back to NativeHeap by eviction, <see cref="NativeHeapMemoryPool.Trim"/> or a dead thread's cache (<c>.evicted</c>).</param>
/// <param name="RentedBytes">Bytes rented (the lengths asked) (<c>.rented</c>).</param>
public readonly record struct NativeHeapMemoryPoolStatistics(long PooledBytes, long AllocatedBytes, long EvictedBytes, long RentedBytes);

/// <summary>Pool ids index the threads' cache arrays; a disposed pool's id is given to the next pool.</summary>
internal static class PoolIds
{
    private static readonly Lock s_lock = new();
    private static readonly Stack<int> s_free = new();
    private static int s_next;

    internal static int Take()
    {
        lock (s_lock) return s_free.Count > 0 ? s_free.Pop() : s_next++;
    }

    internal static void Release(int id)
    {
        lock (s_lock) s_free.Push(id);
    }
}
