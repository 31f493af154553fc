using System.Runtime.InteropServices;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

/// <summary>
/// glibc's <c>heap_info</c>: the header of a heap, a 64 MiB-aligned region that holds the
/// memory of a non-main arena (and of the main arena when it is kept off the break). The
/// region is reserved PROT_NONE, made read-write with mprotect as the heap grows, and given
/// back with MADV_DONTNEED as it shrinks. Because heaps are aligned to their maximum size,
/// a chunk finds its heap, and so its arena, by masking its address.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct HeapHeader
{
    public MallocState* Arena;
    public HeapHeader* Prev;
    /// <summary>Bytes in use from the heap's start (read-write and counted in system_mem).</summary>
    public nuint Size;
    /// <summary>Bytes made read-write so far; shrinking keeps the protection.</summary>
    public nuint MprotectSize;
    public nuint PageSize;
    private nuint _pad; // sizeof(heap_info) + 2 * SIZE_SZ must be a multiple of 16

    /// <summary>HEAP_MAX_SIZE: 2 x DEFAULT_MMAP_THRESHOLD_MAX on 64-bit.</summary>
    internal const nuint MaxSize = 64 * 1024 * 1024;
    /// <summary>HEAP_MIN_SIZE.</summary>
    internal const nuint MinSize = 32 * 1024;

    /// <summary>heap_for_ptr.</summary>
    internal static HeapHeader* For(void* p) => (HeapHeader*)((nuint)p & ~(MaxSize - 1));

    /// <summary>
    /// The heap's first chunk: after the header, and in an arena's first heap after the arena
    /// itself, aligned (as _int_new_arena lays it out). The heap walks start here.
    /// </summary>
    internal static Chunk* FirstChunk(HeapHeader* h)
    {
        byte* start = (byte*)h + sizeof(HeapHeader);
        if ((MallocState*)start != h->Arena) return (Chunk*)start;
        start += sizeof(MallocState);
        nuint misalign = (nuint)Chunk.ToMem((Chunk*)start) & Chunk.AlignMask;
        return (Chunk*)(misalign > 0 ? start + (Chunk.Alignment - misalign) : start);
    }

    /// <summary>
    /// new_heap: map a heap of at least <paramref name="size"/> (plus <paramref name="topPad"/>
    /// when it fits) inside a fresh 64 MiB-aligned reservation. Null when no memory.
    /// </summary>
    internal static HeapHeader* Create(MallocContext* ctx, nuint size, nuint topPad)
    {
        nuint pagesize = OsMemory.PageSize;
        nuint padded = OsMemory.AddSaturating(size, topPad);
        if (padded < MinSize) size = MinSize;
        else if (padded <= MaxSize) size = padded;
        else if (size > MaxSize) return null;
        else size = MaxSize;
        size = OsMemory.AlignUp(size, pagesize);

        // Map twice the size and keep the aligned half; the other half is remembered as the
        // next aligned area, so the next heap can usually be mapped in one call.
        byte* p2 = null;
        if (ctx->AlignedHeapArea != null)
        {
            p2 = OsMemory.Reserve(MaxSize, ctx->AlignedHeapArea);
            ctx->AlignedHeapArea = null;
            if (p2 != null && ((nuint)p2 & (MaxSize - 1)) != 0)
            {
                OsMemory.Unmap(p2, MaxSize);
                p2 = null;
            }
        }
        if (p2 == null)
        {
            byte* p1 = OsMemory.Reserve(MaxSize << 1);
            if (p1 != null)
            {
                p2 = (byte*)(((nuint)p1 + (MaxSize - 1)) & ~(MaxSize - 1));
                nuint ul = (nuint)(p2 - p1);
                if (ul != 0) OsMemory.Unmap(p1, ul);
                else ctx->AlignedHeapArea = p2 + MaxSize;
                OsMemory.Unmap(p2 + MaxSize, MaxSize - ul);
            }
            else
            {
                // Perhaps a mapping of just the size happens to be aligned.
                p2 = OsMemory.Reserve(MaxSize);
                if (p2 == null) return null;
                if (((nuint)p2 & (MaxSize - 1)) != 0)
                {
                    OsMemory.Unmap(p2, MaxSize);
                    return null;
                }
            }
        }
        if (!OsMemory.TryCommit(p2, size))
        {
            OsMemory.Unmap(p2, MaxSize);
            return null;
        }
        var h = (HeapHeader*)p2;
        Ownership.SetHeapSlot(&ctx->Owned, h, owned: true);
        h->Size = size;
        h->MprotectSize = size;
        h->PageSize = pagesize;
        return h;
    }

    /// <summary>grow_heap: extend the heap by <paramref name="diff"/> bytes (page-rounded); false when it would pass 64 MiB or mprotect fails.</summary>
    internal static bool Grow(HeapHeader* h, nuint diff)
    {
        diff = OsMemory.AlignUp(diff, h->PageSize);
        nuint newSize = h->Size + diff;
        if (newSize > MaxSize) return false;
        if (newSize > h->MprotectSize)
        {
            if (!OsMemory.TryCommit((byte*)h + h->MprotectSize, newSize - h->MprotectSize))
                return false;
            h->MprotectSize = newSize;
        }
        h->Size = newSize;
        return true;
    }

    /// <summary>shrink_heap: give the heap's last <paramref name="diff"/> bytes back with MADV_DONTNEED.</summary>
    internal static bool Shrink(HeapHeader* h, nuint diff)
    {
        if (h->Size < diff || h->Size - diff < (nuint)sizeof(HeapHeader)) return false;
        nuint newSize = h->Size - diff;
        OsMemory.DontNeed((byte*)h + newSize, diff);
        h->Size = newSize;
        return true;
    }

    /// <summary>delete_heap: unmap the whole reservation.</summary>
    internal static void Delete(MallocContext* ctx, HeapHeader* h)
    {
        if ((byte*)h + MaxSize == ctx->AlignedHeapArea) ctx->AlignedHeapArea = null;
        Ownership.SetHeapSlot(&ctx->Owned, h, owned: false);
        OsMemory.Unmap(h, MaxSize);
    }
}
