using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;

namespace NativeHeap.Tests;

/// <summary>
/// What glibc's own malloc tests assert (malloc/tst-*.c), rewritten for NativeHeap: C's null
/// returns are .NET's OutOfMemoryException on the public API, and glibc semantics on the
/// private heap's C-level calls.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class GlibcPortTests
{
    /// <summary>tst-malloc-too-large: requests near SIZE_MAX and PTRDIFF_MAX fail, leak nothing, and leave blocks as they were.</summary>
    [Fact]
    public void MallocTooLarge()
    {
        using var h = new PrivateHeap();
        h.Free(h.Malloc(1));
        HeapInfo before = h.Info;
        byte* keep = h.Malloc(100);
        new Span<byte>(keep, 100).Fill(3);
        nuint ptrdiffMax = unchecked((nuint)long.MaxValue);
        for (nuint k = 0; k < 64; k++)
        {
            foreach (nuint size in new[] { nuint.MaxValue - k, ptrdiffMax - k, ptrdiffMax + k + 1 })
            {
                Assert.True(Ptmalloc.Malloc(h.Ctx, ref h.Ctx->Solo, size) == null);
                Assert.True(h.Calloc(size, 1) == null);
                Assert.True(h.Calloc(2, size / 2 + 1) == null);
                Assert.True(h.Realloc(keep, size) == null);
                Assert.True(h.Memalign(64, size) == null);
            }
        }
        Assert.Equal(-1, new Span<byte>(keep, 100).IndexOfAnyExcept((byte)3));
        h.Free(keep);
        // Nothing leaked. As in glibc, a calloc that fails retries in another arena, so the
        // first one made a new arena, whose header and state (BuffersTests.ArenaHeaderInUse) count as in use.
        int arenas = Diagnostics.MallInfo.ArenaCount(h.Ctx);
        Assert.Equal(2, arenas);
        Assert.Equal(before.Uordblks + 112 + (ulong)(arenas - 1) * BuffersTests.ArenaHeaderInUse, h.Info.Uordblks); // keep went to the tcache
        h.Check();
    }

    /// <summary>tst-calloc: calloc memory is zero, whatever was there before; calloc of 0 is a unique minimum block.</summary>
    [Fact]
    public void Calloc()
    {
        using var h = new PrivateHeap();
        var rng = new Random(7);
        var blocks = new List<nint>();
        for (int i = 0; i < 2000; i++)
        {
            int n = rng.Next(1, 40), size = rng.Next(1, 3000);
            var p = h.Calloc((nuint)n, (nuint)size);
            Assert.Equal(-1, new Span<byte>(p, n * size).IndexOfAnyExcept((byte)0));
            new Span<byte>(p, n * size).Fill(0xFF);
            if (rng.Next(2) == 0) h.Free(p); else blocks.Add((nint)p);
        }
        byte* a = h.Calloc(0, 10), b = h.Calloc(10, 0);
        Assert.True(a != null && b != null && a != b);
        foreach (nint p in blocks) h.Free((void*)p);
        h.Check();
    }

    /// <summary>tst-realloc: realloc(NULL, n) allocates, realloc(p, 0) frees, growth keeps contents, a failure keeps the block.</summary>
    [Fact]
    public void Realloc()
    {
        using var h = new PrivateHeap();
        byte* p = h.Realloc(null, 0);
        Assert.True(p != null);
        Assert.True(h.Realloc(p, 0) == null);
        p = h.Realloc(null, 50);
        for (int i = 0; i < 50; i++) p[i] = (byte)i;
        p = h.Realloc(p, 50_000);
        for (int i = 0; i < 50; i++) Assert.Equal((byte)i, p[i]);
        Assert.True(h.Realloc(p, nuint.MaxValue - 100) == null);
        for (int i = 0; i < 50; i++) Assert.Equal((byte)i, p[i]);
        p = h.Realloc(p, 20);
        for (int i = 0; i < 20; i++) Assert.Equal((byte)i, p[i]);
        h.Free(p);
        h.Check();
    }

    /// <summary>tst-memalign: memalign aligns, rounds a non-power-of-two alignment up, and refuses what cannot fit.</summary>
    [Fact]
    public void Memalign()
    {
        using var h = new PrivateHeap();
        for (nuint align = 1; align <= 1 << 16; align <<= 1)
        {
            byte* p = h.Memalign(align, 100);
            Assert.Equal(0UL, (ulong)((nuint)p % Math.Max(align, 16)));
            h.Free(p);
        }
        byte* q = h.Memalign(48, 100); // glibc: the next power of two
        Assert.Equal(0UL, (ulong)((nuint)q % 64));
        h.Free(q);
        Assert.True(h.Memalign(((nuint)1 << 63) + 1, 1) == null); // more than SIZE_MAX / 2 + 1
        Assert.True(h.Memalign(4096, nuint.MaxValue - 4096) == null);
        h.Check();
    }

    /// <summary>tst-posix_memalign / aligned_alloc: the public API takes powers of two only.</summary>
    [Fact]
    public void PosixMemalign()
    {
        foreach (nuint bad in new nuint[] { 0, 3, 24, 48, 1000 })
            Assert.Throws<ArgumentException>(() => Heap.AlignedAlloc(16, bad));
        void* p = Heap.AlignedAlloc(16, 256);
        Assert.Equal(0UL, (ulong)((nuint)p % 256));
        Heap.Free(p);
    }

    /// <summary>tst-mallopt: every parameter takes its valid values.</summary>
    [Fact]
    public void Mallopt()
    {
        using var h = new PrivateHeap();
        h.Set(HeapOption.MxFast, 0);
        h.Set(HeapOption.MxFast, 160);
        h.Set(HeapOption.TrimThreshold, 1 << 20);
        h.Set(HeapOption.TopPad, 1 << 16);
        h.Set(HeapOption.MmapThreshold, 1 << 20);
        h.Set(HeapOption.MmapMax, 1000);
        h.Set(HeapOption.Perturb, 0xA5);
        h.Set(HeapOption.Perturb, 0);
        h.Set(HeapOption.ArenaTest, 4);
        h.Set(HeapOption.ArenaMax, 2);
        h.Set(HeapOption.TcacheCount, 100);
        h.Set(HeapOption.TcacheMax, 512);
        h.Set(HeapOption.TcacheUnsortedLimit, 10);
        Assert.Equal(BinIndex.MaxFastChunk(160), h.Ctx->Mp.MaxFast);
        Assert.Equal((nuint)1 << 20, h.Ctx->Mp.MmapThreshold);
        Assert.Equal((nuint)(BinIndex.Tcache(Chunk.RequestToSize(512)) + 1), h.Ctx->Mp.TcacheBins);
        h.Free(h.Malloc(100));
        h.Check();
    }

    /// <summary>tst-mallinfo2: in-use bytes grow by at least what was asked and come back; arena = in use + free.</summary>
    [Fact]
    public void Mallinfo2()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.Free(h.Malloc(1));
        HeapInfo before = h.Info;
        var blocks = new List<nint>();
        nuint asked = 0;
        for (int i = 1; i <= 100; i++)
        {
            blocks.Add((nint)h.Malloc((nuint)(i * 100)));
            asked += (nuint)(i * 100);
        }
        HeapInfo during = h.Info;
        Assert.True(during.Uordblks - before.Uordblks >= asked);
        Assert.Equal(during.Arena, during.Uordblks + during.Fordblks);
        foreach (nint p in blocks) h.Free((void*)p);
        HeapInfo after = h.Info;
        Assert.Equal(before.Uordblks, after.Uordblks);
        Assert.Equal(after.Arena, after.Uordblks + after.Fordblks);
    }

    /// <summary>tst-trim1: malloc_trim(0) after freeing returns memory and reports it.</summary>
    [Fact]
    public void Trim()
    {
        using var h = new PrivateHeap();
        h.Set(HeapOption.TrimThreshold, -1); // nothing trims on free
        var blocks = new List<nint>();
        for (int i = 0; i < 100; i++) blocks.Add((nint)h.Malloc(20_000));
        foreach (nint p in blocks) h.Free((void*)p);
        Assert.True(h.Info.Keepcost > 1 << 20);
        Assert.True(h.Trim(0));
        Assert.True(h.Info.Keepcost < 64 * 1024);
        h.Check();
    }

    /// <summary>tst-tcfree1: a chunk freed twice into the tcache is caught.</summary>
    [Fact]
    public void TcacheFreeTwice()
    {
        using var h = new PrivateHeap();
        byte* p = h.Malloc(24);
        h.Free(p);
        Assert.Equal("free(): double free detected in tcache 2", Assert.Throws<HeapCorruptionException>(() => h.Free(p)).GlibcMessage);
    }

    /// <summary>tst-tcfree2: with every tcache bin full, freeing chunks whose data looks like the key is no false alarm.</summary>
    [Fact]
    public void TcacheFullBins_NoFalseAlarm()
    {
        using var h = new PrivateHeap();
        var cached = new List<nint>();
        for (int bin = 0; bin < 64; bin++)
            for (int i = 0; i < 8; i++)
                cached.Add((nint)h.Malloc(BinIndex.TcacheUsableSize((nuint)bin)));
        var lookalikes = new List<nint>();
        for (int bin = 0; bin < 64; bin++)
        {
            byte* q = h.Malloc(BinIndex.TcacheUsableSize((nuint)bin));
            ((TcacheEntry*)q)->Key = h.Ctx->TcacheKey;
            lookalikes.Add((nint)q);
        }
        foreach (nint p in cached) h.Free((void*)p);
        foreach (nint q in lookalikes) h.Free((void*)q);
        h.Check();
    }

    /// <summary>
    /// tst-safe-linking: a tcache or fastbin link overwritten with a random value is caught
    /// when used whenever the value it reveals is misaligned, 15 times in 16; the 16th reveals
    /// an aligned wild pointer that glibc cannot tell from a real one either (not followed here).
    /// </summary>
    [Theory]
    [InlineData(7)]
    [InlineData(0)]
    public void SafeLinking_CatchesEveryOverwrittenLinkThatRevealsMisaligned(int tcacheCount)
    {
        var rng = new Random(11);
        int caught = 0, undetectable = 0;
        const int Trials = 256;
        for (int t = 0; t < Trials; t++)
        {
            using var h = new PrivateHeap(tcacheCount);
            byte* a = h.Malloc(40), b = h.Malloc(40);
            h.Malloc(40);
            h.Free(a);
            h.Free(b);
            ulong value = (ulong)rng.NextInt64();
            *(ulong*)b = value; // the link is the first word of the freed block
            if ((((ulong)b >> 12 ^ value) & 15) == 0)
            {
                undetectable++;
                continue;
            }
            // The tcache hands out b and then meets the bad link; a fastbin pop reads b's link first.
            var e = Assert.Throws<HeapCorruptionException>(() =>
            {
                Assert.True(h.Malloc(40) == b);
                h.Malloc(40);
            });
            Assert.Contains("unaligned", e.GlibcMessage);
            caught++;
        }
        Assert.Equal(Trials, caught + undetectable);
        Assert.InRange(undetectable, 1, Trials / 8); // about 1 in 16
    }
}
