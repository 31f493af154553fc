using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace NativeHeap.Buffers;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of bytes whose buffers are NativeHeap blocks, at the speed of
/// .NET's own pools and without their memory: owners are reused (Rent and Dispose allocate
/// nothing on the GC heap once warm), blocks are cached per size class, per thread and per
/// processor, and blocks left idle are freed to NativeHeap, whose purge gives their pages back
/// to the kernel. Switching is one line, e.g. <c>new PipeOptions(pool: NativeHeapMemoryPool.Shared)</c>.
/// </summary>
/// <remarks>
/// <para><b>Buffers.</b> <see cref="Rent"/> gives a Memory of exactly the length asked (4,096
/// bytes for -1), uninitialised, in a block of its size class (16-byte steps to 64 bytes, then
/// four classes to a doubling up to 16 MiB; longer buffers are malloc'd at their length and freed
/// at Dispose).</para>
/// <para><b>After Dispose.</b> The owner goes back to the pool and is handed out again. A Memory
/// taken before the Dispose stays invalid for good: its Span throws ObjectDisposedException while
/// the owner waits in the pool and ArgumentOutOfRangeException once the owner is rented again (a
/// version stamp in the Memory's index: it never reaches the new renter's bytes), and its Pin
/// throws ObjectDisposedException. A Span taken before Dispose is a bare pointer, as with every
/// pool: do not keep one. The owner object itself must not be used after its Dispose: while it
/// waits in the pool any use throws ObjectDisposedException and a second Dispose does nothing,
/// but once it is rented again it is the new renter's. Dispose is not safe against a concurrent
/// Dispose of the same owner (as MemoryPool&lt;byte&gt;.Shared's owners).</para>
/// <para><b>Forgotten owners</b> are freed by their finalizer: an owner never disposed frees its
/// block at a garbage collection after it became unreachable. Its thread's cache may still
/// point at it (so that a Dispose on that thread parks it without a reference store) until the
/// thread gives back another buffer of the size class or makes no pool call for a second. The
/// pool's blocks count towards the GC's memory pressure (in 16 MiB steps for all buffers).
/// Steady use allocates nothing on the GC heap but a new owner object (about 80 bytes) when one
/// has used its 2^31 bytes of windows: one per 2,047 rents of 1 MiB.</para>
/// <para><b>Giving memory back</b> (the eviction rule). Every second the pool looks at its caches:
/// a thread that made no pool call for a whole second has its cached blocks moved to the shared
/// depot; each depot stack then frees half (rounded up) of the blocks no rent took during that
/// second (its low-water mark). Idle, a pool's cache halves every second and is empty within
/// about 8 s; NativeHeap's purge (default profile) returns the freed pages after its own delay.
/// <see cref="Trim"/> frees every idle block at once.</para>
/// <para><b>Metrics</b> (meter <c>NativeHeap.MemoryPool</c>, shaped as ASP.NET Core's
/// <c>aspnetcore.memory_pool.*</c>): <c>nativeheap.memory_pool.pooled</c>, <c>.allocated</c>,
/// <c>.evicted</c> and <c>.rented</c>, in bytes, tagged <c>nativeheap.memory_pool.owner</c>
/// with the pool's <see cref="Name"/>; <c>dotnet-counters monitor --counters NativeHeap.MemoryPool</c>
/// shows them.</para>
/// <para>Every member is thread-safe. <see cref="Shared"/>'s Dispose does nothing (as
/// <see cref="MemoryPool{T}.Shared"/>); disposing a pool you created frees its idle blocks, makes
/// later <see cref="Rent"/> calls throw, and frees buffers still rented when they are disposed.</para>
/// </remarks>
public sealed unsafe partial class NativeHeapMemoryPool : MemoryPool<byte>
{
    /// <summary>The length <see cref="Rent"/> gives when asked for the default (-1): 4,096 bytes, as <see cref="MemoryPool{T}.Shared"/>.</summary>
    public const int DefaultBufferSize = 4096;

    /// <summary>The process-wide instance, named "shared".</summary>
    public static new NativeHeapMemoryPool Shared { get; } = new("shared", isShared: true);

