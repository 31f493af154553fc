using System.Numerics;
using System.Runtime.CompilerServices;
using NativeHeap.Chunks;

namespace NativeHeap.Bins;

/// <summary>
/// Which bin a chunk size belongs to, as glibc 2.36 computes it on x86-64: 128 bins, bin 1
/// unsorted, 2-63 small (one size each, 16 bytes apart, below MIN_LARGE_SIZE = 1024), 64-126
/// large (ranges growing geometrically); ten fastbins for chunks of 32..176 bytes; 64 tcache
/// bins for chunks of 32..1040 bytes, and (glibc 2.42's, the nativeheap profile's) 12 large
/// tcache bins, one per power of two, for chunks of 1056 bytes up to 4 MiB.
/// </summary>
internal static class BinIndex
{
    internal const int NBins = 128;
    internal const int NSmallBins = 64;
    internal const nuint MinLargeSize = 1024;
    internal const int NFastBins = 10;
    internal const int TcacheMaxBins = 64;
    /// <summary>TCACHE_LARGE_BINS (glibc 2.42): bin k holds chunk sizes [2^(10+k), 2^(11+k)), the first from 1056.</summary>
    internal const int TcacheLargeBins = 12;
    internal const int BinmapShift = 5;
    internal const int BinmapSize = NBins / 32;

    /// <summary>MAX_FAST_SIZE: the largest request M_MXFAST accepts (160).</summary>
    internal const nuint MaxFastSize = 80 * Chunk.SizeSz / 4;
    /// <summary>DEFAULT_MXFAST (128).</summary>
    internal const nuint DefaultMxFast = 64 * Chunk.SizeSz / 4;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool InSmallbinRange(nuint size) => size < MinLargeSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Smallbin(nuint size) => (int)(size >> 4);

    internal static int Largebin(nuint size)
    {
        if ((size >> 6) <= 48) return 48 + (int)(size >> 6);
        if ((size >> 9) <= 20) return 91 + (int)(size >> 9);
        if ((size >> 12) <= 10) return 110 + (int)(size >> 12);
        if ((size >> 15) <= 4) return 119 + (int)(size >> 15);
        if ((size >> 18) <= 2) return 124 + (int)(size >> 18);
        return 126;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Bin(nuint size) => InSmallbinRange(size) ? Smallbin(size) : Largebin(size);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Fastbin(nuint size) => (int)(size >> 4) - 2;

    /// <summary>csize2tidx: tcache bin of a chunk size.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint Tcache(nuint chunkSize) => (chunkSize - Chunk.MinSize + Chunk.Alignment - 1) / Chunk.Alignment;

    /// <summary>usize2tidx: the tcache bin of a request of <paramref name="bytes"/>, csize2tidx of its request2size (nhm_tcache_index is its C twin).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint TcacheForRequest(nuint bytes) => bytes <= 8 ? 0 : (bytes + Chunk.SizeSz + Chunk.AlignMask) / Chunk.Alignment - 2;

    /// <summary>The chunk size tcache bin <paramref name="index"/> holds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint TcacheChunkSize(nuint index) => index * Chunk.Alignment + Chunk.MinSize;

    /// <summary>large_csize2tidx less 64: the large tcache bin of a chunk size of 1056 or more.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint TcacheLarge(nuint chunkSize) => (nuint)BitOperations.Log2(chunkSize) - 10;

    /// <summary>tidx2usize: the largest request tcache bin <paramref name="index"/> serves.</summary>
    internal static nuint TcacheUsableSize(nuint index) => index * Chunk.Alignment + Chunk.MinSize - Chunk.SizeSz;

    /// <summary>set_max_fast: the largest fastbin chunk size for an M_MXFAST request size.</summary>
    internal static nuint MaxFastChunk(nuint requestSize) =>
        requestSize <= Chunk.AlignMask - Chunk.SizeSz ? Chunk.MinSize / 2 : (requestSize + Chunk.SizeSz) & ~Chunk.AlignMask;
}
