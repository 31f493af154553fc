using System.Diagnostics;
using System.Runtime.InteropServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    /// <summary>
    /// _int_realloc: resize a heap chunk to nb. In place when it already fits, when top follows
    /// it, or when a free chunk follows it; otherwise allocate, copy and free. A tail of MINSIZE
    /// or more is split off and freed.
    /// </summary>
    internal static void* IntRealloc(MallocContext* ctx, MallocState* av, Tcache* tc, Chunk* oldp, nuint oldsize, nuint nb)
    {
        nuint arenaBit = ArenaBit(ctx, av);
        if (oldp->Size <= Chunk.HeaderSize || oldsize >= av->SystemMem)
            MallocPrinterr.Raise("realloc(): invalid old size", Chunk.ToMem(oldp));
        Debug.Assert(!Chunk.IsMapped(oldp));

        Chunk* next = Chunk.At(oldp, oldsize);
        nuint nextsize = Chunk.SizeOf(next);
        if (next->Size <= Chunk.HeaderSize || nextsize >= av->SystemMem)
            MallocPrinterr.Raise("realloc(): invalid next size", Chunk.ToMem(oldp));

        Chunk* newp;
        nuint newsize;
        if (oldsize >= nb)
        {
            newp = oldp;
            newsize = oldsize;
        }
        else if (next == av->Top && (newsize = oldsize + nextsize) >= nb + Chunk.MinSize)
        {
            // Grow into top.
            Chunk.SetHeadSize(oldp, nb | arenaBit);
            av->Top = Chunk.At(oldp, nb);
            Chunk.SetHead(av->Top, (newsize - nb) | Chunk.PrevInuse);
            return Chunk.ToMem(oldp);
        }
        else if (next != av->Top && !Chunk.InUse(next) && (newsize = oldsize + nextsize) >= nb)
        {
            // Absorb the free chunk that follows.
            newp = oldp;
            UnlinkChunk(av, next);
        }
        else
        {
            void* newmem = IntMalloc(ctx, av, tc, nb - Chunk.AlignMask);
            if (newmem == null) return null;
            newp = Chunk.FromMem(newmem);
            newsize = Chunk.SizeOf(newp);
            if (newp == next)
            {
                // The new chunk is the one right after: extend in place after all.
                newsize += oldsize;
                newp = oldp;
            }
            else
            {
                void* oldmem = Chunk.ToMem(oldp);
                NativeMemory.Copy(oldmem, newmem, Chunk.UsableSize(oldp));
                IntFree(ctx, av, tc, oldp);
                return newmem;
            }
        }

        Debug.Assert(newsize >= nb);
        nuint remainderSize = newsize - nb;
        if (remainderSize < Chunk.MinSize)
        {
            Chunk.SetHeadSize(newp, newsize | arenaBit);
            Chunk.SetInuseBitAt(newp, newsize);
        }
        else
        {
            Chunk* remainder = Chunk.At(newp, nb);
            Chunk.SetHeadSize(newp, nb | arenaBit);
            Chunk.SetHead(remainder, remainderSize | Chunk.PrevInuse | arenaBit);
            Chunk.SetInuseBitAt(remainder, remainderSize);
            IntFree(ctx, av, tc, remainder);
        }
        return Chunk.ToMem(newp);
    }

    /// <summary>
    /// mremap_chunk: resize an mmapped chunk's mapping (page-rounded nb + offset + SIZE_SZ),
    /// letting the kernel move it. Null when mremap fails.
    /// </summary>
    internal static Chunk* MremapChunk(MallocContext* ctx, Chunk* p, nuint nb)
    {
        nuint pagesize = OsMemory.PageSize;
        nuint offset = p->PrevSize;
        nuint size = Chunk.SizeOf(p);
        nuint block = (nuint)p - offset;
        nuint mem = (nuint)Chunk.ToMem(p);
        nuint totalSize = offset + size;
        if (((block | totalSize) & (pagesize - 1)) != 0 || !IsPowerOfTwo(mem & (pagesize - 1)))
            MallocPrinterr.Raise("mremap_chunk(): invalid pointer", (void*)mem);

        nuint newSize = OsMemory.AlignUp(nb + offset + Chunk.SizeSz, pagesize);
        if (totalSize == newSize) return p;

        // Out of the set before mremap moves it: a heap snapshot reads every chunk in the set.
        Ownership.RemoveMapped(&ctx->Owned, p);
        byte* cp = OsMemory.Remap((void*)block, totalSize, newSize);
        if (cp == null)
        {
            Ownership.AddMapped(&ctx->Owned, p); // into the slot it left: cannot fail
            return null;
        }
        p = (Chunk*)(cp + offset);
        Ownership.AddMapped(&ctx->Owned, p);
        Chunk.SetHead(p, (newSize - offset) | Chunk.IsMmapped);
        MallocParams* mp = &ctx->Mp;
        mp->MmappedMem = mp->MmappedMem + newSize - size - offset;
        if (mp->MmappedMem > mp->MaxMmappedMem) mp->MaxMmappedMem = mp->MmappedMem;
        return p;
    }
}
