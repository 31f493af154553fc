using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;

namespace NativeHeap.Tests;

/// <summary>
/// Each path of malloc and free, on a private heap where the outcome is known: which chunk
/// a request gets, where a split leaves the rest, what merges, when fastbins consolidate,
/// when a request is mapped, and how realloc, memalign and calloc behave.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class AllocatorPathTests
{
    [Fact]
    public void Tcache_ReturnsTheLastFreedChunkOfTheSize()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(100);
        byte* b = h.Malloc(100);
        h.Free(a);
        h.Free(b);
        Assert.True(h.Malloc(100) == b);
        Assert.True(h.Malloc(100) == a);
        h.Check();
    }

    [Fact]
    public void Tcache_HoldsSevenPerSize_TheRestGoToFastbins()
    {
        using var h = new PrivateHeap();
        var blocks = new byte*[10];
        for (int i = 0; i < 10; i++) blocks[i] = h.Malloc(40);
        h.Malloc(40); // keeps the last one off top
        for (int i = 0; i < 10; i++) h.Free(blocks[i]);
        nuint tidx = BinIndex.Tcache(48);
        Assert.Equal(7, (int)h.Tcache->Counts[tidx]);
        Assert.Equal(3UL, h.Info.Smblks);
        // Seven from the tcache, then the fastbin's first, and the fastbin's rest refill the tcache.
        for (int i = 0; i < 7; i++) h.Malloc(40);
        Assert.True(h.Malloc(40) == blocks[9]);
        Assert.Equal(2, (int)h.Tcache->Counts[tidx]);
        Assert.Equal(0UL, h.Info.Smblks);
        h.Check();
    }

    [Fact]
    public void Fastbin_IsLifo_AndItsChunksStayInUseForNeighbours()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(40);
        byte* b = h.Malloc(40);
        h.Malloc(40);
        h.Free(a);
        h.Free(b);
        Assert.Equal(2UL, h.Info.Smblks);
        Assert.Equal(96UL, h.Info.Fsmblks);
        // b's PREV_INUSE still says a is in use: fastbin chunks are not merged.
        Assert.Equal(1UL, (ulong)(((nuint*)b)[-1] & 1));
        Assert.True(h.Malloc(40) == b);
        Assert.True(h.Malloc(40) == a);
        h.Check();
    }

    [Fact]
    public void SmallBin_ServesAnExactFitAfterSorting()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(200);
        h.Malloc(16);
        h.Free(a);                         // to the unsorted bin
        byte* big = h.Malloc(2000);        // sorts a into small bin 13 on the way
        Assert.True(big != a);
        Assert.True(MallocState.BinMarked(h.Arena, BinIndex.Smallbin(208)));
        Assert.True(h.Malloc(200) == a);
        h.Check();
    }

    [Fact]
    public void LargeBin_BestFitIsTheSmallestChunkThatFits_RemainderToUnsorted()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(3000); h.Malloc(16);
        byte* b = h.Malloc(2000); h.Malloc(16);
        byte* c = h.Malloc(2500); h.Malloc(16);
        h.Free(a); h.Free(b); h.Free(c);
        h.Malloc(4000);                    // sorts all three into large bins, served by top
        byte* p = h.Malloc(2100);          // 2112-byte chunk: c (2512) beats a (3008); b (2016) is too small
        Assert.True(p == c);
        Assert.Equal(2112UL, (ulong)PrivateHeap.ChunkSize(p));
        // The 400-byte remainder waits in the unsorted bin.
        Chunk* unsorted = MallocState.Unsorted(h.Arena);
        Assert.True((byte*)unsorted->Fd == c - 16 + 2112);
        h.Check();
    }

    [Fact]
    public void Split_ConsecutiveSmallRequestsComeFromTheLastRemainder()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* x = h.Malloc(5000);
        h.Malloc(16);
        h.Free(x);
        byte* p1 = h.Malloc(100);
        byte* p2 = h.Malloc(100);
        byte* p3 = h.Malloc(100);
        Assert.True(p1 == x);
        Assert.True(p2 == x + 112);
        Assert.True(p3 == x + 224);
        Assert.True((byte*)h.Arena->LastRemainder == x - 16 + 336);
        h.Check();
    }

    [Fact]
    public void Free_MergesWithBothNeighbours()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.Set(HeapOption.MxFast, 0);
        byte* a = h.Malloc(200);
        byte* b = h.Malloc(200);
        byte* c = h.Malloc(200);
        h.Malloc(200);
        h.Free(a);
        h.Free(c);
        ulong before = h.Info.Ordblks;
        h.Free(b);                         // joins a (before it) and c (after it)
        Assert.Equal(before - 1, h.Info.Ordblks);
        Assert.Equal(624UL, (ulong)PrivateHeap.ChunkSize(a));
        Assert.True(h.Malloc(616) == a);
        h.Check();
    }

    [Fact]
    public void Free_NextToTop_MergesIntoTop()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.Malloc(1);
        byte* a = h.Malloc(5000);
        nuint top = h.TopSize;
        h.Free(a);
        Assert.True(h.Top == a - 16);
        Assert.Equal((ulong)(top + 5008), (ulong)h.TopSize);
        h.Check();
    }

    [Fact]
    public void LargeRequest_ConsolidatesFastbins()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        var blocks = new byte*[10];
        for (int i = 0; i < 10; i++) blocks[i] = h.Malloc(40);
        h.Malloc(16);
        for (int i = 0; i < 10; i++) h.Free(blocks[i]);
        Assert.Equal(10UL, h.Info.Smblks);
        h.Malloc(2000);                    // a large request merges the fastbins first
        Assert.Equal(0UL, h.Info.Smblks);
        Assert.Equal(0, h.Arena->HaveFastchunks);
        Assert.True(h.Malloc(472) == blocks[0]); // the ten 48-byte chunks are one 480-byte chunk
        h.Check();
    }

    [Fact]
    public void FreeOfA64KiBChunk_ConsolidatesFastbins()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* small = h.Malloc(40);
        h.Malloc(16);
        byte* big = h.Malloc(70_000);
        h.Malloc(16);
        h.Free(small);
        Assert.Equal(1, h.Arena->HaveFastchunks);
        h.Free(big);
        Assert.Equal(0, h.Arena->HaveFastchunks);
        Assert.Equal(0UL, h.Info.Smblks);
        h.Check();
    }

    [Fact]
    public void Growth_FirstRequestTakesRequestPlusTopPadFromTheBreak()
    {
        using var h = new PrivateHeap();
        h.Malloc(1);
        // 656 (tcache) + 32 + 128 KiB top pad + MINSIZE, page-rounded: glibc's 132 KiB.
        Assert.InRange(h.Info.Arena, 135168UL, 135168UL + 4096);
        byte* p = h.Malloc(100_000);
        byte* q = h.Malloc(100_000);
        Assert.True(q == p + 100_016);    // top grew in place
        Assert.True(h.Ctx->ForeignBreaks > 0 || h.Ctx->Segments.Count == 1);
        h.Check();
    }

    [Fact]
    public void MmapThreshold_MapsLargeRequests_AndRisesWhenOneIsFreed()
    {
        using var h = new PrivateHeap();
        byte* p = h.Malloc(200_000);
        Assert.True(PrivateHeap.IsMapped(p));
        Assert.Equal(1UL, h.Info.Hblks);
        Assert.Equal(200_704UL, h.Info.Hblkhd); // 200000 + 8, page-rounded
        Assert.Equal(0UL, (ulong)((nuint)p & 4095) - 16);
        h.Free(p);
        Assert.Equal(0UL, h.Info.Hblks);
        Assert.Equal(200_704UL, (ulong)h.Ctx->Mp.MmapThreshold);
        Assert.Equal(401_408UL, (ulong)h.Ctx->Mp.TrimThreshold);
        byte* q = h.Malloc(200_000);
        Assert.False(PrivateHeap.IsMapped(q));
        h.Check();
    }

    [Fact]
    public void MmapThreshold_SetByTheUser_DoesNotRise()
    {
        using var h = new PrivateHeap();
        h.Set(HeapOption.MmapThreshold, 128 * 1024);
        byte* p = h.Malloc(200_000);
        h.Free(p);
        Assert.Equal(128UL * 1024, (ulong)h.Ctx->Mp.MmapThreshold);
        Assert.True(PrivateHeap.IsMapped(h.Malloc(200_000)));
    }

    [Fact]
    public void Mmap_IsALastResort_AFreeChunkServesARequestAboveTheThreshold()
    {
        using var h = new PrivateHeap();
        h.Set(HeapOption.MmapThreshold, 64 * 1024);
        h.Set(HeapOption.TrimThreshold, 64 << 20);
        byte* a = h.Malloc(60_000);
        byte* b = h.Malloc(60_000);
        h.Malloc(16);
        h.Free(a);
        h.Free(b);                         // a 120 KiB free chunk
        byte* p = h.Malloc(100_000);
        Assert.False(PrivateHeap.IsMapped(p));
        Assert.True(p == a);
        h.Check();
    }

    [Fact]
    public void Realloc_GrowsIntoTop_InPlace()
    {
        using var h = new PrivateHeap();
        byte* p = h.Malloc(100);
        Assert.True(h.Realloc(p, 10_000) == p);
        Assert.True(h.Top == p - 16 + 10_016);
        h.Check();
    }

    [Fact]
    public void Realloc_AbsorbsAFreeNextChunk_InPlace()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.Set(HeapOption.MxFast, 0);
        byte* a = h.Malloc(100);
        byte* b = h.Malloc(300);
        h.Malloc(16);
        h.Free(b);
        Assert.True(h.Realloc(a, 350) == a);
        h.Check();
    }

    [Fact]
    public void Realloc_Shrinks_InPlace_AndFreesTheTail()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* p = h.Malloc(1000);
        h.Malloc(16);
        ulong before = h.Info.Ordblks;
        Assert.True(h.Realloc(p, 100) == p);
        Assert.Equal(104UL, (ulong)Ptmalloc.UsableSize(p));
        Assert.Equal(before + 1, h.Info.Ordblks); // the 896-byte tail is a free chunk
        h.Check();
    }

    [Fact]
    public void Realloc_Moves_WhenItCannotGrow_AndKeepsTheContents()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(100);
        h.Malloc(100);
        for (int i = 0; i < 100; i++) a[i] = (byte)(i * 7);
        byte* q = h.Realloc(a, 5000);
        Assert.True(q != a);
        for (int i = 0; i < 100; i++) Assert.Equal((byte)(i * 7), q[i]);
        h.Check();
    }

    [Fact]
    public void Realloc_OfAMappedChunk_Remaps_AndKeepsTheContents()
    {
        using var h = new PrivateHeap();
        byte* p = h.Malloc(1 << 20);
        Assert.True(PrivateHeap.IsMapped(p));
        new Span<byte>(p, 1 << 20).Fill(0x5A);
        byte* q = h.Realloc(p, 4 << 20);
        Assert.True(PrivateHeap.IsMapped(q));
        Assert.Equal(-1, new Span<byte>(q, 1 << 20).IndexOfAnyExcept((byte)0x5A));
        Assert.Equal((ulong)OsMemoryAlign((4 << 20) + 8), h.Info.Hblkhd);
        h.Free(q);
        Assert.Equal(0UL, h.Info.Hblkhd);
    }

    private static nuint OsMemoryAlign(nuint n) => (n + 4095) & ~(nuint)4095;

    [Fact]
    public void Memalign_EveryPowerOfTwoFrom16To1MiB()
    {
        using var h = new PrivateHeap();
        foreach (nuint size in new nuint[] { 1, 100, 5000, 200_000 })
        {
            for (nuint align = 16; align <= 1 << 20; align <<= 1)
            {
                byte* p = h.Memalign(align, size);
                Assert.True(p != null);
                Assert.Equal(0UL, (ulong)((nuint)p % align));
                Assert.True(Ptmalloc.UsableSize(p) >= size);
                new Span<byte>(p, (int)size).Fill(0xEE);
                h.Check();
                h.Free(p);
            }
        }
        h.Check();
    }

    [Fact]
    public void Calloc_ZeroesReusedMemory_FreshMemory_AndMappedMemory()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* dirty = h.Malloc(5000);
        h.Malloc(16);
        new Span<byte>(dirty, 5000).Fill(0xAB);
        h.Free(dirty);
        byte* c = h.Calloc(1, 5000);
        Assert.True(c == dirty);
        Assert.Equal(-1, new Span<byte>(c, 5000).IndexOfAnyExcept((byte)0));

        byte* fresh = h.Calloc(100, 100);
        Assert.Equal(-1, new Span<byte>(fresh, 10_000).IndexOfAnyExcept((byte)0));
        byte* mapped = h.Calloc(1000, 1000);
        Assert.True(PrivateHeap.IsMapped(mapped));
        Assert.Equal(-1, new Span<byte>(mapped, 1_000_000).IndexOfAnyExcept((byte)0));
        Assert.True(h.Calloc(nuint.MaxValue / 2, 3) == null);
        h.Check();
    }

    [Fact]
    public void Calloc_DoesNotUseTheTcache()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(100);
        h.Free(a);                         // into the tcache
        byte* c = h.Calloc(1, 100);
        Assert.True(c != a);               // glibc 2.36's calloc calls _int_malloc directly
        Assert.True(h.Malloc(100) == a);
    }

    [Fact]
    public void UsableSize_EqualsGlibcs_ForEverySizeTo4096_AndASampleTo64MiB()
    {
        string glibc = NativeTests.Run("usable_size", []);
        using var h = new PrivateHeap();
        int compared = 0;
        foreach (string line in glibc.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] parts = line.Split(' ');
            nuint n = nuint.Parse(parts[0]);
            byte* p = h.Malloc(n);
            Assert.True(parts[1] == Ptmalloc.UsableSize(p).ToString(), $"malloc({n}): glibc {parts[1]}, NativeHeap {Ptmalloc.UsableSize(p)}");
            h.Free(p);
            compared++;
        }
        Assert.True(compared > 5000, $"only {compared} sizes from native-tests/usable_size");
    }
}
