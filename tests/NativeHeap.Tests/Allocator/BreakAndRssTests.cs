namespace NativeHeap.Tests;

/// <summary>Behaviour of the break and of resident memory, each scenario in a child process of its own.</summary>
[Trait(Traits.Category, Traits.Allocator)]
public class BreakAndRssTests
{
    private static long L(Dictionary<string, string> r, string key) => long.Parse(r[key]);

    private static string Dump(Dictionary<string, string> r) => string.Join(", ", r.Select(kv => $"{kv.Key}={kv.Value}"));

    private static readonly (string, string) OnBreak = (Tunables.Variable, "use_brk=1");

    /// <summary>On the break, glibc's behaviour: memory below a live top block stays until Trim.</summary>
    [Fact]
    public void OnTheBreak_FreedMemoryReturnsUnlessTopIsPinned_AndTrimReturnsIt()
    {
        var r = Child.Run(nameof(ChildScenarios.RssReturn), OnBreak);
        Assert.Equal("True", r["pin_above_blocks"]);
        // 64 MiB touched; tolerance 2 MiB for the runtime's own noise.
        Assert.InRange(L(r, "alloc_kib"), 64 * 1024 - 512, 64 * 1024 + 2048);
        Assert.InRange(L(r, "free_kib"), -2048, 2048);
        Assert.InRange(L(r, "pinned_alloc_kib"), 64 * 1024 - 512, 64 * 1024 + 2048);
        Assert.InRange(L(r, "pinned_free_kib"), 64 * 1024 - 512, 64 * 1024 + 2048);
        Assert.Equal("True", r["trim_result"]);
        Assert.InRange(L(r, "pinned_trim_kib"), -2048, 2048);
    }

    /// <summary>
    /// The default profile's decayed purge: 64 MiB freed below a live block stays resident
    /// while it might be reused, and goes back once it has been free for purge_delay, with no
    /// call into the heap (the purge timer); with purge_delay=0 at once. glibc 2.36 keeps it
    /// until malloc_trim, even with the blocks all freed: they span two heaps, and the first
    /// heap's free memory ends at the fencepost its old top became, so heap_trim cannot
    /// delete the second heap and take the first's top back.
    /// </summary>
    [Theory]
    [InlineData("", 2500)]
    [InlineData("purge_delay=0", 0)]
    [InlineData("profile=glibc-2.36:use_brk=0", 2500)]
    public void OnHeaps_FreedMemoryBelowALiveBlock_ReturnsAfterThePurgeDelay(string tunables, int idleMs)
    {
        var r = Child.Run(nameof(ChildScenarios.RssReturn), (Tunables.Variable, tunables), ("NATIVEHEAP_TEST_IDLE_MS", idleMs.ToString()));
        string all = Dump(r);
        Assert.Equal("True", r["pin_above_blocks"]);
        Assert.InRange(L(r, "alloc_kib"), 64 * 1024 - 512, 64 * 1024 + 2048);
        Assert.InRange(L(r, "pinned_alloc_kib"), 64 * 1024 - 512, 64 * 1024 + 2048);
        if (tunables == "purge_delay=0")
        {
            Assert.InRange(L(r, "free_kib"), -2048, 2048);
            Assert.InRange(L(r, "pinned_free_kib"), -2048, 2048);
        }
        else
        {
            Assert.True(L(r, "pinned_free_kib") > 60 * 1024, all);
        }
        if (tunables.Contains("glibc"))
            Assert.True(L(r, "pinned_idle_kib") > 60 * 1024, all);
        else
            Assert.InRange(L(r, "pinned_idle_kib"), -2048, 2048);
        Assert.InRange(L(r, "pinned_trim_kib"), -2048, 2048);
    }

    [Fact]
    public void BreakGrowsByRequestPlusTopPad_AndShrinksOnFree()
    {
        // glibc's own malloc in the child moves the break whenever the runtime mallocs on a thread
        // attached to its main arena; such a run measures both heaps. Retry it, and say so if
        // every try was disturbed.
        Dictionary<string, string> r = [];
        for (int attempt = 0; attempt < 5; attempt++)
        {
            r = Child.Run(nameof(ChildScenarios.BreakGrowsAndShrinks), OnBreak);
            if (L(r, "foreign_breaks") == 0) break;
        }
        string all = Dump(r);
        Assert.True(L(r, "foreign_breaks") == 0, "glibc moved the break during every attempt: " + all);
        long start = L(r, "start"), grown = L(r, "grown"), shrunk = L(r, "shrunk");
        // 128 chunks of 65552 bytes, less the top there was, plus the 128 KiB top pad, page-rounded.
        Assert.InRange(grown - start, 8L * 1024 * 1024 - 132 * 1024, 8L * 1024 * 1024 + 132 * 1024);
        // All of it came from the break, in one run (no foreign sbrk in between).
        Assert.True(grown - start == L(r, "arena1") - L(r, "arena0"), all);
        // Freeing the top chunk trims back to the top pad: within a page of where it started.
        Assert.InRange(shrunk - start, -4096, 4096);
        Assert.InRange(L(r, "keepcost2"), 128 * 1024 + 33, 128 * 1024 + 33 + 4096);
        Assert.True(grown - shrunk == L(r, "arena1") - L(r, "arena2"), all);
    }

    [Fact]
    public void ForeignBreakAboveTop_TrimReleasesPagesWithoutMovingTheBreak()
    {
        var r = Child.Run(nameof(ChildScenarios.ForeignBreakTrim), OnBreak);
        Assert.Equal("True", r["foreign_ok"]);
        Assert.InRange(L(r, "alloc_kib"), 16 * 1024 - 256, 16 * 1024 + 2048);
        Assert.Equal("True", r["break_kept"]);
        Assert.InRange(L(r, "free_kib"), -2048, 2048);
        Assert.InRange(L(r, "after_kib"), -2048, 2048);
    }

    [Fact]
    public void ForeignBreakBetweenGrowths_HeapContinuesAboveTheGap()
    {
        var r = Child.Run(nameof(ChildScenarios.ForeignBreakGrowth), OnBreak);
        Assert.Equal("True", r["first_block_past_gap"]);
        Assert.True(L(r, "arena_after") > L(r, "arena_before"));
        Assert.Equal("True", r["ok"]);
    }

    [Fact]
    public void SbrkFailure_FallsBackToMappingsOfAtLeastOneMiB()
    {
        var r = Child.Run(nameof(ChildScenarios.SbrkFailsFallsBackToMmap), OnBreak);
        Assert.Equal("True", r["wall"]);
        Assert.Equal("True", r["break_unchanged"]);
        Assert.True(L(r, "arena_growth") >= 1024 * 1024, $"arena grew by {r["arena_growth"]}");
        Assert.Equal("True", r["ok"]);
    }
}
