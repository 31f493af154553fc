using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;

namespace NativeHeap.Arenas;

/// <summary>
/// glibc 2.36's ptmalloc2, one mechanism a file: this one is _int_malloc, the search for a
/// chunk of size nb in the arena's bins and top. Every step and every integrity check is
/// glibc's, in glibc's order, so the same calls choose the same chunks.
/// </summary>
internal static unsafe partial class Ptmalloc
{
    private const int MaxUnsortedIters = 10000;

    /// <summary>
    /// _int_malloc: a chunk of at least <paramref name="bytes"/> from arena <paramref name="av"/>
    /// (locked by the caller); null when memory is exhausted. <paramref name="tc"/> is the calling
    /// thread's tcache (or null), which exact fits refill on the way.
    /// </summary>
    internal static void* IntMalloc(MallocContext* ctx, MallocState* av, Tcache* tc, nuint bytes)
    {
        nuint nb = Chunk.CheckedRequestToSize(bytes);
        if (nb == 0) return null;

        MallocParams* mp = &ctx->Mp;
        nuint arenaBit = ArenaBit(ctx, av);
        int idx;
        Chunk* victim;

        // Fastbins: exact size, LIFO, no merging.
        if (nb <= mp->MaxFast)
        {
            idx = BinIndex.Fastbin(nb);
            Chunk** fb = MallocState.Fastbin(av, idx);
            victim = (Chunk*)Volatile.Read(ref *(nint*)fb);
            // A bad fastbin is dropped before the error (its chunks lost), so its size works again.
            if (victim != null && Chunk.Misaligned(victim))
            {
                *fb = null;
                MallocPrinterr.Raise("malloc(): unaligned fastbin chunk detected 2", victim);
            }
            // Frees push onto fastbins without the lock (a .NET process always has threads, so
            // glibc's !SINGLE_THREAD_P path). glibc pops the victim, then one chunk at a time
            // while the tcache has room; the same chunks come off here as one run.
            nuint tcIdx = BinIndex.Tcache(nb);
            if (victim != null && (victim = FastbinTakeRun(fb, tc != null && tcIdx < mp->TcacheBins ? Tcache.Room(tc, tcIdx, mp->TcacheCount, mp->TcacheBytes) : 0,
                    out nuint taken, out Chunk* bad)) != null)
            {
                if (BinIndex.Fastbin(Chunk.SizeOf(victim)) != idx)
                {
                    *fb = null;
                    MallocPrinterr.Raise("malloc(): memory corruption (fast)", Chunk.ToMem(victim));
                }
                // While here, move the rest of the run into the tcache.
                for (Chunk* tcVictim = Chunk.Reveal(&victim->Fd); taken-- > 0;)
                {
                    Chunk* next = Chunk.Reveal(&tcVictim->Fd);
                    Tcache.Put(tc, tcVictim, tcIdx, ctx->TcacheKey);
                    tcVictim = next;
                }
                // The link past the run was bad: the run is cached, the rest of the bin dropped.
                if (bad != null)
                    MallocPrinterr.Raise("malloc(): unaligned fastbin chunk detected", bad);
                return Returned(mp, victim, bytes);
            }
        }

        // Small bins: exact size, FIFO (taken from the back).
        if (BinIndex.InSmallbinRange(nb))
        {
            idx = BinIndex.Smallbin(nb);
            Chunk* bin = MallocState.BinAt(av, idx);
            if ((victim = bin->Bk) != bin)
            {
                Chunk* bck = victim->Bk;
                if (bck->Fd != victim)
                    MallocPrinterr.Raise("malloc(): smallbin double linked list corrupted", victim);
                Chunk.SetInuseBitAt(victim, nb);
                bin->Bk = bck;
                bck->Fd = bin;
                victim->Size |= arenaBit;
                nuint tcIdx = BinIndex.Tcache(nb);
                if (tc != null && tcIdx < mp->TcacheBins)
                {
                    Chunk* tcVictim;
                    while (Tcache.HasRoom(tc, tcIdx, mp->TcacheCount, mp->TcacheBytes) && (tcVictim = bin->Bk) != bin)
                    {
                        bck = tcVictim->Bk;
                        Chunk.SetInuseBitAt(tcVictim, nb);
                        tcVictim->Size |= arenaBit;
                        bin->Bk = bck;
                        bck->Fd = bin;
                        Tcache.Put(tc, tcVictim, tcIdx, ctx->TcacheKey);
                    }
                }
                return Returned(mp, victim, bytes);
            }
        }
        else
        {
            // A large request first merges the fastbins, so that fragments can serve it.
            idx = BinIndex.Largebin(nb);
            if (av->HaveFastchunks != 0) MallocConsolidate(ctx, av);
        }

        nuint tcacheNb = 0;
        nuint tcIndex = BinIndex.Tcache(nb);
        if (tc != null && tcIndex < mp->TcacheBins) tcacheNb = nb;
        bool returnCached = false;
        nuint tcacheUnsortedCount = 0;

        Chunk* unsorted = MallocState.Unsorted(av);
        for (;;)
        {
            int iters = 0;
            // Sort the unsorted bin, taking an exact fit (or the last remainder) on the way.
            while ((victim = unsorted->Bk) != unsorted)
            {
                Chunk* bck = victim->Bk;
                nuint size = Chunk.SizeOf(victim);
                Chunk* next = Chunk.At(victim, size);
                if (size <= Chunk.HeaderSize || size > av->SystemMem)
                    MallocPrinterr.Raise("malloc(): invalid size (unsorted)", victim);
                if (next->Size < Chunk.HeaderSize || next->Size > av->SystemMem)
                    MallocPrinterr.Raise("malloc(): invalid next size (unsorted)", next);
                if ((next->PrevSize & ~Chunk.SizeBits) != size)
                    MallocPrinterr.Raise("malloc(): mismatching next->prev_size (unsorted)", next);
                if (bck->Fd != victim || victim->Fd != unsorted)
                    MallocPrinterr.Raise("malloc(): unsorted double linked list corrupted", victim);
                if (Chunk.IsPrevInuse(next))
                    MallocPrinterr.Raise("malloc(): invalid next->prev_inuse (unsorted)", next);

                // A small request served from the last remainder, when it is the only chunk
                // here: consecutive small requests then come from one place.
                if (BinIndex.InSmallbinRange(nb) && bck == unsorted && victim == av->LastRemainder
                    && size > nb + Chunk.MinSize)
                {
                    nuint remainderSize = size - nb;
                    Chunk* remainder = Chunk.At(victim, nb);
                    long stamp = PurgeStampOf(ctx, victim, size);
                    unsorted->Bk = unsorted->Fd = remainder;
                    av->LastRemainder = remainder;
                    remainder->Bk = remainder->Fd = unsorted;
                    if (!BinIndex.InSmallbinRange(remainderSize))
                        remainder->FdNextsize = remainder->BkNextsize = null;
                    Chunk.SetHead(victim, nb | Chunk.PrevInuse | arenaBit);
                    Chunk.SetHead(remainder, remainderSize | Chunk.PrevInuse);
                    Chunk.SetFoot(remainder, remainderSize);
                    PurgeMarkRemainder(ctx, av, remainder, remainderSize, stamp);
                    return Returned(mp, victim, bytes);
                }

                if (bck->Fd != victim)
                    MallocPrinterr.Raise("malloc(): corrupted unsorted chunks 3", victim);
                unsorted->Bk = bck;
                bck->Fd = unsorted;

                if (size == nb)
                {
                    Chunk.SetInuseBitAt(victim, size);
                    victim->Size |= arenaBit;
                    // An exact fit fills the tcache first and is returned from there after the scan.
                    if (tcacheNb != 0 && Tcache.HasRoom(tc, tcIndex, mp->TcacheCount, mp->TcacheBytes))
                    {
                        Tcache.Put(tc, victim, tcIndex, ctx->TcacheKey);
                        returnCached = true;
                        continue;
                    }
                    return Returned(mp, victim, bytes);
                }

                int victimIndex;
                Chunk* fwd;
                if (BinIndex.InSmallbinRange(size))
                {
                    victimIndex = BinIndex.Smallbin(size);
                    bck = MallocState.BinAt(av, victimIndex);
                    fwd = bck->Fd;
                }
                else
                {
                    // Large bins are sorted by size, largest first, with a skip list over
                    // the first chunk of each size (fd_nextsize / bk_nextsize).
                    victimIndex = BinIndex.Largebin(size);
                    bck = MallocState.BinAt(av, victimIndex);
                    fwd = bck->Fd;
                    if (fwd != bck)
                    {
                        size |= Chunk.PrevInuse;
                        if (size < bck->Bk->Size)
                        {
                            fwd = bck;
                            bck = bck->Bk;
                            victim->FdNextsize = fwd->Fd;
                            victim->BkNextsize = fwd->Fd->BkNextsize;
                            fwd->Fd->BkNextsize = victim->BkNextsize->FdNextsize = victim;
                        }
                        else
                        {
                            while (size < fwd->Size)
                                fwd = fwd->FdNextsize;
                            if (size == fwd->Size)
                            {
                                // Same size as a chunk already here: go second, off the skip list.
                                fwd = fwd->Fd;
                            }
                            else
                            {
                                victim->FdNextsize = fwd;
                                victim->BkNextsize = fwd->BkNextsize;
                                if (fwd->BkNextsize->FdNextsize != fwd)
                                    MallocPrinterr.Raise("malloc(): largebin double linked list corrupted (nextsize)", fwd);
                                fwd->BkNextsize = victim;
                                victim->BkNextsize->FdNextsize = victim;
                            }
                            bck = fwd->Bk;
                            if (bck->Fd != fwd)
                                MallocPrinterr.Raise("malloc(): largebin double linked list corrupted (bk)", fwd);
                        }
                    }
                    else
                    {
                        victim->FdNextsize = victim->BkNextsize = victim;
                    }
                }

                MallocState.MarkBin(av, victimIndex);
                victim->Bk = bck;
                victim->Fd = fwd;
                fwd->Bk = victim;
                bck->Fd = victim;

                tcacheUnsortedCount++;
                if (returnCached && mp->TcacheUnsortedLimit > 0 && tcacheUnsortedCount > mp->TcacheUnsortedLimit)
                    return Tcache.Get(tc, tcIndex);

                if (++iters >= MaxUnsortedIters) break;
            }

            if (returnCached) return Tcache.Get(tc, tcIndex);

            // Large request: the smallest chunk that fits in its own bin.
            if (!BinIndex.InSmallbinRange(nb))
            {
                Chunk* bin = MallocState.BinAt(av, idx);
                if ((victim = bin->Fd) != bin && victim->Size >= nb)
                {
                    nuint size;
                    victim = victim->BkNextsize;
                    while ((size = Chunk.SizeOf(victim)) < nb)
                        victim = victim->BkNextsize;
                    // Take the second of equal sizes, so that the skip list need not change.
                    if (victim != bin->Bk && victim->Size == victim->Fd->Size)
                        victim = victim->Fd;
                    return SplitFromBin(ctx, av, victim, size, nb, bytes, "malloc(): corrupted unsorted chunks", setLastRemainder: false);
                }
            }

            // The next non-empty larger bin, found through the binmap; its last (smallest) chunk fits.
            idx++;
            Chunk* scan = MallocState.BinAt(av, idx);
            int block = idx >> BinIndex.BinmapShift;
            uint map = av->Binmap[block];
            uint bit = 1u << (idx & 31);
            bool useTop = false;
            for (;;)
            {
                if (bit > map || bit == 0)
                {
                    do
                    {
                        if (++block >= BinIndex.BinmapSize) { useTop = true; break; }
                    }
                    while ((map = av->Binmap[block]) == 0);
                    if (useTop) break;
                    scan = MallocState.BinAt(av, block << BinIndex.BinmapShift);
                    bit = 1;
                }
                // glibc steps bit by bit to the next set bit; one count of zeros finds the same bin.
                int at = BitOperations.TrailingZeroCount(map & ~(bit - 1));
                scan = MallocState.BinAt(av, (block << BinIndex.BinmapShift) + at);
                bit = 1u << at;
                victim = scan->Bk;
                if (victim == scan)
                {
                    // A stale bit: clear it and go on.
                    av->Binmap[block] = map &= ~bit;
                    scan = NextBin(scan);
                    bit <<= 1;
                }
                else
                {
                    nuint size = Chunk.SizeOf(victim);
                    return SplitFromBin(ctx, av, victim, size, nb, bytes, "malloc(): corrupted unsorted chunks 2",
                        setLastRemainder: BinIndex.InSmallbinRange(nb));
                }
            }

            // Top.
            victim = av->Top;
            nuint topSize = Chunk.SizeOf(victim);
            if (topSize > av->SystemMem)
                MallocPrinterr.Raise("malloc(): corrupted top size", victim);
            if (topSize >= nb + Chunk.MinSize)
                return Returned(mp, SplitTop(ctx, av, nb), bytes);
            if (av->HaveFastchunks != 0)
            {
                // Fastbin fragments may merge into something big enough: consolidate and retry.
                MallocConsolidate(ctx, av);
                idx = BinIndex.Bin(nb);
                continue;
            }
            void* p = SysMalloc(ctx, av, tc, nb);
            if (p != null) AllocPerturb(mp, p, bytes);
            return p;
        }
    }

