using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    // The tcache's policy: what is cached, when, how many and how many bytes, and how cached
    // chunks go back to their arenas. The structure and its lists' steps (those libnativeheap's
    // C fast paths repeat among them) are Bins/Tcache.cs; the fast paths are Heap.Calls.cs.

    /// <summary>MAYBE_INIT_TCACHE: the thread's first call makes its tcache.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MaybeInitTcache(MallocContext* ctx, ref ThreadLocals ts)
    {
        if (ts.Tcache == null) TcacheInit(ctx, ref ts);
    }

    /// <summary>tcache_init: the tcache is a chunk of the thread's arena.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void TcacheInit(MallocContext* ctx, ref ThreadLocals ts)
    {
        if (ts.TcacheShutDown || ts.TcacheInitializing) return;
        ts.TcacheInitializing = true;
        try
        {
            nuint bytes = ctx->Mp.TcacheHasLarge != 0 ? (nuint)sizeof(Tcache) : Tcache.GlibcSize;
            MallocState* av = ArenaGet(ctx, ref ts, bytes);
            void* victim;
            try
            {
                victim = IntMalloc(ctx, av, null, bytes);
                if (victim == null)
                {
                    av = ArenaGetRetry(ctx, ref ts, av, bytes);
                    victim = av == null ? null : IntMalloc(ctx, av, null, bytes);
                }
            }
            finally
            {
                if (av != null) FutexLock.Exit(&av->Mutex);
            }
            if (victim == null) return;
            NativeMemory.Clear(victim, bytes);
            ts.Tcache = (Tcache*)victim;
        }
        finally
        {
            ts.TcacheInitializing = false;
        }
    }

    /// <summary>
    /// tcache_try_malloc: a cached chunk of size <paramref name="nb"/> from a small bin, or one
    /// of exactly that size from a large bin (glibc 2.42-2.43); null when there is none.
    /// </summary>
    private static void* TcacheTryGet(MallocContext* ctx, Tcache* tc, nuint nb)
    {
        if (tc == null) return null;
        MallocParams* mp = &ctx->Mp;
        nuint tcIdx = BinIndex.Tcache(nb);
        if (tcIdx < mp->TcacheBins)
            return tc->Counts[tcIdx] > 0 ? Tcache.Get(tc, tcIdx) : null;
        return tcIdx >= BinIndex.TcacheMaxBins && nb < mp->TcacheLargeLimit ? Tcache.GetLarge(tc, BinIndex.TcacheLarge(nb), nb) : null;
    }

    /// <summary>
    /// calloc's tcache step (glibc 2.41, calloc_tcache): a cached chunk of the size, all of it
    /// cleared (a cached chunk held someone's data); false when the option is off or none is cached.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TcacheTryCalloc(MallocContext* ctx, ref ThreadLocals ts, nuint bytes, out void* cached)
    {
        nuint tbytes;
        cached = null;
        if (ctx->Mp.CallocFromTcache != 0 && (tbytes = Chunk.CheckedRequestToSize(bytes)) != 0)
        {
            cached = TcacheTryGet(ctx, ts.Tcache, tbytes);
            if (cached != null)
            {
                NativeMemory.Clear(cached, Chunk.SizeOf(Chunk.FromMem(cached)) - Chunk.SizeSz);
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// memalign's tcache step (glibc 2.39, memalign_tcache): a cached chunk of the size whose
    /// memory is already aligned to <paramref name="alignment"/>. A thread without a tcache yet
    /// has nothing cached: none is made for the lookup.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TcacheTryMemalign(MallocContext* ctx, ref ThreadLocals ts, nuint alignment, nuint bytes, out void* cached)
    {
        cached = null;
        if (ctx->Mp.MemalignTcache != 0)
        {
            nuint nb = Chunk.CheckedRequestToSize(bytes);
            nuint tcIdx = BinIndex.Tcache(nb);
            if (nb != 0 && ts.Tcache != null && tcIdx < ctx->Mp.TcacheBins
                && (cached = Tcache.TakeAligned(ts.Tcache, tcIdx, alignment)) != null)
                return true;
        }
        return false;
    }

    /// <summary>
    /// _int_free's tcache step: cache the chunk in the thread's tcache if its bin has room.
    /// A chunk that carries the tcache key is looked for in its bin first: found, it is a
    /// double free; not found, its user data only looked like the key. When only the byte
    /// bound stands in the way and no arena lock is held (<paramref name="mayEvict"/>), the
    /// largest cached chunks go back to their arenas first (see <see cref="TcacheEvict"/>).
    /// </summary>
    private static bool TryTcachePut(MallocContext* ctx, Tcache* tc, Chunk* p, nuint size, bool mayEvict)
    {
        MallocParams* mp = &ctx->Mp;
        nuint tcIdx = BinIndex.Tcache(size);
        if (tc == null) return false;
        if (tcIdx >= mp->TcacheBins)
            return tcIdx >= BinIndex.TcacheMaxBins && size < mp->TcacheLargeLimit && TryTcachePutLarge(ctx, tc, p, size, mayEvict);
        var e = (TcacheEntry*)Chunk.ToMem(p);
        if (e->Key == ctx->TcacheKey) TcacheDoubleFreeWalk(ctx, tc, tcIdx, e);
        if (tc->Counts[tcIdx] >= mp->TcacheCount)
        {
            if (mp->TcacheFlush == 0 || !mayEvict || mp->TcacheCount < 2) return false;
            void* bad = TcacheFlushBin(ctx, tc, tcIdx, mp->TcacheCount / 2);
            if (bad != null)
            {
                // Reported once the chunk is cached: the free itself is done.
                Tcache.Put(tc, p, tcIdx, ctx->TcacheKey);
                MallocPrinterr.Raise("free(): unaligned chunk detected in tcache 2", bad);
            }
        }
        if (!Tcache.HasRoom(tc, tcIdx, mp->TcacheCount, mp->TcacheBytes))
        {
            if (!mayEvict) return false;
            TcacheEvict(ctx, tc, mp->TcacheBytes - mp->TcacheBytes / 4);
        }
        Tcache.Put(tc, p, tcIdx, ctx->TcacheKey);
        return true;
    }

    /// <summary>
    /// The tcache step for a chunk of 1056 bytes or more (glibc 2.42's large bins, bounded as
    /// the small ones and to <see cref="Tcache.LargeBinCount"/> a bin). A chunk over a quarter
    /// of tcache_bytes is not cached: making room for it would empty the cache.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool TryTcachePutLarge(MallocContext* ctx, Tcache* tc, Chunk* p, nuint size, bool mayEvict)
    {
        MallocParams* mp = &ctx->Mp;
        nuint k = BinIndex.TcacheLarge(size);
        var e = (TcacheEntry*)Chunk.ToMem(p);
        if (e->Key == ctx->TcacheKey && Tcache.HoldsLarge(tc, k, e, size))
            MallocPrinterr.Raise("free(): double free detected in tcache 2", e);
        if (tc->LargeCounts[k] >= Math.Min(mp->TcacheCount, Tcache.LargeBinCount) || size > mp->TcacheBytes / 4) return false;
        if (tc->Bytes + size > mp->TcacheBytes)
        {
            if (!mayEvict) return false;
            TcacheEvict(ctx, tc, mp->TcacheBytes - mp->TcacheBytes / 4);
        }
        Tcache.PutLarge(tc, p, k, size, ctx->TcacheKey);
        return true;
    }

    /// <summary>A chunk that carries the key: raise if it is in its bin (or the bin is broken), else return.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // rare: kept out of free's inlined path
    private static void TcacheDoubleFreeWalk(MallocContext* ctx, Tcache* tc, nuint tcIdx, TcacheEntry* e)
    {
        nuint count = 0;
        for (TcacheEntry* tmp = *Tcache.Head(tc, tcIdx); tmp != null; tmp = Chunk.Reveal(&tmp->Next), count++)
        {
            if (count >= ctx->Mp.TcacheCount)
                MallocPrinterr.Raise("free(): too many chunks detected in tcache", e);
            if (Chunk.Misaligned(tmp))
            {
                Tcache.Quarantine(tc, tcIdx);
                MallocPrinterr.Raise("free(): unaligned chunk detected in tcache 2", tmp);
            }
            if (tmp == e)
                MallocPrinterr.Raise("free(): double free detected in tcache 2", e);
        }
    }

    /// <summary>
    /// The tcache byte bound's flush: return cached chunks to their arenas, from the largest
    /// bin down, until the tcache holds at most <paramref name="target"/> bytes. Largest first
    /// because they free the most memory per chunk and, in a size-mixed workload, are the
    /// fewest calls to refill; a quarter of headroom makes the next flush wait a while. No
    /// arena lock may be held: each chunk takes its own arena's.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void TcacheEvict(MallocContext* ctx, Tcache* tc, nuint target)
    {
        ReturnLargeCached(ctx, tc, target);
        for (nuint i = BinIndex.TcacheMaxBins; i-- > 0 && tc->Bytes > target;)
        {
            TcacheEntry** head = Tcache.Head(tc, i);
            while (*head != null && tc->Bytes > target)
                FreeInArena(ctx, null, Chunk.FromMem(Tcache.Take(tc, i, "tcache_thread_shutdown(): unaligned tcache chunk detected")));
        }
    }

    /// <summary>Return the large bins' chunks to their arenas, largest bin first, until the tcache holds at most <paramref name="target"/> bytes.</summary>
    private static void ReturnLargeCached(MallocContext* ctx, Tcache* tc, nuint target)
    {
        if (ctx->Mp.TcacheHasLarge == 0) return; // a glibc-2.36 tcache has no large bins: that memory is not its own
        for (nuint k = BinIndex.TcacheLargeBins; k-- > 0 && tc->Bytes > target;)
        {
            while (*Tcache.LargeHead(tc, k) != null && tc->Bytes > target)
                FreeInArena(ctx, null, Chunk.FromMem(Tcache.TakeLarge(tc, k)));
        }
    }

    /// <summary>
    /// tcache_flush (NativeHeap's): a free into a full bin first returns the bin's older
    /// entries, all but its <paramref name="keep"/> newest (0: all of them, for a drain), to their arenas, as jemalloc's
    /// tcache flush does; the chunk then stays cached. glibc sends the one chunk to its arena
    /// on each such free, paying a slow call and an atomic push (or the arena lock) per
    /// chunk; here a run of one arena's chunks costs one push, or one lock. Each fastbin ends
    /// as if the run's chunks had reached it one by one, in the order the program freed them.
    /// No arena lock may be held.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* TcacheFlushBin(MallocContext* ctx, Tcache* tc, nuint idx, nuint keep)
    {
        Debug.Assert(keep < tc->Counts[idx]);
        nuint size = BinIndex.TcacheChunkSize(idx);
        TcacheEntry** head = Tcache.Head(tc, idx);
        TcacheEntry* e = *head;
        if (keep == 0)
        {
            *head = null;
        }
        else
        {
            // Cut after the keep-th entry; the count says more follow, so a missing or misaligned
            // link is a write after free, and a bin that cannot be walked is dropped (Quarantine).
            TcacheEntry* cut = e;
            for (nuint i = 1; ; i++)
            {
                e = Chunk.Reveal(&cut->Next);
                if (e == null || Chunk.Misaligned(e))
                {
                    Tcache.Quarantine(tc, idx);
                    return e != null ? e : cut;
                }
                if (i == keep) break;
                cut = e;
            }
            cut->Next = Chunk.Protect<TcacheEntry>(&cut->Next, null);
        }
        nuint n = tc->Counts[idx] - keep;
        tc->Counts[idx] = (ushort)keep;
        tc->Bytes -= n * size;

        bool fast = size <= ctx->Mp.MaxFast;
        int fbIdx = BinIndex.Fastbin(size);
        MallocState* av = null; // the arena whose run is being built (fast), or whose lock is held
        Chunk* top = null, bottom = null;
        void* bad = null;
        try
        {
            for (; n > 0; n--)
            {
                // The entry's link is the chunk's fd: read it before the chunk is relinked.
                TcacheEntry* next = null;
                if (n > 1 && ((next = Chunk.Reveal(&e->Next)) == null || Chunk.Misaligned(next)))
                {
                    bad = next != null ? next : e; // the rest of the run is lost, as a quarantined bin's
                    n = 1;
                }
                e->Key = 0;
                Chunk* p = Chunk.FromMem(e);
                if ((p->Size & ~(Chunk.PrevInuse | Chunk.NonMainArena)) != size)
                {
                    // Not the bin's size any more (overwritten): _int_free alone says what it is.
                    if (!fast) Unlock(ref av);
                    FreeInArena(ctx, null, p);
                }
                else if (fast)
                {
                    MallocState* pav = ArenaFor(ctx, p);
                    if (pav != av) PushRun(av, ref top, bottom, fbIdx);
                    av = pav;
                    FastbinCheckNext(ctx, av, p, size, haveLock: false);
                    // Newest on top: the bin ends as if the program's frees had reached it one by one.
                    if (top == null) top = p;
                    else bottom->Fd = Chunk.Protect(&bottom->Fd, p);
                    bottom = p;
                }
                else
                {
                    MallocState* pav = ArenaFor(ctx, p);
                    if (pav != av)
                    {
                        Unlock(ref av);
                        FutexLock.Enter(&pav->Mutex);
                        av = pav;
                    }
                    IntFreeLocked(ctx, av, p, size, trim: true);
                }
                e = next;
            }
        }
        finally
        {
            if (fast) PushRun(av, ref top, bottom, fbIdx);
            else Unlock(ref av);
        }
        return bad;

        static void Unlock(ref MallocState* av)
        {
            if (av != null) FutexLock.Exit(&av->Mutex);
            av = null;
        }

        // Once only, even when the push raises: the finally must not push it again.
        static void PushRun(MallocState* av, ref Chunk* top, Chunk* bottom, int fbIdx)
        {
            Chunk* t = top;
            top = null;
            if (t != null) FastbinPushRun(av, fbIdx, t, bottom, haveLock: false);
        }
    }

    /// <summary>
    /// Return every chunk in the calling thread's tcache to its arena (as glibc's
    /// tcache_thread_shutdown, keeping the tcache), so that a change of the tcache's shape
    /// leaves no chunk stranded in a bin it no longer uses. Other threads' tcaches keep theirs
    /// until those threads end.
    /// </summary>
    internal static void FlushTcache(MallocContext* ctx, ref ThreadLocals ts)
    {
        if (ts.Tcache != null) DrainTcache(ctx, ts.Tcache);
    }

    /// <summary>
    /// The loop of tcache_thread_shutdown: every cached chunk back to its arena, in glibc's
    /// order; with tcache_flush each bin as runs (one push or one lock per arena, not per
    /// chunk: a new thread releasing an ended one's full tcache paid a lock per chunk).
    /// </summary>
    private static void DrainTcache(MallocContext* ctx, Tcache* tc)
    {
        const string Unaligned = "tcache_thread_shutdown(): unaligned tcache chunk detected";
        void* bad = null; // a broken bin is reported once the others are back
        for (nuint i = 0; i < BinIndex.TcacheMaxBins; i++)
        {
            if (ctx->Mp.TcacheFlush != 0)
            {
                void* broken = tc->Counts[i] != 0 ? TcacheFlushBin(ctx, tc, i, 0) : null;
                if (bad == null) bad = broken;
                continue;
            }
            while (*Tcache.Head(tc, i) != null)
                FreeInArena(ctx, null, Chunk.FromMem(Tcache.Take(tc, i, Unaligned)));
        }
        ReturnLargeCached(ctx, tc, 0);
        if (bad != null) MallocPrinterr.Raise(Unaligned, bad);
    }

    /// <summary>The largest request the small tcache bins serve (1032), tcache_max's bound without large bins.</summary>
    internal static nuint MaxTcacheSmall => BinIndex.TcacheUsableSize(BinIndex.TcacheMaxBins - 1);

    /// <summary>do_set_tcache_max's bound (glibc 2.43): the largest request whose chunk is below 4 MiB.</summary>
    internal static nuint MaxTcacheLarge => ((nuint)1 << (10 + BinIndex.TcacheLargeBins)) - Chunk.Alignment - Chunk.SizeSz;

    // OptionTable's stores for the tcache's options (their ranges are the table's).

    internal static void StoreTcacheCount(MallocParams* mp, long value) => mp->TcacheCount = (nuint)value;

    /// <summary>tcache_max: the small bins up to the request's, or all of them and the large bins up to its chunk size.</summary>
    internal static void StoreTcacheMax(MallocParams* mp, long value)
    {
        nuint nb = Chunk.RequestToSize((nuint)value);
        mp->TcacheMaxBytes = (nuint)value;
        mp->TcacheBins = (nuint)value > MaxTcacheSmall ? BinIndex.TcacheMaxBins : BinIndex.TcacheForRequest((nuint)value) + 1;
        mp->TcacheLargeLimit = (nuint)value > MaxTcacheSmall ? nb + 1 : 0;
    }

    internal static void StoreTcacheUnsortedLimit(MallocParams* mp, long value) => mp->TcacheUnsortedLimit = (nuint)value;
    internal static void StoreTcacheBytes(MallocParams* mp, long value) => mp->TcacheBytes = value == 0 ? nuint.MaxValue : (nuint)value;
    internal static void StoreCallocTcache(MallocParams* mp, long value) => mp->CallocFromTcache = (int)value;
    internal static void StoreTrimTcache(MallocParams* mp, long value) => mp->TrimTcache = (int)value;
    internal static void StoreTcacheFlush(MallocParams* mp, long value) => mp->TcacheFlush = (int)value;
    internal static void StoreMemalignTcache(MallocParams* mp, long value) => mp->MemalignTcache = (int)value;
}
