using System.Runtime.InteropServices;

namespace NativeHeap.Arenas;

/// <summary>
/// glibc's <c>struct malloc_par</c> (mp_) with the two globals that sit beside it,
/// global_max_fast and perturb_byte: the tunable parameters and the mmap statistics.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MallocParams
{
    public nuint TrimThreshold;
    public nuint TopPad;
    public nuint MmapThreshold;
    public nuint ArenaTest;
    public nuint ArenaMax;
    public int NMmaps;
    public int NMmapsMax;
    public int MaxNMmaps;
    /// <summary>Set once the user chose a threshold, top pad or mmap max: the mmap threshold stops adapting.</summary>
    public int NoDynThreshold;
    public nuint MmappedMem;
    public nuint MaxMmappedMem;
    public byte* SbrkBase;
    public nuint TcacheBins;
    public nuint TcacheMaxBytes;
    public nuint TcacheCount;
    public nuint TcacheUnsortedLimit;
    /// <summary>global_max_fast: the largest chunk size that goes to a fastbin.</summary>
    public nuint MaxFast;
    /// <summary>perturb_byte (M_PERTURB): 0, or the byte that fills fresh (inverted) and freed memory.</summary>
    public int PerturbByte;
    /// <summary>check (glibc.malloc.check): nonzero runs the full heap check after every operation.</summary>
    public int CheckAction;

    internal const nuint DefaultMmapThreshold = 128 * 1024;
    internal const nuint DefaultMmapThresholdMax = 32 * 1024 * 1024;
    internal const nuint DefaultTrimThreshold = 128 * 1024;
    internal const nuint DefaultTopPad = 128 * 1024;
    internal const int DefaultMmapMax = 65536;
    internal const nuint DefaultTcacheCount = 7;
    internal const nuint MaxTcacheCount = ushort.MaxValue;
    /// <summary>HEAP_MAX_SIZE: the size of a non-main heap, and twice the largest mmap threshold.</summary>
    internal const nuint HeapMaxSize = 64 * 1024 * 1024;
    /// <summary>FASTBIN_CONSOLIDATION_THRESHOLD: a free that leaves a chunk this big consolidates and trims.</summary>
    internal const nuint FastbinConsolidationThreshold = 64 * 1024;
    /// <summary>On heaps, a free chunk (not top) this big has its whole pages released at once (NativeHeap's).</summary>
    internal const nuint ReleaseFreeChunkSize = 1024 * 1024;
    /// <summary>MMAP_AS_MORECORE_SIZE: the least the main arena maps when sbrk fails.</summary>
    internal const nuint MmapAsMorecoreSize = 1024 * 1024;

    internal void SetDefaults()
    {
        TrimThreshold = DefaultTrimThreshold;
        TopPad = DefaultTopPad;
        MmapThreshold = DefaultMmapThreshold;
        NMmapsMax = DefaultMmapMax;
        ArenaTest = 8;
        ArenaMax = 0;
        TcacheBins = (nuint)Bins.BinIndex.TcacheMaxBins;
        TcacheMaxBytes = Bins.BinIndex.TcacheUsableSize((nuint)Bins.BinIndex.TcacheMaxBins - 1);
        TcacheCount = DefaultTcacheCount;
        TcacheUnsortedLimit = 0;
        MaxFast = Bins.BinIndex.MaxFastChunk(Bins.BinIndex.DefaultMxFast);
    }
}