    /// <summary>Unlink <paramref name="victim"/> from its bin and cut nb off it, the rest going to the unsorted bin.</summary>
    private static void* SplitFromBin(MallocContext* ctx, MallocState* av, Chunk* victim, nuint size, nuint nb,
        nuint bytes, string corruptedUnsortedMessage, bool setLastRemainder)
    {
        Debug.Assert(size >= nb);
        nuint remainderSize = size - nb;
        long stamp = PurgeStampOf(ctx, victim, size);
        UnlinkChunk(av, victim);
        if (remainderSize < Chunk.MinSize)
        {
            Chunk.SetInuseBitAt(victim, size);
            victim->Size |= ArenaBit(ctx, av);
        }
        else
        {
            Chunk* remainder = Chunk.At(victim, nb);
            Chunk* bck = MallocState.Unsorted(av);
            Chunk* fwd = bck->Fd;
            if (fwd->Bk != bck)
                MallocPrinterr.Raise(corruptedUnsortedMessage, fwd);
            remainder->Bk = bck;
            remainder->Fd = fwd;
            bck->Fd = remainder;
            fwd->Bk = remainder;
            if (setLastRemainder) av->LastRemainder = remainder;
            if (!BinIndex.InSmallbinRange(remainderSize))
                remainder->FdNextsize = remainder->BkNextsize = null;
            Chunk.SetHead(victim, nb | Chunk.PrevInuse | ArenaBit(ctx, av));
            Chunk.SetHead(remainder, remainderSize | Chunk.PrevInuse);
            Chunk.SetFoot(remainder, remainderSize);
            PurgeMarkRemainder(ctx, av, remainder, remainderSize, stamp);
        }
        return Returned(&ctx->Mp, victim, bytes);
    }

