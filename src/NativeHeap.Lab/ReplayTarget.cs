using NativeHeap.Arenas;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Lab;

/// <summary>
/// An allocator a trace can be replayed on, with C's semantics: null for no memory, a failed
/// realloc keeps the old block. NativeHeap's is <see cref="NativeHeapTarget"/>; glibc's (by
/// P/Invoke) is <see cref="GlibcTarget"/>.
/// </summary>
public abstract unsafe class ReplayTarget
{
    /// <summary>malloc.</summary>
    public abstract void* Malloc(nuint size);
    /// <summary>calloc.</summary>
    public abstract void* Calloc(nuint count, nuint size);
    /// <summary>realloc: null on failure, the old block kept.</summary>
    public abstract void* Realloc(void* block, nuint size);
    /// <summary>memalign.</summary>
    public abstract void* Memalign(nuint alignment, nuint size);
    /// <summary>free.</summary>
    public abstract void Free(void* block);
    /// <summary>malloc_usable_size.</summary>
    public abstract nuint UsableSize(void* block);
    /// <summary>malloc_trim.</summary>
    public abstract void Trim(nuint pad);
    /// <summary>mallinfo2.</summary>
    public abstract HeapInfo GetInfo();

    /// <summary>Prepare the process before the replay's first operation (nothing by default).</summary>
    public virtual void Prepare()
    {
    }

    /// <summary>How often someone else moved the break under this heap (0 where unknown).</summary>
    public virtual long ForeignBreaks => 0;

    /// <summary>Whether the block is an mmapped chunk (IS_MMAPPED in its header; glibc's layout).</summary>
    public virtual bool IsMapped(void* block) => Chunk.IsMapped(Chunk.FromMem(block));

    /// <summary>
    /// The arena of a block outside the main arena (NON_MAIN_ARENA in its header), read from
    /// its heap's header at the 64 MiB boundary below it (heap_info's first word, glibc's
    /// layout); 0 for a block of the main arena.
    /// </summary>
    public virtual nint ArenaOf(void* block) =>
        (Chunk.FromMem(block)->Size & Chunk.NonMainArena) == 0 ? 0 : (nint)HeapHeader.For(block)->Arena;

    /// <summary>The calling thread ends as far as the allocator knows (its tcache and arena given back); nothing by default.</summary>
    public virtual void EndThread()
    {
    }

    /// <summary>Move the program break up to a multiple of <paramref name="alignment"/> (before the heap's first growth).</summary>
    public virtual void AlignBreak(nuint alignment)
    {
        using (FutexLock.Hold(OsMemory.BreakLock))
        {
            var current = (nuint)OsMemory.Sbrk(0);
            nuint wanted = OsMemory.AlignUp(current, alignment);
            if (wanted != current) OsMemory.Sbrk((nint)(wanted - current));
        }
    }
}

/// <summary>
/// The process's NativeHeap (<see cref="Heap"/>) as a replay target. Out of memory, which the
/// public API throws, becomes C's null here; the exception allocates, but only then.
/// </summary>
public sealed unsafe class NativeHeapTarget : ReplayTarget
{
    /// <inheritdoc/>
    public override void* Malloc(nuint size)
    {
        try { return Heap.Alloc(size); }
        catch (OutOfMemoryException) { return null; }
    }

    /// <inheritdoc/>
    public override void* Calloc(nuint count, nuint size)
    {
        try { return Heap.AllocZeroed(count, size); }
        catch (OutOfMemoryException) { return null; }
    }

    /// <inheritdoc/>
    public override void* Realloc(void* block, nuint size)
    {
        try { return Heap.Realloc(block, size); }
        catch (OutOfMemoryException) { return null; }
    }

    /// <inheritdoc/>
    public override void* Memalign(nuint alignment, nuint size)
    {
        // memalign rounds an alignment up to a power of two; AlignedAlloc insists on one.
        if (alignment > (nuint)1 << 63) return null;
        nuint a = alignment <= 1 ? 1 : (nuint)1 << (64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)alignment - 1));
        try { return Heap.AlignedAlloc(size, a); }
        catch (OutOfMemoryException) { return null; }
    }

    /// <inheritdoc/>
    public override void Free(void* block) => Heap.Free(block);
    /// <inheritdoc/>
    public override nuint UsableSize(void* block) => Heap.UsableSize(block);
    /// <inheritdoc/>
    public override void Trim(nuint pad) => Heap.Trim(pad);
    /// <inheritdoc/>
    public override HeapInfo GetInfo() => Heap.GetInfo();
    /// <inheritdoc/>
    public override long ForeignBreaks => Heap.ForeignBreaks;
    /// <inheritdoc/>
    public override void EndThread() => Heap.EndThread();

    /// <summary>With the main arena on the break, give glibc's own heap room first (see GlibcRoom).</summary>
    public override void Prepare()
    {
        if (Heap.UsesBrk) GlibcRoom.Make();
    }
}
