using System.Diagnostics.CodeAnalysis;
using NativeHeap.Arenas;
using NativeHeap.Chunks;
using NativeHeap.Diagnostics;
using NativeHeap.Os;

namespace NativeHeap;

/// <summary>
/// The process's NativeHeap: malloc, free, calloc, realloc, memalign, malloc_trim, mallinfo2,
/// mallopt, malloc_info and malloc_stats, with glibc 2.36's algorithm on the real break and
/// mmap. Every decision (which bin, split, merge, grow, map, trim) is the one glibc makes for
/// the same calls on one thread.
/// </summary>
/// <remarks>
/// Semantics follow glibc where C has them: <c>Alloc(0)</c> returns a unique minimum block,
/// <c>Free(null)</c> does nothing, <c>Realloc(p, 0)</c> frees and returns null,
/// <c>Realloc(null, n)</c> allocates. They follow .NET where .NET has a convention: no memory
/// throws <see cref="OutOfMemoryException"/>, and a corrupted heap or a pointer NativeHeap did
/// not return throws <see cref="HeapCorruptionException"/> with glibc's words.
/// Options come from <c>NATIVEHEAP_TUNABLES</c> before first use, and from <see cref="SetOption"/>.
/// All members are thread-safe (one lock for the whole heap for now).
/// </remarks>
public static unsafe class Heap
{
    private static MallocContext* s_context;
    private static readonly Lock s_initLock = new();

    private static MallocContext* Context
    {
        get
        {
            MallocContext* ctx = s_context;
            return ctx != null ? ctx : Initialize();
        }
    }

    private static MallocContext* Initialize()
    {
        lock (s_initLock)
        {
            if (s_context != null) return s_context;
            string? text = Environment.GetEnvironmentVariable(Tunables.Variable);
            var settings = text is null ? [] : Tunables.Parse(text);
            MallocContext* ctx = MallocContext.Create();
            foreach (var (option, value, entry) in settings)
            {
                string? refused = Ptmalloc.SetOption(ctx, option, value);
                if (refused is not null)
                {
                    MallocContext.Destroy(ctx);
                    throw Tunables.Bad(entry, refused);
                }
            }
            s_context = ctx;
            return ctx;
        }
    }

    /// <summary>malloc: at least <paramref name="size"/> bytes, 16-byte aligned, uninitialised.</summary>
    /// <exception cref="OutOfMemoryException">No memory could be had, or the size cannot be represented.</exception>
    public static void* Alloc(nuint size)
    {
        MallocContext* ctx = Context;
        Enter(ctx);
        void* p;
        try { p = Ptmalloc.Malloc(ctx, size); }
        finally { Exit(ctx); }
        if (p == null) ThrowOutOfMemory(size);
        return p;
    }

    /// <summary>calloc: <paramref name="count"/> x <paramref name="size"/> bytes, zeroed.</summary>
    /// <exception cref="OutOfMemoryException">No memory, or count x size overflows.</exception>
    public static void* AllocZeroed(nuint count, nuint size)
    {
        if (size != 0 && count > nuint.MaxValue / size)
            throw new OutOfMemoryException($"NativeHeap: calloc of {count} x {size} bytes overflows the address space.");
        MallocContext* ctx = Context;
        Enter(ctx);
        void* p;
        try { p = Ptmalloc.Calloc(ctx, count, size); }
        finally { Exit(ctx); }
        if (p == null) ThrowOutOfMemory(count * size);
        return p;
    }

    /// <summary>
    /// realloc: resize <paramref name="ptr"/> to <paramref name="size"/> bytes, keeping its contents,
    /// in place where glibc would. Null allocates; size 0 frees and returns null.
    /// </summary>
    /// <exception cref="OutOfMemoryException">No memory; the old block is untouched and still owned by the caller.</exception>
    /// <exception cref="HeapCorruptionException"><paramref name="ptr"/> is not a block NativeHeap returned, or the heap is corrupted.</exception>
    public static void* Realloc(void* ptr, nuint size)
    {
        MallocContext* ctx = Context;
        Enter(ctx);
        void* p;
        bool failed;
        try { p = Ptmalloc.Realloc(ctx, ptr, size, out failed); }
        finally { Exit(ctx); }
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
        MallocContext* ctx = Context;
        Enter(ctx);
        void* p;
        try { p = Ptmalloc.Memalign(ctx, alignment, size); }
        finally { Exit(ctx); }
        if (p == null) ThrowOutOfMemory(size);
        return p;
    }

