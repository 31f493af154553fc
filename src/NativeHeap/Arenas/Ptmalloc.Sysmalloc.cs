using System.Diagnostics;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    /// <summary>
    /// sysmalloc: bins and top cannot serve nb. Map a chunk of its own when nb reaches the
    /// mmap threshold (and the mmap count allows); otherwise grow top: on the break (handling
    /// a break that someone else moved, and mapping 1 MiB or more when sbrk fails), or, for an
    /// arena on heaps, by growing its heap or starting a new one (and mapping the chunk after all
    /// when that fails).
    /// </summary>
    private static void* SysMalloc(MallocContext* ctx, MallocState* av, Tcache* tc, nuint nb)
    {
        MallocParams* mp = &ctx->Mp;
        bool triedMmap = false;
        if (nb >= mp->MmapThreshold && mp->NMmaps < mp->NMmapsMax)
        {
            void* mm = SysMallocMmap(ctx, nb);
            if (mm != null) return mm;
            triedMmap = true;
        }

        Chunk* oldTop = av->Top;
        nuint oldSize = Chunk.SizeOf(oldTop);
        byte* oldEnd = (byte*)Chunk.At(oldTop, oldSize);
        // Top is the initial one or a real chunk ending on a page; it cannot serve nb.
        Debug.Assert((oldTop == MallocState.InitialTop(av) && oldSize == 0)
            || (oldSize >= Chunk.MinSize && Chunk.IsPrevInuse(oldTop) && ((nuint)oldEnd & (OsMemory.PageSize - 1)) == 0));
        Debug.Assert(oldSize < nb + Chunk.MinSize);

        if (OnHeaps(ctx, av))
        {
            if (!GrowHeaps(ctx, av, tc, nb, oldTop, oldSize) && !triedMmap)
                return SysMallocMmap(ctx, nb);
        }
        else
        {
            bool newRegion;
            using (FutexLock.Hold(OsMemory.BreakLock))
                newRegion = GrowBreak(ctx, av, nb, oldTop, oldSize, oldEnd);
            if (newRegion && oldSize != 0) FenceOldTop(ctx, av, tc, oldTop, oldSize);
        }

        if (av->SystemMem > av->MaxSystemMem) av->MaxSystemMem = av->SystemMem;

        if (Chunk.SizeOf(av->Top) >= nb + Chunk.MinSize)
            return Chunk.ToMem(SplitTop(ctx, av, nb));
        return null;
    }

    /// <summary>
    /// The main arena's growth on the break, glibc's MORECORE path. True when top moved to a
    /// new region (the first one, one after a foreign sbrk, or a mapping).
    /// </summary>
    private static bool GrowBreak(MallocContext* ctx, MallocState* av, nuint nb, Chunk* oldTop, nuint oldSize, byte* oldEnd)
    {
        MallocParams* mp = &ctx->Mp;
        nuint pagesize = OsMemory.PageSize;
        byte* brk = OsMemory.SbrkFailure;
        byte* sndBrk = OsMemory.SbrkFailure;

        // Ask for the request, the top pad and room for a fencepost, less what top already has.
        nuint size = OsMemory.AddSaturating(nb + Chunk.MinSize, mp->TopPad);
        if (MallocState.Contiguous(av)) size -= oldSize;
        size = OsMemory.AlignUp(size, pagesize);
        if ((nint)size > 0)
            brk = OsMemory.Sbrk((nint)size);

        if (brk == OsMemory.SbrkFailure)
        {
            // sbrk failed (or would have overflowed): map instead, and never assume contiguity again.
            byte* mbrk = MmapFallback(av, ref size, nb, oldSize);
            if (mbrk != null)
            {
                brk = mbrk;
                sndBrk = brk + size;
            }
        }
        if (brk == OsMemory.SbrkFailure) return false;

        if (mp->SbrkBase == null) mp->SbrkBase = brk;
        av->SystemMem += size;

        if (brk == oldEnd && sndBrk == OsMemory.SbrkFailure)
        {
            // The break was where we left it: top simply grows.
            Chunk.SetHead(oldTop, (size + oldSize) | Chunk.PrevInuse);
            return false;
        }
        if (MallocState.Contiguous(av) && oldSize != 0 && brk < oldEnd)
            MallocPrinterr.Raise("break adjusted to free malloc space", brk);
        if (oldSize != 0 && sndBrk == OsMemory.SbrkFailure)
        {
            ctx->ForeignBreaks++;
            ctx->LastForeignBreak = brk;
            ctx->LastForeignOldEnd = oldEnd;
        }

        // A new region: the first one, one after a foreign sbrk, or a mapping.
        nuint correction = 0;
        byte* alignedBrk = brk;
        if (MallocState.Contiguous(av))
        {
            // Count a foreign sbrk's gap as ours, as glibc does, so the heap stays "contiguous".
            if (oldSize != 0) av->SystemMem += (nuint)(brk - oldEnd);
            nuint frontMisalign = (nuint)Chunk.ToMem((Chunk*)brk) & Chunk.AlignMask;
            if (frontMisalign > 0)
            {
                correction = Chunk.Alignment - frontMisalign;
                alignedBrk += correction;
            }
            // Ask for what makes the old top's space up and ends the break on a page.
            correction += oldSize;
            nuint endMisalign = (nuint)(brk + size + correction);
            correction += OsMemory.AlignUp(endMisalign, pagesize) - endMisalign;
            sndBrk = OsMemory.Sbrk((nint)correction);
            if (sndBrk == OsMemory.SbrkFailure)
            {
                correction = 0;
                sndBrk = OsMemory.Sbrk(0);
            }
        }
        else
        {
            if (sndBrk == OsMemory.SbrkFailure) sndBrk = OsMemory.Sbrk(0);
        }

        if (sndBrk == OsMemory.SbrkFailure) return false;

        av->Top = (Chunk*)alignedBrk;
        Chunk.SetHead(av->Top, ((nuint)(sndBrk - alignedBrk) + correction) | Chunk.PrevInuse);
        av->SystemMem += correction;
        Segments.Add(&ctx->Segments, av->Top, oldEnd);
        return true;
    }

    /// <summary>
    /// Top moved to a new region: fence off the old top with two header-sized chunks marked
    /// in use, so that nothing ever merges across the gap, and free what is left of it.
    /// </summary>
    private static void FenceOldTop(MallocContext* ctx, MallocState* av, Tcache* tc, Chunk* oldTop, nuint oldSize)
    {
        oldSize = (oldSize - 2 * Chunk.HeaderSize) & ~Chunk.AlignMask;
        Chunk.SetHead(oldTop, oldSize | Chunk.PrevInuse);
        Chunk.SetHead(Chunk.At(oldTop, oldSize), Chunk.HeaderSize | Chunk.PrevInuse);
        Chunk.SetHead(Chunk.At(oldTop, oldSize + Chunk.HeaderSize), Chunk.HeaderSize | Chunk.PrevInuse);
        if (oldSize >= Chunk.MinSize) IntFree(ctx, av, tc, oldTop, trim: false);
    }

    /// <summary>Whether arena <paramref name="av"/> lives on mmap'd heaps rather than on the break.</summary>
    internal static bool OnHeaps(MallocContext* ctx, MallocState* av) => av != &ctx->Main || ctx->UseBrk == 0;

    /// <summary>
    /// sysmalloc for an arena on heaps: grow the heap top is in, or start a new heap (64 MiB
    /// aligned) and fence off the old top. False when neither worked.
    /// </summary>
    private static bool GrowHeaps(MallocContext* ctx, MallocState* av, Tcache* tc, nuint nb, Chunk* oldTop, nuint oldSize)
    {
        HeapHeader* oldHeap = oldTop == MallocState.InitialTop(av) ? null : HeapHeader.For(oldTop);
        if (oldHeap != null)
        {
            nuint oldHeapSize = oldHeap->Size;
            if (Chunk.MinSize + nb > oldSize && HeapHeader.Grow(oldHeap, Chunk.MinSize + nb - oldSize))
            {
                av->SystemMem += oldHeap->Size - oldHeapSize;
                Chunk.SetHead(oldTop, (nuint)((byte*)oldHeap + oldHeap->Size - (byte*)oldTop) | Chunk.PrevInuse);
                return true;
            }
        }
        HeapHeader* heap = HeapHeader.Create(ctx, nb + Chunk.MinSize + (nuint)sizeof(HeapHeader), ctx->Mp.TopPad);
        if (heap == null) return false;
        heap->Arena = av;
        heap->Prev = oldHeap;
        av->SystemMem += heap->Size;
        av->Top = (Chunk*)((byte*)heap + sizeof(HeapHeader));
        Chunk.SetHead(av->Top, (heap->Size - (nuint)sizeof(HeapHeader)) | Chunk.PrevInuse);
        if (oldHeap != null)
        {
            // Fence the old top: a zero-size chunk marks the heap's end; what is left of the
            // old top (rounded to 16 and less MINSIZE for the fence) is freed.
            oldSize = (oldSize - Chunk.MinSize) & ~Chunk.AlignMask;
            Chunk.SetHead(Chunk.At(oldTop, oldSize + Chunk.HeaderSize), 0 | Chunk.PrevInuse);
            if (oldSize >= Chunk.MinSize)
            {
                Chunk.SetHead(Chunk.At(oldTop, oldSize), Chunk.HeaderSize | Chunk.PrevInuse);
                Chunk.SetFoot(Chunk.At(oldTop, oldSize), Chunk.HeaderSize);
                Chunk.SetHead(oldTop, oldSize | Chunk.PrevInuse | ArenaBit(ctx, av));
                IntFree(ctx, av, tc, oldTop, trim: false);
            }
            else
            {
                Chunk.SetHead(oldTop, (oldSize + Chunk.HeaderSize) | Chunk.PrevInuse);
                Chunk.SetFoot(oldTop, oldSize + Chunk.HeaderSize);
            }
        }
        return true;
    }

    /// <summary>sysmalloc_mmap_fallback: sbrk failed; map at least 1 MiB and mark the arena non-contiguous.</summary>
    private static byte* MmapFallback(MallocState* av, ref nuint size, nuint nb, nuint oldSize)
    {
        nuint s = size;
        if (MallocState.Contiguous(av)) s = OsMemory.AlignUp(s + oldSize, OsMemory.PageSize);
        if (s < MallocParams.MmapAsMorecoreSize) s = MallocParams.MmapAsMorecoreSize;
        if (s <= nb) return null;
        byte* mbrk = OsMemory.Map(s);
        if (mbrk == null) return null;
        MallocState.SetNonContiguous(av);
        size = s;
        return mbrk;
    }

    /// <summary>sysmalloc_mmap: a chunk in a mapping of its own, page-rounded (nb + SIZE_SZ).</summary>
    private static void* SysMallocMmap(MallocContext* ctx, nuint nb)
    {
        MallocParams* mp = &ctx->Mp;
        nuint size = OsMemory.AlignUp(nb + Chunk.SizeSz, OsMemory.PageSize);
        if (size <= nb) return null;
        byte* mm = OsMemory.Map(size);
        if (mm == null) return null;
        var p = (Chunk*)mm;
        Debug.Assert(((nuint)Chunk.ToMem(p) & Chunk.AlignMask) == 0);
        if (!Ownership.AddMapped(&ctx->Owned, p))
        {
            OsMemory.Unmap(mm, size);
            return null;
        }
        p->PrevSize = 0;
        Chunk.SetHead(p, size | Chunk.IsMmapped);
        int n = Interlocked.Increment(ref mp->NMmaps);
        if (n > mp->MaxNMmaps) mp->MaxNMmaps = n;
        var sum = (nuint)Interlocked.Add(ref *(long*)&mp->MmappedMem, (long)size);
        if (sum > mp->MaxMmappedMem) mp->MaxMmappedMem = sum;
        return Chunk.ToMem(p);
    }
}