    [ThreadStatic] private static PoolThreadCache? t_last;      // the cache of the pool this thread called last
    [ThreadStatic] private static PoolThreadCache?[]? t_caches; // indexed by pool id

    private readonly int _id;
    private readonly bool _isShared;
    private readonly PoolDepot _depot = new();
    private readonly WeakRegistry<PoolThreadCache> _caches = new();
    private volatile bool _disposed;

    // Dead threads' counts (folded from their caches) and what the evictor and finalizers freed. Interlocked.
    private long _rented, _allocated, _evicted;

    /// <summary>Creates a pool with caches of its own.</summary>
    /// <param name="name">The pool's name in its metrics (tag <c>nativeheap.memory_pool.owner</c>); null for none.</param>
    public NativeHeapMemoryPool(string? name = null)
        : this(name, isShared: false)
    {
    }

    private NativeHeapMemoryPool(string? name, bool isShared)
    {
        Name = name;
        _isShared = isShared;
        _id = PoolIds.Take();
        PoolEviction.Register(this);
        PoolMetrics.EnsureCreated();
    }

    /// <summary>The name given at construction ("shared" for <see cref="Shared"/>), used as the metrics' owner tag.</summary>
    public string? Name { get; }

    /// <summary>The largest buffer: a <see cref="Memory{T}"/> holds at most <see cref="int.MaxValue"/> bytes.</summary>
    public override int MaxBufferSize => int.MaxValue;

    /// <summary>A buffer of exactly <paramref name="minimumLength"/> bytes (4,096 for -1), uninitialised, in NativeHeap memory.</summary>
    /// <param name="minimumLength">The bytes wanted, 0 to <see cref="MaxBufferSize"/>, or -1 for <see cref="DefaultBufferSize"/>.</param>
    /// <returns>The owner; dispose it to give the buffer back.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="minimumLength"/> is below -1.</exception>
    /// <exception cref="ObjectDisposedException">The pool (not <see cref="Shared"/>) was disposed.</exception>
    /// <exception cref="OutOfMemoryException">No memory could be had.</exception>
    public override IMemoryOwner<byte> Rent(int minimumLength = -1)
    {
        if (minimumLength < 0) minimumLength = DefaultLength(minimumLength);
        int c = PoolSizeClass.Of(minimumLength);
        PoolThreadCache? cache = Cache();
        if (cache != null && cache.Enter())
        {
            PooledBuffer? owner = cache.Slots[c]; // Slots[Bare] is always null
            if (owner != null && owner.ParkedIn == cache.Id && owner.State == PooledBuffer.Idle && owner.TryStart(minimumLength))
            {
                owner.ParkedIn = 0; // the slot keeps the reference: a Dispose on this thread then parks it again without a store
                cache.Leave();
                cache.Rented += minimumLength;
                return owner;
            }
            cache.Leave();
        }
        return RentSlow(minimumLength, c, cache);
    }

    /// <summary>Takes back an owner its renter disposed (its State already Idle).</summary>
    internal void Return(PooledBuffer owner)
    {
        Debug.Assert(owner.State == PooledBuffer.Idle && owner.Pool == this);
        int c = owner.Class;
        PoolThreadCache? cache = _disposed ? null : Cache();
        if (cache != null && c != PoolSizeClass.Bare && cache.Enter())
        {
            ref PooledBuffer? slot = ref cache.Slots[c];
            PooledBuffer? parked = slot;
            if (parked == owner || parked == null || parked.ParkedIn != cache.Id)
            {
                if (parked != owner) slot = owner;
                owner.ParkedIn = cache.Id;
                cache.Leave();
                if (!PoolEviction.Armed) PoolEviction.Arm();
                return;
            }
            cache.Leave();
        }
        ReturnSlow(owner, cache);
    }

