using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace NativeHeap.Chunks;

/// <summary>
/// glibc's <c>struct malloc_chunk</c>, byte for byte. An allocated chunk uses only
/// <see cref="PrevSize"/> (when the previous chunk is free) and <see cref="Size"/>; the user's
/// memory starts at <see cref="Fd"/>. A free chunk links itself into a bin through fd/bk, and a
/// free chunk in a large bin also into the size skip list through fd_nextsize/bk_nextsize.
/// The size of a free chunk is repeated at the start of the next chunk (its prev_size, the
/// "foot"), which is how free finds the previous chunk to merge with.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Chunk
{
    public nuint PrevSize;
    public nuint Size;
    public Chunk* Fd;
    public Chunk* Bk;
    public Chunk* FdNextsize;
    public Chunk* BkNextsize;

    internal const nuint SizeSz = 8;
    internal const nuint Alignment = 16;
    internal const nuint AlignMask = Alignment - 1;
    internal const nuint HeaderSize = 2 * SizeSz;
    /// <summary>The smallest chunk: header plus fd and bk (MINSIZE).</summary>
    internal const nuint MinSize = 32;

    internal const nuint PrevInuse = 1;
    internal const nuint IsMmapped = 2;
    internal const nuint NonMainArena = 4;
    internal const nuint SizeBits = PrevInuse | IsMmapped | NonMainArena;
    /// <summary>
    /// Bit 3 of a head: no flag, set only in a size that is not a multiple of 16, so "not a
    /// size". The free fast paths test it with IS_MMAPPED in one mask (its C twin is
    /// NHM_UNALIGNED_SIZE_BIT in src/NativeHeap.Native/nativeheap-managed.h).
    /// </summary>
    internal const nuint UnalignedSizeBit = 8;

    /// <summary>sizeof(struct malloc_chunk): malloc_trim keeps this much of a free chunk's head resident.</summary>
    internal const nuint StructSize = 48;

    /// <summary>Largest request that cannot overflow once padded to a chunk (PTRDIFF_MAX less MINSIZE).</summary>
    internal static readonly nuint MaxRequest = unchecked((nuint)(long.MaxValue - (long)MinSize));

    /// <summary>request2size: the chunk size that holds <paramref name="bytes"/> user bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint RequestToSize(nuint bytes) =>
        bytes + SizeSz + AlignMask < MinSize ? MinSize : (bytes + SizeSz + AlignMask) & ~AlignMask;

    /// <summary>checked_request2size: 0 when the request is larger than PTRDIFF_MAX allows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint CheckedRequestToSize(nuint bytes) => bytes > MaxRequest ? 0 : RequestToSize(bytes);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Chunk* FromMem(void* mem) => (Chunk*)((byte*)mem - HeaderSize);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static byte* ToMem(Chunk* p) => (byte*)p + HeaderSize;

    /// <summary>chunksize: the size without flag bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint SizeOf(Chunk* p) => p->Size & ~SizeBits;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Chunk* At(Chunk* p, nuint offset) => (Chunk*)((byte*)p + offset);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Chunk* At(Chunk* p, nint offset) => (Chunk*)((byte*)p + offset);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Chunk* Next(Chunk* p) => At(p, SizeOf(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsPrevInuse(Chunk* p) => (p->Size & PrevInuse) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsMapped(Chunk* p) => (p->Size & IsMmapped) != 0;

    /// <summary>inuse: a chunk is in use when the next chunk's PREV_INUSE says so.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool InUse(Chunk* p) => (At(p, SizeOf(p))->Size & PrevInuse) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool InuseBitAt(Chunk* p, nuint offset) => (At(p, offset)->Size & PrevInuse) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SetInuseBitAt(Chunk* p, nuint offset) => At(p, offset)->Size |= PrevInuse;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ClearInuseBitAt(Chunk* p, nuint offset) => At(p, offset)->Size &= ~PrevInuse;

    /// <summary>set_head: size and flags, replacing all.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SetHead(Chunk* p, nuint sizeAndFlags) => p->Size = sizeAndFlags;

    /// <summary>set_head_size: a new size, keeping the flag bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SetHeadSize(Chunk* p, nuint size) => p->Size = (p->Size & SizeBits) | size;

    /// <summary>set_foot: the size repeated in the next chunk's prev_size.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SetFoot(Chunk* p, nuint size) => At(p, size)->PrevSize = size;

    /// <summary>misaligned_chunk: the user pointer is not MALLOC_ALIGNMENT aligned.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool Misaligned(void* p) => ((nuint)p & AlignMask) != 0;

    /// <summary>memsize: the bytes a caller may use, which include the next chunk's prev_size unless mmapped.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint UsableSize(Chunk* p) => SizeOf(p) - HeaderSize + (IsMapped(p) ? 0 : SizeSz);

    /// <summary>Safe-linking (PROTECT_PTR): a list pointer stored XOR the page number of where it is stored.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static T* Protect<T>(void* position, T* pointer) where T : unmanaged =>
        (T*)(((nuint)position >> 12) ^ (nuint)pointer);

    /// <summary>REVEAL_PTR for the pointer stored at <paramref name="position"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static T* Reveal<T>(T** position) where T : unmanaged =>
        (T*)(((nuint)position >> 12) ^ (nuint)(*position));
}
