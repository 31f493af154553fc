using NativeHeap.Arenas;

namespace NativeHeap;

/// <summary>
/// fork's handlers, which libnativeheap registers: every arena lock is held across fork, so
/// that the child finds none held by a thread that is not there (the child's handler takes the
/// forking thread's state: Heap.Calls.cs, <c>ForkChild</c>). They read <c>s_context</c> without
/// a lock: a heap not started has no lock to take.
/// </summary>
public static unsafe partial class Heap
{
    /// <summary>fork's prepare handler: take every arena lock (glibc's __malloc_fork_lock_parent).</summary>
    internal static void ForkPrepare()
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return;
        Ptmalloc.ForkLock(ctx); // the break lock is only taken under an arena lock: it is free now
    }

    /// <summary>fork's parent handler: release what <see cref="ForkPrepare"/> took.</summary>
    internal static void ForkParent()
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return;
        Ptmalloc.ForkUnlockParent(ctx);
    }
}
