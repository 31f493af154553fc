using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;

namespace NativeHeap.Tests;

/// <summary>
/// The two profiles and what the default one changes from glibc 2.36: the tcache's depth and
/// byte bound, calloc from the tcache, and malloc_trim emptying the caller's tcache.
/// </summary>
public unsafe class ProfileTests
{
    /// <summary>A block of <paramref name="size"/> bytes, kept off top by a guard, freed into the tcache; returns its (freed) memory.</summary>
    private static byte* FreedIntoTheTcache(PrivateHeap h, nuint size)
    {
        byte* p = h.Malloc(size);
        h.Malloc(16);
        h.Free(p);
        return p;
    }

    [Fact]
    public void Tunables_NameTheProfiles_AndRefuseAnUnknownOne()
    {
        var settings = Tunables.Parse("tcache_count=3:profile=glibc-2.36:profile=nativeheap");
        Assert.Equal((HeapOption.Profile, (long)HeapProfile.Glibc236), (settings[1].Option, settings[1].Value));
        Assert.Equal((HeapOption.Profile, (long)HeapProfile.NativeHeap), (settings[2].Option, settings[2].Value));
        string message = Assert.Throws<InvalidOperationException>(() => Tunables.Parse("profile=glibc")).Message;
        Assert.Contains("unknown profile 'glibc' (known: nativeheap, glibc-2.36)", message);
    }

    [Fact]
    public void ProcessHeap_TakesTheProfileFirst_AndSingleTunablesOverIt()
    {
        var byDefault = Child.Run(nameof(ChildScenarios.ProfileReport));
        Assert.Equal(("0", "0"), (byDefault["uses_brk"], byDefault["fastbin_chunks"]));
        var glibc = Child.Run(nameof(ChildScenarios.ProfileReport), ("NATIVEHEAP_TUNABLES", "profile=glibc-2.36"));
        Assert.Equal(("1", "3"), (glibc["uses_brk"], glibc["fastbin_chunks"]));
        // Written after the single tunables, the profile still comes first and they win.
        var mixed = Child.Run(nameof(ChildScenarios.ProfileReport), ("NATIVEHEAP_TUNABLES", "tcache_count=8:use_brk=0:profile=glibc-2.36"));
        Assert.Equal(("0", "2"), (mixed["uses_brk"], mixed["fastbin_chunks"]));
    }

