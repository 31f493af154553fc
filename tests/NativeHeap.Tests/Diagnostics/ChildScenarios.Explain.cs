using NativeHeap.Diagnostics;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="ExplainTests"/> that need a process of their own.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>The facts of an explanation a test asserts on, as key=value lines under <paramref name="prefix"/>.</summary>
    private static void ReportExplanation(string prefix, HeapExplanation e)
    {
        Report(prefix + "anon", e.ResidentAnonymousBytes);
        Report(prefix + "total", e.BreakdownTotal);
        foreach (MemoryPart p in e.Breakdown) Report(prefix + p.Name, p.Bytes);
        ulong chunks = 0, regions = 0;
        foreach (HeapChunk c in e.Snapshot.Chunks) chunks += c.ResidentBytes;
        foreach (HeapRegion r in e.Snapshot.Regions) regions += r.ResidentBytes;
        Report(prefix + "chunks_resident", chunks);
        Report(prefix + "regions_resident", regions);
        Report(prefix + "arenas", e.Arenas.Count);
        Report(prefix + "pinners", e.PinnedBy.Count);
        Report(prefix + "pinner_states", string.Join(",", e.PinnedBy.Select(p => p.Chunk.State).Distinct()));
        Report(prefix + "pinner_sizes", string.Join(",", e.PinnedBy.Select(p => p.Chunk.Size).Distinct()));
        Report(prefix + "pinned", e.PinnedBy.Count == 0 ? 0 : e.PinnedBy.Max(p => p.PinnedBytes));
        Report(prefix + "first_pinner_below_top", e.PinnedBy.Count > 0 && e.Snapshot.Chunks.Any(c =>
            c.State == ChunkState.Top && c.Address == e.PinnedBy[0].Chunk.Address + e.PinnedBy[0].Chunk.Size));
        Report(prefix + "trim_estimate", e.TrimEstimateBytes);
        Report(prefix + "text", e.ToString().Replace('\n', '|'));
    }

    /// <summary>seeds/002 explained after the frees, then malloc_trim(0) measured against the estimate.</summary>
    public static void ExplainSeed002()
    {
        const int N = 4000;
        var a = new byte*[N];
        var b = new byte*[N];
        Heap.Free(Heap.Alloc(1));
        _ = Heap.Explain(); // compile and warm up the walk before measuring
        for (int i = 0; i < N; i++)
        {
            a[i] = (byte*)Heap.Alloc(52722);
            new Span<byte>(a[i], 52722).Fill(1);
            b[i] = (byte*)Heap.Alloc(1);
            b[i][0] = 1;
        }
        ReportExplanation("live_", Heap.Explain());
        for (int i = N - 1; i >= 0; i--)
        {
            Heap.Free(a[i]);
            Heap.Free(b[i]);
        }
        HeapExplanation e = Heap.Explain();
        ReportExplanation("freed_", e);
        string? maps = Environment.GetEnvironmentVariable("NATIVEHEAP_TEST_MAPS");
        if (maps != null)
        {
            foreach (HeapMapFormat f in Enum.GetValues<HeapMapFormat>())
                using (var file = File.Create(Path.Combine(maps, $"seed-002.{f.ToString().ToLowerInvariant()}")))
                    Heap.WriteMap(file, f);
        }
        Statm before = Statm.Read();
        Heap.Trim(0);
        Report("trim_returned", (long)before.AnonymousBytes - (long)Statm.Read().AnonymousBytes);
        ReportExplanation("trimmed_", Heap.Explain());
        Heap.Validate();
    }

    /// <summary>Four threads with arenas of their own, each leaving blocks in use, cached and free; mapped blocks too.</summary>
    public static void ExplainThreads()
    {
        Heap.Free(Heap.Alloc(1));
        var kept = new List<nint>();
        using var done = new Barrier(5);
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            var blocks = new List<nint>();
            for (int i = 0; i < 2000; i++)
            {
                var p = (byte*)Heap.Alloc((nuint)(16 + (i * 37 + t * 101) % 3000));
                p[0] = 1;
                blocks.Add((nint)p);
            }
            for (int i = 0; i < blocks.Count; i += 2) Heap.Free((void*)blocks[i]);
            lock (kept) kept.AddRange(blocks.Where((_, i) => i % 2 == 1));
            done.SignalAndWait(); // stay alive, tcache full, while the main thread explains
            done.SignalAndWait();
        })).ToList();
        threads.ForEach(t => t.Start());
        var big = (byte*)Heap.Alloc(1 << 20);
        new Span<byte>(big, 1 << 20).Fill(1);
        done.SignalAndWait();
        HeapExplanation e = Heap.Explain();
        ReportExplanation("", e);
        Report("tcache_chunks", e.Snapshot.Chunks.Count(c => c.State == ChunkState.Tcache));
        Report("mapped_chunks", e.Snapshot.Chunks.Count(c => c.State == ChunkState.Mmapped));
        Report("info_arena", Heap.GetInfo().Arena);
        Report("system_sum", e.Arenas.Sum(a => (long)a.Arena.SystemBytes));
        done.SignalAndWait();
        threads.ForEach(t => t.Join());
        foreach (nint p in kept) Heap.Free((void*)p);
        Heap.Free(big);
        Heap.Validate();
    }
}
