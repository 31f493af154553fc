using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Debugging;
using NativeHeap.Diagnostics;

namespace NativeHeap;

/// <summary>
/// The allocator's calls, given the calling thread's <see cref="ThreadLocals"/>: a .NET
/// thread's lives in native memory behind a thread static (Heap.Threads.cs, <c>Locals</c>); a C
/// thread's in libnativeheap's C thread-local. Both run the same fast paths here. Neither
/// keeps a managed object per call, and a C thread none at all: a managed object per C thread
/// would keep gen 0 resident in a program of many short threads (docs/decisions.md).
/// </summary>
public static unsafe partial class Heap
{
    /// <summary>
    /// The malloc fast path, for every caller: a chunk from tcache <paramref name="tc"/> if it
    /// holds one of the size, else null. No lock, no call out.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void* TcacheGetFast(Tcache* tc, nuint size)
    {
        if (tc != null && size < s_fastRequestLimit)
        {
            nuint idx = BinIndex.TcacheForRequest(size);
            if (tc->Counts[idx] != 0) return Tcache.Get(tc, idx);
        }
        return null;
    }

    /// <summary>
    /// The free fast path, for every caller: a small chunk of one of this heap's heaps into
    /// tcache <paramref name="tc"/> when its bin has room and it does not carry the tcache key
    /// (which needs the double-free walk). False: take the slow path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TcachePutFast(Tcache* tc, void* ptr)
    {
        if (tc == null) return false;
        Chunk* p = Chunk.FromMem(ptr);
        // Ours by address before any header is read: a foreign pointer's may be unreadable
        // (libnativeheap's C fast path, tcache_put_fast, tests in the same order).
        if (((nuint)p & Chunk.AlignMask) != 0
            || !(Ownership.HoldsHeapSlot(s_heapSlots, p) || (s_onBreak && MallocContext.OnBreakBelowTop(s_context, p))))
            return false;
        nuint head = p->Size;
        nuint idx = (head - Chunk.MinSize) >> 4; // csize2tidx of the head, its flag bits shifted out; huge below MINSIZE
        if (idx < s_fastBins && (head & (Chunk.IsMmapped | Chunk.UnalignedSizeBit)) == 0
            && Tcache.HasRoom(tc, idx, s_tcacheCount, s_tcacheBytes)
            && ((TcacheEntry*)ptr)->Key != s_tcacheKey)
        {
            Tcache.Put(tc, p, idx, s_tcacheKey);
            return true;
        }
        return false;
    }

    /// <summary>
    /// glibc 2.41's calloc fast path, where the profile allows it: a tcache chunk, all of it
    /// zeroed (a cached chunk held someone's data). Null: take the slow path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void* CallocFast(Tcache* tc, nuint count, nuint size)
    {
        // An overflowing product is left to the slow path; a multiply, not a division, tells.
        if (!s_callocFromTcache || Math.BigMul((ulong)count, (ulong)size, out ulong bytes) != 0) return null;
        void* p = TcacheGetFast(tc, (nuint)bytes);
        if (p != null) NativeMemory.Clear(p, Chunk.SizeOf(Chunk.FromMem(p)) - Chunk.SizeSz);
        return p;
    }

