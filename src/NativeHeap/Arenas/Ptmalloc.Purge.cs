using System.Diagnostics;
using System.Runtime.CompilerServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    // The decayed purge (NativeHeap's; off in the glibc-2.36 profile): whole pages of free
    // memory, in any free chunk of at least a page and at the top, go back to the kernel with
    // MADV_DONTNEED once they have stayed free for purge_delay milliseconds. glibc gives back
    // only the top of the main arena (on the break) and of a heap, and only when top passes the
    // trim threshold: free memory below a live block stays resident until malloc_trim. Giving
    // pages back at once instead costs a page fault per page when the memory is used again
    // soon; the delay keeps memory that is reused and returns memory that is not
    // (docs/decisions.md).
    //
    // Each free chunk of PurgeMinSize or more carries the time it was freed in the word after
    // its links (StampOffset), which a purge keeps resident; Purged marks one already released.
    // The arena keeps the earliest time a purge can have work (ArenaPurge.Deadline, 0: none), so the
    // slow paths test one field, under the arena lock that guards all of this.
    //
    // The clock is read rarely, as a read on every free into top and every slow call slows the
    // small alloc+free pair by about 40% (docs/decisions.md). Stamps take the arena's cached
    // clock (ArenaPurge.Now), read afresh when nothing was pending and otherwise refreshed every
    // PurgeClockEvery slow calls and by each purge; a stamp is then at most that many calls
    // early, which can only make a purge come sooner, never skip one.

    /// <summary>Slow calls between two reads of the clock while a purge is pending.</summary>
    private const long PurgeClockEvery = 32;

    /// <summary>The stamp's place in a free chunk: after prev_size, size and the four links.</summary>
    private const nuint StampOffset = Chunk.StructSize;
    /// <summary>What a purge keeps of a free chunk: the header, the links and the stamp.</summary>
    private const nuint PurgeKeep = StampOffset + sizeof(long);
    /// <summary>A stamp that says the chunk's pages are already released.</summary>
    private const long Purged = long.MinValue;

    /// <summary>The smallest free chunk that can hold a whole page beyond what a purge keeps.</summary>
    private static nuint PurgeMinSize => OsMemory.PageSize + PurgeKeep;

    /// <summary>Whether free chunks are purged at all (purge_delay &gt;= 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Purging(MallocParams* mp) => mp->PurgeDelayMs >= 0;

    /// <summary>Milliseconds of a monotonic clock; never 0, which means "nothing scheduled".</summary>
    private static long PurgeClock() => Environment.TickCount64 | 1;

    /// <summary>The time to stamp with: the clock when nothing is pending, else the arena's cached reading.</summary>
    private static long ArenaNow(ArenaPurge* ap) => ap->Deadline == 0 ? ap->Now = PurgeClock() : ap->Now;

    /// <summary>
    /// Chunk <paramref name="p"/> of <paramref name="size"/> bytes has just become free (a
    /// free, merged with its neighbours): stamp it, and schedule the arena's purge. With a
    /// delay of 0 its pages go back now.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // a test and a return in the glibc-2.36 profile
    private static void PurgeMarkFree(MallocContext* ctx, MallocState* av, Chunk* p, nuint size)
    {
        MallocParams* mp = &ctx->Mp;
        if (!Purging(mp) || size < PurgeMinSize) return;
        if (mp->PurgeDelayMs == 0)
        {
            PurgeChunk(ctx, p);
            return;
        }
        long* stamp = (long*)((byte*)p + StampOffset);
        *stamp = ArenaNow(MallocContext.Purge(ctx, av));
        Schedule(ctx, av, *stamp + mp->PurgeDelayMs);
    }

    /// <summary>Release free chunk <paramref name="p"/>'s whole pages now, keeping its stamp, which then says so.</summary>
    private static bool PurgeChunk(MallocContext* ctx, Chunk* p)
    {
        bool released = ReleaseChunkPages(ctx, p, PurgeKeep);
        *(long*)((byte*)p + StampOffset) = Purged;
        return released;
    }

    /// <summary>
    /// The arena has work for a purge at <paramref name="deadline"/> (or earlier, if it had
    /// already). The process's timer is asked for only by an arena of <see cref="PurgeTimerMinMem"/>
    /// or more; a smaller one purges from its slow calls (and from the timer if it runs anyway).
    /// </summary>
    private static void Schedule(MallocContext* ctx, MallocState* av, long deadline)
    {
        ArenaPurge* ap = MallocContext.Purge(ctx, av);
        if (ap->Deadline == 0) ap->Deadline = deadline;
        // Also when a deadline was already set: the arena may have grown past the bound since.
        if (av->SystemMem >= PurgeTimerMinMem && ctx->PurgeScheduled == 0) Volatile.Write(ref ctx->PurgeScheduled, 1);
    }

    /// <summary>
    /// The least memory an arena must have for its purge to arm the timer: the timer's thread
    /// costs a few hundred KiB of resident memory, more than a small heap can give back
    /// (docs/decisions.md).
    /// </summary>
    private const nuint PurgeTimerMinMem = 1024 * 1024;

    /// <summary>
    /// The stamp of free chunk <paramref name="victim"/> before a split writes over it, for
    /// <see cref="PurgeMarkRemainder"/>; 0 when it has none.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // a test and a return in the glibc-2.36 profile
    private static long PurgeStampOf(MallocContext* ctx, Chunk* victim, nuint size) =>
        Purging(&ctx->Mp) && size >= PurgeMinSize ? *(long*)((byte*)victim + StampOffset) : 0;

    /// <summary>
    /// <paramref name="remainder"/> is what a split left of a free chunk whose stamp was
    /// <paramref name="stamp"/>: its pages were freed (or released) when that chunk's were.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // a test and a return in the glibc-2.36 profile
    private static void PurgeMarkRemainder(MallocContext* ctx, MallocState* av, Chunk* remainder, nuint size, long stamp)
    {
        if (stamp == 0 || size < PurgeMinSize) return;
        *(long*)((byte*)remainder + StampOffset) = stamp;
        if (stamp != Purged) Schedule(ctx, av, stamp + ctx->Mp.PurgeDelayMs);
    }

    /// <summary>Top grew by a free: its tail may be purged once the delay has passed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // a test and a return in the glibc-2.36 profile
    private static void PurgeMarkTop(MallocContext* ctx, MallocState* av)
    {
        MallocParams* mp = &ctx->Mp;
        if (!Purging(mp)) return;
        ArenaPurge* ap = MallocContext.Purge(ctx, av);
        ap->TopFreedAt = ArenaNow(ap);
        Schedule(ctx, av, ap->TopFreedAt + mp->PurgeDelayMs);
    }

    /// <summary>
    /// The slow paths' test, the arena's lock held: every PurgeClockEvery calls while a purge
    /// is pending, read the clock and purge if the deadline has passed. One load when nothing is.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void MaybePurge(MallocContext* ctx, MallocState* av)
    {
        ArenaPurge* ap = MallocContext.Purge(ctx, av);
        long deadline = ap->Deadline;
        if (deadline == 0 || ++ap->Calls < PurgeClockEvery) return;
        ap->Calls = 0;
        long now = ap->Now = PurgeClock();
        if (now >= deadline) PurgeArena(ctx, av, now);
    }

    /// <summary>
    /// Merge the fastbins, then release the pages of every free chunk freed at least
    /// purge_delay ago, and top's beyond top_pad if top has not grown by a free for that
    /// long; schedule the next purge for the oldest that had to wait, but not sooner than an
    /// eighth of the delay from now, so that a stream of frees does not make every slow call
    /// walk the bins. The arena's lock is held.
    /// Returns whether anything was released.
    /// </summary>
    internal static bool PurgeArena(MallocContext* ctx, MallocState* av, long now)
    {
        MallocParams* mp = &ctx->Mp;
        long delay = mp->PurgeDelayMs;
        ArenaPurge* ap = MallocContext.Purge(ctx, av);
        ap->Deadline = 0;
        if (now > ap->Now) ap->Now = now;
        if (delay < 0) return false;
        // Fastbin chunks never merge by themselves, and each keeps its page resident: merged
        // here (as malloc_trim merges them), they join the free chunks this pass stamps and a
        // later one releases; ended threads leave many of them behind (docs/decisions.md).
        if (av->HaveFastchunks != 0) MallocConsolidate(ctx, av);
        long next = long.MaxValue;
        bool released = false;
        nuint minSize = PurgeMinSize;
        // The unsorted bin and the large bins: small bins hold chunks under 1 KiB.
        for (int i = 1; i < BinIndex.NBins; i++)
        {
            if (i != 1 && i < BinIndex.NSmallBins) continue;
            Chunk* bin = MallocState.BinAt(av, i);
            for (Chunk* p = bin->Bk; p != bin; p = p->Bk)
            {
                // The purge may run from a timer, where nothing else has looked at the list:
                // a link overwritten by a use after free is reported, not followed.
                // (A bin's head is a field of the arena, not a chunk: it need not be aligned as one.)
                Chunk* bk;
                if (Chunk.Misaligned(p) || !MallocContext.OwnsHeapChunk(ctx, p)
                    || ((bk = p->Bk) != bin && (Chunk.Misaligned(bk) || !MallocContext.OwnsHeapChunk(ctx, bk))) || bk->Fd != p)
                    MallocPrinterr.Raise("malloc_trim(): corrupted double-linked list (purge)", Chunk.ToMem(p));
                if (Chunk.SizeOf(p) < minSize) continue;
                long* stamp = (long*)((byte*)p + StampOffset);
                long at = *stamp;
                if (at == Purged) continue;
                if (at > now) at = *stamp = now; // not a stamp (set before purging was on): count from now
                if (now - at >= delay)
                    released |= PurgeChunk(ctx, p);
                else if (at + delay < next)
                {
                    next = at + delay;
                }
            }
        }
        if (ap->TopFreedAt != 0)
        {
            if (now - ap->TopFreedAt >= delay)
            {
                ap->TopFreedAt = 0;
                released |= TrimTop(ctx, av, mp->TopPad);
            }
            else if (ap->TopFreedAt + delay < next)
            {
                next = ap->TopFreedAt + delay;
            }
        }
        if (next != long.MaxValue) Schedule(ctx, av, Math.Max(next, now + delay / 8));
        return released;
    }

    /// <summary>Give back top's pages beyond <paramref name="pad"/>, whatever the trim threshold: on the break or on heaps.</summary>
    private static bool TrimTop(MallocContext* ctx, MallocState* av, nuint pad)
    {
        if (av->Top == MallocState.InitialTop(av)) return false;
        if (OnHeaps(ctx, av))
        {
            HeapHeader* heap = HeapHeader.For(av->Top);
            Debug.Assert(heap->Arena == av);
            return HeapTrim(ctx, heap, pad, belowThreshold: true);
        }
        return Systrim(ctx, pad, av);
    }
}
