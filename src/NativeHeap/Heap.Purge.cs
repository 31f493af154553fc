using System.Runtime.CompilerServices;
using NativeHeap.Arenas;
using NativeHeap.Os;

namespace NativeHeap;

/// <summary>
/// The process heap's purge timer: free pages are released from the allocator's slow paths
/// when a call finds its arena's purge due, and from this timer when no call comes (a process
/// that freed a burst and went idle). It runs only while some arena has a purge scheduled:
/// armed by the slow call of a .NET thread that scheduled one, re-armed for the next
/// deadline, idle otherwise. C callers (libnativeheap) do not arm it: see Heap.Calls.cs.
/// </summary>
public static unsafe partial class Heap
{
    private static Timer? s_purgeTimer;
    /// <summary>1 while the timer is armed (or running); set by whoever arms it, cleared by the timer when nothing waits.</summary>
    private static int s_purgeTimerArmed;

    /// <summary>After a slow call: arm the timer if a purge was scheduled and it is idle.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MaybeArmPurgeTimer(MallocContext* ctx)
    {
        // Plain reads first: while the timer is armed, a slow call pays no interlocked operation.
        if (Volatile.Read(ref ctx->PurgeScheduled) == 0 || Volatile.Read(ref s_purgeTimerArmed) != 0
            || Interlocked.CompareExchange(ref s_purgeTimerArmed, 1, 0) != 0) return;
        ArmPurgeTimer(ctx->Mp.PurgeDelayMs);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ArmPurgeTimer(long dueMs)
    {
        dueMs = Math.Clamp(dueMs, 1, int.MaxValue);
        Timer? timer = Volatile.Read(ref s_purgeTimer);
        if (timer is null)
        {
            // Created once, on the first purge scheduled; it does not keep the process alive.
            timer = new Timer(static _ => PurgeTick(), null, Timeout.Infinite, Timeout.Infinite);
            timer = Interlocked.CompareExchange(ref s_purgeTimer, timer, null) ?? timer;
        }
        timer.Change(dueMs, Timeout.Infinite);
    }

    /// <summary>
    /// The timer: purge every arena whose deadline has passed and whose lock is free (a busy
    /// arena purges itself on its owner's next slow call), then re-arm for the earliest
    /// deadline left, or go idle.
    /// </summary>
    private static void PurgeTick()
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return;
        ReleaseEndedThreads(); // their cached chunks return to the arenas, to be purged in turn
        Volatile.Write(ref ctx->PurgeScheduled, 0); // cleared first: a deadline set during the scan re-arms below
        long now = Environment.TickCount64;
        long next = long.MaxValue;
        MallocState* av = &ctx->Main;
        do
        {
            ArenaPurge* ap = MallocContext.Purge(ctx, av);
            long deadline = Volatile.Read(ref ap->Deadline);
            if (deadline != 0 && now >= deadline && FutexLock.TryEnter(&av->Mutex))
            {
                try
                {
                    Ptmalloc.PurgeArena(ctx, av, now | 1);
                }
                catch (HeapCorruptionException)
                {
                    // Not here, on a timer thread: the arena's next call meets the corruption and reports it.
                    ap->Deadline = 0;
                }
                finally
                {
                    FutexLock.Exit(&av->Mutex);
                }
                deadline = Volatile.Read(ref ap->Deadline);
            }
            if (deadline != 0) next = Math.Min(next, deadline);
            av = (MallocState*)Volatile.Read(ref *(nint*)&av->Next);
        }
        while (av != &ctx->Main);

        if (next != long.MaxValue)
        {
            ArmPurgeTimer(Math.Max(next - now, ctx->Mp.PurgeDelayMs / 8));
            return;
        }
        Volatile.Write(ref s_purgeTimerArmed, 0);
        if (Volatile.Read(ref ctx->PurgeScheduled) != 0 && Interlocked.CompareExchange(ref s_purgeTimerArmed, 1, 0) == 0)
            ArmPurgeTimer(ctx->Mp.PurgeDelayMs);
    }

    /// <summary>
    /// Purge every arena now as the timer would once the process had been idle for
    /// purge_delay (a chunk freed just now counts as freed that long ago). For the lab's
    /// what-if of the default profile; the arenas' cached clocks are left as they were.
    /// </summary>
    internal static void PurgeAsIfIdle()
    {
        MallocContext* ctx = Context;
        if (ctx->Mp.PurgeDelayMs < 0) return;
        long now = Environment.TickCount64 + ctx->Mp.PurgeDelayMs;
        MallocState* av = &ctx->Main;
        do
        {
            FutexLock.Enter(&av->Mutex);
            try
            {
                ArenaPurge* ap = MallocContext.Purge(ctx, av);
                long cached = ap->Now;
                Ptmalloc.PurgeArena(ctx, av, now | 1);
                ap->Now = cached;
            }
            finally
            {
                FutexLock.Exit(&av->Mutex);
            }
            av = (MallocState*)Volatile.Read(ref *(nint*)&av->Next);
        }
        while (av != &ctx->Main);
    }
}
