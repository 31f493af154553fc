using System.Diagnostics;
using System.Runtime.CompilerServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    /// <summary>
    /// _int_free: return chunk <paramref name="p"/> to arena <paramref name="av"/>: to the tcache
    /// if its bin has room, else to a fastbin if small, else merged with free neighbours into
    /// the unsorted bin or top; a merged chunk of 64 KiB or more consolidates the fastbins
    /// and may trim the top. Without <paramref name="haveLock"/>, the arena's lock is taken
    /// after the tcache step; a null <paramref name="av"/> is the chunk's own arena. Without
    /// <paramref name="trim"/> nothing is trimmed: sysmalloc frees the old top that way,
    /// because the new top is about to serve the request it grew for.
    /// </summary>
    internal static void IntFree(MallocContext* ctx, MallocState* av, Tcache* tc, Chunk* p, bool haveLock = true, bool trim = true)
    {
        nuint size = Chunk.SizeOf(p);

        // Sizes that wrap around the address space, or misaligned chunks, cannot be ours.
        if ((nuint)p > (nuint)(-(nint)size) || Chunk.Misaligned(p))
            MallocPrinterr.Raise("free(): invalid pointer", Chunk.ToMem(p));
        if (size < Chunk.MinSize || (size & Chunk.AlignMask) != 0)
            MallocPrinterr.Raise("free(): invalid size", Chunk.ToMem(p));

        if (TryTcachePut(ctx, tc, p, size, mayEvict: !haveLock)) return;
        // Found only now, after the checks: a bad pointer's "heap header" is not read.
        if (av == null) av = ArenaFor(ctx, p);
        // glibc builds with TRIM_FASTBINS 0: a small chunk next to top still goes to a fastbin.
        if (size <= ctx->Mp.MaxFast)
        {
            FastbinPush(ctx, av, p, size, haveLock);
            return;
        }
        if (haveLock)
        {
            IntFreeLocked(ctx, av, p, size, trim);
            return;
        }
        FutexLock.Enter(&av->Mutex);
        try { IntFreeLocked(ctx, av, p, size, trim); }
        finally { FutexLock.Exit(&av->Mutex); }
    }

    /// <summary>
    /// _int_free's fastbin step. Without the arena's lock (the common case from free), the
    /// chunk is pushed with a compare-and-swap, as glibc does: pushes need no lock, because
    /// every pop happens under the lock (see <see cref="FastbinTakeRun"/>).
    /// </summary>
    private static void FastbinPush(MallocContext* ctx, MallocState* av, Chunk* p, nuint size, bool haveLock)
    {
        FastbinCheckNext(ctx, av, p, size, haveLock);
        FastbinPushRun(av, BinIndex.Fastbin(size), p, p, haveLock);
    }

    /// <summary>_int_free's test of a fastbin chunk's next size (and the perturb fill), before the push.</summary>
    private static void FastbinCheckNext(MallocContext* ctx, MallocState* av, Chunk* p, nuint size, bool haveLock)
    {
        Chunk* next = Chunk.At(p, size);
        if (next->Size <= Chunk.HeaderSize || Chunk.SizeOf(next) >= Volatile.Read(ref av->SystemMem))
        {
            // Without the lock this may be a trim half done (system_mem lowered, top not yet):
            // as glibc, test again under the lock before calling it corruption.
            bool fail = true;
            if (!haveLock)
            {
                FutexLock.Enter(&av->Mutex);
                fail = next->Size <= Chunk.HeaderSize || Chunk.SizeOf(next) >= av->SystemMem;
                FutexLock.Exit(&av->Mutex);
            }
            if (fail) MallocPrinterr.Raise("free(): invalid next size (fast)", Chunk.ToMem(p));
        }
        FreePerturb(&ctx->Mp, Chunk.ToMem(p), size - Chunk.HeaderSize);
    }

    /// <summary>
    /// Push the chunks from <paramref name="bottom"/> up to <paramref name="top"/>, already
    /// linked top down through their fd, onto fastbin <paramref name="idx"/> with one
    /// compare-and-swap: the bin ends as if each had been pushed alone, bottom first.
    /// </summary>
    private static void FastbinPushRun(MallocState* av, int idx, Chunk* top, Chunk* bottom, bool haveLock)
    {
        Volatile.Write(ref av->HaveFastchunks, 1);
        Chunk** fb = MallocState.Fastbin(av, idx);
        Chunk* old = (Chunk*)Volatile.Read(ref *(nint*)fb);
        Chunk* seen;
        do
        {
            // Only the top of the bin can be checked cheaply for a double free.
            if (old == bottom)
                MallocPrinterr.Raise("double free or corruption (fasttop)", Chunk.ToMem(bottom));
            seen = old;
            bottom->Fd = Chunk.Protect(&bottom->Fd, old);
            old = (Chunk*)Interlocked.CompareExchange(ref *(nint*)fb, (nint)top, (nint)seen);
        }
        while (old != seen);
        if (haveLock && old != null && BinIndex.Fastbin(Chunk.SizeOf(old)) != idx)
            MallocPrinterr.Raise("invalid fastbin entry (free)", old);
    }

    /// <summary>
    /// REMOVE_FB, for a run: take the first chunk of a fastbin and up to <paramref name="extra"/>
    /// more below it with one compare-and-swap, the arena's lock held; the run stays linked
    /// through its fd. The chunks and their order are those of glibc's pops one by one, with
    /// one atomic operation instead of one a chunk: where another thread frees into this bin,
    /// each was a contended cache line (xmalloc-test). Frees push without the lock, so they
    /// may land above the run meanwhile; pops happen only under the lock, so nothing else
    /// moves below the head (no ABA), and the last pushed chunk is relinked past the run. A
    /// misaligned link ends the run and drops the rest of the bin (<paramref name="bad"/>: the
    /// caller caches the run, then reports it).
    /// </summary>
    private static Chunk* FastbinTakeRun(Chunk** fb, nuint extra, out nuint taken, out Chunk* bad)
    {
        bad = null;
        taken = 0;
        Chunk* victim = (Chunk*)Volatile.Read(ref *(nint*)fb);
        if (victim == null) return null;
        Chunk* last = victim;
        Chunk* rest = Chunk.Reveal(&victim->Fd);
        while (rest != null && !Chunk.Misaligned(rest) && taken < extra)
        {
            last = rest;
            rest = Chunk.Reveal(&rest->Fd);
            taken++;
        }
        if (rest != null && Chunk.Misaligned(rest))
        {
            bad = rest;
            rest = null;
        }
        Chunk* seen = (Chunk*)Interlocked.CompareExchange(ref *(nint*)fb, (nint)rest, (nint)victim);
        Debug.Assert(seen != null, "a fastbin emptied by another popper while this one held the lock");
        if (seen != victim && seen != null)
        {
            Chunk* above = seen;
            Chunk* next;
            for (int steps = 0; (next = Chunk.Reveal(&above->Fd)) != victim; above = next, steps++)
            {
                // Only a write after free of a just-pushed chunk breaks the way down to the run.
                if (next == null || Chunk.Misaligned(next) || steps > 1 << 20)
                {
                    *fb = null;
                    bad = next != null ? next : above;
                    return victim;
                }
            }
            above->Fd = Chunk.Protect(&above->Fd, rest);
        }
        return victim;
    }

    /// <summary>
    /// A chunk met by a walk along fastbin <paramref name="fb"/> (mallinfo, malloc_info): a
    /// misaligned one means the link to it was overwritten. The bin is dropped (its chunks
    /// lost, as elsewhere) and the corruption reported in glibc's words for that walk.
    /// </summary>
    internal static Chunk* FastbinWalked(Chunk** fb, Chunk* p, string message)
    {
        if (p != null && Chunk.Misaligned(p))
        {
            Interlocked.Exchange(ref *(nint*)fb, 0);
            MallocPrinterr.Raise(message, p);
        }
        return p;
    }

    /// <summary>_int_free past the tcache and fastbins, the arena's lock held: merge and bin.</summary>
    private static void IntFreeLocked(MallocContext* ctx, MallocState* av, Chunk* p, nuint size, bool trim)
    {
        MallocParams* mp = &ctx->Mp;

        if (Chunk.IsMapped(p))
        {
            MunmapChunk(ctx, p);
            return;
        }

        Chunk* nextchunk = Chunk.At(p, size);
        if (p == av->Top)
            MallocPrinterr.Raise("double free or corruption (top)", Chunk.ToMem(p));
        if (MallocState.Contiguous(av) && (byte*)nextchunk >= (byte*)av->Top + Chunk.SizeOf(av->Top))
            MallocPrinterr.Raise("double free or corruption (out)", Chunk.ToMem(p));
        if (!Chunk.IsPrevInuse(nextchunk))
            MallocPrinterr.Raise("double free or corruption (!prev)", Chunk.ToMem(p));
        nuint nextsize = Chunk.SizeOf(nextchunk);
        if (nextchunk->Size <= Chunk.HeaderSize || nextsize >= av->SystemMem)
            MallocPrinterr.Raise("free(): invalid next size (normal)", Chunk.ToMem(p));

        FreePerturb(mp, Chunk.ToMem(p), size - Chunk.HeaderSize);
        size = MergeChunk(ctx, av, p, size, nextchunk, nextsize, "corrupted size vs. prev_size while consolidating", out p);

        if (size >= MallocParams.FastbinConsolidationThreshold) ConsolidateAndTrim(ctx, av, trim);
        // Not while sysmalloc frees the old top: a purge of top could take the new heap (as above).
        if (trim) MaybePurge(ctx, av);
    }

    /// <summary>_int_free after a merge of 64 KiB or more: consolidate the fastbins, and trim top if it passed the threshold.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ConsolidateAndTrim(MallocContext* ctx, MallocState* av, bool trim)
    {
        MallocParams* mp = &ctx->Mp;
        if (av->HaveFastchunks != 0) MallocConsolidate(ctx, av);
        if (!OnHeaps(ctx, av))
        {
            if (trim && Chunk.SizeOf(av->Top) >= mp->TrimThreshold) Systrim(ctx, mp->TopPad, av);
        }
        else
        {
            // glibc trims here even while sysmalloc frees the old top: heap_trim then
            // deletes the heap just made for the request (it holds nothing but top), or
            // shrinks it below the request, and malloc fails with memory to spare.
            HeapHeader* heap = HeapHeader.For(av->Top);
            Debug.Assert(heap->Arena == av);
            if (trim) HeapTrim(ctx, heap, mp->TopPad);
        }
    }

    /// <summary>
    /// The merge step shared by free and consolidation: join free chunk <paramref name="p"/>
    /// with a free previous chunk and a free next chunk, then put the result at the front of
    /// the unsorted bin, or make it the top if it touches top. Returns the merged size.
    /// </summary>
    private static nuint MergeChunk(MallocContext* ctx, MallocState* av, Chunk* p, nuint size, Chunk* nextchunk, nuint nextsize,
        string prevSizeMessage, out Chunk* merged)
    {
        if (!Chunk.IsPrevInuse(p))
        {
            nuint prevsize = p->PrevSize;
            size += prevsize;
            p = Chunk.At(p, -(nint)prevsize);
            if (Chunk.SizeOf(p) != prevsize)
                MallocPrinterr.Raise(prevSizeMessage, p);
            UnlinkChunk(av, p);
        }

        if (nextchunk != av->Top)
        {
            if (!Chunk.InuseBitAt(nextchunk, nextsize))
            {
                UnlinkChunk(av, nextchunk);
                size += nextsize;
            }
            else
            {
                Chunk.ClearInuseBitAt(nextchunk, 0);
            }

            Chunk* bck = MallocState.Unsorted(av);
            Chunk* fwd = bck->Fd;
            if (fwd->Bk != bck)
                MallocPrinterr.Raise("free(): corrupted unsorted chunks", fwd);
            p->Fd = fwd;
            p->Bk = bck;
            if (!BinIndex.InSmallbinRange(size))
                p->FdNextsize = p->BkNextsize = null;
            bck->Fd = p;
            fwd->Bk = p;
            Chunk.SetHead(p, size | Chunk.PrevInuse);
            Chunk.SetFoot(p, size);
            PurgeMarkFree(ctx, av, p, size);
        }
        else
        {
            size += nextsize;
            Chunk.SetHead(p, size | Chunk.PrevInuse);
            av->Top = p;
            PurgeMarkTop(ctx, av);
        }
        merged = p;
        return size;
    }

    /// <summary>
    /// malloc_consolidate: empty every fastbin, merging each chunk with its free neighbours
    /// into the unsorted bin or top. Runs before large requests, on big frees and on trim.
    /// </summary>
    internal static void MallocConsolidate(MallocContext* ctx, MallocState* av)
    {
        av->HaveFastchunks = 0;
        for (int i = 0; i < BinIndex.NFastBins; i++)
        {
            Chunk** fb = MallocState.Fastbin(av, i);
            Chunk* p = (Chunk*)Interlocked.Exchange(ref *(nint*)fb, 0); // frees push without the lock
            while (p != null)
            {
                if (Chunk.Misaligned(p))
                    MallocPrinterr.Raise("malloc_consolidate(): unaligned fastbin chunk detected", p);
                if (BinIndex.Fastbin(Chunk.SizeOf(p)) != i)
                    MallocPrinterr.Raise("malloc_consolidate(): invalid chunk size", p);
                Chunk* nextp = Chunk.Reveal(&p->Fd);
                nuint size = Chunk.SizeOf(p);
                Chunk* nextchunk = Chunk.At(p, size);
                nuint nextsize = Chunk.SizeOf(nextchunk);
                MergeChunk(ctx, av, p, size, nextchunk, nextsize, "corrupted size vs. prev_size in fastbins", out _);
                p = nextp;
            }
        }
    }

    /// <summary>munmap_chunk: give an mmapped chunk's whole mapping back at once.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void MunmapChunk(MallocContext* ctx, Chunk* p)
    {
        nuint size = Chunk.SizeOf(p);
        nuint mem = (nuint)Chunk.ToMem(p);
        nuint block = (nuint)p - p->PrevSize;
        nuint totalSize = p->PrevSize + size;
        nuint pageMask = OsMemory.PageSize - 1;
        // The mapping must be whole pages, and the user pointer its page's only aligned offset.
        if (((block | totalSize) & pageMask) != 0 || !IsPowerOfTwo(mem & pageMask))
            MallocPrinterr.Raise("munmap_chunk(): invalid pointer", (void*)mem);
        Ownership.RemoveMapped(&ctx->Owned, p);
        Interlocked.Decrement(ref ctx->Mp.NMmaps);
        Interlocked.Add(ref *(long*)&ctx->Mp.MmappedMem, -(long)totalSize);
        OsMemory.Unmap((void*)block, totalSize);
    }

    /// <summary>glibc's powerof2: true for 0 too.</summary>
    internal static bool IsPowerOfTwo(nuint x) => (x & (x - 1)) == 0;
}
