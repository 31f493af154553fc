using System.Diagnostics.CodeAnalysis;
using NativeHeap.Arenas;
using NativeHeap.Chunks;
using NativeHeap.Debugging;
using NativeHeap.Diagnostics;
using NativeHeap.Os;

namespace NativeHeap;

// The public API. Its partials, one concern each: Heap.Startup.cs (the context), Heap.Calls.cs
// (the calls on a thread's state), Heap.FastPath.cs (the fast paths' parameters, published to C),
// Heap.Threads.cs (each thread's state and the reaper), Heap.Purge.cs (the purge timer),
// Heap.Fork.cs (fork's handlers).

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
    /// <remarks>With <see cref="HeapOption.Debug"/>, exactly the size asked for: the canary starts after it.</remarks>
    public static nuint UsableSize(void* ptr)
    {
        MallocContext* ctx = s_context;
        return ctx != null && ctx->Mp.Debug != 0 ? DebugHeap.UsableSize(ctx, ptr) : Ptmalloc.UsableSize(ptr);
    }

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
    /// <remarks>With <see cref="HeapOption.Debug"/>, also every block's header and canary and every quarantined block's poison.</remarks>
    /// <exception cref="HeapCorruptionException">The first inconsistency found.</exception>
    public static void Validate()
    {
        MallocContext* ctx = Context;
        HeapCheck.Run(ctx, Locals->Tcache);
        if (ctx->Mp.Debug != 0) Snapshot();
    }

    /// <summary>
    /// Every chunk of the process heap with its state (in use, tcache, fastbin, bins, top,
    /// metadata, mapped) and its resident bytes (mincore), arena by arena: what
    /// <see cref="Explain"/> and the heap maps are made from.
    /// </summary>
    /// <exception cref="HeapCorruptionException">A chunk whose size cannot be walked.</exception>
    public static Diagnostics.HeapSnapshot Snapshot()
    {
        MallocContext* ctx = Context;
        HeapSnapshot snapshot = HeapWalk.Take(ctx, ThreadTcaches());
        if (ctx->Mp.Debug != 0) DebugHeap.CheckAll(ctx, snapshot); // the debug heap's checks ride on every walk
        return snapshot;
    }

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
