using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Diagnostics;

/// <summary>
/// The full heap check (glibc's do_check_malloc_state, and a walk of every chunk, which glibc
/// cannot do): boundary tags of every chunk in every region the arena owns, every bin's links,
/// sizes and order, the large bins' size skip list, the binmap, the fastbins, the tcache and
/// top. The first inconsistency raises <see cref="HeapCorruptionException"/>.
/// </summary>
internal static unsafe class HeapCheck
{
    /// <summary>Check every arena (each under its lock) and the calling thread's tcache.</summary>
    internal static void Run(MallocContext* ctx, Tcache* tcache)
    {
        MallocState* av = &ctx->Main;
        do
        {
            FutexLock.Enter(&av->Mutex);
            try { CheckArena(ctx, av); }
            finally { FutexLock.Exit(&av->Mutex); }
            av = av->Next;
        }
        while (av != &ctx->Main);
        CheckTcache(ctx, tcache);
    }

    private static void CheckArena(MallocContext* ctx, MallocState* av)
    {
        Chunk* top = av->Top;
        bool started = top != MallocState.InitialTop(av);
        if (started)
        {
            if (Chunk.SizeOf(top) < Chunk.MinSize) Fail("top smaller than MINSIZE", top);
            if (!Chunk.IsPrevInuse(top)) Fail("top's PREV_INUSE is clear (a free chunk before top)", top);
            if (Chunk.Misaligned(Chunk.ToMem(top))) Fail("top misaligned", top);
        }

        nuint limit = av->SystemMem / Chunk.MinSize + 1;
        bool onHeaps = Ptmalloc.OnHeaps(ctx, av);
        bool complete = onHeaps || ctx->Segments.Overflowed == 0;
        nuint freeInWalk = WalkRegions(ctx, av, top, started, onHeaps, complete);
        nuint freeInBins = CheckBins(av, limit);
        CheckFastbins(ctx, av, limit);
        if (complete && freeInWalk != freeInBins)
            Fail($"{freeInWalk} free chunks in the heap but {freeInBins} in the bins", top);
    }

    /// <summary>
    /// Walk every region of the arena: each heap (newest first) to top or to its fencepost,
    /// each run of the break to top or to its fencepost pair. Returns the free chunks seen.
    /// </summary>
    private static nuint WalkRegions(MallocContext* ctx, MallocState* av, Chunk* top, bool started, bool onHeaps, bool complete)
    {
        nuint free = 0;
        bool topSeen = !started;
        foreach (ArenaRegion r in ArenaRegions.Of(ctx, av))
        {
            HeapHeader* h = r.Heap;
            if (h != null && h->Arena != av) Fail("heap header names another arena", h);
            // A heap's walk is bounded by its end, a break run's by the arena's memory (WalkRegion's total).
            free += WalkRegion(av, r.FirstChunk, top, h != null ? r.End : null, out bool reachedTop);
            if (h != null && reachedTop != (h == HeapHeader.For(top))) Fail("top is not at the end of the newest heap", h);
            topSeen |= reachedTop;
        }
        if (!onHeaps && complete && !topSeen) Fail("top is in no region the arena owns", top);
        return free;
    }

