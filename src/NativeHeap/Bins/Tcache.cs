using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Chunks;

namespace NativeHeap.Bins;

/// <summary>
/// A chunk cached in a tcache bin: its user memory holds the (safe-linked) next entry and the key.
/// libnativeheap's C fast paths read and write it too (struct nhm_tcache_entry in
/// src/NativeHeap.Native/nativeheap-managed.h; NativeAbiLayoutTests compares the two).
/// </summary>
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
/// The large bins (glibc 2.42's, in the nativeheap profile) come after it: a tcache made
/// without them is <see cref="GlibcSize"/> bytes and never touches them.
/// "Only its thread" includes libnativeheap's C layer, which serves a hit and a free into a bin
/// with room on this struct itself (struct nhm_tcache in src/NativeHeap.Native/nativeheap-managed.h:
/// Counts, Entries and Bytes, their order and the steps of Put and Take are a contract with it;
/// NativeAbiLayoutTests compares the offsets and runs one sequence of calls on both sides).
/// This file is the structure and its lists' steps; what is cached, when, and how it goes
/// back to the arenas is Arenas/Ptmalloc.Tcache.cs.
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Tcache
{
    public fixed ushort Counts[BinIndex.TcacheMaxBins];
    public fixed ulong Entries[BinIndex.TcacheMaxBins];
    /// <summary>The sum of the cached chunks' sizes, which tcache_bytes bounds.</summary>
    public nuint Bytes;
    /// <summary>Chunks in each large bin; each list is sorted by ascending size (glibc 2.42).</summary>
    public fixed ushort LargeCounts[BinIndex.TcacheLargeBins];
    public fixed ulong LargeEntries[BinIndex.TcacheLargeBins];
    /// <summary>Each large bin's bytes, so that a quarantined bin can leave <see cref="Bytes"/> right.</summary>
    public fixed ulong LargeBytes[BinIndex.TcacheLargeBins];

    /// <summary>The bytes of a tcache without large bins: glibc 2.36's 640 and the byte count (a 656-byte chunk).</summary>
    internal const int GlibcSize = BinIndex.TcacheMaxBins * (sizeof(ushort) + sizeof(ulong)) + sizeof(ulong);

    /// <summary>LargeBinCount: what one large bin may hold (glibc 2.43's fill count): each free and malloc walks its sorted list.</summary>
    internal const nuint LargeBinCount = 16;

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

    /// <summary>How many more chunks bin <paramref name="index"/> may take under the same two bounds as <see cref="HasRoom"/>.</summary>
    internal static nuint Room(Tcache* tc, nuint index, nuint count, nuint bytes)
    {
        nuint room = count > tc->Counts[index] ? count - tc->Counts[index] : 0;
        nuint size = BinIndex.TcacheChunkSize(index);
        // Divide only when the byte bound binds (never in the glibc-2.36 profile, which has none).
        if (tc->Bytes + room * size > bytes) room = bytes > tc->Bytes ? (bytes - tc->Bytes) / size : 0;
        return room;
    }

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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TcacheEntry** LargeHead(Tcache* tc, nuint k) => (TcacheEntry**)&tc->LargeEntries[k];

    /// <summary>A large bin whose list was overwritten: dropped as <see cref="Quarantine"/> drops a small one.</summary>
    internal static void QuarantineLarge(Tcache* tc, nuint k)
    {
        *LargeHead(tc, k) = null;
        tc->Bytes -= (nuint)tc->LargeBytes[k];
        tc->LargeBytes[k] = 0;
        tc->LargeCounts[k] = 0;
    }

    /// <summary>
    /// tcache_location_large: the first entry of large bin <paramref name="k"/> of at least
    /// <paramref name="size"/> bytes (null: none), and the entry before it (null: it is the
    /// head); with <paramref name="seek"/>, the walk goes on past entries of exactly that size
    /// until it meets <paramref name="seek"/>. A misaligned link is reported with
    /// <paramref name="misalignedMessage"/>, a list longer than its count as a corruption: the
    /// walk never follows a bad pointer.
    /// </summary>
    private static TcacheEntry* LocateLarge(Tcache* tc, nuint k, nuint size, string misalignedMessage, out TcacheEntry* prev,
        TcacheEntry* seek = null)
    {
        prev = null;
        TcacheEntry* e = *LargeHead(tc, k);
        for (nuint steps = 0; e != null; steps++)
        {
            if (Chunk.Misaligned(e))
            {
                QuarantineLarge(tc, k);
                MallocPrinterr.Raise(misalignedMessage, e);
            }
            if (steps >= tc->LargeCounts[k])
            {
                QuarantineLarge(tc, k);
                MallocPrinterr.Raise("free(): too many chunks detected in tcache", e);
            }
            nuint entrySize = Chunk.SizeOf(Chunk.FromMem(e));
            if (entrySize > size || (entrySize == size && (seek == null || e == seek))) break;
            prev = e;
            e = Chunk.Reveal(&e->Next);
        }
        return e;
    }

    /// <summary>free's double-free test: whether <paramref name="e"/>, a chunk of <paramref name="size"/> bytes, is cached in large bin <paramref name="k"/>.</summary>
    internal static bool HoldsLarge(Tcache* tc, nuint k, TcacheEntry* e, nuint size) =>
        LocateLarge(tc, k, size, "free(): unaligned chunk detected in tcache 2", out _, e) == e;

    /// <summary>Link <paramref name="e"/> after <paramref name="prev"/> (null: at the head): heads are plain pointers, links safe-linked.</summary>
    private static void LinkAfter(Tcache* tc, nuint k, TcacheEntry* prev, TcacheEntry* e)
    {
        if (prev == null) *LargeHead(tc, k) = e;
        else prev->Next = Chunk.Protect(&prev->Next, e);
    }

    /// <summary>tcache_put_large: cache chunk <paramref name="p"/> of <paramref name="size"/> bytes in large bin <paramref name="k"/>, in size order (the caller checked for room).</summary>
    internal static void PutLarge(Tcache* tc, Chunk* p, nuint k, nuint size, ulong key)
    {
        Debug.Assert(k < BinIndex.TcacheLargeBins && BinIndex.TcacheLarge(size) == k);
        TcacheEntry* next = LocateLarge(tc, k, size, "free(): unaligned chunk detected in tcache 2", out TcacheEntry* prev);
        var e = (TcacheEntry*)Chunk.ToMem(p);
        e->Key = key;
        e->Next = Chunk.Protect(&e->Next, next);
        LinkAfter(tc, k, prev, e);
        tc->LargeCounts[k]++;
        tc->LargeBytes[k] += size;
        tc->Bytes += size;
    }

    /// <summary>
    /// tcache_get_large (glibc 2.43: exact fit): a cached chunk of exactly <paramref name="size"/>
    /// bytes from large bin <paramref name="k"/>, or null. A larger one is left: handing it out
    /// unsplit would keep up to twice the memory asked for.
    /// </summary>
    internal static void* GetLarge(Tcache* tc, nuint k, nuint size)
    {
        TcacheEntry* e = LocateLarge(tc, k, size, "malloc(): unaligned tcache chunk detected", out TcacheEntry* prev);
        if (e == null || Chunk.SizeOf(Chunk.FromMem(e)) != size) return null;
        return UnlinkLarge(tc, k, prev, e, size);
    }

    /// <summary>Take entry <paramref name="e"/> (of <paramref name="size"/> bytes, after <paramref name="prev"/>) out of large bin <paramref name="k"/>; returns user memory.</summary>
    private static void* UnlinkLarge(Tcache* tc, nuint k, TcacheEntry* prev, TcacheEntry* e, nuint size)
    {
        LinkAfter(tc, k, prev, Chunk.Reveal(&e->Next));
        tc->LargeCounts[k]--;
        tc->LargeBytes[k] -= size;
        tc->Bytes -= size;
        e->Key = 0;
        return e;
    }

    /// <summary>The first (smallest) chunk of a non-empty large bin, for a drain; returns user memory.</summary>
    internal static void* TakeLarge(Tcache* tc, nuint k)
    {
        TcacheEntry* e = *LargeHead(tc, k);
        if (Chunk.Misaligned(e))
        {
            QuarantineLarge(tc, k);
            MallocPrinterr.Raise("tcache_thread_shutdown(): unaligned tcache chunk detected", e);
        }
        return UnlinkLarge(tc, k, null, e, Chunk.SizeOf(Chunk.FromMem(e)));
    }

    /// <summary>
    /// glibc 2.39's memalign step: the first chunk of bin <paramref name="index"/> whose memory
    /// is aligned to <paramref name="alignment"/>, taken out of the bin (user memory), or null.
    /// The walk is bounded by the bin's count and never follows a misaligned link.
    /// </summary>
    internal static void* TakeAligned(Tcache* tc, nuint index, nuint alignment)
    {
        // The head holds a plain pointer, each entry's link a safe-linked one.
        TcacheEntry** link = Head(tc, index);
        TcacheEntry* e = *link;
        for (nuint steps = 0; e != null; steps++)
        {
            if (Chunk.Misaligned(e) || steps >= tc->Counts[index])
            {
                Quarantine(tc, index);
                MallocPrinterr.Raise("malloc(): unaligned tcache chunk detected", e);
            }
            TcacheEntry* next = Chunk.Reveal(&e->Next);
            if (((nuint)e & (alignment - 1)) == 0)
            {
                *link = steps == 0 ? next : Chunk.Protect(link, next);
                return Taken(tc, index, e);
            }
            link = &e->Next;
            e = next;
        }
        return null;
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
        return Taken(tc, index, e);
    }

    /// <summary>Entry <paramref name="e"/>, just unlinked from bin <paramref name="index"/>, leaves the counts and its key; returns user memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void* Taken(Tcache* tc, nuint index, TcacheEntry* e)
    {
        tc->Counts[index]--;
        tc->Bytes -= BinIndex.TcacheChunkSize(index);
        e->Key = 0;
        return e;
    }
}
