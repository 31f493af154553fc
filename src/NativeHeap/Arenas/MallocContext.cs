using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

/// <summary>
/// Everything glibc keeps in globals for one malloc: the parameters (mp_), the main arena,
/// the tcache and its key, plus the list of address ranges the main arena owns (which the
/// heap walk needs). It lives in an mmap'd block of its own. <see cref="Heap"/> uses one
/// context for the process; tests make private ones to watch decisions from a known state.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MallocContext
{
    public MallocParams Mp;
    public MallocState Main;
    public ulong TcacheKey;
    /// <summary>The one thread state of a private heap (tests); the process heap keeps one per thread.</summary>
    public ThreadLocals Solo;
    /// <summary>Nonzero: the main arena grows on the break (glibc's way); zero: on mmap'd heaps like the others.</summary>
    public int UseBrk;
    /// <summary>Whether some thread has been given the main arena (glibc gives it to the thread that initialises malloc).</summary>
    public int MainArenaClaimed;
    /// <summary>list_lock: guards the arena list (Main.Next ...).</summary>
    public int ListLock;
    /// <summary>free_list_lock: guards FreeList, each arena's NextFree and AttachedThreads.</summary>
    public int FreeListLock;
    /// <summary>Arenas no thread is attached to.</summary>
    public MallocState* FreeList;
    /// <summary>Arenas in existence, the main one included.</summary>
    public long NArenas;
    /// <summary>The most arenas, once computed (0: not yet).</summary>
    public long NArenasLimit;
    /// <summary>reused_arena's round-robin position.</summary>
    public MallocState* NextToUse;
    /// <summary>aligned_heap_area: where the next heap can likely be mapped already aligned.</summary>
    public byte* AlignedHeapArea;
    /// <summary>How often growth found the break moved by someone else since the heap last grew.</summary>
    public long ForeignBreaks;
    /// <summary>Where the last foreign move left the break, and where the heap's top had ended.</summary>
    public byte* LastForeignBreak, LastForeignOldEnd;
    /// <summary>
    /// Set (to 1) when some arena's purge deadline went from none to a time; the process heap's
    /// purge timer clears it before each scan (see Heap.Purge.cs). Written under any arena's lock.
    /// </summary>
    public int PurgeScheduled;
    /// <summary>
    /// Bytes given back to the kernel by the purge and by trim (each MADV_DONTNEED, lowered
    /// break, shrunk or deleted heap adds its length), for the heap's metrics. Added to with an
    /// atomic from the slow paths of any arena, beside a system call that costs far more.
    /// </summary>
    public long ReleasedBytes;
    public Ownership Owned;
    public Segments Segments;
    /// <summary>The last arena index given out (the main arena's is 0). Arenas are never destroyed.</summary>
    public int LastArenaIndex;
    /// <summary>
    /// The arenas' purge state, by <see cref="MallocState.Index"/>, a cache line each (the
    /// table's start is aligned at run time); untouched pages of it cost nothing.
    /// </summary>
    private fixed byte _purge[(ArenaCapacity + 1) * 64];

    /// <summary>The most arenas a heap makes (glibc has no such bound; arena_max above it is capped here).</summary>
    internal const int ArenaCapacity = 1024;

    /// <summary>Arena <paramref name="av"/>'s purge state.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ArenaPurge* Purge(MallocContext* ctx, MallocState* av) =>
        (ArenaPurge*)((((nuint)ctx->_purge + 63) & ~(nuint)63) + (nuint)av->Index * 64);

    /// <summary>Create a context with <paramref name="profile"/>'s defaults in its own mapping.</summary>
    /// <param name="profile">Whose defaults: glibc 2.36's (the tests' private heaps) or NativeHeap's.</param>
    /// <param name="useBrk">Whether the main arena grows on the break or on mmap'd heaps; by default the profile's choice (glibc-2.36: the break).</param>
    internal static MallocContext* Create(HeapProfile profile = HeapProfile.Glibc236, bool? useBrk = null)
    {
        nuint size = OsMemory.AlignUp((nuint)sizeof(MallocContext), OsMemory.PageSize);
        var ctx = (MallocContext*)OsMemory.Map(size);
        if (ctx == null)
            throw new OutOfMemoryException(OsMemory.LastFailure);
        ctx->Mp.SetDefaults(profile);
        bool onBrk = useBrk ?? OptionTable.Find(HeapOption.UseBrk)!.Default(profile) == 1;
        MallocState.Init(&ctx->Main, contiguous: onBrk);
        ctx->Main.Next = &ctx->Main;
        ctx->Main.AttachedThreads = 1;
        ctx->NArenas = 1;
        ctx->UseBrk = onBrk ? 1 : 0;
        Ownership.Init(&ctx->Owned);
        ctx->TcacheKey = RandomKey();
        return ctx;
    }

    /// <summary>
    /// Discard a context made for a test, with every block in it. Its break memory goes back
    /// when it is still the last thing on the break, and its heaps are unmapped; mmapped
    /// chunks still live are not tracked and stay mapped.
    /// </summary>
    internal static void Destroy(MallocContext* ctx)
    {
        MallocState* av = &ctx->Main;
        for (MallocState* a = av->Next; a != av;)
        {
            MallocState* next = a->Next; // a lives in its first heap
            DeleteHeaps(ctx, a);
            a = next;
        }
        if (ctx->UseBrk == 0) DeleteHeaps(ctx, av);
        if (ctx->UseBrk != 0 && ctx->Segments.Count == 1 && av->Top != MallocState.InitialTop(av))
        {
            byte* topEnd = (byte*)av->Top + Chunk.SizeOf(av->Top);
            using (FutexLock.Hold(OsMemory.BreakLock))
            {
                if (OsMemory.Sbrk(0) == topEnd)
                    OsMemory.Sbrk(-(nint)(topEnd - ctx->Mp.SbrkBase));
            }
        }
        Ownership.Release(&ctx->Owned);
        OsMemory.Unmap(ctx, OsMemory.AlignUp((nuint)sizeof(MallocContext), OsMemory.PageSize));
    }

    /// <summary>
    /// tcache_key_initialize: 8 random bytes from getrandom, as glibc; not through .NET's
    /// RandomNumberGenerator, which loads OpenSSL (about 10 MB of resident memory) into a
    /// process that may only have wanted a heap. glibc's own fallback is not random either.
    /// </summary>
    private static ulong RandomKey()
    {
        ulong key;
        if (OsProcess.TryGetRandom(&key, sizeof(ulong))) return key;
        return (ulong)Random.Shared.NextInt64() ^ (ulong)Environment.TickCount64;
    }

    /// <summary>Whether <paramref name="p"/> lies in memory of this heap's arenas (not mmapped chunks).</summary>
    internal static bool OwnsHeapChunk(MallocContext* ctx, Chunk* p)
    {
        if (Ownership.HoldsHeapSlot(ctx->Owned.HeapSlots, p)) return true;
        if (ctx->UseBrk == 0) return false;
        if (OnBreakBelowTop(ctx, p)) return true;
        foreach (ArenaRegion r in ArenaRegions.Of(ctx, &ctx->Main))
            if ((byte*)p >= r.Start && (byte*)p < r.End) return true;
        return ctx->Segments.Overflowed != 0; // past the record, trust the header as glibc does
    }

    /// <summary>
    /// The break's common case, cheap enough for free's fast path: the main arena's memory is
    /// one run of the break (no foreign sbrk split it) and <paramref name="p"/> lies in it below
    /// top, where every chunk in use lies. Read without the lock: top only moves past a chunk
    /// in use by a free of that chunk, so a stale top can only say false, and false sends the
    /// caller on to the full test.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool OnBreakBelowTop(MallocContext* ctx, Chunk* p) =>
        Volatile.Read(ref ctx->Segments.Count) == 1 && (ulong)p >= ctx->Segments.Starts[0]
        && (nuint)p < (nuint)Volatile.Read(ref *(nint*)&ctx->Main.Top);

    /// <summary>Unmap the heaps of arena <paramref name="av"/> (on heaps), its own first heap last.</summary>
    private static void DeleteHeaps(MallocContext* ctx, MallocState* av)
    {
        foreach (ArenaRegion r in ArenaRegions.Of(ctx, av)) HeapHeader.Delete(ctx, r.Heap);
    }
}

/// <summary>
/// The start of each separate run of memory the main arena has taken (the first sbrk, each
/// growth after a foreign sbrk, each mmap fallback). Each run ends at top or at a fencepost
/// pair, so a heap walk can visit every chunk. Past <see cref="Capacity"/> runs the walk
/// covers the first ones only and says so.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Segments
{
    internal const int Capacity = 256;
    public int Count;
    public int Overflowed;
    public fixed ulong Starts[Capacity];
    /// <summary>Each region's end, once a later one began (the last one ends at top's end).</summary>
    public fixed ulong Ends[Capacity];

    /// <summary>A new region begins at <paramref name="start"/>; the one before ended at <paramref name="previousEnd"/>.</summary>
    internal static void Add(Segments* s, Chunk* start, byte* previousEnd)
    {
        if (s->Count > 0 && s->Count <= Capacity) s->Ends[s->Count - 1] = (ulong)previousEnd;
        if (s->Count < Capacity) s->Starts[s->Count++] = (ulong)start;
        else s->Overflowed = 1;
    }
}
