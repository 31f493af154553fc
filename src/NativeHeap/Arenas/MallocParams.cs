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
    /// <summary>tcache_bytes (NativeHeap's): the most chunk bytes one thread's tcache holds; nuint.MaxValue, no bound.</summary>
    public nuint TcacheBytes;
    /// <summary>calloc_tcache (glibc 2.41's calloc): nonzero serves calloc from the tcache, zeroing the chunk.</summary>
    public int CallocFromTcache;
    /// <summary>trim_tcache (NativeHeap's): nonzero makes malloc_trim return the caller's tcache to the arenas first.</summary>
    public int TrimTcache;
    /// <summary>tcache_flush (NativeHeap's): nonzero makes a free into a full tcache bin return the bin's older half to the arenas at once.</summary>
    public int TcacheFlush;
    /// <summary>realloc_in_place (glibc 2.38's realloc): nonzero returns a block as it is when the request grows or shrinks within 16 bytes of its usable size.</summary>
    public int ReallocInPlace;
    /// <summary>memalign_tcache (glibc 2.39's memalign): nonzero serves an aligned request from a cached chunk of its size that is already aligned.</summary>
    public int MemalignTcache;
    /// <summary>purge_delay (NativeHeap's): milliseconds a free page stays resident before it is released; -1 never (glibc), 0 at once.</summary>
    public long PurgeDelayMs;
    /// <summary>
    /// Whether each tcache has glibc 2.42's large bins: fixed by the profile before the first
    /// allocation, because it sets the tcache's size (glibc 2.36's is 648 bytes, a 656-byte chunk).
    /// </summary>
    public int TcacheHasLarge;
    /// <summary>One more than the largest chunk size the large tcache bins take; 0: none (tcache_max up to 1032).</summary>
    public nuint TcacheLargeLimit;
    /// <summary>debug (NativeHeap's): nonzero gives every block canaries and a quarantine (Debugging/DebugHeap); fixed before the first allocation.</summary>
    public int Debug;
    /// <summary>quarantine_bytes (NativeHeap's): the most freed chunk bytes the debug heap holds poisoned.</summary>
    public nuint QuarantineBytes;
    /// <summary>The debug heap's secrets (Debugging/DebugBlock: the size word's key, the canary pattern), drawn when debug is set.</summary>
    public ulong DebugKey, DebugCanary;
    /// <summary>guard_sample (NativeHeap's): with debug, every Nth allocation gets pages of its own before a guard page (Debugging/DebugGuard); 0: none.</summary>
    public int GuardSample;

    internal const nuint DefaultMmapThreshold = 128 * 1024;
    internal const nuint DefaultMmapThresholdMax = 32 * 1024 * 1024;
    internal const nuint DefaultTrimThreshold = 128 * 1024;
    internal const nuint DefaultTopPad = 128 * 1024;
    internal const int DefaultMmapMax = 65536;
    internal const nuint DefaultTcacheCount = 7;
    internal const nuint MaxTcacheCount = ushort.MaxValue;
    /// <summary>FASTBIN_CONSOLIDATION_THRESHOLD: a free that leaves a chunk this big consolidates and trims.</summary>
    internal const nuint FastbinConsolidationThreshold = 64 * 1024;
    /// <summary>MMAP_AS_MORECORE_SIZE: the least the main arena maps when sbrk fails.</summary>
    internal const nuint MmapAsMorecoreSize = 1024 * 1024;

    /// <summary>
    /// The nativeheap profile's tcache: 32 chunks a bin where glibc 2.36 keeps 7 (a batch of a
    /// few hundred live small blocks then stays in the thread's cache instead of taking the
    /// arena lock for most calls), bounded by 1 MiB of chunks a thread so that the deeper
    /// cache cannot pin more than that. 32 over 64 for memory (docs/decisions.md).
    /// </summary>
    internal const nuint NativeHeapTcacheCount = 32;
    internal const nuint NativeHeapTcacheBytes = 1024 * 1024;
    /// <summary>The nativeheap profile's purge delay (README: chosen by malloc-large's time and RSS).</summary>
    internal const long NativeHeapPurgeDelayMs = 1000;
    /// <summary>The debug heap's quarantine, per thread: a 256 KiB block three times over, and small enough to keep its checks mostly in cache (docs/decisions.md).</summary>
    internal const nuint DefaultQuarantineBytes = 1024 * 1024;

    /// <summary>
    /// Every option a profile sets to <paramref name="profile"/>'s value (OptionTable's
    /// defaults), and the tcache's large bins, which only the profile decides.
    /// </summary>
    internal void SetDefaults(HeapProfile profile)
    {
        fixed (MallocParams* mp = &this) OptionTable.StoreDefaults(mp, profile);
        TcacheHasLarge = profile == HeapProfile.Glibc236 ? 0 : 1;
    }
}
