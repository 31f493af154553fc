namespace NativeHeap.Tests;

/// <summary>
/// Heap.Explain in child processes: the breakdown adds up to statm's anonymous memory, the
/// chunks' residency to the regions', and the seeds' reasons come out as glibc's behaviour
/// says they must.
/// </summary>
public class ExplainTests
{
    private static long L(Dictionary<string, string> r, string k) => long.Parse(r[k]);

    /// <summary>The parts sum to statm's figure within 1%, and the chunks tile the regions' residency exactly.</summary>
    private static void AssertAddsUp(Dictionary<string, string> r, string prefix)
    {
        long anon = L(r, prefix + "anon"), total = L(r, prefix + "total");
        Assert.True(Math.Abs(anon - total) <= anon / 100, $"{prefix}: breakdown {total} against statm {anon}: {r[prefix + "text"]}");
        Assert.Equal(r[prefix + "regions_resident"], r[prefix + "chunks_resident"]);
        Assert.True(L(r, prefix + "outside_heap") > 0, "the runtime's own memory is outside the heap");
    }

    [Fact]
    public void Seed002_SevenTcacheChunksPinTheHeap_TrimReturnsWhatItEstimated()
    {
        var r = Child.Run(nameof(ChildScenarios.ExplainSeed002), (Tunables.Variable, "profile=glibc-2.36"));
        const long heap = 4000L * (52736 + 32);
        foreach (string p in new[] { "live_", "freed_", "trimmed_" }) AssertAddsUp(r, p);

        // Before the frees: all of it in use, nothing pinned.
        Assert.InRange(L(r, "live_in_use"), heap - 64 * 1024, heap + 64 * 1024);
        Assert.Equal(0, L(r, "live_pinners"));

        // After: seven 32-byte chunks in the tcache, the highest right below top, pin ~206 MB.
        Assert.Equal("7", r["freed_pinners"]);
        Assert.Equal("Tcache", r["freed_pinner_states"]);
        Assert.Equal("32", r["freed_pinner_sizes"]);
        Assert.Equal("True", r["freed_first_pinner_below_top"]);
        Assert.InRange(L(r, "freed_pinned"), heap - 8L * 52768 - 1024 * 1024, heap);
        Assert.Equal(7 * 32, L(r, "freed_tcache"));
        Assert.InRange(L(r, "freed_in_use"), 0, 64 * 1024);
        long freeResident = L(r, "freed_fastbins") + L(r, "freed_unsorted") + L(r, "freed_small_bins") + L(r, "freed_large_bins");
        Assert.InRange(freeResident, heap - 1024 * 1024, heap);
        Assert.Contains("7 x 32 B cached in a tcache", r["freed_text"]);

        // The estimate is what trim then returned (within 2%: the kernel counts lag a little).
        long estimate = L(r, "freed_trim_estimate"), returned = L(r, "trim_returned");
        Assert.InRange(estimate, heap - 2 * 1024 * 1024, heap);
        Assert.True(Math.Abs(estimate - returned) <= estimate / 50, $"estimated {estimate}, returned {returned}");
        Assert.InRange(L(r, "trimmed_trim_estimate"), 0, 64 * 1024);
    }

    [Fact]
    public void Seed002_Maps_MarkTheSevenPinningChunks()
    {
        using var temp = new TempDirectory("nh-maps-");
        string dir = temp.Path;
        Child.Run(nameof(ChildScenarios.ExplainSeed002), (Tunables.Variable, "profile=glibc-2.36"), ("NATIVEHEAP_TEST_MAPS", dir));
        string svg = File.ReadAllText(Path.Combine(dir, "seed-002.svg"));
        Assert.StartsWith("<svg", svg);
        Assert.Equal(7, CountOf(svg, "32 B cached in a tcache: frees"));
        Assert.Contains("unsorted 201.", svg); // the title's totals
        Assert.Contains("arena 0, break", svg);
        Assert.Contains("#ffd23f", svg); // unsorted chunks drawn in their colour
        string html = File.ReadAllText(Path.Combine(dir, "seed-002.html"));
        Assert.Equal(7, CountOf(html, ",\"pins: frees"));
        Assert.Contains("const strips=", html);
    }

    private static int CountOf(string text, string part)
    {
        int n = 0;
        for (int at = text.IndexOf(part, StringComparison.Ordinal); at >= 0; at = text.IndexOf(part, at + 1, StringComparison.Ordinal)) n++;
        return n;
    }

    /// <summary>glibc-2.36: the main arena on the break; nativeheap: on heaps too, with the purge and a deeper tcache.</summary>
    [Theory]
    [InlineData("profile=glibc-2.36")]
    [InlineData("profile=nativeheap")]
    public void Threads_EachArenaWalked_TheirTcachesSeen(string tunables)
    {
        var r = Child.Run(nameof(ChildScenarios.ExplainThreads), (Tunables.Variable, tunables));
        AssertAddsUp(r, "");
        Assert.Equal("5", r["arenas"]);
        Assert.InRange(L(r, "tcache_chunks"), 4 * 7, 4 * 7 * 64);
        Assert.Equal("1", r["mapped_chunks"]);
        Assert.InRange(L(r, "mmapped"), 1 << 20, (1 << 20) + 8192);
        Assert.Equal(r["info_arena"], r["system_sum"]);
    }
}
