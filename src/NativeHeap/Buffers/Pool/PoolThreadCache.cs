using System.Runtime.CompilerServices;

namespace NativeHeap.Buffers;

/// <summary>
/// One thread's cache in one <see cref="NativeHeapMemoryPool"/>: an idle owner per size class
/// (with its block), and the thread's share of the pool's counters. The owning thread uses it
/// with plain loads and stores; the evictor takes owners out of it only while the thread is
/// provably outside it.
/// </summary>
/// <remarks>
/// <para><b>The handshake</b> (an asymmetric Dekker, so that the fast paths carry no atomic
/// instruction). The owning thread makes <see cref="Seq"/> odd, reads <see cref="Evicting"/>,
/// uses <see cref="Slots"/> only if it read 0, and makes Seq even again. The evictor sets
/// Evicting, runs <see cref="Interlocked.MemoryBarrierProcessWide"/>, and then touches Slots only
/// if Seq is even and unchanged since it last looked: after the process-wide barrier, an
/// operation that began earlier shows as an odd or changed Seq, and one that begins later reads
/// Evicting = 1 and goes to the shared depot instead. The barrier drains the owning thread's
/// store buffer, so the processor's store-load reordering is covered; the JIT keeps the
/// volatile store of Seq before the volatile load of Evicting (it moves no memory access across
/// a volatile one).</para>
/// <para>The counters are written by the owning thread only; a reader sums them over every cache
/// and the pool's own atomics (dead threads' counts). A dead thread's cache is
/// collected: its finalizer folds its counters into the pool, and its owners' finalizers free
/// their blocks.</para>
/// </remarks>
internal sealed class PoolThreadCache
{
    private static int s_lastId;

    internal readonly NativeHeapMemoryPool Pool;
    internal readonly int Id = Interlocked.Increment(ref s_lastId); // never 0: PooledBuffer.ParkedIn's "in no slot"

    /// <summary>Per size class, the owner last parked here. It is this cache's only while its ParkedIn is <see cref="Id"/>: a rent clears that and leaves the reference, so that the common Dispose on the same thread parks it again without a reference store (no GC write barrier). Slots[Bare] stays null.</summary>
    internal SlotArray Slots; // inline in the cache: one dependent load less on the fast paths than an array

    internal PooledBuffer? BareOwner; // an owner without a block, kept for the next allocation

    internal int Seq;        // owning thread; odd while it is inside Slots
    internal int Evicting;   // evictor; 1 while it may be emptying Slots

    // Owning thread only.
    internal long Rented;    // bytes rented (lengths asked), cumulative
    internal long Allocated; // bytes of blocks malloc'd, cumulative

    // Evictor only (under the pool's eviction lock).
    internal int SeenSeq = -1;

    internal PoolThreadCache(NativeHeapMemoryPool pool) => Pool = pool;

    ~PoolThreadCache() => Pool.FoldCounters(this);

    /// <summary>Enters the cache; false if the evictor may be in it (then the caller has left again and goes to the depot).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool Enter()
    {
        int seq = Seq + 1;
        Volatile.Write(ref Seq, seq);
        if (Volatile.Read(ref Evicting) == 0) return true;
        Volatile.Write(ref Seq, seq + 1);
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Leave() => Volatile.Write(ref Seq, Seq + 1);
}

/// <summary><see cref="PoolThreadCache.Slots"/>: one per size class, and Bare's (always null).</summary>
[InlineArray(PoolSizeClass.Count + 1)]
internal struct SlotArray
{
    private PooledBuffer? _first;
}
