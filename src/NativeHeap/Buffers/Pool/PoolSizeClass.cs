using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace NativeHeap.Buffers;

/// <summary>
/// NativeHeapMemoryPool's size classes: 16-byte steps up to 64 bytes, then four classes to a
/// doubling (80, 96, 112, 128, 160, …) up to 16 MiB, so a block is at most 25 % larger than the
/// length asked (20 % of it unused). Lengths above 16 MiB are not cached: their blocks are
/// malloc'd at the exact length and freed at Dispose, and only the owner object is reused.
/// </summary>
internal static class PoolSizeClass
{
    /// <summary>The largest length whose block the pool keeps for reuse.</summary>
    internal const int MaxCached = 16 << 20;

    /// <summary>Classes 0 … Count - 1 hold blocks of <see cref="Size"/> bytes.</summary>
    internal const int Count = 76;

    /// <summary>The class of owners with no cached block: lengths above <see cref="MaxCached"/>, and owners whose block was freed.</summary>
    internal const int Bare = Count;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Of(int length)
    {
        Debug.Assert(length >= 0);
        if (length <= 64) return length <= 16 ? 0 : (length - 1) >> 4;
        if (length > MaxCached) return Bare;
        uint n = (uint)length - 1;
        int b = 31 - BitOperations.LeadingZeroCount(n); // n in [2^b, 2^(b+1)), b >= 6
        return ((b - 6) << 2) + (int)(n >> (b - 2));     // n >> (b - 2) is 4 … 7
    }

    /// <summary>The block size of class <paramref name="c"/>: the largest length that maps to it.</summary>
    internal static int Size(int c)
    {
        Debug.Assert((uint)c < Count);
        if (c < 4) return (c + 1) << 4;
        int b = (c >> 2) + 5;
        return ((c & 3) + 5) << (b - 2);
    }

    /// <summary>
    /// How many idle owners of class <paramref name="c"/> one depot stack keeps: up to 16 MiB of
    /// blocks, 2 to 64 of them; and 1,024 bare owners (no block, about 80 bytes each), so that
    /// a burst past the block caches does not allocate owner objects again in its next round.
    /// </summary>
    internal static int DepotCapacity(int c) => c == Bare ? 1024 : Math.Clamp(MaxCached / Size(c), 2, 64);
}