    /// <summary>free: return a block from <see cref="Alloc"/> and its kin. Null does nothing.</summary>
    /// <exception cref="HeapCorruptionException">A double free, a pointer NativeHeap did not return, or a corrupted heap.</exception>
    public static void Free(void* ptr)
    {
        if (ptr == null) return;
        MallocContext* ctx = Context;
        Enter(ctx);
        try { Ptmalloc.Free(ctx, ptr); }
        finally { Exit(ctx); }
    }

    /// <summary>malloc_usable_size: the bytes of the block that may be used, at least what was asked for.</summary>
    public static nuint UsableSize(void* ptr) => Ptmalloc.UsableSize(ptr);

    /// <summary>
    /// malloc_trim: consolidate, release the whole free pages inside free chunks (MADV_DONTNEED),
    /// and shrink top to <paramref name="pad"/> bytes. True if any memory was released.
    /// </summary>
    public static bool Trim(nuint pad)
    {
        MallocContext* ctx = Context;
        Enter(ctx);
        try { return Ptmalloc.MallocTrim(ctx, pad); }
        finally { Exit(ctx); }
    }

    /// <summary>mallinfo2: the heap's statistics.</summary>
    public static HeapInfo GetInfo()
    {
        MallocContext* ctx = Context;
        Enter(ctx);
        try { return MallInfo.Compute(ctx); }
        finally { Exit(ctx); }
    }

    /// <summary>mallopt, and the tcache tunables: set a parameter of the allocator.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside what the option takes (glibc's mallopt would return 0).</exception>
    public static void SetOption(HeapOption option, long value)
    {
        MallocContext* ctx = Context;
        string? refused;
        Enter(ctx);
        try { refused = Ptmalloc.SetOption(ctx, option, value); }
        finally { Exit(ctx); }
        if (refused is not null)
            throw new ArgumentOutOfRangeException(nameof(value), value, $"{option} {refused}.");
    }

    /// <summary>malloc_info: the heap's bins and totals as glibc's XML.</summary>
    public static void WriteInfoXml(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        MallocContext* ctx = Context;
        string xml;
        Enter(ctx);
        try { xml = MallocReport.InfoXml(ctx); }
        finally { Exit(ctx); }
        writer.Write(xml);
    }

    /// <summary>malloc_stats: glibc's summary text (per arena and in total, mmapped chunks included).</summary>
    public static void WriteStats(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        MallocContext* ctx = Context;
        string text;
        Enter(ctx);
        try { text = MallocReport.Stats(ctx); }
        finally { Exit(ctx); }
        writer.Write(text);
    }

    /// <summary>
    /// The full heap check: every chunk's boundary tags, every bin's links and sizes, the
    /// fastbins, the tcache and top.
    /// </summary>
    /// <exception cref="HeapCorruptionException">The first inconsistency found.</exception>
    public static void Validate()
    {
        MallocContext* ctx = Context;
        Enter(ctx);
        try { HeapCheck.Run(ctx); }
        finally { Exit(ctx); }
    }

    /// <summary>How often the heap found the break moved by someone else (tests, diagnostics).</summary>
    internal static long ForeignBreaks => Context->ForeignBreaks;

    private static void Enter(MallocContext* ctx) => ArenaLock.Enter(&ctx->Main.Mutex);

    private static void Exit(MallocContext* ctx)
    {
        try
        {
            if (ctx->Mp.CheckAction != 0) HeapCheck.Run(ctx);
        }
        finally
        {
            ArenaLock.Exit(&ctx->Main.Mutex);
        }
    }

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
