using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Bins;
using NativeHeap.Chunks;

namespace NativeHeap.Arenas;

/// <summary>
/// glibc's <c>struct malloc_state</c> (an arena), field for field, living in native memory.
/// The layout matters: a bin's head is a fake chunk whose fd/bk overlap two words of
/// <see cref="Bins"/>, and the initial top is the unsorted bin's fake chunk, whose size field
/// is <see cref="LastRemainder"/> (zero until the first allocation), so that the first growth
/// sees a top of size 0.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MallocState
{
    public int Mutex;
    public int Flags;
    public int HaveFastchunks;
    /// <summary>
    /// The arena's number (0: main), where glibc's struct has 4 bytes of padding: its purge
    /// state lives in the context's table at this index (MallocContext.Purge), so that the
    /// struct keeps glibc's size and an arena's first chunk lands where glibc's does.
    /// </summary>
    public int Index;
    public fixed ulong FastbinsY[BinIndex.NFastBins];
    public Chunk* Top;
    public Chunk* LastRemainder;
    public fixed ulong Bins[BinIndex.NBins * 2 - 2];
    public fixed uint Binmap[BinIndex.BinmapSize];
    public MallocState* Next;
    public MallocState* NextFree;
    public nuint AttachedThreads;
    public nuint SystemMem;
    public nuint MaxSystemMem;

    /// <summary>sizeof(struct malloc_state) in glibc 2.36 on x86-64: an arena's chunks start after it.</summary>
    internal const int GlibcSize = 2200;

    /// <summary>flags bit: the arena's memory is not one contiguous run of the break.</summary>
    internal const int NonContiguousBit = 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Chunk* BinAt(MallocState* av, int i) =>
        (Chunk*)((byte*)&av->Bins[(i - 1) * 2] - 2 * sizeof(nuint));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Chunk* Unsorted(MallocState* av) => BinAt(av, 1);

    /// <summary>initial_top: the unsorted bin's head, standing in for a top of size 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Chunk* InitialTop(MallocState* av) => BinAt(av, 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Chunk** Fastbin(MallocState* av, int index) => (Chunk**)&av->FastbinsY[index];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void MarkBin(MallocState* av, int i) => av->Binmap[i >> BinIndex.BinmapShift] |= 1u << (i & 31);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool BinMarked(MallocState* av, int i) => (av->Binmap[i >> BinIndex.BinmapShift] & (1u << (i & 31))) != 0;

    internal static bool Contiguous(MallocState* av) => (av->Flags & NonContiguousBit) == 0;

    internal static void SetNonContiguous(MallocState* av) => av->Flags |= NonContiguousBit;

    /// <summary>malloc_init_state: empty bins, an initial top of size 0.</summary>
    internal static void Init(MallocState* av, bool contiguous)
    {
        System.Diagnostics.Debug.Assert(sizeof(MallocState) == GlibcSize);
        for (int i = 1; i < BinIndex.NBins; i++)
        {
            Chunk* bin = BinAt(av, i);
            bin->Fd = bin->Bk = bin;
        }
        if (!contiguous) SetNonContiguous(av);
        av->HaveFastchunks = 0;
        av->Top = InitialTop(av);
    }
}

/// <summary>
/// One arena's purge state (see Ptmalloc.Purge.cs), kept in the context's table at the
/// arena's <see cref="MallocState.Index"/>. Guarded by the arena's lock. A cache line of its
/// own: arenas are locked by different threads, which would otherwise write one line (in
/// the arena struct these fields shared lines with the arena's own lock and bins).
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct ArenaPurge
{
    /// <summary>The purge's next deadline (Environment.TickCount64 ms; 0: nothing waits).</summary>
    public long Deadline;
    /// <summary>When top last grew by a free (0: its tail is purged or was never freed).</summary>
    public long TopFreedAt;
    /// <summary>The purge's cached clock, which stamps read instead of the clock.</summary>
    public long Now;
    /// <summary>Slow calls since the purge last read the clock.</summary>
    public long Calls;
}