    /// <summary>malloc on a thread whose state is <paramref name="ts"/>: null when there is no memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // the tcache hit stays inline in Alloc and in the C ABI
    internal static void* Malloc(ThreadLocals* ts, nuint size)
    {
        void* p = TcacheGetFast(ts->Tcache, size);
        return p != null ? p : MallocSlow(ts, size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* MallocSlow(ThreadLocals* ts, nuint size)
    {
        MallocContext* ctx = Context;
        void* p = ctx->Mp.Debug != 0 ? DebugHeap.Malloc(ctx, ref *ts, size) : Ptmalloc.Malloc(ctx, ref *ts, size);
        AfterCall(ctx, ts);
        return p;
    }

    /// <summary>free on a thread whose state is <paramref name="ts"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Free(ThreadLocals* ts, void* ptr)
    {
        if (ptr == null || TcachePutFast(ts->Tcache, ptr)) return;
        FreeSlow(ts, ptr);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FreeSlow(ThreadLocals* ts, void* ptr)
    {
        MallocContext* ctx = Context;
        if (ctx->Mp.Debug != 0) DebugHeap.Free(ctx, ref *ts, ptr);
        else Ptmalloc.Free(ctx, ref *ts, ptr);
        AfterCall(ctx, ts);
    }

    /// <summary>free, bypassing the calling thread's tcache (<see cref="Ptmalloc.FreeUncached"/>).</summary>
    internal static void FreeUncached(void* ptr)
    {
        ThreadLocals* ts = Locals;
        MallocContext* ctx = Context;
        if (ctx->Mp.Debug != 0) DebugHeap.Free(ctx, ref *ts, ptr); // through the quarantine, whose evictions use the caller's tcache
        else Ptmalloc.FreeUncached(ctx, ptr);
        AfterCall(ctx, ts);
    }

    /// <summary>calloc: null when there is no memory or count x size overflows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* Calloc(ThreadLocals* ts, nuint count, nuint size)
    {
        void* p = CallocFast(ts->Tcache, count, size);
        return p != null ? p : CallocSlow(ts, count, size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* CallocSlow(ThreadLocals* ts, nuint count, nuint size)
    {
        MallocContext* ctx = Context;
        void* p = ctx->Mp.Debug != 0 ? DebugHeap.Calloc(ctx, ref *ts, count, size) : Ptmalloc.Calloc(ctx, ref *ts, count, size);
        AfterCall(ctx, ts);
        return p;
    }

    /// <summary>realloc: <paramref name="failed"/> when there was no memory (the old block is kept).</summary>
    internal static void* Realloc(ThreadLocals* ts, void* ptr, nuint size, out bool failed)
    {
        MallocContext* ctx = Context;
        void* p = ctx->Mp.Debug != 0
            ? DebugHeap.Realloc(ctx, ref *ts, ptr, size, out failed)
            : Ptmalloc.Realloc(ctx, ref *ts, ptr, size, out failed);
        AfterCall(ctx, ts);
        return p;
    }

    /// <summary>memalign (glibc's _mid_memalign): other alignments are raised to a power of two; null when there is no memory.</summary>
    internal static void* Memalign(ThreadLocals* ts, nuint alignment, nuint size)
    {
        MallocContext* ctx = Context;
        void* p = ctx->Mp.Debug != 0 ? DebugHeap.Memalign(ctx, ref *ts, alignment, size) : Ptmalloc.Memalign(ctx, ref *ts, alignment, size);
        AfterCall(ctx, ts);
        return p;
    }

    /// <summary>mallopt: null when the option took the value, else why it was refused.</summary>
    internal static string? TrySetOption(ThreadLocals* ts, HeapOption option, long value)
    {
        MallocContext* ctx = Context;
        string? refused = Ptmalloc.SetOption(ctx, ref *ts, option, value);
        // The profile set every option: NATIVEHEAP_TUNABLES' single tunables override it again,
        // as at start-up. One the new profile refuses is said, not applied.
        if (refused is null && option == HeapOption.Profile && ApplyEnvTunables(ctx, ts) is (string entry, string envRefused))
            refused = $"was set, but {Tunables.Variable}' '{entry}' was not applied under it: {envRefused}";
        RefreshFastPath(ctx);
        return refused;
    }

    internal static bool Trim(ThreadLocals* ts, nuint pad) => Ptmalloc.MallocTrim(Context, ref *ts, pad);

    /// <summary>The thread is ending: give its tcache and arena back (glibc's tcache_thread_shutdown and arena_thread_freeres).</summary>
    internal static void ShutdownThread(ThreadLocals* ts)
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return;
        if (ctx->Mp.Debug != 0) DebugHeap.ThreadExit(ctx, ref *ts); // its quarantine first: its blocks go to the tcache given back next
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
        if (ctx->Mp.CheckAction != 0) HeapCheck.Run(ctx, ts->Tcache);
        // Not for C threads: the timer's thread cost a C process 2.3 MiB of peak RSS
        // (thread_churn 10000: 5.8 MiB against 3.6); their purges run on the slow paths.
        if (ts->ArmsPurgeTimer) MaybeArmPurgeTimer(ctx);
    }
}
