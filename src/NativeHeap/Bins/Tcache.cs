using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Chunks;

namespace NativeHeap.Bins;

/// <summary>A chunk cached in a tcache bin: its user memory holds the (safe-linked) next entry and the key.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct TcacheEntry
{
    public TcacheEntry* Next;
    /// <summary>The process's tcache key while cached: free recognises a double free by it.</summary>
    public ulong Key;
}

/// <summary>
/// glibc's <c>tcache_perthread_struct</c>: 64 counts and 64 singly linked lists of cached
/// chunks, taken without the arena lock. Like glibc, NativeHeap allocates it as the first
/// chunk of the heap (a 656-byte chunk), so heap addresses match glibc's.
/// </summary>
/// <remarks>
/// Only its thread reads or writes it (a drain at thread exit or on an option change runs on
/// that thread too). <see cref="Bytes"/> is NativeHeap's: it lives in the 8 bytes that glibc's
/// 640-byte struct leaves unused in its 656-byte chunk, so the chunk, and placement, stay glibc's.
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Tcache
{
    public fixed ushort Counts[BinIndex.TcacheMaxBins];
    public fixed ulong Entries[BinIndex.TcacheMaxBins];
    /// <summary>The sum of the cached chunks' sizes, which tcache_bytes bounds.</summary>
    public nuint Bytes;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TcacheEntry** Head(Tcache* tc, nuint index) => (TcacheEntry**)&tc->Entries[index];

    /// <summary>
    /// Whether bin <paramref name="index"/> may take one more chunk: fewer than
    /// <paramref name="count"/> cached there, and the chunk still within <paramref name="bytes"/>
    /// for the whole tcache (nuint.MaxValue, glibc's way: no bound).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool HasRoom(Tcache* tc, nuint index, nuint count, nuint bytes) =>
        tc->Counts[index] < count && tc->Bytes + BinIndex.TcacheChunkSize(index) <= bytes;

    /// <summary>tcache_put: cache chunk <paramref name="p"/> (the caller checked the bin has room).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Put(Tcache* tc, Chunk* p, nuint index, ulong key)
    {
        Debug.Assert(index < BinIndex.TcacheMaxBins);
        var e = (TcacheEntry*)Chunk.ToMem(p);
        e->Key = key;
        TcacheEntry** head = Head(tc, index);
        e->Next = Chunk.Protect(&e->Next, *head);
        *head = e;
        tc->Counts[index]++;
        tc->Bytes += BinIndex.TcacheChunkSize(index);
    }

    /// <summary>
    /// A bin whose list was overwritten cannot be walked: drop it (its chunks stay allocated,
    /// lost) so that the sizes it served work again. NativeHeap's addition; glibc aborts.
    /// </summary>
    internal static void Quarantine(Tcache* tc, nuint index)
    {
        *Head(tc, index) = null;
        tc->Bytes -= tc->Counts[index] * BinIndex.TcacheChunkSize(index);
        tc->Counts[index] = 0;
    }

    /// <summary>tcache_get: take the first cached chunk of a non-empty bin; returns user memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* Get(Tcache* tc, nuint index) => Take(tc, index, "malloc(): unaligned tcache chunk detected");

    /// <summary>Take the first cached chunk of a non-empty bin; a misaligned one is reported with <paramref name="misalignedMessage"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void* Take(Tcache* tc, nuint index, string misalignedMessage)
    {
        TcacheEntry** head = Head(tc, index);
        TcacheEntry* e = *head;
        if (Chunk.Misaligned(e))
        {
            Quarantine(tc, index);
            MallocPrinterr.Raise(misalignedMessage, e);
        }
        *head = Chunk.Reveal(&e->Next);
        tc->Counts[index]--;
        tc->Bytes -= BinIndex.TcacheChunkSize(index);
        e->Key = 0;
        return e;
    }
}
