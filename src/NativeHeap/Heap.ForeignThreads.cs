using System.Runtime.CompilerServices;
using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Diagnostics;

namespace NativeHeap;

/// <summary>
/// The process heap for callers that keep each thread's state themselves (libnativeheap's C
/// layer, in a C thread-local): the same calls as the rest of <see cref="Heap"/>, given the
/// thread's <see cref="ThreadLocals"/>. They touch no thread static and allocate no managed
/// object, so a C thread costs the GC nothing: with a managed cache per thread, every C thread
/// that called in left an object and its allocation context in gen 0, and a program that makes
/// many short threads (mleak: 50,000) kept the whole gen 0 budget resident (42 MiB against
/// glibc's 2 MiB).
/// </summary>
public static unsafe partial class Heap
{
    /// <summary>malloc on a thread whose state is <paramref name="ts"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* Malloc(ThreadLocals* ts, nuint size)
    {
        void* p = TcacheGetFast(ts->Tcache, size);
        return p != null ? p : MallocSlow(ts, size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* MallocSlow(ThreadLocals* ts, nuint size)
    {
        MallocContext* ctx = Context;
        void* p = Ptmalloc.Malloc(ctx, ref *ts, size);
        AfterCall(ctx, ts);
        return p;
    }

    /// <summary>free on a thread whose state is <paramref name="ts"/>.</summary>
    internal static void Free(ThreadLocals* ts, void* ptr)
    {
        if (ptr == null || TcachePutFast(ts->Tcache, ptr)) return;
        FreeSlow(ts, ptr);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FreeSlow(ThreadLocals* ts, void* ptr)
    {
        MallocContext* ctx = Context;
        Ptmalloc.Free(ctx, ref *ts, ptr);
        AfterCall(ctx, ts);
    }

    internal static void* Calloc(ThreadLocals* ts, nuint count, nuint size)
    {
        void* p = CallocFast(ts->Tcache, count, size);
        return p != null ? p : CallocSlow(ts, count, size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* CallocSlow(ThreadLocals* ts, nuint count, nuint size)
    {
        MallocContext* ctx = Context;
        void* p = Ptmalloc.Calloc(ctx, ref *ts, count, size);
        AfterCall(ctx, ts);
        return p;
    }

    internal static void* Realloc(ThreadLocals* ts, void* ptr, nuint size, out bool failed)
    {
        MallocContext* ctx = Context;
        void* p = Ptmalloc.Realloc(ctx, ref *ts, ptr, size, out failed);
        AfterCall(ctx, ts);
        return p;
    }

    internal static void* Memalign(ThreadLocals* ts, nuint alignment, nuint size)
    {
        MallocContext* ctx = Context;
        void* p = Ptmalloc.Memalign(ctx, ref *ts, alignment, size);
        AfterCall(ctx, ts);
        return p;
    }

    internal static string? TrySetOption(ThreadLocals* ts, HeapOption option, long value)
    {
        MallocContext* ctx = Context;
        string? refused = Ptmalloc.SetOption(ctx, ref *ts, option, value);
        RefreshFastPath(ctx);
        return refused;
    }

    internal static bool Trim(ThreadLocals* ts, nuint pad) => Ptmalloc.MallocTrim(Context, ref *ts, pad);

    /// <summary>The thread is ending: give its tcache and arena back (glibc's tcache_thread_shutdown and arena_thread_freeres).</summary>
    internal static void ShutdownThread(ThreadLocals* ts)
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return;
        Ptmalloc.ThreadShutdown(ctx, ref *ts);
    }

    /// <summary>fork's child handler, the forking thread's state being <paramref name="ts"/>.</summary>
    internal static void ForkChild(ThreadLocals* ts)
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return;
        Ptmalloc.ForkUnlockChild(ctx, ts->Arena);
    }

    private static void AfterCall(MallocContext* ctx, ThreadLocals* ts)
    {
        // No purge timer for C callers: its thread cost a C process 2.3 MiB of peak RSS
        // (thread_churn 10000: 5.8 MiB against 3.6); their purges run on the slow paths.
        if (ctx->Mp.CheckAction != 0) HeapCheck.Run(ctx, ts->Tcache);
    }
}
