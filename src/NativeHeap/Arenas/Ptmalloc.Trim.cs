using System.Diagnostics;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    /// <summary>
    /// systrim: give back the whole pages of top beyond <paramref name="pad"/> (and MINSIZE).
    /// On the break this lowers it, but only if the break still ends at top: if someone else
    /// moved it, lowering would free their memory. NativeHeap then releases the same pages
    /// with MADV_DONTNEED instead (glibc releases nothing), so resident memory behaves as if
    /// the heap were alone; the address space stays ours. Returns true if anything was released.
    /// </summary>
    internal static bool Systrim(MallocContext* ctx, nuint pad, MallocState* av)
    {
        nuint pagesize = OsMemory.PageSize;
        nuint topSize = Chunk.SizeOf(av->Top);
        if (topSize <= Chunk.MinSize + 1) return false;
        nuint topArea = topSize - Chunk.MinSize - 1;
        if (topArea <= pad) return false;
        nuint extra = OsMemory.AlignDown(topArea - pad, pagesize);
        if (extra == 0) return false;

        byte* topEnd = (byte*)av->Top + topSize;
        using (FutexLock.Hold(OsMemory.BreakLock))
        {
            byte* currentBrk = OsMemory.Sbrk(0);
            // Also the case of a top in an mmap fallback region, which never ends at the break.
            if (currentBrk != topEnd)
            {
                // Top cannot shrink: drop the pages of its tail from RSS and keep them mapped.
                OsMemory.DontNeed(topEnd - extra, extra);
                Interlocked.Add(ref ctx->ReleasedBytes, (long)extra);
                return true;
            }
            OsMemory.Sbrk(-(nint)extra);
            byte* newBrk = OsMemory.Sbrk(0);
            if (newBrk == OsMemory.SbrkFailure) return false;
            nuint released = (nuint)(currentBrk - newBrk);
            if (released == 0) return false;
            av->SystemMem -= released;
            Interlocked.Add(ref ctx->ReleasedBytes, (long)released);
            Chunk.SetHead(av->Top, (topSize - released) | Chunk.PrevInuse);
            return true;
        }
    }

    /// <summary>
    /// mtrim (malloc_trim): consolidate, release the whole pages inside every free chunk of
    /// the unsorted and large-enough bins with MADV_DONTNEED (RSS falls, the address space
    /// does not), then trim top to <paramref name="pad"/>.
    /// </summary>
    internal static bool Mtrim(MallocContext* ctx, MallocState* av, nuint pad)
    {
        MallocConsolidate(ctx, av);
        nuint ps = OsMemory.PageSize;
        int psindex = BinIndex.Bin(ps);
        bool result = false;
        for (int i = 1; i < BinIndex.NBins; i++)
        {
            if (i != 1 && i < psindex) continue;
            Chunk* bin = MallocState.BinAt(av, i);
            for (Chunk* p = bin->Bk; p != bin; p = p->Bk)
                // A chunk with a purge stamp keeps it, and it says the pages are gone.
                result |= Purging(&ctx->Mp) && Chunk.SizeOf(p) >= PurgeMinSize ? PurgeChunk(ctx, p) : ReleaseChunkPages(ctx, p, Chunk.StructSize);
        }
        if (av != &ctx->Main || av->Top == MallocState.InitialTop(av)) return result;
        return (OnHeaps(ctx, av) ? HeapTrim(ctx, HeapHeader.For(av->Top), pad, belowThreshold: true) : Systrim(ctx, pad, av)) | result;
    }

    /// <summary>
    /// Release the whole pages inside free chunk <paramref name="p"/> with MADV_DONTNEED,
    /// keeping its first <paramref name="keep"/> bytes (glibc keeps sizeof(malloc_chunk): the
    /// header and links; the purge also its stamp).
    /// </summary>
    private static bool ReleaseChunkPages(MallocContext* ctx, Chunk* p, nuint keep)
    {
        nuint psm1 = OsMemory.PageSize - 1;
        nuint size = Chunk.SizeOf(p);
        if (size <= psm1 + keep) return false;
        byte* pagedMem = (byte*)(((nuint)p + keep + psm1) & ~psm1);
        size -= (nuint)(pagedMem - (byte*)p);
        if (size <= psm1) return false;
        OsMemory.DontNeed(pagedMem, size & ~psm1);
        Interlocked.Add(ref ctx->ReleasedBytes, (long)(size & ~psm1));
        return true;
    }

    /// <summary>
    /// heap_trim: for an arena on heaps. Delete whole heaps that hold nothing but top (top
    /// moves back to the previous heap, merging with a free chunk before its fencepost), then
    /// shrink the last heap's top to <paramref name="pad"/> with MADV_DONTNEED once it reaches
    /// the trim threshold.
    /// </summary>
    /// <param name="ctx">The heap's context.</param>
    /// <param name="heap">The heap holding the arena's top.</param>
    /// <param name="pad">Bytes of top to keep.</param>
    /// <param name="belowThreshold">Shrink top even below the trim threshold (malloc_trim).</param>
    internal static bool HeapTrim(MallocContext* ctx, HeapHeader* heap, nuint pad, bool belowThreshold = false)
    {
        MallocState* av = heap->Arena;
        Chunk* topChunk = av->Top;
        nuint hdr = (nuint)sizeof(HeapHeader);
        while (topChunk == (Chunk*)((byte*)heap + hdr) && heap->Prev != null)
        {
            HeapHeader* prevHeap = heap->Prev;
            nuint prevSize = prevHeap->Size - (Chunk.MinSize - 2 * Chunk.SizeSz);
            Chunk* p = (Chunk*)((byte*)prevHeap + prevSize);
            nuint misalign = (nuint)p & Chunk.AlignMask;
            p = (Chunk*)((byte*)prevHeap + prevSize - misalign);
            if (p->Size != (0 | Chunk.PrevInuse))
                MallocPrinterr.Raise("heap_trim(): fencepost of the previous heap is gone", p);
            p = Chunk.At(p, -(nint)p->PrevSize);
            nuint newSize = Chunk.SizeOf(p) + (Chunk.MinSize - 2 * Chunk.SizeSz) + misalign;
            Debug.Assert(newSize > 0 && newSize < 2 * Chunk.MinSize); // the fencepost pair
            if (!Chunk.IsPrevInuse(p)) newSize += p->PrevSize;
            Debug.Assert(newSize > 0 && newSize < HeapHeader.MaxSize);
            if (newSize + (HeapHeader.MaxSize - prevHeap->Size) < OsMemory.AddSaturating(pad, Chunk.MinSize + heap->PageSize)) break;
            av->SystemMem -= heap->Size;
            Interlocked.Add(ref ctx->ReleasedBytes, (long)heap->Size);
            HeapHeader.Delete(ctx, heap);
            heap = prevHeap;
            if (!Chunk.IsPrevInuse(p))
            {
                p = Chunk.At(p, -(nint)p->PrevSize);
                UnlinkChunk(av, p);
            }
            av->Top = topChunk = p;
            Chunk.SetHead(topChunk, newSize | Chunk.PrevInuse);
        }

        nuint topSize = Chunk.SizeOf(topChunk);
        if (topSize < ctx->Mp.TrimThreshold && !belowThreshold) return false;
        if (topSize <= Chunk.MinSize + 1) return false;
        nuint topArea = topSize - Chunk.MinSize - 1;
        if (topArea <= pad) return false;
        nuint extra = OsMemory.AlignDown(topArea - pad, heap->PageSize);
        if (extra == 0) return false;
        if (!HeapHeader.Shrink(heap, extra)) return false;
        av->SystemMem -= extra;
        Interlocked.Add(ref ctx->ReleasedBytes, (long)extra);
        Chunk.SetHead(topChunk, (topSize - extra) | Chunk.PrevInuse);
        return true;
    }
}
