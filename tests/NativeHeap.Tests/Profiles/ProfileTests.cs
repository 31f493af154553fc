using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Tests;

/// <summary>
/// The two profiles and what the default one changes from glibc 2.36: the tcache's depth and
/// byte bound, calloc from the tcache, and malloc_trim emptying the caller's tcache.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
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
        var glibc = Child.Run(nameof(ChildScenarios.ProfileReport), (Tunables.Variable, "profile=glibc-2.36"));
        Assert.Equal(("1", "3"), (glibc["uses_brk"], glibc["fastbin_chunks"]));
        // Written after the single tunables, the profile still comes first and they win.
        var mixed = Child.Run(nameof(ChildScenarios.ProfileReport), (Tunables.Variable, "tcache_count=8:use_brk=0:profile=glibc-2.36"));
        Assert.Equal(("0", "2"), (mixed["uses_brk"], mixed["fastbin_chunks"]));
    }

    /// <summary>A profile the program sets keeps NATIVEHEAP_TUNABLES' single tunables over it, as the start-up does; one it refuses is said.</summary>
    [Fact]
    public void ProfileSetByTheProgram_KeepsTheEnvironmentsTunables()
    {
        var plain = Child.Run(nameof(ChildScenarios.ProfileSetByTheProgram));
        Assert.Equal(("1", "13"), (plain["uses_brk"], plain["fastbin_chunks"])); // glibc's 7-deep tcache
        var deeper = Child.Run(nameof(ChildScenarios.ProfileSetByTheProgram), (Tunables.Variable, "tcache_count=16"));
        Assert.Equal(("1", "4"), (deeper["uses_brk"], deeper["fastbin_chunks"]));
        var refused = Child.Run(nameof(ChildScenarios.ProfileSetByTheProgram), (Tunables.Variable, "tcache_max=4096"));
        Assert.Equal("1", refused["uses_brk"]);
        Assert.StartsWith($"Profile was set, but {Tunables.Variable}' 'tcache_max=4096' was not applied under it: must be 0 to 1032", refused["refused"]);
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
    public void NativeHeapProfile_KeepsItsCountOfChunksASize()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        h.Set(HeapOption.TcacheFlush, 0); // glibc's way past a full bin: each further chunk to the arena
        int count = (int)MallocParams.NativeHeapTcacheCount;
        Assert.True(count > 7); // deeper than glibc 2.36's
        var blocks = new byte*[count + 6];
        for (int i = 0; i < blocks.Length; i++) blocks[i] = h.Malloc(40);
        h.Malloc(40);
        for (int i = 0; i < blocks.Length; i++) h.Free(blocks[i]);
        Assert.Equal(count, (int)h.Tcache->Counts[BinIndex.Tcache(48)]);
        Assert.Equal(6UL, h.Info.Smblks);
        Assert.Equal((nuint)count * 48, h.Tcache->Bytes);
        h.Check();
    }

    /// <summary>
    /// tcache_flush: the free that finds its bin full returns the bin's older half first, and
    /// the fastbin then holds those chunks as if they had been freed into it one by one.
    /// </summary>
    [Fact]
    public void TcacheFlush_ReturnsTheOlderHalf_InTheOrderTheyWereFreed()
    {
        using var h = new PrivateHeap(tcacheCount: 8);
        h.Set(HeapOption.TcacheFlush, 1);
        byte*[] blocks = h.MallocKeptOffTop(9, 40);
        for (int i = 0; i < blocks.Length; i++) h.Free(blocks[i]);
        // blocks 0..3 went back; 4..7 and the freeing 8 stay cached.
        Assert.Equal(5, (int)h.Tcache->Counts[BinIndex.Tcache(48)]);
        Assert.Equal(4UL, h.Info.Smblks);
        Assert.Equal((nuint)5 * 48, h.Tcache->Bytes);
        h.Check();
        // The fastbin, newest freed first.
        Chunk* f = *MallocState.Fastbin(h.Arena, BinIndex.Fastbin(48));
        for (int i = 3; i >= 0; i--, f = Chunk.Reveal(&f->Fd))
            Assert.True(f == Chunk.FromMem(blocks[i]), $"the fastbin's order, block {i}");
        Assert.True(f == null);
        for (int i = 8; i >= 4; i--) Assert.True(h.Malloc(40) == blocks[i], $"the tcache's order, block {i}");
        Assert.True(h.Malloc(40) == blocks[3]);
        h.Check();
    }

    /// <summary>Chunks too big for a fastbin go back to the arena under its lock, merged as glibc's free merges them.</summary>
    [Fact]
    public void TcacheFlush_ReturnsLargerChunksToTheArena_Merged()
    {
        using var h = new PrivateHeap(tcacheCount: 4);
        h.Set(HeapOption.TcacheFlush, 1);
        byte*[] blocks = h.MallocKeptOffTop(5, 200);
        for (int i = 0; i < blocks.Length; i++) h.Free(blocks[i]);
        // Blocks 0 and 1 were neighbours: they went back to the arena and merged into one free chunk.
        Assert.Equal(3, (int)h.Tcache->Counts[BinIndex.Tcache(208)]);
        Assert.Equal((ulong)2 * 208, (ulong)h.Info.Fordblks - h.TopSize);
        Assert.Equal(2UL, (ulong)h.Info.Ordblks); // one free chunk besides top
        h.Check();
    }

    [Fact]
    public void TcacheFlush_ALinkOverwrittenInTheOlderHalf_IsReported_AndTheHeapServes()
    {
        using var h = new PrivateHeap(tcacheCount: 8);
        h.Set(HeapOption.TcacheFlush, 1);
        byte*[] blocks = h.MallocKeptOffTop(9, 40);
        for (int i = 0; i < 8; i++) h.Free(blocks[i]);
        // blocks[2]'s link leads to blocks[1]: a write after free breaks it.
        var e = (TcacheEntry*)blocks[2];
        e->Next = (TcacheEntry*)((nuint)e->Next ^ 8);
        var ex = Assert.Throws<HeapCorruptionException>(() => h.Free(blocks[8]));
        Assert.Equal("free(): unaligned chunk detected in tcache 2", ex.GlibcMessage);
        // The newer half and the freed block are cached; blocks 3 and 2 went back before the
        // bad link; 1 and 0 are lost.
        Assert.Equal(5, (int)h.Tcache->Counts[BinIndex.Tcache(48)]);
        Assert.Equal(2UL, h.Info.Smblks);
        h.Check();
        for (int i = 0; i < 20; i++) h.Free(h.Malloc(40));
        h.Check();
    }

    /// <summary>
    /// realloc_in_place (glibc 2.38): within 16 bytes of the usable size the block is returned
    /// without the arena's lock (held here by the test, so a call that took it would wait);
    /// a real shrink still splits under the lock.
    /// </summary>
    [Fact]
    public void ReallocInPlace_KeepsTheBlockWithoutTheLock_ButAShrinkStillSplits()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        byte* p = h.Malloc(20); // a 32-byte chunk: 24 usable
        byte* q = h.Malloc(200);
        h.Malloc(16);
        PrivateHeap heap = h;
        FutexLock.Enter(&h.Ctx->Main.Mutex);
        try
        {
            nint grown = 0, shrunk = 0;
            var caller = new Thread(() =>
            {
                grown = (nint)heap.Realloc(p, 24);
                shrunk = (nint)heap.Realloc(q, 190);
            });
            caller.Start();
            Assert.True(caller.Join(TimeSpan.FromSeconds(30)), "realloc waited for the arena's lock");
            Assert.Equal((nint)p, grown);
            Assert.Equal((nint)q, shrunk);
        }
        finally
        {
            FutexLock.Exit(&h.Ctx->Main.Mutex);
        }
        Assert.True(h.Realloc(q, 100) == q);
        Assert.Equal((nuint)112, PrivateHeap.ChunkSize(q));
        h.Check();
    }

    /// <summary>memalign_tcache (glibc 2.39): a cached chunk of the size whose address is aligned serves memalign.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(0)]
    public void MemalignTcache_TakesAnAlignedCachedChunk(int memalignTcache)
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        h.Set(HeapOption.MemalignTcache, memalignTcache);
        byte*[] blocks = h.MallocKeptOffTop(8, 40);
        foreach (byte* b in blocks) h.Free(b);
        // 48-byte chunks: every fourth is 64-aligned, and the newest cached ones are not all.
        byte* aligned = null;
        foreach (byte* b in blocks) if (((nuint)b & 63) == 0) aligned = b; // the newest of them is met first
        Assert.True(aligned != null);
        byte* m = h.Memalign(64, 40);
        Assert.True(((nuint)m & 63) == 0);
        Assert.Equal(memalignTcache == 1, m == aligned);
        // Without it _int_memalign splits a new chunk (and may cache a 48-byte leader of its own).
        int cached = h.Tcache->Counts[BinIndex.Tcache(48)];
        Assert.True(memalignTcache == 1 ? cached == 7 : cached >= 8, $"{cached} cached");
        h.Check();
    }

    [Fact]
    public void MemalignTcache_ALinkOverwritten_IsReported_AndTheHeapServes()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        byte*[] blocks = h.MallocKeptOffTop(8, 40);
        foreach (byte* b in blocks) h.Free(b);
        var e = (TcacheEntry*)blocks[7];
        e->Next = (TcacheEntry*)((nuint)e->Next ^ 8);
        // Block 7 is met first: at an alignment it lacks, the walk reads its link.
        nuint alignment = 32;
        while (((nuint)blocks[7] & (alignment - 1)) == 0) alignment <<= 1;
        var ex = Assert.Throws<HeapCorruptionException>(() => h.Memalign(alignment, 40));
        Assert.Equal("malloc(): unaligned tcache chunk detected", ex.GlibcMessage);
        Assert.Equal(0, (int)h.Tcache->Counts[BinIndex.Tcache(48)]);
        h.Check();
        Assert.True(((nuint)h.Memalign(alignment, 40) & (alignment - 1)) == 0);
    }

    /// <summary>A drain (here malloc_trim's, trim_tcache) returns each bin as runs; a broken link in one is reported, the rest returned.</summary>
    [Fact]
    public void TcacheDrain_ALinkOverwritten_IsReported_AndTheHeapServes()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        byte*[] blocks = h.MallocKeptOffTop(8, 40);
        byte*[] others = h.MallocKeptOffTop(8, 200);
        foreach (byte* b in blocks) h.Free(b);
        foreach (byte* b in others) h.Free(b);
        var e = (TcacheEntry*)blocks[5];
        e->Next = (TcacheEntry*)((nuint)e->Next ^ 8);
        var ex = Assert.Throws<HeapCorruptionException>(() => h.Trim(0));
        Assert.Equal("tcache_thread_shutdown(): unaligned tcache chunk detected", ex.GlibcMessage);
        // Blocks 7, 6 and 5 went back before the bad link (4..0 are lost); the 200-byte bin was
        // drained too, before the report.
        Assert.Equal(0, (int)h.Tcache->Counts[BinIndex.Tcache(48)]);
        Assert.Equal(0, (int)h.Tcache->Counts[BinIndex.Tcache(208)]);
        Assert.Equal(3UL, h.Info.Smblks);
        h.Check();
        for (int i = 0; i < 20; i++) h.Free(h.Malloc(40));
        h.Check();
    }

    [Fact]
    public void TcacheBytes_BoundsTheCache_ByReturningTheLargestChunksFirst()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        h.Set(HeapOption.TcacheBytes, 16 * 1024);
        var small = new byte*[24]; // fewer than the count, so the byte bound is what binds
        var large = new byte*[40];
        for (int i = 0; i < 40; i++)
        {
            if (i < small.Length) small[i] = h.Malloc(24);  // 32-byte chunks
            large[i] = h.Malloc(1000); // 1008-byte chunks
        }
        h.Malloc(24);
        for (int i = 0; i < small.Length; i++) h.Free(small[i]);
        Assert.Equal((nuint)small.Length * 32, h.Tcache->Bytes);
        for (int i = 0; i < 40; i++)
        {
            h.Free(large[i]);
            Assert.True(h.Tcache->Bytes <= 16 * 1024, $"after {i + 1} frees the tcache holds {h.Tcache->Bytes} bytes");
        }
        // The small chunks stayed; the large ones were returned to the arena as needed.
        Assert.Equal(small.Length, (int)h.Tcache->Counts[BinIndex.Tcache(32)]);
        nuint largeCount = h.Tcache->Counts[BinIndex.Tcache(1008)];
        Assert.InRange((int)largeCount, 1, 14);
        Assert.Equal((nuint)small.Length * 32 + largeCount * 1008, h.Tcache->Bytes);
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