    private IMemoryOwner<byte> RentSlow(int length, int c, PoolThreadCache? threadCache)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        PoolThreadCache cache = threadCache!; // Cache() gives null only once the pool is disposed
        PooledBuffer? owner = c == PoolSizeClass.Bare ? null : TakeIdle(c, cache);
        if (owner == null)
        {
            owner = TakeIdle(PoolSizeClass.Bare, cache) ?? new PooledBuffer(this);
            Debug.Assert(owner.Block == null);
            int size = c == PoolSizeClass.Bare ? length : PoolSizeClass.Size(c);
            owner.Block = (byte*)Heap.Alloc((nuint)size);
            owner.Class = c;
            owner.Capacity = size;
            cache.Allocated += size;
            GcPressure.Change(size);
        }

        if (!owner.TryStart(length))
        {
            // 2^31 bytes of windows used: the block moves to a new owner, the old object is never rented again.
            var fresh = new PooledBuffer(this) { Block = owner.Block, Class = owner.Class, Capacity = owner.Capacity };
            owner.Block = null;
            owner.Retire();
            owner = fresh;
            bool started = owner.TryStart(length);
            Debug.Assert(started);
        }
        cache.Rented += length;
        return owner;
    }

    /// <summary>An idle owner of class <paramref name="c"/> from the thread's slot or the depot; owners found rented (a racing double Dispose put them in twice) are dropped.</summary>
    private PooledBuffer? TakeIdle(int c, PoolThreadCache cache)
    {
        PooledBuffer? owner = null;
        if (cache.Enter())
        {
            if (c == PoolSizeClass.Bare)
            {
                owner = cache.BareOwner;
                cache.BareOwner = null;
            }
            else if (cache.Slots[c] is { } parked && parked.ParkedIn == cache.Id)
            {
                owner = parked;
                owner.ParkedIn = 0;
            }
            cache.Leave();
        }
        while (true)
        {
            if (owner != null && owner.State == PooledBuffer.Idle) return owner;
            owner = _depot.TryPop(c);
            if (owner == null) return null;
        }
    }

    private void ReturnSlow(PooledBuffer owner, PoolThreadCache? cache)
    {
        if (!_disposed && owner.Class != PoolSizeClass.Bare && _depot.TryPush(owner))
        {
            if (!PoolEviction.Armed) PoolEviction.Arm();
            return;
        }
        // No room (or an uncached length): the block goes back to NativeHeap, the object is kept as a bare owner.
        FreeBlock(owner);
        if (_disposed) owner.Retire();
        else KeepBare(owner, cache);
    }

    private void KeepBare(PooledBuffer owner, PoolThreadCache? cache)
    {
        Debug.Assert(owner.Block == null && owner.Class == PoolSizeClass.Bare);
        if (cache != null && cache.Enter())
        {
            bool kept = cache.BareOwner == null;
            if (kept) cache.BareOwner = owner;
            cache.Leave();
            if (kept) return;
        }
        if (!_depot.TryPush(owner)) owner.Retire();
    }

    /// <summary>Frees an owner's block: <paramref name="uncached"/> for eviction and finalizers, whose thread should not keep it in its tcache.</summary>
    private static void FreeBlock(PooledBuffer owner, bool uncached = false)
    {
        if (uncached) Heap.FreeUncached(owner.Block);
        else Heap.Free(owner.Block);
        GcPressure.Change(-owner.Capacity);
        owner.Block = null;
        owner.Class = PoolSizeClass.Bare;
        owner.Capacity = 0;
    }

    private static int DefaultLength(int minimumLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(minimumLength, -1);
        return DefaultBufferSize;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PoolThreadCache? Cache()
    {
        PoolThreadCache? cache = t_last;
        return cache != null && cache.Pool == this ? cache : CacheOfThisPool();
    }

    /// <summary>The calling thread's cache of this pool when its last call was on another pool (or its first call): created if need be, null once the pool is disposed.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private PoolThreadCache? CacheOfThisPool()
    {
        PoolThreadCache?[]? caches = t_caches;
        PoolThreadCache? cache = caches != null && _id < caches.Length ? caches[_id] : null;
        if (cache == null || cache.Pool != this)
        {
            if (_disposed) return null;
            if (caches == null || caches.Length <= _id) Array.Resize(ref t_caches, Math.Max(_id + 1, 4));
            cache = new PoolThreadCache(this);
            t_caches![_id] = cache;
            _caches.Add(cache);
        }
        t_last = cache;
        return cache;
    }
}
