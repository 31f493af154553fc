using NativeHeap.Arenas;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Tests;

/// <summary>
/// The decayed purge on private heaps: which free pages go back, when, and that nothing else
/// changes. The purge is called with a clock value, so no test waits for the delay.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class PurgeTests
{
    private const nuint Block = 100 * 1024; // below the mmap threshold: from the heap

    /// <summary>
    /// Fourteen touched 100 KiB blocks and a guard above them; blocks 2..6 freed (one free
    /// chunk under a live block). Blocks 9..11 are left for a second hole.
    /// </summary>
    private static (nint Hole, nuint HoleSize) FreeAHoleBelowALiveBlock(PrivateHeap h) => FreeAHoleBelowALiveBlock(h, out _);

    private static (nint Hole, nuint HoleSize) FreeAHoleBelowALiveBlock(PrivateHeap h, out nint[] blockAddresses)
    {
        var blocks = new byte*[14];
        for (int i = 0; i < blocks.Length; i++)
        {
            blocks[i] = h.Malloc(Block);
            new Span<byte>(blocks[i], (int)Block).Fill(0x5A);
        }
        h.Malloc(16);
        for (int i = 2; i <= 6; i++) h.Free(blocks[i]);
        blockAddresses = new nint[blocks.Length];
        for (int i = 0; i < blocks.Length; i++) blockAddresses[i] = (nint)blocks[i];
        Chunk* hole = Chunk.FromMem(blocks[2]);
        return ((nint)hole, Chunk.SizeOf(hole));
    }

    private static long StampOf(byte* chunk) => *(long*)(chunk + Chunk.StructSize);

    /// <summary>Fastbin chunks are merged by a purge, and the pages they then free go back one delay later.</summary>
    [Fact]
    public void Purge_MergesTheFastbins_AndReleasesWhatTheyFreeOneDelayLater()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        h.Set(HeapOption.TcacheCount, 0); // every free to its fastbin
        long delay = h.Ctx->Mp.PurgeDelayMs;
        byte*[] blocks = h.MallocKeptOffTop(400, 40); // 400 x 48 bytes: several pages
        foreach (byte* b in blocks) h.Free(b);
        Assert.Equal(400UL, h.Info.Smblks);
        byte* first = blocks[0] - Chunk.HeaderSize;
        nuint span = (nuint)(blocks[^1] - blocks[0]) + 48;
        long now = MallocContext.Purge(h.Ctx, h.Arena)->Now + 10 * delay;
        Ptmalloc.PurgeArena(h.Ctx, h.Arena, now);
        Assert.Equal(0UL, h.Info.Smblks);
        Assert.Equal(0, h.Arena->HaveFastchunks);
        Assert.True(OsMemory.ResidentPages(first, span) >= span / OsMemory.PageSize - 1, "released before its delay");
        Assert.True(Ptmalloc.PurgeArena(h.Ctx, h.Arena, now + delay));
        Assert.InRange(OsMemory.ResidentPages(first, span), (nuint)0, (nuint)2);
        h.Check();
        foreach (byte* _ in blocks) h.Free(h.Malloc(40));
        h.Check();
    }

    [Fact]
    public void FreePagesBelowALiveBlock_GoBackOnlyOnceTheDelayHasPassed()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        long delay = h.Ctx->Mp.PurgeDelayMs;
        Assert.True(delay > 0);
        var (holeAddress, size) = FreeAHoleBelowALiveBlock(h);
        byte* hole = (byte*)holeAddress;
        Assert.True(size >= 5 * Block, $"the five blocks merged: {size}");
        nuint pages = size / OsMemory.PageSize;
        Assert.True(OsMemory.ResidentPages(hole, size) >= pages - 1);
        Assert.NotEqual(0, MallocContext.Purge(h.Ctx, h.Arena)->Deadline);
        long deadline = StampOf(hole) + delay; // the last of the five frees re-stamped the merged chunk
        Assert.True(deadline >= MallocContext.Purge(h.Ctx, h.Arena)->Deadline);

        // Before the deadline nothing goes; at it, every whole page but the one with the header.
        Assert.False(Ptmalloc.PurgeArena(h.Ctx, h.Arena, deadline - 1));
        Assert.True(OsMemory.ResidentPages(hole, size) >= pages - 1);
        // Rescheduled, but not sooner than an eighth of the delay after that purge.
        Assert.Equal(Math.Max(deadline, deadline - 1 + delay / 8), MallocContext.Purge(h.Ctx, h.Arena)->Deadline);
        Assert.True(Ptmalloc.PurgeArena(h.Ctx, h.Arena, deadline));
        Assert.InRange(OsMemory.ResidentPages(hole, size), (nuint)1, (nuint)2);
        // The guard block and the live blocks below the hole are untouched.
        h.Check();
        // Once purged, the chunk is not purged again, and nothing else waits.
        Assert.Equal(0, MallocContext.Purge(h.Ctx, h.Arena)->Deadline);
        Assert.False(Ptmalloc.PurgeArena(h.Ctx, h.Arena, deadline + 10 * delay));

        // The memory serves again, and a piece cut from it keeps its "already released" mark.
        byte* again = h.Malloc(Block);
        Assert.True(again == hole + Chunk.HeaderSize);
        new Span<byte>(again, (int)Block).Fill(1);
        Assert.Equal(0, MallocContext.Purge(h.Ctx, h.Arena)->Deadline);
        h.Check();
    }

    [Fact]
    public void AChunkFreedLater_WaitsItsOwnDelay()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        long delay = h.Ctx->Mp.PurgeDelayMs;
        var (holeAddress, size) = FreeAHoleBelowALiveBlock(h, out nint[] blocks);
        byte* hole = (byte*)holeAddress;
        long first = StampOf(hole) + delay;
        // A second hole, freed "later": stamped by hand half a delay after the first.
        for (int i = 9; i <= 11; i++) h.Free((void*)blocks[i]);
        byte* late = (byte*)Chunk.FromMem((void*)blocks[9]);
        *(long*)(late + Chunk.StructSize) = first - delay + delay / 2;
        Assert.True(Ptmalloc.PurgeArena(h.Ctx, h.Arena, first));
        Assert.InRange(OsMemory.ResidentPages(hole, size), (nuint)1, (nuint)2);
        Assert.True(OsMemory.ResidentPages(late, 3 * Block) > 3 * Block / OsMemory.PageSize - 2);
        Assert.Equal(first + delay / 2, MallocContext.Purge(h.Ctx, h.Arena)->Deadline);
        Assert.True(Ptmalloc.PurgeArena(h.Ctx, h.Arena, first + delay / 2));
        Assert.InRange(OsMemory.ResidentPages(late, 3 * Block), (nuint)1, (nuint)2);
        h.Check();
    }

    [Fact]
    public void TopFreedByAFree_ShrinksToTopPad_AfterTheDelay()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        var blocks = new byte*[30];
        for (int i = 0; i < blocks.Length; i++)
        {
            blocks[i] = h.Malloc(Block);
            new Span<byte>(blocks[i], (int)Block).Fill(3);
        }
        // Freed from the top down, so each merges into top: 3 MiB, below the trim threshold's reach
        // only because glibc trims at the threshold; the purge takes top down to top_pad.
        h.Set(HeapOption.TrimThreshold, 64 * 1024 * 1024);
        for (int i = blocks.Length - 1; i >= 1; i--) h.Free(blocks[i]);
        nuint before = h.Arena->SystemMem;
        Assert.True(h.TopSize > 2 * 1024 * 1024);
        Assert.NotEqual(0, MallocContext.Purge(h.Ctx, h.Arena)->TopFreedAt);
        Assert.False(Ptmalloc.PurgeArena(h.Ctx, h.Arena, MallocContext.Purge(h.Ctx, h.Arena)->TopFreedAt + h.Ctx->Mp.PurgeDelayMs - 1));
        Assert.True(Ptmalloc.PurgeArena(h.Ctx, h.Arena, MallocContext.Purge(h.Ctx, h.Arena)->TopFreedAt + h.Ctx->Mp.PurgeDelayMs));
        Assert.True(h.TopSize <= h.Ctx->Mp.TopPad + OsMemory.PageSize + Chunk.MinSize, $"top {h.TopSize}");
        Assert.True(h.Arena->SystemMem < before);
        Assert.Equal(0, MallocContext.Purge(h.Ctx, h.Arena)->TopFreedAt);
        h.Check();
    }

    [Fact]
    public void SlowPathsPurge_WhenTheDelayHasPassed()
    {
        using var h = new PrivateHeap(HeapProfile.NativeHeap);
        h.Set(HeapOption.PurgeDelay, 1);
        var early = new nint[64];
        for (int i = 0; i < early.Length; i++) early[i] = (nint)h.Malloc(2000);
        var (holeAddress, size) = FreeAHoleBelowALiveBlock(h);
        byte* hole = (byte*)holeAddress;
        Thread.Sleep(30);
        // Frees that take the arena lock (2000 bytes: no tcache, no fastbin), away from the hole;
        // the clock is read every 32 of them.
        foreach (nint e in early) h.Free((void*)e);
        Assert.True(OsMemory.ResidentPages(hole + 4096, size - 8192) <= 1);
        h.Check();
    }

    [Fact]
    public void DelayZero_ReleasesAtOnce_AndMinusOneNever()
    {
        using (var h = new PrivateHeap(HeapProfile.NativeHeap))
        {
            h.Set(HeapOption.PurgeDelay, 0);
            var (holeAddress, size) = FreeAHoleBelowALiveBlock(h);
            byte* hole = (byte*)holeAddress;
            Assert.InRange(OsMemory.ResidentPages(hole, size), (nuint)1, (nuint)2);
            Assert.Equal(0, MallocContext.Purge(h.Ctx, h.Arena)->Deadline);
        }
        using (var h = new PrivateHeap(HeapProfile.NativeHeap))
        {
            h.Set(HeapOption.PurgeDelay, -1);
            var (holeAddress, size) = FreeAHoleBelowALiveBlock(h);
            byte* hole = (byte*)holeAddress;
            Assert.Equal(0, MallocContext.Purge(h.Ctx, h.Arena)->Deadline);
            Assert.False(Ptmalloc.PurgeArena(h.Ctx, h.Arena, long.MaxValue / 2));
            Assert.True(OsMemory.ResidentPages(hole, size) >= size / OsMemory.PageSize - 1);
        }
        using (var h = new PrivateHeap(HeapProfile.NativeHeap))
            Assert.Equal("must be milliseconds, 0 (at once) or -1 (never)", Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.PurgeDelay, -2));
    }

    [Fact]
    public void Glibc236Profile_NeverPurges_AndMallocTrimStillReleases()
    {
        using var h = new PrivateHeap(HeapProfile.Glibc236);
        var (holeAddress, size) = FreeAHoleBelowALiveBlock(h);
        byte* hole = (byte*)holeAddress;
        Assert.Equal(0, MallocContext.Purge(h.Ctx, h.Arena)->Deadline);
        Assert.Equal(0, MallocContext.Purge(h.Ctx, h.Arena)->TopFreedAt);
        Assert.True(OsMemory.ResidentPages(hole, size) >= size / OsMemory.PageSize - 1);
        h.Trim(0);
        Assert.InRange(OsMemory.ResidentPages(hole, size), (nuint)1, (nuint)2);
        h.Check();
    }
}