    /// <summary>Cut nb off the front of top (which the caller checked holds nb + MINSIZE).</summary>
    private static Chunk* SplitTop(MallocContext* ctx, MallocState* av, nuint nb)
    {
        Chunk* p = av->Top;
        nuint remainderSize = Chunk.SizeOf(p) - nb;
        Chunk* remainder = Chunk.At(p, nb);
        av->Top = remainder;
        Chunk.SetHead(p, nb | Chunk.PrevInuse | ArenaBit(ctx, av));
        Chunk.SetHead(remainder, remainderSize | Chunk.PrevInuse);
        return p;
    }

    private static Chunk* NextBin(Chunk* bin) => (Chunk*)((byte*)bin + 2 * sizeof(nuint));

    private static nuint ArenaBit(MallocContext* ctx, MallocState* av) => av == &ctx->Main ? 0 : Chunk.NonMainArena;

    private static void* Returned(MallocParams* mp, Chunk* victim, nuint bytes)
    {
        void* p = Chunk.ToMem(victim);
        AllocPerturb(mp, p, bytes);
        return p;
    }

    /// <summary>alloc_perturb: with M_PERTURB, fresh memory is filled with the inverted byte.</summary>
    private static void AllocPerturb(MallocParams* mp, void* p, nuint n)
    {
        if (mp->PerturbByte != 0) NativeMemory.Fill(p, n, (byte)(mp->PerturbByte ^ 0xff));
    }

