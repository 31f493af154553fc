using System.Diagnostics;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    // Which arena a thread allocates from (glibc's arena.c). A thread keeps the arena it was
    // given; the first one to use the heap gets the main arena; later ones take an arena no
    // thread is attached to, or make a new one (on its own 64 MiB-aligned heap) until there
    // are 8 per core (or ArenaMax), and then share, taking one whose lock is free.

    /// <summary>
    /// arena_get: the thread's arena, locked; attaches the thread to one first if it has none.
    /// As glibc 2.36, a thread whose arena is busy waits for its lock: moving it to another
    /// arena instead made arenas up to the limit, each keeping its own free memory (mstress's
    /// two threads left 16 arenas and three times glibc's peak RSS).
    /// </summary>
    internal static MallocState* ArenaGet(MallocContext* ctx, ref ThreadLocals ts, nuint size)
    {
        MallocState* a = ts.Arena;
        if (a == null)
        {
            if (ctx->MainArenaClaimed == 0 && Interlocked.Exchange(ref ctx->MainArenaClaimed, 1) == 0)
            {
                // ptmalloc_init: the first thread is attached to the main arena.
                ts.Arena = &ctx->Main;
                FutexLock.Enter(&ctx->Main.Mutex);
                return &ctx->Main;
            }
            return ArenaGet2(ctx, ref ts, size, null);
        }
        FutexLock.Enter(&a->Mutex);
        return a;
    }

    /// <summary>arena_get2: a free arena, a new one while under the limit, or a shared one; locked, and the thread attached to it.</summary>
    private static MallocState* ArenaGet2(MallocContext* ctx, ref ThreadLocals ts, nuint size, MallocState* avoid)
    {
        MallocState* a = GetFreeList(ctx, ref ts);
        if (a != null) return a;
        long limit = ArenaLimit(ctx);
        for (;;)
        {
            long n = Volatile.Read(ref ctx->NArenas);
            if (n >= limit || n >= MallocContext.ArenaCapacity) return ReusedArena(ctx, ref ts, avoid);
            if (Interlocked.CompareExchange(ref ctx->NArenas, n + 1, n) != n) continue;
            a = NewArena(ctx, ref ts, size);
            if (a == null) Interlocked.Decrement(ref ctx->NArenas);
            return a;
        }
    }

    /// <summary>
    /// The arena limit: ArenaMax if set; else unlimited until there are more than ArenaTest
    /// arenas, then 8 per core (NARENAS_FROM_NCORES).
    /// </summary>
    private static long ArenaLimit(MallocContext* ctx)
    {
        long limit = Volatile.Read(ref ctx->NArenasLimit);
        if (limit != 0) return limit;
        if (ctx->Mp.ArenaMax != 0)
            limit = (long)ctx->Mp.ArenaMax;
        else if (Volatile.Read(ref ctx->NArenas) > (long)ctx->Mp.ArenaTest)
            limit = 8L * Environment.ProcessorCount;
        else
            return long.MaxValue;
        Volatile.Write(ref ctx->NArenasLimit, limit);
        return limit;
    }

    /// <summary>get_free_list: take an arena no thread is attached to.</summary>
    private static MallocState* GetFreeList(MallocContext* ctx, ref ThreadLocals ts)
    {
        if (Volatile.Read(ref *(nint*)&ctx->FreeList) == 0) return null;
        MallocState* result;
        FutexLock.Enter(&ctx->FreeListLock);
        result = ctx->FreeList;
        if (result != null)
        {
            ctx->FreeList = result->NextFree;
            result->AttachedThreads = 1;
            Detach(ts.Arena);
        }
        FutexLock.Exit(&ctx->FreeListLock);
        if (result == null) return null;
        FutexLock.Enter(&result->Mutex);
        ts.Arena = result;
        return result;
    }

    /// <summary>reused_arena: share an arena, the first (round robin) whose lock is free, else wait for one.</summary>
    private static MallocState* ReusedArena(MallocContext* ctx, ref ThreadLocals ts, MallocState* avoid)
    {
        MallocState* start = ctx->NextToUse != null ? ctx->NextToUse : &ctx->Main;
        MallocState* result = start;
        bool locked = false;
        do
        {
            if (FutexLock.TryEnter(&result->Mutex)) { locked = true; break; }
            result = result->Next;
        }
        while (result != start);
        if (!locked)
        {
            if (result == avoid) result = result->Next;
            FutexLock.Enter(&result->Mutex);
        }

        FutexLock.Enter(&ctx->FreeListLock);
        Detach(ts.Arena);
        RemoveFromFreeList(ctx, result);
        result->AttachedThreads++;
        FutexLock.Exit(&ctx->FreeListLock);
        ts.Arena = result;
        ctx->NextToUse = result->Next;
        return result;
    }

    /// <summary>_int_new_arena: an arena inside a new heap of its own; locked, the thread attached.</summary>
    private static MallocState* NewArena(MallocContext* ctx, ref ThreadLocals ts, nuint size)
    {
        nuint overhead = (nuint)(sizeof(HeapHeader) + sizeof(MallocState)) + Chunk.Alignment;
        HeapHeader* h = HeapHeader.Create(ctx, size + overhead, ctx->Mp.TopPad);
        if (h == null)
        {
            // Perhaps the size fits no heap: make a minimal arena and let malloc map the chunk.
            h = HeapHeader.Create(ctx, overhead, ctx->Mp.TopPad);
            if (h == null) return null;
        }
        var a = (MallocState*)(h + 1);
        h->Arena = a;
        MallocState.Init(a, contiguous: false);
        a->Index = Interlocked.Increment(ref ctx->LastArenaIndex); // at most NArenas - 1, below ArenaCapacity
        a->AttachedThreads = 1;
        a->SystemMem = a->MaxSystemMem = h->Size;
        var ptr = (byte*)HeapHeader.FirstChunk(h);
        a->Top = (Chunk*)ptr;
        Chunk.SetHead(a->Top, (nuint)((byte*)h + h->Size - ptr) | Chunk.PrevInuse);

        MallocState* replaced = ts.Arena;
        ts.Arena = a;
        FutexLock.Enter(&ctx->ListLock);
        a->Next = ctx->Main.Next;
        Volatile.Write(ref *(nint*)&ctx->Main.Next, (nint)a);
        FutexLock.Exit(&ctx->ListLock);
        FutexLock.Enter(&ctx->FreeListLock);
        Detach(replaced);
        FutexLock.Exit(&ctx->FreeListLock);
        FutexLock.Enter(&a->Mutex);
        return a;
    }

    /// <summary>detach_arena: one thread fewer on <paramref name="a"/> (free list lock held).</summary>
    private static void Detach(MallocState* a)
    {
        Debug.Assert(a == null || a->AttachedThreads > 0);
        if (a != null) a->AttachedThreads--;
    }

    private static void RemoveFromFreeList(MallocContext* ctx, MallocState* arena)
    {
        MallocState** previous = &ctx->FreeList;
        for (MallocState* p = *previous; p != null; p = p->NextFree)
        {
            if (p == arena)
            {
                *previous = p->NextFree;
                break;
            }
            previous = &p->NextFree;
        }
    }

    /// <summary>arena_get_retry: after a failure, try the main arena, or from the main arena another.</summary>
    private static MallocState* ArenaGetRetry(MallocContext* ctx, ref ThreadLocals ts, MallocState* av, nuint bytes)
    {
        FutexLock.Exit(&av->Mutex);
        if (av != &ctx->Main)
        {
            FutexLock.Enter(&ctx->Main.Mutex);
            return &ctx->Main;
        }
        return ArenaGet2(ctx, ref ts, bytes, av);
    }

    /// <summary>arena_for_chunk: the main arena, or the arena of the heap the chunk lies in.</summary>
    internal static MallocState* ArenaFor(MallocContext* ctx, Chunk* p) =>
        (p->Size & Chunk.NonMainArena) == 0 ? &ctx->Main : HeapHeader.For(p)->Arena;

    /// <summary>
    /// A thread is gone (tcache_thread_shutdown and arena_thread_freeres): return every cached
    /// chunk and the tcache itself to their arenas, and put the arena on the free list if no
    /// thread is left on it.
    /// </summary>
    internal static void ThreadShutdown(MallocContext* ctx, ref ThreadLocals ts)
    {
        Tcache* tc = ts.Tcache;
        ts.TcacheShutDown = true;
        ts.Tcache = null;
        if (tc != null)
        {
            DrainTcache(ctx, tc);
            FreeInArena(ctx, null, Chunk.FromMem(tc));
        }

        MallocState* a = ts.Arena;
        ts.Arena = null;
        if (a != null)
        {
            FutexLock.Enter(&ctx->FreeListLock);
            if (--a->AttachedThreads == 0)
            {
                a->NextFree = ctx->FreeList;
                ctx->FreeList = a;
            }
            FutexLock.Exit(&ctx->FreeListLock);
        }
    }

    /// <summary>
    /// __malloc_fork_lock_parent: before fork, take the arena list's lock, every arena's lock
    /// and the mmapped-chunk set's, so that the child inherits no half-made change.
    /// </summary>
    internal static void ForkLock(MallocContext* ctx)
    {
        FutexLock.Enter(&ctx->ListLock);
        MallocState* a = &ctx->Main;
        do
        {
            FutexLock.Enter(&a->Mutex);
            a = a->Next;
        }
        while (a != &ctx->Main);
        FutexLock.Enter(&ctx->Owned.MappedLock);
    }

    /// <summary>__malloc_fork_unlock_parent: release what <see cref="ForkLock"/> took.</summary>
    internal static void ForkUnlockParent(MallocContext* ctx)
    {
        FutexLock.Exit(&ctx->Owned.MappedLock);
        MallocState* a = &ctx->Main;
        do
        {
            FutexLock.Exit(&a->Mutex);
            a = a->Next;
        }
        while (a != &ctx->Main);
        FutexLock.Exit(&ctx->ListLock);
    }

    /// <summary>
    /// __malloc_fork_unlock_child: the child has one thread. Reset every lock and put every
    /// arena but that thread's on the free list, since their threads do not exist here.
    /// </summary>
    internal static void ForkUnlockChild(MallocContext* ctx, MallocState* threadArena)
    {
        ctx->Owned.MappedLock = 0;
        ctx->FreeListLock = 0;
        if (threadArena != null) threadArena->AttachedThreads = 1;
        ctx->FreeList = null;
        MallocState* a = &ctx->Main;
        do
        {
            a->Mutex = 0;
            if (a != threadArena)
            {
                a->AttachedThreads = 0;
                a->NextFree = ctx->FreeList;
                ctx->FreeList = a;
            }
            a = a->Next;
        }
        while (a != &ctx->Main);
        ctx->ListLock = 0;
    }
}
