using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Diagnostics;

/// <summary>mallinfo2: int_mallinfo of every arena, each under its lock, added up.</summary>
internal static unsafe class MallInfo
{
    internal static HeapInfo Compute(MallocContext* ctx)
    {
        var total = new HeapInfo { Hblks = (ulong)ctx->Mp.NMmaps, Hblkhd = ctx->Mp.MmappedMem };
        MallocState* a = &ctx->Main;
        do
        {
            FutexLock.Enter(&a->Mutex);
            try { total = Add(total, a, a == &ctx->Main); }
            finally { FutexLock.Exit(&a->Mutex); }
            a = a->Next;
        }
        while (a != &ctx->Main);
        return total;
    }

    /// <summary>One arena's statistics, under its lock.</summary>
    internal static HeapInfo ForArena(MallocContext* ctx, MallocState* av)
    {
        FutexLock.Enter(&av->Mutex);
        try { return Add(default, av, av == &ctx->Main); }
        finally { FutexLock.Exit(&av->Mutex); }
    }

    /// <summary>int_mallinfo: one arena's free chunks (fastbins, bins, top) against its system memory; its lock is held.</summary>
    internal static HeapInfo Add(HeapInfo m, MallocState* av, bool main)
    {
        ulong nfastblocks = 0, fastavail = 0;
        for (int i = 0; i < BinIndex.NFastBins; i++)
        {
            const string unaligned = "int_mallinfo(): unaligned fastbin chunk detected";
            Chunk** fb = MallocState.Fastbin(av, i);
            for (Chunk* p = Ptmalloc.FastbinWalked(fb, *fb, unaligned); p != null; p = Ptmalloc.FastbinWalked(fb, Chunk.Reveal(&p->Fd), unaligned))
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
        return m with
        {
            Smblks = m.Smblks + nfastblocks,
            Ordblks = m.Ordblks + nblocks,
            Fordblks = m.Fordblks + avail,
            Uordblks = m.Uordblks + av->SystemMem - avail,
            Arena = m.Arena + av->SystemMem,
            Fsmblks = m.Fsmblks + fastavail,
            Keepcost = main ? Chunk.SizeOf(av->Top) : m.Keepcost,
        };
    }

    /// <summary>How many arenas exist, the main one included.</summary>
    internal static int ArenaCount(MallocContext* ctx)
    {
        int n = 0;
        MallocState* a = &ctx->Main;
        do
        {
            n++;
            a = a->Next;
        }
        while (a != &ctx->Main);
        return n;
    }
}