    /// <summary>free_perturb: with M_PERTURB, freed memory is filled with the byte.</summary>
    private static void FreePerturb(MallocParams* mp, void* p, nuint n)
    {
        if (mp->PerturbByte != 0) NativeMemory.Fill(p, n, (byte)mp->PerturbByte);
    }

    /// <summary>unlink_chunk: take a free chunk out of its (small, large or unsorted) bin.</summary>
    internal static void UnlinkChunk(MallocState* av, Chunk* p)
    {
        if (Chunk.SizeOf(p) != Chunk.Next(p)->PrevSize)
            MallocPrinterr.Raise("corrupted size vs. prev_size", p);
        Chunk* fd = p->Fd;
        Chunk* bk = p->Bk;
        if (fd->Bk != p || bk->Fd != p)
            MallocPrinterr.Raise("corrupted double-linked list", p);
        fd->Bk = bk;
        bk->Fd = fd;
        if (!BinIndex.InSmallbinRange(p->Size) && p->FdNextsize != null)
        {
            if (p->FdNextsize->BkNextsize != p || p->BkNextsize->FdNextsize != p)
                MallocPrinterr.Raise("corrupted double-linked list (not small)", p);
            if (fd->FdNextsize == null)
            {
                if (p->FdNextsize == p)
                {
                    fd->FdNextsize = fd->BkNextsize = fd;
                }
                else
                {
                    fd->FdNextsize = p->FdNextsize;
                    fd->BkNextsize = p->BkNextsize;
                    p->FdNextsize->BkNextsize = fd;
                    p->BkNextsize->FdNextsize = fd;
                }
            }
            else
            {
                p->FdNextsize->BkNextsize = p->BkNextsize;
                p->BkNextsize->FdNextsize = p->FdNextsize;
            }
        }
    }
}