    /// <summary>
    /// Walk chunks from <paramref name="first"/> to top or to a fencepost (a 16-byte chunk, or a
    /// 0-byte one on heaps), checking boundary tags; returns the free chunks seen.
    /// </summary>
    private static nuint WalkRegion(MallocState* av, Chunk* first, Chunk* top, byte* end, out bool reachedTop)
    {
        nuint free = 0;
        bool prevFree = false;
        nuint walked = 0;
        reachedTop = false;
        for (var c = new RegionChunks(first, top, end); c.MoveNext();)
        {
            Chunk* p = c.Current;
            nuint size = c.Size;
            if (Chunk.Misaligned(Chunk.ToMem(p))) Fail("chunk misaligned", p);
            switch (c.Kind)
            {
                case RegionChunk.PastEnd:
                    Fail("chunks run past the heap's end", p);
                    break;
                case RegionChunk.Top:
                    if (prevFree) Fail("free chunk before top", p);
                    reachedTop = true;
                    return free;
                case RegionChunk.Fencepost when size == 0:
                    return free; // the end of a heap
                case RegionChunk.Fencepost when size == Chunk.HeaderSize:
                    // A fencepost: two header-sized chunks on the break, or one before a 0-size one on a heap.
                    nuint next = Chunk.At(p, Chunk.HeaderSize)->Size;
                    if (next != (Chunk.HeaderSize | Chunk.PrevInuse) && next != (0 | Chunk.PrevInuse)) Fail("broken fencepost", p);
                    return free;
            }
            if (size < Chunk.MinSize || (size & Chunk.AlignMask) != 0) Fail("invalid chunk size", p);
            if (Chunk.IsMapped(p)) Fail("IS_MMAPPED set on a heap chunk", p);
            if (Chunk.IsPrevInuse(p) == prevFree) Fail(prevFree
                ? "PREV_INUSE set after a free chunk"
                : "PREV_INUSE clear after a chunk in use", p);
            walked += size;
            if (walked > av->SystemMem) Fail("chunk sizes run past the arena's memory", p);
            Chunk* next2 = Chunk.At(p, size);
            bool isFree = !Chunk.IsPrevInuse(next2);
            if (isFree)
            {
                if (prevFree) Fail("two free chunks side by side (not merged)", p);
                if (next2->PrevSize != size) Fail("free chunk's foot differs from its size", p);
                free++;
            }
            prevFree = isFree;
        }
        return free;
    }

    private static nuint CheckBins(MallocState* av, nuint limit)
    {
        nuint total = 0;
        for (int i = 1; i < BinIndex.NBins; i++)
        {
            Chunk* bin = MallocState.BinAt(av, i);
            Chunk* prev = bin;
            nuint count = 0;
            nuint lastSize = nuint.MaxValue;
            for (Chunk* p = bin->Fd; p != bin; prev = p, p = p->Fd)
            {
                if (++count > limit) Fail($"bin {i} does not end (a cycle)", bin);
                if (Chunk.Misaligned(Chunk.ToMem(p))) Fail($"misaligned chunk in bin {i}", p);
                if (p->Bk != prev) Fail($"bin {i}: bk does not point back", p);
                nuint size = Chunk.SizeOf(p);
                if (!(size >= Chunk.MinSize && (size & Chunk.AlignMask) == 0)) Fail($"bin {i}: invalid size", p);
                if (Chunk.InUse(p)) Fail($"bin {i}: chunk is marked in use", p);
                if (Chunk.Next(p)->PrevSize != size) Fail($"bin {i}: foot differs from size", p);
                if (!Chunk.IsPrevInuse(p)) Fail($"bin {i}: chunk follows a free chunk", p);
                if (i == 1) continue;
                if (BinIndex.Bin(size) != i) Fail($"chunk of size {size} in bin {i}", p);
                if (!BinIndex.InSmallbinRange(size))
                {
                    if (size > lastSize) Fail($"large bin {i} not sorted by size", p);
                    // The first chunk of each size is on the skip list; the others are not.
                    bool first = size != lastSize;
                    if (!(first == (p->FdNextsize != null))) Fail(first
                        ? $"large bin {i}: first chunk of a size is off the nextsize list"
                        : $"large bin {i}: second chunk of a size is on the nextsize list", p);
                    if (first)
                    {
                        if (!(p->FdNextsize->BkNextsize == p && p->BkNextsize->FdNextsize == p)) Fail($"large bin {i}: nextsize links do not point back", p);
                    }
                    lastSize = size;
                }
            }
            if (bin->Bk != prev) Fail($"bin {i}: head's bk is not the last chunk", bin);
            if (count != 0 && i > 1)
                if (!MallocState.BinMarked(av, i)) Fail($"bin {i} holds chunks but its binmap bit is clear", bin);
            total += count;
        }
        return total;
    }

