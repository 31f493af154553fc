using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Diagnostics;
using NativeHeap.Os;

namespace NativeHeap;

/// <summary>
/// The process's NativeHeap: malloc, free, calloc, realloc, memalign, malloc_trim, mallinfo2,
/// mallopt, malloc_info and malloc_stats, with glibc 2.36's algorithm: a tcache per thread,
/// the main arena (on the program break or, by default, on mmap'd heaps: see
/// <see cref="HeapOption.UseBrk"/>) and further arenas on 64 MiB-aligned mmap'd heaps. On one
/// thread, every decision (which bin, split, merge, grow, map, trim) is the one glibc makes.
/// </summary>
/// <remarks>
/// Semantics follow glibc where C has them: <c>Alloc(0)</c> returns a unique minimum block,
/// <c>Free(null)</c> does nothing, <c>Realloc(p, 0)</c> frees and returns null,
/// <c>Realloc(null, n)</c> allocates. They follow .NET where .NET has a convention: no memory
/// throws <see cref="OutOfMemoryException"/>, and a corrupted heap or a pointer NativeHeap did
/// not return throws <see cref="HeapCorruptionException"/> with glibc's words.
/// Options come from <c>NATIVEHEAP_TUNABLES</c> before first use, and from <see cref="SetOption"/>.
/// Every member is thread-safe; a block may be freed on any thread. A tcache hit (allocation)
/// and a free into the tcache take no lock and make no call outside managed code.
/// </remarks>
public static unsafe partial class Heap
{
    private static MallocContext* s_context;
    private static readonly Lock s_initLock = new();
    /// <summary>NATIVEHEAP_TUNABLES as parsed at start-up: a profile set later is applied under them again.</summary>
    private static List<(HeapOption Option, long Value, string Text)> s_envSettings = [];

    /// <summary>
    /// This thread's state (its tcache and arena), in native memory: the one thread static a
    /// call reads, and the same struct a C thread keeps in libnativeheap (Heap.Calls.cs).
    /// Null until the thread's first call. An unmanaged thread static: no GC statics base to find.
    /// </summary>
    [ThreadStatic] private static ThreadLocals* t_locals;

    /// <summary>Owns <see cref="t_locals"/>: written once a thread, never read on a call.</summary>
    [ThreadStatic] private static ThreadOwner? t_owner;

