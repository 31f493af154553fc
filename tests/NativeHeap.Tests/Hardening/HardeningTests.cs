using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// Each of glibc's integrity checks, met the way a buggy program meets it (an overflow into
/// the next chunk's size, a write after free into a list link, a second free, an interior
/// pointer), on a private heap: the exception carries glibc's words and the address, and
/// the heap goes on serving afterwards.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class HardeningTests
{
    private static nuint* SizeField(byte* mem) => (nuint*)mem - 1;

    private static HeapCorruptionException Expect(string glibcMessage, Action action)
    {
        var e = Assert.Throws<HeapCorruptionException>(action);
        Assert.Equal(glibcMessage, e.GlibcMessage);
        Assert.EndsWith($": 0x{e.Address:x}", e.Message);
        return e;
    }

    /// <summary>After a caught error, the heap still allocates and frees every kind of block.</summary>
    private static void StillServes(PrivateHeap h, bool check = true)
    {
        var blocks = new List<nint>();
        foreach (nuint size in new nuint[] { 8, 24, 40, 100, 500, 1000, 3000, 70_000, 300_000 })
        {
            for (int i = 0; i < 10; i++)
            {
                byte* p = h.Malloc(size);
                new Span<byte>(p, (int)size).Fill(0x77);
                blocks.Add((nint)p);
            }
        }
        foreach (nint p in blocks) h.Free((void*)p);
        if (check) h.Check();
    }

    [Fact]
    public void TcacheDoubleFree()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(100);
        h.Free(a);
        Expect("free(): double free detected in tcache 2", () => h.Free(a));
        StillServes(h);
    }

    [Fact]
    public void TcacheKeyInUserData_IsNoFalseAlarm()
    {
        // tst-tcfree3: a live block whose data happens to hold the key is freed normally.
        using var h = new PrivateHeap();
        byte* a = h.Malloc(100);
        h.Free(h.Malloc(100));
        ((TcacheEntry*)a)->Key = h.Ctx->TcacheKey;
        h.Free(a);
        Assert.True(h.Malloc(100) == a);
        h.Check();
    }

    [Fact]
    public void TooManyChunksInATcacheBin_AfterALinkWasTurnedIntoACycle()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(100), b = h.Malloc(100), c = h.Malloc(100);
        h.Free(a);
        h.Free(b);
        // A write after free: a's link now points to a itself.
        var ea = (TcacheEntry*)a;
        ea->Next = Chunk.Protect(&ea->Next, ea);
        ((TcacheEntry*)c)->Key = h.Ctx->TcacheKey; // c's data looks like a cached chunk's
        Expect("free(): too many chunks detected in tcache", () => h.Free(c));
    }

    [Fact]
    public void UnalignedTcacheChunk_OnMalloc_TheBinIsDroppedAndTheSizeWorksAgain()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(100), b = h.Malloc(100);
        h.Free(a);
        h.Free(b);
        var eb = (TcacheEntry*)b;
        eb->Next = (TcacheEntry*)((nuint)eb->Next ^ 8); // one flipped bit in the protected link
        Assert.True(h.Malloc(100) == b);
        Expect("malloc(): unaligned tcache chunk detected", () => h.Malloc(100));
        Assert.Equal(0, h.Tcache->Counts[BinIndex.Tcache(112)]);
        StillServes(h);
    }

    [Fact]
    public void UnalignedChunkInTcache_OnTheDoubleFreeWalk()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(100), b = h.Malloc(100), c = h.Malloc(100);
        h.Free(a);
        h.Free(b);
        var eb = (TcacheEntry*)b;
        eb->Next = (TcacheEntry*)((nuint)eb->Next ^ 8);
        ((TcacheEntry*)c)->Key = h.Ctx->TcacheKey;
        Expect("free(): unaligned chunk detected in tcache 2", () => h.Free(c));
        StillServes(h);
    }

    [Fact]
    public void FastbinDoubleFree_Fasttop()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(40);
        h.Malloc(40);
        h.Free(a);
        Expect("double free or corruption (fasttop)", () => h.Free(a));
        StillServes(h);
    }

    [Fact]
    public void FastbinChunkWithAWrongSize_MemoryCorruptionFast()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(40);
        h.Malloc(40);
        h.Free(a);
        *SizeField(a) = 0x91; // an overflow from the chunk before rewrote a's size
        Expect("malloc(): memory corruption (fast)", () => h.Malloc(40));
        StillServes(h, check: false); // a's header stays wrong; the walk would (rightly) see it
    }

    [Fact]
    public void FastbinLinkOverwritten_UnalignedFastbinChunk()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.FastbinWithAnOverwrittenLink();
        // Popping b with a compare-and-swap reads its link first (glibc's REMOVE_FB, the path of
        // a process with threads): the bad link is caught before b is handed out.
        Expect("malloc(): unaligned fastbin chunk detected", () => h.Malloc(40));
        StillServes(h);
    }

    /// <summary>
    /// With the tcache on, malloc takes a fastbin's chunks as one run into the tcache: a bad
    /// link below the run ends it there, the run is cached, and the rest of the bin is dropped.
    /// </summary>
    [Fact]
    public void FastbinLinkOverwrittenBelowARun_TheRunIsCached_ThenReported()
    {
        using var h = new PrivateHeap(tcacheCount: 2);
        byte*[] blocks = h.MallocKeptOffTop(6, 40);
        foreach (byte* b in blocks) h.Free(b); // two cached, four in the fastbin: 5 -> 4 -> 3 -> 2
        h.Malloc(40);
        h.Malloc(40); // the tcache is empty
        var c3 = (Chunk*)(blocks[3] - 16);
        c3->Fd = (Chunk*)((nuint)c3->Fd ^ 8); // 3's link to 2 overwritten
        // The run is 5 (the victim, lost with the error, as glibc's pop loses it), 4 and 3;
        // glibc's third pop would read 3's link and stop there too.
        Expect("malloc(): unaligned fastbin chunk detected", () => h.Malloc(40));
        Assert.True(h.Malloc(40) == blocks[3], "the run's chunks were not cached");
        Assert.True(h.Malloc(40) == blocks[4], "the run's chunks were not cached");
        Assert.Equal(0UL, h.Info.Smblks);
        StillServes(h);
    }

    [Fact]
    public void OverflowIntoTheNextChunksSize_InvalidNextSizeFast()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(40), b = h.Malloc(40);
        h.Malloc(40);
        *SizeField(b) = 0x1; // no more than a header: glibc's limit
        Expect("free(): invalid next size (fast)", () => h.Free(a));
        StillServes(h, check: false);
    }

    [Fact]
    public void OverflowIntoTheNextChunksSize_InvalidNextSizeNormal()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(200), b = h.Malloc(200);
        h.Malloc(200);
        *SizeField(b) = 0x1;
        Expect("free(): invalid next size (normal)", () => h.Free(a));
        StillServes(h, check: false);
    }

    [Fact]
    public void SecondFreeOfAnUnsortedChunk_DoubleFreeNotPrev()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(200);
        h.Malloc(200);
        h.Free(a);
        Expect("double free or corruption (!prev)", () => h.Free(a));
        StillServes(h);
    }

    [Fact]
    public void FreeOfTop_DoubleFreeTop()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(200);
        byte* pastTheEnd = a + PrivateHeap.ChunkSize(a); // top's user pointer
        Assert.True(pastTheEnd - 16 == h.Top);
        Expect("double free or corruption (top)", () => h.Free(pastTheEnd));
        StillServes(h);
    }

    [Fact]
    public void SizeReachingPastTop_DoubleFreeOut()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(2000);
        nuint pastTop = (nuint)(h.Top + h.TopSize - (a - 16)) + 0x1000;
        *SizeField(a) = pastTop | 1;
        Expect("double free or corruption (out)", () => h.Free(a));
    }

    [Fact]
    public void InteriorPointer_InvalidPointer()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(200);
        Expect("free(): invalid pointer", () => h.Free(a + 8));
        h.Free(a);
        StillServes(h);
    }

    [Fact]
    public void SizeThatWrapsTheAddressSpace_InvalidPointer()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(200);
        nuint saved = *SizeField(a);
        *SizeField(a) = unchecked((nuint)(-(nint)(nuint)(a - 16)) + 32) | 1;
        Expect("free(): invalid pointer", () => h.Free(a));
        *SizeField(a) = saved;
        h.Free(a);
        StillServes(h);
    }

    [Fact]
    public void MisalignedSize_InvalidSize()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(200);
        nuint saved = *SizeField(a);
        *SizeField(a) = 0xd8 | 1;
        Expect("free(): invalid size", () => h.Free(a));
        *SizeField(a) = saved;
        h.Free(a);
        StillServes(h);
    }

    [Fact]
    public void MappedChunkWithABadOffset_MunmapChunkInvalidPointer()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(300_000);
        Assert.True(PrivateHeap.IsMapped(a));
        ((nuint*)a)[-2] = 8; // prev_size: the offset from the mapping's start
        Expect("munmap_chunk(): invalid pointer", () => h.Free(a));
        ((nuint*)a)[-2] = 0;
        h.Free(a);
        StillServes(h);
    }

    [Fact]
    public void CorruptedTopSize()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.Malloc(100);
        ((Chunk*)h.Top)->Size = unchecked((nuint)(-1L)) & ~(nuint)7 | 1; // an overflow ran over top's header
        Expect("malloc(): corrupted top size", () => h.Malloc(5000));
    }

    [Fact]
    public void UnsortedLinkOverwritten_UnsortedDoubleLinkedListCorrupted()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(300);
        h.Malloc(300);
        h.Free(a); // into the unsorted bin
        ((Chunk*)(a - 16))->Fd = (Chunk*)(a + 64); // a write after free into its forward link
        Expect("malloc(): unsorted double linked list corrupted", () => h.Malloc(2000));
    }

    [Fact]
    public void SmallbinLinkOverwritten_SmallbinDoubleLinkedListCorrupted()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(300), b = h.Malloc(300);
        h.Malloc(300);
        h.Free(a);
        h.Malloc(2000); // sorts a into its small bin
        ((Chunk*)(a - 16))->Bk = (Chunk*)(b - 16);
        Expect("malloc(): smallbin double linked list corrupted", () => h.Malloc(300));
    }

    [Fact]
    public void PrevSizeOverwritten_CorruptedSizeVsPrevSize()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.Set(HeapOption.MxFast, 0);
        byte* a = h.Malloc(300), b = h.Malloc(300);
        h.Malloc(300);
        h.Free(a);
        ((nuint*)b)[-2] = 0x200; // b's prev_size: an overflow from a's user data
        Expect("corrupted size vs. prev_size while consolidating", () => h.Free(b));
    }

    [Fact]
    public void LinksOfAFreeChunkOverwritten_CorruptedDoubleLinkedList()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.Set(HeapOption.MxFast, 0);
        byte* a = h.Malloc(300), b = h.Malloc(300);
        h.Malloc(300);
        h.Free(b);
        var cb = (Chunk*)(b - 16);
        cb->Fd = cb->Bk = (Chunk*)(a - 16); // links aimed elsewhere; size and foot intact
        Expect("corrupted double-linked list", () => h.Free(a)); // a merges forward into b: unlink(b)
    }

    [Fact]
    public void ReallocOfAChunkWithABadSize_InvalidOldSize()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(200);
        nuint saved = *SizeField(a);
        *SizeField(a) = 0x10; // a header's worth: no chunk is that small
        Expect("realloc(): invalid old size", () => h.Realloc(a, 5000));
        *SizeField(a) = saved;
        Assert.True(h.Realloc(a, 5000) != null);
    }

    [Fact]
    public void ReallocWithTheNextSizeOverwritten_InvalidNextSize()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(200), b = h.Malloc(200);
        *SizeField(b) = 0x1;
        Expect("realloc(): invalid next size", () => h.Realloc(a, 5000));
    }

    [Fact]
    public void FailFast_EndsTheProcessWithGlibcsMessage()
    {
        var r = Child.RunExpectingFailure(nameof(ChildScenarios.DoubleFree), (Tunables.Variable, "fail_fast=1"));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("NativeHeap: free(): double free detected in tcache 2: 0x", r.Error);
        Assert.DoesNotContain("survived", r.Output);

        var thrown = Child.Run(nameof(ChildScenarios.DoubleFree));
        Assert.Equal("free(): double free detected in tcache 2", thrown["caught"]);
        Assert.Equal("True", thrown["survived"]);
    }

    [Theory]
    [InlineData(100)]     // a small chunk of glibc's heap: would have gone into the tcache
    [InlineData(5000)]    // a larger one
    [InlineData(300_000)] // an mmapped chunk, laid out exactly as NativeHeap's
    public void PointerFromGlibcsMalloc_IsRefused_AndGlibcStillOwnsIt(int size)
    {
        using var h = new PrivateHeap();
        h.Free(h.Malloc(100));
        var foreign = (byte*)GlibcMalloc.Malloc((nuint)size);
        new Span<byte>(foreign, size).Fill(0x42);
        Expect("free(): invalid pointer", () => h.Free(foreign));
        Expect("realloc(): invalid pointer", () => h.Realloc(foreign, 10));
        Assert.Equal(-1, new Span<byte>(foreign, size).IndexOfAnyExcept((byte)0x42));
        GlibcMalloc.Free(foreign);
        StillServes(h);
    }

    [Fact]
    public void PointerFromGlibcsMalloc_IsRefusedByTheProcessHeapsFastPath()
    {
        Heap.Free(Heap.Alloc(100)); // this thread has a tcache
        var foreign = (byte*)GlibcMalloc.Malloc(100);
        var e = Assert.Throws<HeapCorruptionException>(() => Heap.Free(foreign));
        Assert.Equal("free(): invalid pointer", e.GlibcMessage);
        GlibcMalloc.Free(foreign);
        Heap.Free(Heap.Alloc(100));
        Heap.Validate();
    }

    [Fact]
    public void PointerToTheStack_IsRefused()
    {
        using var h = new PrivateHeap();
        byte* onStack = stackalloc byte[64];
        ((nuint*)onStack)[1] = 0x41; // a plausible chunk header
        Expect("free(): invalid pointer", () => h.Free(onStack + 16));
        StillServes(h);
    }

    [Fact]
    public void OutOfAddressSpace_EveryFailureIsOutOfMemory_AndTheHeapRecovers()
    {
        // W^X makes the JIT map a writable view of each method it compiles: under the lowered
        // limit the runtime itself would fail; without it the JIT writes in place.
        var r = Child.Run(nameof(ChildScenarios.OutOfAddressSpace), ("DOTNET_EnableWriteXorExecute", "0"));
        Assert.True(int.Parse(r["blocks"]) > 100, r["blocks"]);
        Assert.Equal("9", r["oom"]); // three misses for each of the three sizes
        Assert.Equal("0", r["other"]);
        Assert.Contains("ENOMEM", r["message"]);
        Assert.Equal("True", r["again"]);
    }

    [Fact]
    public void CheckedMode_CatchesAnOverflowAtTheNextCall()
    {
        var r = Child.Run(nameof(ChildScenarios.CheckedModeCatchesAnOverflow), (Tunables.Variable, "check=1"));
        Assert.Equal("True", r["clean"]);
        Assert.StartsWith("heap check: ", r["caught"]);
    }

    [Fact]
    public void FreesFastPathBreakTest_TakesOnlyTheBreaksOneRun_BelowTop()
    {
        using var h = new PrivateHeap(HeapProfile.Glibc236);
        byte* p = h.Malloc(100);
        Chunk* c = Chunk.FromMem(p);
        Assert.Equal(1, h.Ctx->Segments.Count);
        Assert.True(MallocContext.OnBreakBelowTop(h.Ctx, c));
        Assert.False(MallocContext.OnBreakBelowTop(h.Ctx, h.Arena->Top)); // top is not a chunk in use
        Assert.False(MallocContext.OnBreakBelowTop(h.Ctx, (Chunk*)((byte*)h.Ctx->Segments.Starts[0] - 64)));
        // A second run (after a foreign sbrk) sends every free to the full test.
        h.Ctx->Segments.Count = 2;
        Assert.False(MallocContext.OnBreakBelowTop(h.Ctx, c));
        h.Ctx->Segments.Count = 1;
        h.Free(p);
        h.Check();
    }
}
