using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;

namespace NativeHeap.Diagnostics;

/// <summary>int_mallinfo: walk the arena's bins and fastbins and add up what is free.</summary>
internal static unsafe class MallInfo
{
    internal static HeapInfo Compute(MallocContext* ctx)
    {
        MallocState* av = &ctx->Main;
        ulong nfastblocks = 0, fastavail = 0;
        for (int i = 0; i < BinIndex.NFastBins; i++)
        {
            for (Chunk* p = *MallocState.Fastbin(av, i); p != null; p = Chunk.Reveal(&p->Fd))
            {
                nfastblocks++;
                fastavail += Chunk.SizeOf(p);
            }
        }
        ulong avail = Chunk.SizeOf(av->Top) + fastavail;
        ulong nblocks = 1; // top always exists
        for (int i = 1; i < BinIndex.NBins; i++)
        {
            Chunk* b = MallocState.BinAt(av, i);
            for (Chunk* p = b->Bk; p != b; p = p->Bk)
            {
                nblocks++;
                avail += Chunk.SizeOf(p);
            }
        }
        return new HeapInfo
        {
            Arena = av->SystemMem,
            Ordblks = nblocks,
            Smblks = nfastblocks,
            Hblks = (ulong)ctx->Mp.NMmaps,
            Hblkhd = ctx->Mp.MmappedMem,
            Usmblks = 0,
            Fsmblks = fastavail,
            Uordblks = av->SystemMem - avail,
            Fordblks = avail,
            Keepcost = Chunk.SizeOf(av->Top),
        };
    }
}