    [Fact]
    public void Profile_ChangesOnlyBeforeTheFirstAllocation_AndSetsEveryOption()
    {
        using var h = new PrivateHeap(HeapProfile.Glibc236);
        h.Set(HeapOption.TcacheCount, 3);
        h.Set(HeapOption.Profile, (long)HeapProfile.NativeHeap);
        Assert.Equal(MallocParams.NativeHeapTcacheCount, h.Ctx->Mp.TcacheCount);
        Assert.Equal(0, h.Ctx->UseBrk);
        h.Set(HeapOption.Profile, (long)HeapProfile.Glibc236);
        Assert.Equal(MallocParams.DefaultTcacheCount, h.Ctx->Mp.TcacheCount);
        Assert.Equal(nuint.MaxValue, h.Ctx->Mp.TcacheBytes);
        Assert.Equal(1, h.Ctx->UseBrk);
        h.Malloc(10);
        Assert.Equal("can only change before the heap's first allocation",
            Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.Profile, (long)HeapProfile.NativeHeap));
        Assert.Equal("must be 0 (nativeheap) or 1 (glibc-2.36)", Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.Profile, 2));
    }

    [Fact]
    public void TcacheStruct_StillFitsGlibcsChunk_WithItsByteCount()
    {
        // glibc's tcache_perthread_struct is 640 bytes in a 656-byte chunk; the byte count
        // uses the 8 bytes the chunk has to spare, so heap addresses stay glibc's.
        Assert.Equal(640, (int)System.Runtime.InteropServices.Marshal.OffsetOf<Tcache>(nameof(Tcache.Bytes)));
        Assert.Equal(648, (int)System.Runtime.InteropServices.Marshal.OffsetOf<Tcache>(nameof(Tcache.LargeCounts)));
        Assert.Equal((nuint)656, Chunk.RequestToSize(Tcache.GlibcSize));
        // The glibc-2.36 profile makes its tcache that size: the first chunk of the heap is 656 bytes.
        using var glibc = new PrivateHeap(HeapProfile.Glibc236);
        byte* first = glibc.Malloc(10);
        Assert.Equal((nuint)656, Chunk.SizeOf(Chunk.FromMem(glibc.Tcache)));
        Assert.True((byte*)glibc.Tcache + 656 == first, "the first block follows the 656-byte tcache chunk");
        using var large = new PrivateHeap(HeapProfile.NativeHeap);
        large.Malloc(10);
        Assert.Equal(Chunk.RequestToSize((nuint)sizeof(Tcache)), Chunk.SizeOf(Chunk.FromMem(large.Tcache)));
    }

    /// <summary>The nativeheap profile's heap with the large tcache bins taking blocks up to 256 KiB.</summary>
    private static PrivateHeap WithLargeTcache()
    {
        var h = new PrivateHeap(HeapProfile.NativeHeap);
        h.Set(HeapOption.TcacheMax, 256 * 1024);
        return h;
    }

    [Fact]
    public void LargeTcache_IsOffUntilTcacheMaxIsRaised()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        FreedIntoTheTcache(h, 4000);
        Assert.Equal(0, (int)h.Tcache->LargeCounts[BinIndex.TcacheLarge(Chunk.RequestToSize(4000))]);
        Assert.Equal((nuint)0, h.Tcache->Bytes);
    }

    [Fact]
    public void LargeTcache_ServesAnExactSizeAgain_InSizeOrder()
    {
        using var h = WithLargeTcache();
        // Three chunks of large bin 0 (1056-2047 bytes), freed out of size order, each kept off top.
        nuint[] sizes = [1500, 1100, 1300];
        var blocks = new byte*[3];
        for (int i = 0; i < 3; i++) { blocks[i] = h.Malloc(sizes[i]); h.Malloc(16); }
        for (int i = 0; i < 3; i++) h.Free(blocks[i]);
        Assert.Equal(3, (int)h.Tcache->LargeCounts[0]);
        nuint cached = 0;
        foreach (nuint s in sizes) cached += Chunk.RequestToSize(s);
        Assert.Equal(cached, (nuint)h.Tcache->LargeBytes[0]);
        Assert.Equal(cached, h.Tcache->Bytes);
        h.Check(); // sorted by size, counted, keyed
        // An exact size comes back from the cache; a size between them does not (no best fit).
        Assert.True(h.Malloc(1316) != blocks[2]);
        Assert.Equal(3, (int)h.Tcache->LargeCounts[0]);
        for (int i = 0; i < 3; i++) Assert.True(h.Malloc(sizes[i]) == blocks[i]);
        Assert.Equal(0, (int)h.Tcache->LargeCounts[0]);
        Assert.Equal((nuint)0, h.Tcache->Bytes);
        h.Check();
    }

    [Fact]
    public void LargeTcache_SeesADoubleFree_AndKeepsItsBounds()
    {
        using var h = WithLargeTcache();
        byte* p = FreedIntoTheTcache(h, 64 * 1024);
        Assert.Equal(1, (int)h.Tcache->LargeCounts[BinIndex.TcacheLarge(Chunk.RequestToSize(64 * 1024))]);
        var e = Assert.Throws<HeapCorruptionException>(() => h.Free(p));
        Assert.Contains("free(): double free detected in tcache 2", e.Message);
        h.Check(); // the heap stays usable: the chunk is still cached once
        Assert.True(h.Malloc(64 * 1024) == p);

        // At most 16 a bin, and nothing over a quarter of tcache_bytes (it could only be cached by emptying the cache).
        var blocks = new byte*[20];
        for (int i = 0; i < blocks.Length; i++) { blocks[i] = h.Malloc(4000); h.Malloc(16); }
        for (int i = 0; i < blocks.Length; i++) h.Free(blocks[i]);
        Assert.Equal((int)Tcache.LargeBinCount, (int)h.Tcache->LargeCounts[BinIndex.TcacheLarge(Chunk.RequestToSize(4000))]);
        h.Set(HeapOption.TcacheBytes, 64 * 1024);
        FreedIntoTheTcache(h, 20 * 1024);
        Assert.Equal(0, (int)h.Tcache->LargeCounts[BinIndex.TcacheLarge(Chunk.RequestToSize(20 * 1024))]);
        h.Check();
    }

    [Fact]
    public void TcacheMax_TakesLargeSizes_OnlyWhereTheTcacheHasLargeBins()
    {
        using var glibc = new PrivateHeap(HeapProfile.Glibc236);
        Assert.Equal("must be 0 to 1032 (the glibc-2.36 profile's tcache has no large bins)",
            Ptmalloc.SetOption(glibc.Ctx, ref glibc.Ctx->Solo, HeapOption.TcacheMax, 1033));
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        Assert.Equal("must be 0 to 4194280", Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.TcacheMax, 4194281));
        h.Set(HeapOption.TcacheMax, 4194280);
        h.Set(HeapOption.MmapThreshold, 8 << 20);
        FreedIntoTheTcache(h, 3 << 20);
        Assert.Equal(0, (int)h.Tcache->LargeCounts[11]); // over a quarter of tcache_bytes (1 MiB)
        h.Set(HeapOption.TcacheBytes, 0);
        FreedIntoTheTcache(h, 3 << 20);
        Assert.Equal(1, (int)h.Tcache->LargeCounts[11]);
        h.Set(HeapOption.TcacheMax, 1032); // drains the tcache; large sizes are no longer cached
        Assert.Equal(0, (int)h.Tcache->LargeCounts[11]);
        h.Free(h.Malloc(3 << 20));
        Assert.Equal(0, (int)h.Tcache->LargeCounts[11]);
        h.Check();
    }

    [Fact]
    public void NativeHeapProfile_KeepsSixtyFourChunksASize()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        var blocks = new byte*[70];
        for (int i = 0; i < blocks.Length; i++) blocks[i] = h.Malloc(40);
        h.Malloc(40);
        for (int i = 0; i < blocks.Length; i++) h.Free(blocks[i]);
        Assert.Equal(64, (int)h.Tcache->Counts[BinIndex.Tcache(48)]);
        Assert.Equal(6UL, h.Info.Smblks);
        Assert.Equal((nuint)64 * 48, h.Tcache->Bytes);
        h.Check();
    }

    [Fact]
    public void TcacheBytes_BoundsTheCache_ByReturningTheLargestChunksFirst()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        h.Set(HeapOption.TcacheBytes, 16 * 1024);
        var small = new byte*[40];
        var large = new byte*[40];
        for (int i = 0; i < 40; i++)
        {
            small[i] = h.Malloc(24);  // 32-byte chunks
            large[i] = h.Malloc(1000); // 1008-byte chunks
        }
        h.Malloc(24);
        for (int i = 0; i < 40; i++) h.Free(small[i]);
        Assert.Equal((nuint)40 * 32, h.Tcache->Bytes);
        for (int i = 0; i < 40; i++)
        {
            h.Free(large[i]);
            Assert.True(h.Tcache->Bytes <= 16 * 1024, $"after {i + 1} frees the tcache holds {h.Tcache->Bytes} bytes");
        }
        // The small chunks stayed; the large ones were returned to the arena as needed.
        Assert.Equal(40, (int)h.Tcache->Counts[BinIndex.Tcache(32)]);
        nuint largeCount = h.Tcache->Counts[BinIndex.Tcache(1008)];
        Assert.InRange((int)largeCount, 1, 14);
        Assert.Equal(40 * 32 + largeCount * 1008, h.Tcache->Bytes);
        Assert.True(h.Info.Fordblks >= (40 - largeCount) * 1008, $"fordblks {h.Info.Fordblks}");
        h.Check();
        // Every chunk can be had again, the cached ones first.
        for (int i = 0; i < 40; i++) h.Malloc(1000);
        h.Check();
    }

    [Fact]
    public void HeapCheck_FindsAByteCountThatDisagreesWithTheBins()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        FreedIntoTheTcache(h, 40);
        h.Check();
        h.Tcache->Bytes += 16;
        var e = Assert.Throws<HeapCorruptionException>(h.Check);
        Assert.Contains("heap check: the tcache holds 48 bytes of chunks but counts 64", e.Message);
        h.Tcache->Bytes -= 16;
        h.Check();
    }

    [Fact]
    public void TcacheBytes_RefusesNegative_AndZeroMeansNoBound()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        Assert.Equal("must be a byte count (0: no bound)", Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.TcacheBytes, -1));
        h.Set(HeapOption.TcacheBytes, 0);
        Assert.Equal(nuint.MaxValue, h.Ctx->Mp.TcacheBytes);
    }

    [Fact]
    public void CallocTcache_ServesACachedChunk_AllOfItZeroed()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        byte* p = h.Malloc(100);
        h.Malloc(16);
        nuint usable = Ptmalloc.UsableSize(p);
        new Span<byte>(p, (int)usable).Fill(0xAB);
        h.Free(p);
        byte* z = h.Calloc(10, 10);
        Assert.True(z == p);
        Assert.Equal(-1, new Span<byte>(z, (int)usable).IndexOfAnyExcept((byte)0));
        Assert.Equal(0, (int)h.Tcache->Counts[BinIndex.Tcache(112)]);
        h.Check();
    }

    [Fact]
    public void CallocWithoutTcache_TakesTheArenaPath_AsGlibc236()
    {
        using var h = new PrivateHeap(HeapProfile.Glibc236);
        byte* p = FreedIntoTheTcache(h, 100);
        byte* z = h.Calloc(10, 10);
        Assert.False(z == p);
        Assert.Equal(1, (int)h.Tcache->Counts[BinIndex.Tcache(112)]);
        Assert.Equal(-1, new Span<byte>(z, 100).IndexOfAnyExcept((byte)0));
    }

    [Fact]
    public void TrimTcache_EmptiesTheCallersTcache_SoTrimReleasesAroundIt()
    {
        foreach (var (profile, expectCached) in new[] { (HeapProfile.NativeHeap, 0), (HeapProfile.Glibc236, 7) })
        {
            using var h = new PrivateHeap(profile);
            var blocks = new byte*[20];
            for (int i = 0; i < blocks.Length; i++) blocks[i] = h.Malloc(500);
            h.Malloc(16);
            foreach (byte* b in blocks) h.Free(b);
            h.Trim(0);
            Assert.Equal(expectCached, (int)h.Tcache->Counts[BinIndex.Tcache(512)]);
            Assert.Equal((nuint)expectCached * 512, h.Tcache->Bytes);
            h.Check();
        }
    }
}
