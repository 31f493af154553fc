using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Diagnostics;

namespace NativeHeap;

/// <summary>
/// Thread ownership: each .NET thread's <see cref="ThreadLocals"/> (its tcache and arena),
/// made on its first call and given back once the thread has ended (the reaper) or its owner
/// is finalized. <c>t_locals</c> and <c>t_owner</c> are the thread's own; <c>s_owners</c> is
/// guarded by itself, and a state another thread reads (the snapshot's tcaches) is read under
/// it, so that none is released meanwhile.
/// </summary>
public static unsafe partial class Heap
{
    /// <summary>
    /// This thread's state (its tcache and arena), in native memory: the one thread static a
    /// call reads, and the same struct a C thread keeps in libnativeheap (Heap.Calls.cs).
    /// Null until the thread's first call. An unmanaged thread static: no GC statics base to find.
    /// </summary>
    [ThreadStatic] private static ThreadLocals* t_locals;

    /// <summary>Owns <see cref="t_locals"/>: written once a thread, never read on a call.</summary>
    [ThreadStatic] private static ThreadOwner? t_owner;

    /// <summary>
    /// Gives a .NET thread's state back once the thread has ended (glibc's
    /// tcache_thread_shutdown and arena_thread_freeres), then frees the state itself: found
    /// ended by <see cref="ReleaseEndedThreads"/>, or finalized once collected.
    /// </summary>
    private sealed class ThreadOwner(ThreadLocals* state, Thread thread)
    {
        private nint _state = (nint)state;
        internal readonly Thread Thread = thread;

        /// <summary>The thread's state, or null once released.</summary>
        internal ThreadLocals* State => (ThreadLocals*)Volatile.Read(ref _state);

        ~ThreadOwner() => Release();

        /// <summary>Give the thread's tcache and arena back and free its state: once, by the reaper or the finalizer, whichever comes first.</summary>
        internal void Release()
        {
            var state = (ThreadLocals*)Interlocked.Exchange(ref _state, 0);
            if (state == null) return;
            MallocContext* ctx = s_context;
            try
            {
                if (ctx != null) ShutdownThread(state);
            }
            catch (HeapCorruptionException)
            {
                // Neither a finalizer nor a timer may throw; a corrupted heap is reported by the next call that meets it.
            }
            NativeMemory.Free(state);
        }
    }

    /// <summary>
    /// The owners of .NET threads' state, held weakly, so that an ended thread's tcache and
    /// arena go back when the next thread starts allocating or the purge timer runs (glibc
    /// gives them back at thread exit), not when a GC finalizes the owner: a process that
    /// allocates little managed memory may not collect for minutes, and its short threads would
    /// each keep an arena and a tcache meanwhile (docs/decisions.md). Guarded by itself.
    /// </summary>
    private static readonly List<WeakReference<ThreadOwner>> s_owners = [];

    /// <summary>Give back the state of every registered .NET thread that has ended.</summary>
    private static void ReleaseEndedThreads()
    {
        // Released under the lock: a thread starting meanwhile waits, then finds the arenas
        // freed on the free list instead of making one more.
        lock (s_owners)
        {
            for (int i = s_owners.Count - 1; i >= 0; i--)
            {
                // A collected owner is being finalized, which releases it.
                bool live = s_owners[i].TryGetTarget(out ThreadOwner? owner);
                if (live && owner!.Thread.IsAlive) continue;
                s_owners[i] = s_owners[^1];
                s_owners.RemoveAt(s_owners.Count - 1);
                if (!live) continue;
                owner!.Release();
                GC.SuppressFinalize(owner);
            }
        }
    }

    /// <summary>
    /// The calling thread gives its tcache and arena back now, as at its exit (the lab's
    /// replay ends a recorded thread here); a later call on it starts afresh.
    /// </summary>
    internal static void EndThread()
    {
        ThreadOwner? owner = t_owner;
        if (owner == null) return;
        owner.Release();
        GC.SuppressFinalize(owner);
        t_owner = null;
        t_locals = null;
    }

    /// <summary>The calling .NET thread's state, made on its first call.</summary>
    private static ThreadLocals* Locals
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            ThreadLocals* ts = t_locals;
            return ts != null ? ts : CreateLocals();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ThreadLocals* CreateLocals()
    {
        _ = Context;
        if (!HeapMetrics.Created) HeapMetrics.Create(ReadMetrics); // here, not at start-up: libnativeheap's C threads never come here
        ReleaseEndedThreads(); // first, so that this thread can take an ended one's arena
        var ts = (ThreadLocals*)NativeMemory.AllocZeroed((nuint)sizeof(ThreadLocals));
        ts->ArmsPurgeTimer = true;
        var owner = new ThreadOwner(ts, Thread.CurrentThread);
        lock (s_owners) s_owners.Add(new WeakReference<ThreadOwner>(owner));
        t_owner = owner;
        return t_locals = ts;
    }

    /// <summary>
    /// The bytes cached in .NET threads' tcaches (ended threads' not yet given back included)
    /// and how many live threads have one: each count read as it stands, without its thread
    /// stopping, under the owners' lock so that none is freed meanwhile. For the metrics.
    /// </summary>
    private static (ulong Bytes, int Threads) TcacheTotals()
    {
        ulong bytes = 0;
        int threads = 0;
        lock (s_owners)
        {
            foreach (WeakReference<ThreadOwner> w in s_owners)
            {
                if (!w.TryGetTarget(out ThreadOwner? owner)) continue;
                ThreadLocals* ts = owner.State;
                Tcache* tc = ts == null ? null : (Tcache*)Volatile.Read(ref *(nint*)&ts->Tcache);
                if (tc == null) continue;
                bytes += Volatile.Read(ref tc->Bytes);
                if (owner.Thread.IsAlive) threads++;
            }
        }
        return (bytes, threads);
    }

    /// <summary>The heap's metrics now (what <see cref="HeapMetrics"/> reads); null before start-up, which a reading never causes.</summary>
    private static HeapReading? ReadMetrics()
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return null;
        (ulong bytes, int threads) = TcacheTotals();
        return HeapMetrics.Read(ctx, bytes, threads);
    }

    /// <summary>The tcaches of the .NET threads that have one, the caller's first (C threads' are not reachable from here).</summary>
    private static List<nint> ThreadTcaches()
    {
        var list = new List<nint>();
        ThreadLocals* mine = t_locals;
        if (mine != null && mine->Tcache != null) list.Add((nint)mine->Tcache);
        // Under the owners' lock, holding each owner: none is released while its tcache is read.
        lock (s_owners)
        {
            foreach (WeakReference<ThreadOwner> w in s_owners)
            {
                if (!w.TryGetTarget(out ThreadOwner? owner)) continue;
                ThreadLocals* ts = owner.State;
                if (ts != null && ts != mine && ts->Tcache != null) list.Add((nint)ts->Tcache);
            }
        }
        return list;
    }
}