    private static void CheckFastbins(MallocContext* ctx, MallocState* av, nuint limit)
    {
        for (int i = 0; i < BinIndex.NFastBins; i++)
        {
            nuint count = 0;
            for (Chunk* p = *MallocState.Fastbin(av, i); p != null; p = Chunk.Reveal(&p->Fd))
            {
                if (++count > limit) Fail($"fastbin {i} does not end (a cycle)", p);
                if (Chunk.Misaligned(p)) Fail($"misaligned chunk in fastbin {i}", p);
                nuint size = Chunk.SizeOf(p);
                if (!(BinIndex.Fastbin(size) == i && size <= ctx->Mp.MaxFast)) Fail($"chunk of size {size} in fastbin {i}", p);
                if (!Chunk.InUse(p)) Fail($"fastbin {i}: chunk not marked in use", p);
                if (av->HaveFastchunks == 0) Fail("fastbin chunks while have_fastchunks is clear", p);
            }
        }
    }

    private static void CheckTcache(MallocContext* ctx, Tcache* tc)
    {
        if (tc == null) return;
        nuint bytes = 0;
        for (nuint i = 0; i < BinIndex.TcacheMaxBins; i++)
        {
            nuint count = 0;
            for (TcacheEntry* e = *Tcache.Head(tc, i); e != null; e = Chunk.Reveal(&e->Next))
            {
                if (++count > MallocParams.MaxTcacheCount) Fail($"tcache bin {i} does not end (a cycle)", e);
                if (Chunk.Misaligned(e)) Fail($"misaligned chunk in tcache bin {i}", e);
                Chunk* p = Chunk.FromMem(e);
                if (BinIndex.Tcache(Chunk.SizeOf(p)) != i) Fail($"chunk of size {Chunk.SizeOf(p)} in tcache bin {i}", p);
                if (e->Key != ctx->TcacheKey) Fail($"tcache bin {i}: entry lost its key", e);
                if (!Chunk.InUse(p)) Fail($"tcache bin {i}: chunk not marked in use", p);
            }
            if (count != tc->Counts[i]) Fail($"tcache bin {i} holds {count} chunks but counts {tc->Counts[i]}", tc);
            bytes += count * BinIndex.TcacheChunkSize(i);
        }
        if (ctx->Mp.TcacheHasLarge != 0)
        {
            for (nuint k = 0; k < BinIndex.TcacheLargeBins; k++)
            {
                nuint count = 0, binBytes = 0, last = 0;
                for (TcacheEntry* e = *Tcache.LargeHead(tc, k); e != null; e = Chunk.Reveal(&e->Next))
                {
                    if (++count > Tcache.LargeBinCount) Fail($"large tcache bin {k} holds more than {Tcache.LargeBinCount} (a cycle?)", e);
                    if (Chunk.Misaligned(e)) Fail($"misaligned chunk in large tcache bin {k}", e);
                    Chunk* p = Chunk.FromMem(e);
                    nuint size = Chunk.SizeOf(p);
                    if (size < BinIndex.TcacheChunkSize(BinIndex.TcacheMaxBins) || BinIndex.TcacheLarge(size) != k)
                        Fail($"chunk of size {size} in large tcache bin {k}", p);
                    if (size < last) Fail($"large tcache bin {k} not sorted by size", p);
                    if (e->Key != ctx->TcacheKey) Fail($"large tcache bin {k}: entry lost its key", e);
                    if (!Chunk.InUse(p)) Fail($"large tcache bin {k}: chunk not marked in use", p);
                    last = size;
                    binBytes += size;
                }
                if (count != tc->LargeCounts[k]) Fail($"large tcache bin {k} holds {count} chunks but counts {tc->LargeCounts[k]}", tc);
                if (binBytes != tc->LargeBytes[k]) Fail($"large tcache bin {k} holds {binBytes} bytes but counts {tc->LargeBytes[k]}", tc);
                bytes += binBytes;
            }
        }
        // NativeHeap's byte count (tcache_bytes bounds it) must be the sum of what is cached.
        if (bytes != tc->Bytes) Fail($"the tcache holds {bytes} bytes of chunks but counts {tc->Bytes}", tc);
    }

    // Callers test first and build the message only on failure: the check runs after every
    // operation in checked mode.
    private static void Fail(string what, void* address) =>
        MallocPrinterr.Raise("heap check: " + what, address);
}
