using System.Runtime.InteropServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    // The __libc_* layer: what malloc, free, calloc, realloc and memalign do before and
    // around the arena. The caller holds the context's lock. Null means "no memory" (glibc's
    // ENOMEM); corruption raises HeapCorruptionException.

    /// <summary>MAYBE_INIT_TCACHE: the first call creates the tcache as a chunk of the heap.</summary>
    private static void MaybeInitTcache(MallocContext* ctx)
    {
        if (ctx->Tcache != null || ctx->TcacheInitializing != 0) return;
        ctx->TcacheInitializing = 1;
        try
        {
            void* victim = IntMalloc(ctx, &ctx->Main, (nuint)sizeof(Tcache));
            if (victim == null) return;
            NativeMemory.Clear(victim, (nuint)sizeof(Tcache));
            ctx->Tcache = (Tcache*)victim;
        }
        finally
        {
            ctx->TcacheInitializing = 0;
        }
    }

    /// <summary>__libc_malloc.</summary>
    internal static void* Malloc(MallocContext* ctx, nuint bytes)
    {
        nuint tbytes = Chunk.CheckedRequestToSize(bytes);
        if (tbytes == 0) return null;
        nuint tcIdx = BinIndex.Tcache(tbytes);
        MaybeInitTcache(ctx);
        Tcache* tc = ctx->Tcache;
        if (tcIdx < ctx->Mp.TcacheBins && tc != null && tc->Counts[tcIdx] > 0)
            return Tcache.Get(tc, tcIdx);
        return IntMalloc(ctx, &ctx->Main, bytes);
    }

    /// <summary>
    /// __libc_free. An mmapped chunk is unmapped at once, and if it was larger than the mmap
    /// threshold (up to 32 MiB) the threshold rises to its size and the trim threshold to twice
    /// that, unless the user fixed them: such sizes are then served from the heap.
    /// </summary>
    internal static void Free(MallocContext* ctx, void* mem)
    {
        if (mem == null) return;
        Chunk* p = Chunk.FromMem(mem);
        MallocParams* mp = &ctx->Mp;
        if (Chunk.IsMapped(p))
        {
            if (mp->NoDynThreshold == 0 && p->Size > mp->MmapThreshold && p->Size <= MallocParams.DefaultMmapThresholdMax)
            {
                mp->MmapThreshold = Chunk.SizeOf(p);
                mp->TrimThreshold = 2 * mp->MmapThreshold;
            }
            MunmapChunk(ctx, p);
            return;
        }
        MaybeInitTcache(ctx);
        IntFree(ctx, ArenaFor(ctx, p), p);
    }

    /// <summary>__libc_calloc: _int_malloc (never the tcache), then clear what may not already be zero.</summary>
    internal static void* Calloc(MallocContext* ctx, nuint n, nuint elemSize)
    {
        nuint bytes;
        try { bytes = checked(n * elemSize); }
        catch (OverflowException) { return null; }

        MaybeInitTcache(ctx);
        MallocState* av = &ctx->Main;
        MallocParams* mp = &ctx->Mp;
        Chunk* oldtop = av->Top;
        nuint oldtopsize = Chunk.SizeOf(oldtop);
        // Memory above the highest point the heap ever reached comes fresh from the kernel,
        // already zero (MORECORE_CLEARS); only what lies below it needs clearing.
        if (MallocState.Contiguous(av))
        {
            nuint everUsed = (nuint)(mp->SbrkBase + av->MaxSystemMem - (byte*)oldtop);
            if (oldtopsize < everUsed) oldtopsize = everUsed;
        }
        else
        {
            oldtopsize = nuint.MaxValue;
        }

        void* mem = IntMalloc(ctx, av, bytes);
        if (mem == null) return null;
        Chunk* p = Chunk.FromMem(mem);
        if (Chunk.IsMapped(p))
        {
            if (mp->PerturbByte != 0) NativeMemory.Clear(mem, bytes);
            return mem;
        }
        nuint csz = Chunk.SizeOf(p);
        if (mp->PerturbByte == 0 && p == oldtop && csz > oldtopsize)
            csz = oldtopsize;
        NativeMemory.Clear(mem, csz - Chunk.SizeSz);
        return mem;
    }

    /// <summary>
    /// __libc_realloc. Null with size 0 frees; a null pointer allocates. An mmapped chunk is
    /// resized with mremap; a heap chunk through _int_realloc.
    /// </summary>
    internal static void* Realloc(MallocContext* ctx, void* oldmem, nuint bytes, out bool failed)
    {
        failed = false;
        if (bytes == 0 && oldmem != null)
        {
            Free(ctx, oldmem);
            return null;
        }
        if (oldmem == null)
        {
            void* fresh = Malloc(ctx, bytes);
            failed = fresh == null;
            return fresh;
        }

        Chunk* oldp = Chunk.FromMem(oldmem);
        nuint oldsize = Chunk.SizeOf(oldp);
        if (!Chunk.IsMapped(oldp)) MaybeInitTcache(ctx);
        if ((nuint)oldp > (nuint)(-(nint)oldsize) || Chunk.Misaligned(oldp))
            HeapCorruptionException.Raise("realloc(): invalid pointer", oldmem);

        nuint nb = Chunk.CheckedRequestToSize(bytes);
        if (nb == 0) { failed = true; return null; }

        if (Chunk.IsMapped(oldp))
        {
            Chunk* newp = MremapChunk(ctx, oldp, nb);
            if (newp != null) return Chunk.ToMem(newp);
            if (oldsize - Chunk.SizeSz >= nb) return oldmem;
            void* newmem = Malloc(ctx, bytes);
            if (newmem == null) { failed = true; return null; }
            NativeMemory.Copy(oldmem, newmem, oldsize - Chunk.HeaderSize);
            MunmapChunk(ctx, oldp);
            return newmem;
        }

        void* result = IntRealloc(ctx, ArenaFor(ctx, oldp), oldp, oldsize, nb);
        failed = result == null;
        return result;
    }

    /// <summary>
    /// _mid_memalign. Alignments up to 16 are plain malloc; others are raised to at least
    /// MINSIZE (and to a power of two); the arena does the rest. 2.36 does not use the tcache here.
    /// </summary>
    internal static void* Memalign(MallocContext* ctx, nuint alignment, nuint bytes)
    {
        if (alignment <= Chunk.Alignment) return Malloc(ctx, bytes);
        if (alignment < Chunk.MinSize) alignment = Chunk.MinSize;
        if (alignment > nuint.MaxValue / 2 + 1) return null;
        if (!IsPowerOfTwo(alignment))
        {
            nuint a = Chunk.Alignment * 2;
            while (a < alignment) a <<= 1;
            alignment = a;
        }
        if (bytes > nuint.MaxValue - alignment - Chunk.MinSize) return null;
        return IntMemalign(ctx, &ctx->Main, alignment, bytes);
    }

    /// <summary>malloc_usable_size: 0 for a chunk that is not in use.</summary>
    internal static nuint UsableSize(void* mem)
    {
        if (mem == null) return 0;
        Chunk* p = Chunk.FromMem(mem);
        if (Chunk.IsMapped(p)) return Chunk.SizeOf(p) - Chunk.HeaderSize;
        if (Chunk.InUse(p)) return Chunk.UsableSize(p);
        return 0;
    }

    /// <summary>__malloc_trim: trim every arena.</summary>
    internal static bool MallocTrim(MallocContext* ctx, nuint pad) => Mtrim(ctx, &ctx->Main, pad);

    /// <summary>arena_for_chunk: the main arena (the only one yet).</summary>
    private static MallocState* ArenaFor(MallocContext* ctx, Chunk* p) => &ctx->Main;
}
