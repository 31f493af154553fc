using System.Diagnostics;
using NativeHeap.Bins;
using NativeHeap.Chunks;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    /// <summary>
    /// _int_memalign: allocate nb + alignment + MINSIZE, find the aligned spot inside, and
    /// free the leading and trailing pieces (the leader at least MINSIZE long). An mmapped
    /// chunk keeps its leader as part of the mapping, recorded in prev_size.
    /// </summary>
    internal static void* IntMemalign(MallocContext* ctx, MallocState* av, Tcache* tc, nuint alignment, nuint bytes)
    {
        nuint nb = Chunk.CheckedRequestToSize(bytes);
        if (nb == 0) return null;
        // What is asked of _int_malloc must not wrap (CVE-2026-0861: a huge alignment plus a
        // huge size became a small request, and the split below wrote far outside it). The
        // caller keeps alignment at most SIZE_MAX/2+1, so the subtraction cannot wrap.
        Debug.Assert(alignment <= nuint.MaxValue / 2 + 1 && IsPowerOfTwo(alignment));
        if (nb > nuint.MaxValue - alignment - Chunk.MinSize) return null;
        nuint arenaBit = ArenaBit(ctx, av);

        byte* m = (byte*)IntMalloc(ctx, av, tc, nb + alignment + Chunk.MinSize);
        if (m == null) return null;
        Chunk* p = Chunk.FromMem(m);

        if ((nuint)m % alignment != 0)
        {
            byte* brk = (byte*)Chunk.FromMem((void*)(((nuint)m + alignment - 1) & ~(alignment - 1)));
            if ((nuint)(brk - (byte*)p) < Chunk.MinSize) brk += alignment;
            var newp = (Chunk*)brk;
            nuint leadsize = (nuint)(brk - (byte*)p);
            nuint newsize = Chunk.SizeOf(p) - leadsize;

            if (Chunk.IsMapped(p))
            {
                newp->PrevSize = p->PrevSize + leadsize;
                Chunk.SetHead(newp, newsize | Chunk.IsMmapped);
                Ownership.RemoveMapped(&ctx->Owned, p);
                Ownership.AddMapped(&ctx->Owned, newp);
                return Chunk.ToMem(newp);
            }

            Chunk.SetHead(newp, newsize | Chunk.PrevInuse | arenaBit);
            Chunk.SetInuseBitAt(newp, newsize);
            Chunk.SetHeadSize(p, leadsize | arenaBit);
            IntFree(ctx, av, tc, p);
            p = newp;
        }

        Debug.Assert(Chunk.SizeOf(p) >= nb && (nuint)Chunk.ToMem(p) % alignment == 0);
        if (!Chunk.IsMapped(p))
        {
            nuint size = Chunk.SizeOf(p);
            if (size > nb + Chunk.MinSize)
            {
                nuint remainderSize = size - nb;
                Chunk* remainder = Chunk.At(p, nb);
                Chunk.SetHead(remainder, remainderSize | Chunk.PrevInuse | arenaBit);
                Chunk.SetHeadSize(p, nb);
                IntFree(ctx, av, tc, remainder);
            }
        }
        return Chunk.ToMem(p);
    }
}