    // Copies of what the fast paths test, so that they read no native memory but the tcache.
    /// <summary>One more than the largest request the tcache serves; 0 turns the fast paths off (checked mode).</summary>
    private static nuint s_fastRequestLimit;
    private static nuint s_fastBins;
    private static nuint s_tcacheCount;
    private static nuint s_tcacheBytes;
    private static bool s_callocFromTcache;
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
        private int _reserved;
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
        Volatile.Write(ref c->RequestLimit, s_fastRequestLimit);
    }

    private static MallocContext* Context
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            MallocContext* ctx = s_context;
            return ctx != null ? ctx : Initialize();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static MallocContext* Initialize()
    {
        lock (s_initLock)
        {
            if (s_context != null) return s_context;
            int callerErrno = Marshal.GetLastSystemError(); // C callers' errno survives the first call
            string? text = Environment.GetEnvironmentVariable(Tunables.Variable);
            var settings = text is null ? [] : Tunables.Parse(text);
            // The profile sets every option, so it comes first wherever it stands; single
            // tunables then override it.
            HeapProfile profile = DefaultProfile;
            foreach (var (option, value, _) in settings)
                if (option == HeapOption.Profile) profile = (HeapProfile)value;
            MallocContext* ctx = MallocContext.Create(profile);
            s_envSettings = settings;
            ThreadLocals none = default;
            if (ApplyEnvTunables(ctx, &none) is (string entry, string refused))
            {
                MallocContext.Destroy(ctx);
                throw Tunables.Bad(entry, refused);
            }
            s_tcacheKey = ctx->TcacheKey;
            s_heapSlots = ctx->Owned.HeapSlots;
            RefreshFastPath(ctx);
            Interlocked.MemoryBarrier(); // the context is complete before other threads can see it
            s_context = ctx;
            Marshal.SetLastSystemError(callerErrno);
            return ctx;
        }
    }

    /// <summary>
    /// The profile unless NATIVEHEAP_TUNABLES names one. Its main arena lives on mmap'd heaps,
    /// glibc-2.36's on the break: see README, "The program break is shared".
    /// </summary>
    internal const HeapProfile DefaultProfile = HeapProfile.NativeHeap;

    private static void RefreshFastPath(MallocContext* ctx)
    {
        MallocParams* mp = &ctx->Mp;
        s_fastBins = mp->CheckAction != 0 ? 0 : mp->TcacheBins; // 0: every free takes the slow, checked path
        s_tcacheCount = mp->TcacheCount;
        s_tcacheBytes = mp->TcacheBytes;
        s_callocFromTcache = mp->CallocFromTcache != 0;
        s_onBreak = ctx->UseBrk != 0;
        s_fastRequestLimit = mp->CheckAction != 0 || mp->TcacheBins == 0 ? 0 : BinIndex.TcacheUsableSize(mp->TcacheBins - 1) + 1;
        if (s_cFastPath != null) lock (s_initLock) CopyFastPath(s_cFastPath);
    }

    /// <summary>
    /// NATIVEHEAP_TUNABLES' single tunables (the profile is set before them), at start-up and
    /// after a profile the program sets: null, or the first one refused and why.
    /// </summary>
    private static (string Entry, string Refused)? ApplyEnvTunables(MallocContext* ctx, ThreadLocals* ts)
    {
        (string, string)? first = null;
        foreach (var (option, value, entry) in s_envSettings)
        {
            if (option == HeapOption.Profile) continue;
            if (Ptmalloc.SetOption(ctx, ref *ts, option, value) is string refused) first ??= (entry, refused);
        }
        return first;
    }

    /// <summary>
    /// Gives a .NET thread's state back once the thread has ended (glibc's
    /// tcache_thread_shutdown and arena_thread_freeres), then frees the state itself: found
    /// ended by <see cref="ReleaseEndedThreads"/>, or finalized once collected.
    /// </summary>
    private sealed class ThreadOwner(ThreadLocals* state, Thread thread)
    {
        private nint _state = (nint)state;
        internal readonly Thread Thread = thread;

        /// <summary>The thread's state, or null once released.</summary>
        internal ThreadLocals* State => (ThreadLocals*)Volatile.Read(ref _state);

        ~ThreadOwner() => Release();

        /// <summary>Give the thread's tcache and arena back and free its state: once, by the reaper or the finalizer, whichever comes first.</summary>
        internal void Release()
        {
            var state = (ThreadLocals*)Interlocked.Exchange(ref _state, 0);
            if (state == null) return;
            MallocContext* ctx = s_context;
            try
            {
                if (ctx != null) Ptmalloc.ThreadShutdown(ctx, ref *state);
            }
            catch (HeapCorruptionException)
            {
                // Neither a finalizer nor a timer may throw; a corrupted heap is reported by the next call that meets it.
            }
            NativeMemory.Free(state);
        }
    }

    /// <summary>
    /// The owners of .NET threads' state, held weakly, so that an ended thread's tcache and
    /// arena go back when the next thread starts allocating or the purge timer runs (glibc
    /// gives them back at thread exit), not when a GC finalizes the owner: a process that
    /// allocates little managed memory may not collect for minutes, and larson's eight short
    /// threads then made eight arenas and kept eight tcaches. Guarded by itself.
    /// </summary>
    private static readonly List<WeakReference<ThreadOwner>> s_owners = [];

    /// <summary>Give back the state of every registered .NET thread that has ended.</summary>
    private static void ReleaseEndedThreads()
    {
        // Released under the lock: a thread starting meanwhile waits, then finds the arenas
        // freed on the free list instead of making one more.
        lock (s_owners)
        {
            for (int i = s_owners.Count - 1; i >= 0; i--)
            {
                // A collected owner is being finalized, which releases it.
                bool live = s_owners[i].TryGetTarget(out ThreadOwner? owner);
                if (live && owner!.Thread.IsAlive) continue;
                s_owners[i] = s_owners[^1];
                s_owners.RemoveAt(s_owners.Count - 1);
                if (!live) continue;
                owner!.Release();
                GC.SuppressFinalize(owner);
            }
        }
    }

    /// <summary>
    /// The calling thread gives its tcache and arena back now, as at its exit (the lab's
    /// replay ends a recorded thread here); a later call on it starts afresh.
    /// </summary>
    internal static void EndThread()
    {
        ThreadOwner? owner = t_owner;
        if (owner == null) return;
        owner.Release();
        GC.SuppressFinalize(owner);
        t_owner = null;
        t_locals = null;
    }

    /// <summary>The calling .NET thread's state, made on its first call.</summary>
    private static ThreadLocals* Locals
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            ThreadLocals* ts = t_locals;
            return ts != null ? ts : CreateLocals();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ThreadLocals* CreateLocals()
    {
        _ = Context;
        ReleaseEndedThreads(); // first, so that this thread can take an ended one's arena
        var ts = (ThreadLocals*)NativeMemory.AllocZeroed((nuint)sizeof(ThreadLocals));
        ts->ArmsPurgeTimer = true;
        var owner = new ThreadOwner(ts, Thread.CurrentThread);
        lock (s_owners) s_owners.Add(new WeakReference<ThreadOwner>(owner));
        t_owner = owner;
        return t_locals = ts;
    }

    /// <summary>fork's prepare handler: take every arena lock (glibc's __malloc_fork_lock_parent).</summary>
    internal static void ForkPrepare()
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return;
        Ptmalloc.ForkLock(ctx); // the break lock is only taken under an arena lock: it is free now
    }

    /// <summary>fork's parent handler: release what <see cref="ForkPrepare"/> took.</summary>
    internal static void ForkParent()
    {
        MallocContext* ctx = s_context;
        if (ctx == null) return;
        Ptmalloc.ForkUnlockParent(ctx);
    }

    /// <summary>malloc: at least <paramref name="size"/> bytes, 16-byte aligned, uninitialised.</summary>
    /// <exception cref="OutOfMemoryException">No memory could be had, or the size cannot be represented.</exception>
    public static void* Alloc(nuint size)
    {
        void* p = Malloc(Locals, size);
        if (p == null) ThrowOutOfMemory(size);
        return p;
    }

    /// <summary>free: return a block from <see cref="Alloc"/> and its kin, from any thread. Null does nothing.</summary>
    /// <exception cref="HeapCorruptionException">A double free, a pointer NativeHeap did not return, or a corrupted heap.</exception>
    public static void Free(void* ptr) => Free(Locals, ptr);

    /// <summary>calloc: <paramref name="count"/> x <paramref name="size"/> bytes, zeroed.</summary>
    /// <exception cref="OutOfMemoryException">No memory, or count x size overflows.</exception>
    public static void* AllocZeroed(nuint count, nuint size)
    {
        if (size != 0 && count > nuint.MaxValue / size)
            throw new OutOfMemoryException($"NativeHeap: calloc of {count} x {size} bytes overflows the address space.");
        void* p = Calloc(Locals, count, size);
        if (p == null) ThrowOutOfMemory(count * size);
        return p;
    }

    /// <summary>
    /// realloc: resize <paramref name="ptr"/> to <paramref name="size"/> bytes, keeping its contents,
    /// in place where glibc would (in the block's own arena, whichever thread calls). Null
    /// allocates; size 0 frees and returns null.
    /// </summary>
    /// <exception cref="OutOfMemoryException">No memory; the old block is untouched and still owned by the caller.</exception>
    /// <exception cref="HeapCorruptionException"><paramref name="ptr"/> is not a block NativeHeap returned, or the heap is corrupted.</exception>
    public static void* Realloc(void* ptr, nuint size)
    {
        void* p = Realloc(Locals, ptr, size, out bool failed);
        if (failed) ThrowOutOfMemory(size);
        return p;
    }

    /// <summary>aligned_alloc / memalign: <paramref name="size"/> bytes at an address that is a multiple of <paramref name="alignment"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a power of two.</exception>
    /// <exception cref="OutOfMemoryException">No memory, or size plus alignment overflows.</exception>
    public static void* AlignedAlloc(nuint size, nuint alignment)
    {
        if (alignment == 0 || !Ptmalloc.IsPowerOfTwo(alignment))
            throw new ArgumentException($"Alignment {alignment} is not a power of two.", nameof(alignment));
        void* p = Memalign(Locals, alignment, size);
        if (p == null) ThrowOutOfMemory(size);
        return p;
    }

    /// <summary>malloc_usable_size: the bytes of the block that may be used, at least what was asked for.</summary>
    public static nuint UsableSize(void* ptr) => Ptmalloc.UsableSize(ptr);

    /// <summary>
    /// malloc_trim: in every arena, consolidate and release the whole free pages inside free
    /// chunks (MADV_DONTNEED); shrink the main arena's top to <paramref name="pad"/> bytes.
    /// With <see cref="HeapOption.TrimTcache"/> (the default profile) the calling thread's
    /// tcache is emptied first. True if any memory was released.
    /// </summary>
    public static bool Trim(nuint pad) => Trim(Locals, pad);

    /// <summary>mallinfo2: the heap's statistics, all arenas added up.</summary>
    public static HeapInfo GetInfo() => MallInfo.Compute(Context);

    /// <summary>The number of arenas, the main one included.</summary>
    public static int ArenaCount => MallInfo.ArenaCount(Context);

    /// <summary>mallopt, and the tcache tunables: set a parameter of the allocator.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside what the option takes (glibc's mallopt would return 0).</exception>
    public static void SetOption(HeapOption option, long value)
    {
        string? refused = TrySetOption(Locals, option, value);
        if (refused is not null)
            throw new ArgumentOutOfRangeException(nameof(value), value, $"{option} {refused}.");
    }

    /// <summary>malloc_info: the heap's bins and totals as glibc's XML, a &lt;heap&gt; per arena.</summary>
    public static void WriteInfoXml(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(MallocReport.InfoXml(Context));
    }

    /// <summary>malloc_stats: glibc's summary text (per arena and in total, mmapped chunks included).</summary>
    public static void WriteStats(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(MallocReport.Stats(Context));
    }

    /// <summary>
    /// The full heap check: every chunk's boundary tags in every heap of every arena, every
    /// bin's links and sizes, the fastbins, the calling thread's tcache and top.
    /// </summary>
    /// <exception cref="HeapCorruptionException">The first inconsistency found.</exception>
    public static void Validate() => HeapCheck.Run(Context, Locals->Tcache);

    /// <summary>
    /// Every chunk of the process heap with its state (in use, tcache, fastbin, bins, top,
    /// metadata, mapped) and its resident bytes (mincore), arena by arena: what
    /// <see cref="Explain"/> and the heap maps are made from.
    /// </summary>
    /// <exception cref="HeapCorruptionException">A chunk whose size cannot be walked.</exception>
    public static Diagnostics.HeapSnapshot Snapshot() => HeapWalk.Take(Context, ThreadTcaches());

    /// <summary>
    /// Why the process holds the memory it holds: its anonymous resident memory broken down
    /// into the heap's chunks by where they sit (in use, tcache, fastbins, unsorted, small and
    /// large bins, top, metadata, mapped chunks) and what lies outside the heap; the live
    /// chunks that pin free memory below them; and what malloc_trim(0) would return. Its
    /// <c>ToString()</c> says it in words.
    /// </summary>
    /// <exception cref="HeapCorruptionException">A chunk whose size cannot be walked.</exception>
    public static HeapExplanation Explain()
    {
        HeapSnapshot snapshot = Snapshot();
        Statm statm = Statm.Read();
        return new HeapExplanation(snapshot, statm, Statm.ReadSmapsAnonymousBytes());
    }

    /// <summary>
    /// Write a map of the heap: each arena's memory as strips of address space, chunks coloured
    /// by state, pages that are not resident paled, the chunks that pin free memory marked.
    /// </summary>
    /// <param name="output">Where.</param>
    /// <param name="format">SVG, or HTML (zoom, pan, a chunk's details on hover).</param>
    /// <exception cref="HeapCorruptionException">A chunk whose size cannot be walked.</exception>
    public static void WriteMap(Stream output, HeapMapFormat format)
    {
        HeapExplanation e = Explain();
        HeapMap.Write(e.Snapshot, output, format, new HeapMapOptions { Pinned = e.PinnedBy });
    }

    /// <summary>The tcaches of the .NET threads that have one, the caller's first (C threads' are not reachable from here).</summary>
    private static List<nint> ThreadTcaches()
    {
        var list = new List<nint>();
        ThreadLocals* mine = t_locals;
        if (mine != null && mine->Tcache != null) list.Add((nint)mine->Tcache);
        // Under the owners' lock, holding each owner: none is released while its tcache is read.
        lock (s_owners)
        {
            foreach (WeakReference<ThreadOwner> w in s_owners)
            {
                if (!w.TryGetTarget(out ThreadOwner? owner)) continue;
                ThreadLocals* ts = owner.State;
                if (ts != null && ts != mine && ts->Tcache != null) list.Add((nint)ts->Tcache);
            }
        }
        return list;
    }

    /// <summary>How often the heap found the break moved by someone else (tests, diagnostics).</summary>
    internal static long ForeignBreaks => Context->ForeignBreaks;

    /// <summary>The last foreign move: the break found, and the heap's top end before it (tests, diagnostics).</summary>
    internal static (nuint Break, nuint OldEnd) LastForeignBreak => ((nuint)Context->LastForeignBreak, (nuint)Context->LastForeignOldEnd);

    /// <summary>Whether the main arena is on the program break.</summary>
    internal static bool UsesBrk => Context->UseBrk != 0;

    [DoesNotReturn]
    private static void ThrowOutOfMemory(nuint size)
    {
        string? why = OsMemory.LastFailure;
        OsMemory.LastFailure = null;
        if (size > Chunk.MaxRequest)
            throw new OutOfMemoryException($"NativeHeap: a request of {size} bytes exceeds the largest possible chunk (PTRDIFF_MAX).");
        throw new OutOfMemoryException(why is null
            ? $"NativeHeap could not allocate {size} bytes."
            : $"NativeHeap could not allocate {size} bytes: {why}.");
    }
}
