namespace NativeHeap;

/// <summary>
/// The parameters <see cref="Heap.SetOption"/> changes: glibc's mallopt parameters (with
/// mallopt's numbers) and the tcache tunables that glibc sets only through GLIBC_TUNABLES.
/// </summary>
public enum HeapOption
{
    /// <summary>M_MXFAST: the largest request served from fastbins, 0 to 160 (default 128 chunk bytes, requests up to 120).</summary>
    MxFast = 1,
    /// <summary>M_TRIM_THRESHOLD: top size at which a free gives memory back (default 128 KiB; negative, such as -1, never). Stops the dynamic threshold.</summary>
    TrimThreshold = -1,
    /// <summary>M_TOP_PAD: extra bytes asked of sbrk on growth and kept on trim (default 128 KiB). Stops the dynamic threshold.</summary>
    TopPad = -2,
    /// <summary>M_MMAP_THRESHOLD: requests this big get a mapping of their own when bins and top cannot serve them (default 128 KiB; any value, as glibc 2.36, negative meaning never). Stops the dynamic threshold.</summary>
    MmapThreshold = -3,
    /// <summary>M_MMAP_MAX: the most mmapped chunks at once (default 65536; 0 never maps). Stops the dynamic threshold.</summary>
    MmapMax = -4,
    /// <summary>M_CHECK_ACTION, as NativeHeap's checked mode: nonzero runs the full heap check after every operation.</summary>
    Check = -5,
    /// <summary>M_PERTURB: 0, or a byte (1-255) that fills freed memory, and whose complement fills fresh memory.</summary>
    Perturb = -6,
    /// <summary>M_ARENA_TEST: arenas created before the arena limit is computed (default 8).</summary>
    ArenaTest = -7,
    /// <summary>M_ARENA_MAX: the most arenas (default 0: 8 per core).</summary>
    ArenaMax = -8,
    /// <summary>glibc.malloc.tcache_count: chunks per tcache bin, 0 to 65535 (default 7; 0 disables the tcache).</summary>
    TcacheCount = 100,
    /// <summary>glibc.malloc.tcache_max: the largest request the tcache serves, 0 to 1032 (default 1032).</summary>
    TcacheMax = 101,
    /// <summary>glibc.malloc.tcache_unsorted_limit: unsorted chunks sorted before a cached exact fit is returned (default 0: no limit).</summary>
    TcacheUnsortedLimit = 102,
    /// <summary>
    /// NativeHeap's: 1 puts the main arena on the program break, as glibc does (needed to
    /// reproduce glibc's layout and RSS exactly); 0 puts it on mmap'd heaps like the other
    /// arenas, out of the way of glibc's own malloc, which moves the same break. Settable only
    /// before the first allocation (or as <c>use_brk</c> in NATIVEHEAP_TUNABLES).
    /// </summary>
    UseBrk = 103,
    /// <summary>
    /// NativeHeap's failure policy: 0 (default) throws <see cref="HeapCorruptionException"/>;
    /// 1 ends the process at once with the same message, as glibc aborts
    /// (<c>fail_fast</c> in NATIVEHEAP_TUNABLES). Process-wide.
    /// </summary>
    FailFast = 104,
    /// <summary>
    /// NativeHeap's: the <see cref="HeapProfile"/> (0 nativeheap, 1 glibc-2.36; <c>profile</c> in
    /// NATIVEHEAP_TUNABLES takes the names). Sets every option to the profile's value, then
    /// NATIVEHEAP_TUNABLES' single tunables again, as at start-up; so set it before other
    /// options. Settable only before the first allocation.
    /// </summary>
    Profile = 105,
    /// <summary>
    /// NativeHeap's: the most bytes (chunk sizes) one thread's tcache may hold
    /// (<c>tcache_bytes</c>). A free that would pass it first returns the largest cached
    /// chunks to their arenas, down to three quarters of it. 0 means no bound (glibc-2.36's way).
    /// </summary>
    TcacheBytes = 106,
    /// <summary>
    /// glibc 2.41's calloc (<c>calloc_tcache</c>): 1 serves calloc from the tcache, zeroing the
    /// whole chunk; 0 takes the arena path as glibc 2.36 does (which clears only what may be dirty).
    /// </summary>
    CallocTcache = 107,
    /// <summary>
    /// NativeHeap's (<c>trim_tcache</c>): 1 makes <see cref="Heap.Trim(nuint)"/> (malloc_trim) return
    /// the calling thread's tcache to the arenas before trimming; 0 leaves it, as glibc does.
    /// </summary>
    TrimTcache = 108,
    /// <summary>
    /// NativeHeap's decayed purge (<c>purge_delay</c>): milliseconds a free page (in any free
    /// chunk of a page or more, or at the top) stays resident before it is given back with
    /// MADV_DONTNEED; -1 never, as glibc (which gives back only the top past the trim
    /// threshold), 0 at once. Purges run from the allocator's slow paths and a timer.
    /// </summary>
    PurgeDelay = 109,
    /// <summary>
    /// NativeHeap's (<c>tcache_flush</c>): 1 makes a free into a full tcache bin first return
    /// the bin's older half to the arenas, a run at a time (one atomic push onto a fastbin, or
    /// one lock, per arena), and cache the chunk; 0 sends that one chunk to its arena, as glibc.
    /// </summary>
    TcacheFlush = 110,
    /// <summary>
    /// glibc 2.38's realloc (<c>realloc_in_place</c>): 1 returns the block as it is, without
    /// taking a lock, when the new size fits its usable bytes and leaves fewer than 16 of them
    /// unused (a page, for a block mapped on its own); 0 takes the arena's path, as glibc 2.36.
    /// </summary>
    ReallocInPlace = 111,
    /// <summary>
    /// glibc 2.39's memalign (<c>memalign_tcache</c>): 1 serves an aligned request from a
    /// cached chunk of its size whose address is already aligned; 0 takes the arena's path, as
    /// glibc 2.36.
    /// </summary>
    MemalignTcache = 112,
    /// <summary>
    /// NativeHeap's debug heap (<c>debug</c>): 1 gives every block canaries before and after it,
    /// holds freed blocks poisoned in a quarantine (<see cref="QuarantineBytes"/>) and reports
    /// an overflow, underflow, write after free or double free with the stacks that allocated
    /// and freed the block. Set before the heap's first allocation; 0 (the default) costs nothing.
    /// </summary>
    Debug = 113,
    /// <summary>
    /// NativeHeap's (<c>quarantine_bytes</c>): with <see cref="Debug"/>, how many bytes of freed
    /// chunks are held, poisoned, before their memory can be reused (oldest first); 0 holds none.
    /// </summary>
    QuarantineBytes = 114,
    /// <summary>
    /// NativeHeap's debug heap's guard pages (<c>guard_sample</c>): N places every Nth
    /// allocation at the end of pages of its own, right before an inaccessible page, and keeps
    /// its pages inaccessible for a while after it is freed: a read or write past its end, or
    /// after its free, faults, and the fault is reported with the block and its stacks before
    /// the process ends as a crash would. 1: every allocation; 0 (the default): none. A nonzero
    /// value turns <see cref="Debug"/> on, so it too must be set before the first allocation.
    /// </summary>
    GuardSample = 115,
}
