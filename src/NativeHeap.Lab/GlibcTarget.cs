using NativeHeap.Interop;

namespace NativeHeap.Lab;

/// <summary>
/// The process's glibc malloc (libc.so.6's malloc, free, calloc, realloc, memalign,
/// malloc_trim, mallinfo2) as a replay target: the reference NativeHeap is compared with.
/// In a .NET process glibc's heap is shared with the runtime, so its placements are not a
/// fresh heap's; its RSS deltas are what a program sees.
/// </summary>
public sealed unsafe class GlibcTarget : ReplayTarget
{
    /// <inheritdoc/>
    public override void* Malloc(nuint size) => GlibcMalloc.Malloc(size);
    /// <inheritdoc/>
    public override void* Calloc(nuint count, nuint size) => GlibcMalloc.Calloc(count, size);
    /// <inheritdoc/>
    public override void* Realloc(void* block, nuint size) => GlibcMalloc.Realloc(block, size);
    /// <inheritdoc/>
    public override void* Memalign(nuint alignment, nuint size) => GlibcMalloc.Memalign(alignment, size);
    /// <inheritdoc/>
    public override void Free(void* block) => GlibcMalloc.Free(block);
    /// <inheritdoc/>
    public override nuint UsableSize(void* block) => GlibcMalloc.MallocUsableSize(block);
    /// <inheritdoc/>
    public override void Trim(nuint pad) => GlibcMalloc.MallocTrim(pad);

    /// <inheritdoc/>
    public override HeapInfo GetInfo()
    {
        Libc.MallInfo2 m = GlibcMalloc.Mallinfo2();
        return new HeapInfo
        {
            Arena = m.Arena, Ordblks = m.Ordblks, Smblks = m.Smblks, Hblks = m.Hblks, Hblkhd = m.Hblkhd,
            Usmblks = m.Usmblks, Fsmblks = m.Fsmblks, Uordblks = m.Uordblks, Fordblks = m.Fordblks, Keepcost = m.Keepcost,
        };
    }
}
