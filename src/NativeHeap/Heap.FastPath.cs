using System.Runtime.InteropServices;
using NativeHeap.Arenas;
using NativeHeap.Bins;

namespace NativeHeap;

/// <summary>
/// The fast paths' copies of the parameters they test (Heap.Calls.cs reads them), and their
/// publication to libnativeheap's C layer (<see cref="FastPath"/>). The copies are written at
/// start-up and after each SetOption, without a lock: a call racing SetOption may still see the
/// values before it. The C copy is written under <c>s_initLock</c>, turned off (RequestLimit 0)
/// while it changes.
/// </summary>
public static unsafe partial class Heap
{
    // Copies of what the fast paths test, so that they read no native memory but the tcache.
    /// <summary>One more than the largest request the tcache serves; 0 turns the fast paths off (checked mode).</summary>
    private static nuint s_fastRequestLimit;
    private static nuint s_fastBins;
    private static nuint s_tcacheCount;
    private static nuint s_tcacheBytes;
    private static bool s_callocFromTcache;
    private static bool s_debug;
    private static ulong s_debugKey;
    private static ulong s_tcacheKey;
    private static ulong* s_heapSlots;
    /// <summary>The main arena is on the break: free's fast path also knows the break's chunks (glibc-2.36 profile).</summary>
    private static bool s_onBreak;
    /// <summary>libnativeheap's C copy of the values above (null in a .NET-only process), written under s_initLock.</summary>
    private static FastPath* s_cFastPath;

    /// <summary>
    /// The fast paths' values as libnativeheap's C layer reads them: it serves tcache hits and
    /// frees into a bin with room without entering .NET. One layout, two readers: this is
    /// <c>struct nhm_fast_path</c> in src/NativeHeap.Native/nativeheap-managed.h, and
    /// NativeAbiLayoutTests compares the two.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct FastPath
    {
        /// <summary>As <see cref="s_fastRequestLimit"/>; written last, so that a C reader that sees it non-zero sees the rest.</summary>
        public nuint RequestLimit;
        public nuint Bins;
        public nuint Count;
        public nuint Bytes;
        public ulong Key;
        public ulong* HeapSlots;
        public int CallocFromTcache;
        /// <summary>The debug heap is on: malloc_usable_size is .NET's, and a block's size is its size word's (below).</summary>
        public int Debug;
        /// <summary>The debug heap's size-word key, for the C layer's copy of a block it cannot hand to .NET (deferred.c).</summary>
        public ulong DebugKey;
    }

    /// <summary>
    /// libnativeheap's start: from now on <paramref name="c"/> holds the fast paths' values,
    /// refreshed with them. It stays off (RequestLimit 0) until the heap is initialised.
    /// </summary>
    internal static void PublishFastPath(FastPath* c)
    {
        lock (s_initLock)
        {
            s_cFastPath = c;
            if (s_context != null) CopyFastPath(c);
        }
    }

    private static void CopyFastPath(FastPath* c)
    {
        // Off while it changes: a C call between two stores takes the managed path.
        Volatile.Write(ref c->RequestLimit, 0);
        c->Bins = s_fastBins;
        c->Count = s_tcacheCount;
        c->Bytes = s_tcacheBytes;
        c->Key = s_tcacheKey;
        c->HeapSlots = s_heapSlots; // a chunk on the break is not in it: C leaves it to the managed path
        c->CallocFromTcache = s_callocFromTcache ? 1 : 0;
        c->Debug = s_debug ? 1 : 0;
        c->DebugKey = s_debugKey;
        Volatile.Write(ref c->RequestLimit, s_fastRequestLimit);
    }

    private static void RefreshFastPath(MallocContext* ctx)
    {
        MallocParams* mp = &ctx->Mp;
        bool slowOnly = mp->CheckAction != 0 || mp->Debug != 0; // checked mode and the debug heap see every call
        s_debug = mp->Debug != 0;
        s_debugKey = mp->DebugKey;
        s_fastBins = slowOnly ? 0 : mp->TcacheBins; // 0: every free takes the slow path
        s_tcacheCount = mp->TcacheCount;
        s_tcacheBytes = mp->TcacheBytes;
        s_callocFromTcache = mp->CallocFromTcache != 0;
        s_onBreak = ctx->UseBrk != 0;
        s_fastRequestLimit = slowOnly || mp->TcacheBins == 0 ? 0 : BinIndex.TcacheUsableSize(mp->TcacheBins - 1) + 1;
        if (s_cFastPath != null) lock (s_initLock) CopyFastPath(s_cFastPath);
    }
}
