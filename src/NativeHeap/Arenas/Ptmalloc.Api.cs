using System.Runtime.CompilerServices;
using System.Diagnostics;
using System.Runtime.InteropServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    // The __libc_* layer: what malloc, free, calloc, realloc and memalign do around the arena:
    // the thread's tcache without a lock, then the thread's arena under its lock. Null means
    // "no memory" (glibc's ENOMEM); corruption raises HeapCorruptionException.

    /// <summary>The arena-locked part of malloc: _int_malloc in the thread's arena, once more in another on failure.</summary>
    private static void* MallocInArena(MallocContext* ctx, ref ThreadLocals ts, nuint bytes)
    {
        MallocState* av = ArenaGet(ctx, ref ts, bytes);
        try
        {
            void* victim = IntMalloc(ctx, av, ts.Tcache, bytes);
            if (victim == null)
            {
                av = ArenaGetRetry(ctx, ref ts, av, bytes);
                if (av != null) victim = IntMalloc(ctx, av, ts.Tcache, bytes);
            }
            if (av != null) MaybePurge(ctx, av);
            Debug.Assert(victim == null || Chunk.IsMapped(Chunk.FromMem(victim)) || av == ArenaFor(ctx, Chunk.FromMem(victim)));
            return victim;
        }
        finally
        {
            if (av != null) FutexLock.Exit(&av->Mutex);
        }
    }

    /// <summary>
    /// NativeHeap's addition to glibc's checks: the chunk must lie in this heap's memory (an
    /// arena's heap or break region, or a recorded mapping), else it is another allocator's,
    /// or no allocator's, and is refused. Decided by address before the header is read (a
    /// foreign pointer's header may be unreadable); then a chunk in a heap that says it is
    /// mmapped, or a recorded mapping that says it is not, is refused too. A misaligned
    /// chunk is left to the callers' own checks, which report it in glibc's words.
    /// </summary>
    private static void CheckOwned(MallocContext* ctx, Chunk* p, string glibcMessage)
    {
        bool owned = Chunk.Misaligned(p) || (MallocContext.OwnsHeapChunk(ctx, p)
            ? !Chunk.IsMapped(p) || Ownership.HoldsMapped(&ctx->Owned, p)
            : Ownership.HoldsMapped(&ctx->Owned, p) && Chunk.IsMapped(p));
        if (!owned) MallocPrinterr.Raise(glibcMessage, Chunk.ToMem(p));
    }

    /// <summary>__libc_malloc.</summary>
    internal static void* Malloc(MallocContext* ctx, ref ThreadLocals ts, nuint bytes)
    {
        nuint tbytes = Chunk.CheckedRequestToSize(bytes);
        if (tbytes == 0) return null;
        MaybeInitTcache(ctx, ref ts);
        void* cached = TcacheTryGet(ctx, ts.Tcache, tbytes);
        return cached != null ? cached : MallocInArena(ctx, ref ts, bytes);
    }

    /// <summary>
    /// __libc_free. An mmapped chunk is unmapped at once, and if it was larger than the mmap
    /// threshold (up to 32 MiB) the threshold rises to its size and the trim threshold to twice
    /// that, unless the user fixed them: such sizes are then served from the heap.
    /// </summary>
    internal static void Free(MallocContext* ctx, ref ThreadLocals ts, void* mem)
    {
        if (mem == null) return;
        Chunk* p = Chunk.FromMem(mem);
        CheckOwned(ctx, p, "free(): invalid pointer");
        if (Chunk.IsMapped(p))
        {
            FreeMapped(ctx, p);
            return;
        }
        MaybeInitTcache(ctx, ref ts);
        FreeInArena(ctx, ts.Tcache, p);
    }

    /// <summary>
    /// free without the calling thread's tcache: the chunk goes straight to its arena (or is
    /// unmapped). For memory given back on no one's behalf (NativeHeapMemoryPool's eviction,
    /// finalizers), which should not sit in whichever thread happened to free it.
    /// </summary>
    internal static void FreeUncached(MallocContext* ctx, void* mem)
    {
        if (mem == null) return;
        Chunk* p = Chunk.FromMem(mem);
        CheckOwned(ctx, p, "free(): invalid pointer");
        if (Chunk.IsMapped(p)) FreeMapped(ctx, p);
        else FreeInArena(ctx, null, p);
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // kept out of free's inlined path
    private static void FreeMapped(MallocContext* ctx, Chunk* p)
    {
        MallocParams* mp = &ctx->Mp;
        if (mp->NoDynThreshold == 0 && p->Size > mp->MmapThreshold && p->Size <= MallocParams.DefaultMmapThresholdMax)
        {
            mp->MmapThreshold = Chunk.SizeOf(p);
            mp->TrimThreshold = 2 * mp->MmapThreshold;
        }
        MunmapChunk(ctx, p);
    }

    /// <summary>__libc_free's last step: _int_free in the chunk's arena, without its lock held.</summary>
    private static void FreeInArena(MallocContext* ctx, Tcache* tc, Chunk* p) =>
        IntFree(ctx, null, tc, p, haveLock: false);

    /// <summary>
    /// __libc_calloc: _int_malloc, then clear what may not already be zero. glibc 2.36 never
    /// takes the tcache here; with calloc_tcache (glibc 2.41) a cached chunk is taken and
    /// cleared whole.
    /// </summary>
    internal static void* Calloc(MallocContext* ctx, ref ThreadLocals ts, nuint n, nuint elemSize)
    {
        if (elemSize != 0 && n > nuint.MaxValue / elemSize) return null;
        nuint bytes = n * elemSize;

        MaybeInitTcache(ctx, ref ts);
        MallocParams* mp = &ctx->Mp;
        if (TcacheTryCalloc(ctx, ref ts, bytes, out void* cached)) return cached;
        MallocState* av = ArenaGet(ctx, ref ts, bytes);
        void* mem;
        Chunk* oldtop;
        nuint oldtopsize;
        try
        {
            oldtop = av->Top;
            oldtopsize = Chunk.SizeOf(oldtop);
            // Memory above the highest point the heap ever reached comes fresh from the kernel,
            // already zero (MORECORE_CLEARS); only what lies below it needs clearing.
            if (!OnHeaps(ctx, av))
            {
                nuint everUsed = MallocState.Contiguous(av)
                    ? (nuint)(mp->SbrkBase + av->MaxSystemMem - (byte*)oldtop)
                    : nuint.MaxValue;
                if (oldtopsize < everUsed) oldtopsize = everUsed;
            }
            else if (oldtop != MallocState.InitialTop(av))
            {
                HeapHeader* heap = HeapHeader.For(oldtop);
                nuint protectedEnd = (nuint)((byte*)heap + heap->MprotectSize - (byte*)oldtop);
                if (oldtopsize < protectedEnd) oldtopsize = protectedEnd;
            }
            mem = IntMalloc(ctx, av, ts.Tcache, bytes);
            if (mem == null)
            {
                av = ArenaGetRetry(ctx, ref ts, av, bytes);
                if (av != null) mem = IntMalloc(ctx, av, ts.Tcache, bytes);
            }
        }
        finally
        {
            if (av != null) FutexLock.Exit(&av->Mutex);
        }
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
    /// resized with mremap; a heap chunk through _int_realloc in its own arena, whichever thread
    /// calls; when that fails, another arena serves a copy.
    /// </summary>
    internal static void* Realloc(MallocContext* ctx, ref ThreadLocals ts, void* oldmem, nuint bytes, out bool failed)
    {
        failed = false;
        if (bytes == 0 && oldmem != null)
        {
            Free(ctx, ref ts, oldmem);
            return null;
        }
        if (oldmem == null)
        {
            void* fresh = Malloc(ctx, ref ts, bytes);
            failed = fresh == null;
            return fresh;
        }

        Chunk* oldp = Chunk.FromMem(oldmem);
        CheckOwned(ctx, oldp, "realloc(): invalid pointer");
        nuint oldsize = Chunk.SizeOf(oldp);
        if (!Chunk.IsMapped(oldp)) MaybeInitTcache(ctx, ref ts);
        if ((nuint)oldp > (nuint)(-(nint)oldsize) || Chunk.Misaligned(oldp))
            MallocPrinterr.Raise("realloc(): invalid pointer", oldmem);
        if (ctx->Mp.ReallocInPlace != 0)
        {
            // glibc 2.38's rule: a request that fits the usable bytes and leaves fewer than 16
            // of them unused (a page, for a mapped chunk) keeps the block, with no lock taken.
            // Shrinking further is left to _int_realloc, which splits: reusing a block for a
            // much smaller request fragments the heap (why glibc 2.38 narrowed 2.37's rule).
            nuint usable = UsableSize(oldmem);
            if (bytes <= usable && (usable - bytes < 2 * Chunk.SizeSz || (Chunk.IsMapped(oldp) && usable - bytes <= OsMemory.PageSize)))
                return oldmem;
        }

        nuint nb = Chunk.CheckedRequestToSize(bytes);
        if (nb == 0) { failed = true; return null; }

        if (Chunk.IsMapped(oldp))
        {
            Chunk* newp = MremapChunk(ctx, oldp, nb);
            if (newp != null) return Chunk.ToMem(newp);
            if (oldsize - Chunk.SizeSz >= nb) return oldmem;
            void* newmem = Malloc(ctx, ref ts, bytes);
            if (newmem == null) { failed = true; return null; }
            NativeMemory.Copy(oldmem, newmem, oldsize - Chunk.HeaderSize);
            MunmapChunk(ctx, oldp);
            return newmem;
        }

        MallocState* av = ArenaFor(ctx, oldp);
        void* result;
        FutexLock.Enter(&av->Mutex);
        try
        {
            result = IntRealloc(ctx, av, ts.Tcache, oldp, oldsize, nb);
        }
        finally
        {
            FutexLock.Exit(&av->Mutex);
        }
        if (result == null)
        {
            // Try harder to allocate memory in other arenas.
            result = Malloc(ctx, ref ts, bytes);
            if (result != null)
            {
                NativeMemory.Copy(oldmem, result, Chunk.UsableSize(oldp));
                FreeInArena(ctx, ts.Tcache, oldp);
            }
        }
        failed = result == null;
        return result;
    }

    /// <summary>
    /// _mid_memalign. Alignments up to 16 are plain malloc; others are raised to at least
    /// MINSIZE (and to a power of two); the arena does the rest. 2.36 does not use the tcache here.
    /// </summary>
    internal static void* Memalign(MallocContext* ctx, ref ThreadLocals ts, nuint alignment, nuint bytes)
    {
        if (alignment <= Chunk.Alignment) return Malloc(ctx, ref ts, bytes);
        alignment = MemalignAlignment(alignment);
        if (alignment == 0) return null;
        if (bytes > nuint.MaxValue - alignment - Chunk.MinSize) return null;
        if (TcacheTryMemalign(ctx, ref ts, alignment, bytes, out void* cached)) return cached;
        MallocState* av = ArenaGet(ctx, ref ts, bytes + alignment + Chunk.MinSize);
        try
        {
            void* p = IntMemalign(ctx, av, ts.Tcache, alignment, bytes);
            if (p == null)
            {
                av = ArenaGetRetry(ctx, ref ts, av, bytes);
                if (av != null) p = IntMemalign(ctx, av, ts.Tcache, alignment, bytes);
            }
            return p;
        }
        finally
        {
            if (av != null) FutexLock.Exit(&av->Mutex);
        }
    }

    /// <summary>
    /// The alignment _mid_memalign uses for one above 16: at least MINSIZE, raised to a power of
    /// two; 0 when no such power fits a size_t.
    /// </summary>
    internal static nuint MemalignAlignment(nuint alignment)
    {
        if (alignment < Chunk.MinSize) alignment = Chunk.MinSize;
        if (alignment > nuint.MaxValue / 2 + 1) return 0;
        if (IsPowerOfTwo(alignment)) return alignment;
        nuint a = Chunk.Alignment * 2;
        while (a < alignment) a <<= 1;
        return a;
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

    /// <summary>
    /// __malloc_trim: consolidate and release free pages in every arena; the main arena's top
    /// too. With trim_tcache (NativeHeap's) the caller's tcache goes back to the arenas first:
    /// glibc's leaves its cached chunks in use, and a deep tcache's chunks would each keep the
    /// partial pages around them resident.
    /// </summary>
    internal static bool MallocTrim(MallocContext* ctx, ref ThreadLocals ts, nuint pad)
    {
        if (ctx->Mp.TrimTcache != 0) FlushTcache(ctx, ref ts);
        bool result = false;
        MallocState* a = &ctx->Main;
        do
        {
            FutexLock.Enter(&a->Mutex);
            try { result |= Mtrim(ctx, a, pad); }
            finally { FutexLock.Exit(&a->Mutex); }
            a = a->Next;
        }
        while (a != &ctx->Main);
        return result;
    }
}
