using System.Globalization;
using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// One layout, two readers: libnativeheap's C fast paths (src/NativeHeap.Native/fast_path.h)
/// serve tcache hits and frees on the tcache the managed allocator made. The C view
/// (nativeheap-managed.h, printed by native-tests/src/abi_layout.c) must be the managed one,
/// and one sequence of calls must leave the same tcache behind through either.
/// </summary>
public unsafe class NativeAbiLayoutTests
{
    private static Dictionary<string, string> ManagedView()
    {
        var view = new Dictionary<string, string>();
        void Line(string name, object value) => view[name] = Convert.ToString(value, CultureInfo.InvariantCulture)!;
        Tcache tc = default;
        TcacheEntry e = default;
        Heap.FastPath fast = default;
        ThreadLocals ts = default;
        Chunk chunk = default;
        Line("tcache.counts", (byte*)tc.Counts - (byte*)&tc);
        Line("tcache.entries", (byte*)tc.Entries - (byte*)&tc);
        Line("tcache.bytes", (byte*)&tc.Bytes - (byte*)&tc);
        Line("tcache.bins", BinIndex.TcacheMaxBins);
        Line("tcache_entry.next", (byte*)&e.Next - (byte*)&e);
        Line("tcache_entry.key", (byte*)&e.Key - (byte*)&e);
        Line("tcache_entry.size", sizeof(TcacheEntry));
        Line("fast_path.request_limit", (byte*)&fast.RequestLimit - (byte*)&fast);
        Line("fast_path.bins", (byte*)&fast.Bins - (byte*)&fast);
        Line("fast_path.count", (byte*)&fast.Count - (byte*)&fast);
        Line("fast_path.bytes", (byte*)&fast.Bytes - (byte*)&fast);
        Line("fast_path.key", (byte*)&fast.Key - (byte*)&fast);
        Line("fast_path.heap_slots", (byte*)&fast.HeapSlots - (byte*)&fast);
        Line("fast_path.calloc_tcache", (byte*)&fast.CallocFromTcache - (byte*)&fast);
        Line("fast_path.debug", (byte*)&fast.Debug - (byte*)&fast);
        Line("fast_path.debug_key", (byte*)&fast.DebugKey - (byte*)&fast);
        Line("fast_path.size", sizeof(Heap.FastPath));
        Line("thread_locals.tcache", (byte*)&ts.Tcache - (byte*)&ts);
        Line("thread_locals.debug_stack", (byte*)&ts.DebugStack - (byte*)&ts);
        Line("debug.stack_depth", NativeHeap.Debugging.DebugStacks.CDepth);
        var g = default(NativeHeap.Debugging.DebugGuard.Slot);
        Line("guard_slot.start", (byte*)&g.Start - (byte*)&g);
        Line("guard_slot.length", (byte*)&g.Length - (byte*)&g);
        Line("guard_slot.user", (byte*)&g.User - (byte*)&g);
        Line("guard_slot.asked", (byte*)&g.Asked - (byte*)&g);
        Line("guard_slot.state", (byte*)&g.State - (byte*)&g);
        Line("guard_slot.alloc_stack", (byte*)&g.AllocStack - (byte*)&g);
        Line("guard_slot.free_stack", (byte*)&g.FreeStack - (byte*)&g);
        Line("guard_slot.alloc_text", (byte*)&g.AllocText - (byte*)&g);
        Line("guard_slot.free_text", (byte*)&g.FreeText - (byte*)&g);
        Line("guard_slot.size", sizeof(NativeHeap.Debugging.DebugGuard.Slot));
        Line("guard_slot.live", NativeHeap.Debugging.DebugGuard.Live);
        Line("guard_slot.freed", NativeHeap.Debugging.DebugGuard.Freed);
        Line("chunk.header", Chunk.HeaderSize);
        Line("chunk.size_word", ((byte*)&chunk.Size - (byte*)&chunk) / sizeof(nuint));
        Line("chunk.prev_inuse", Chunk.PrevInuse);
        Line("chunk.is_mmapped", Chunk.IsMmapped);
        Line("chunk.non_main_arena", Chunk.NonMainArena);
        Line("chunk.size_bits", Chunk.SizeBits);
        Line("chunk.unaligned_size_bit", Chunk.UnalignedSizeBit);
        Line("chunk.min", Chunk.MinSize);
        // Each bin's chunk size and the largest request it serves, found the way abi_layout.c
        // finds it: the request-to-bin formula (BinIndex.TcacheForRequest, nhm_tcache_index) held to its twin.
        for (nuint idx = 0, request = 0; idx < BinIndex.TcacheMaxBins; idx++)
        {
            while (BinIndex.TcacheForRequest(request + 1) == idx) request++;
            Assert.Equal(BinIndex.TcacheUsableSize(idx), request);
            Line($"bin.{idx}", $"{BinIndex.TcacheChunkSize(idx)} {request}");
        }
        Line("slot_shift", Ownership.SlotShift);
        Line("slots", Ownership.Slots);
        return view;
    }

    [Fact]
    public void Layout_TheCViewIsTheManagedOne()
    {
        var c = new Dictionary<string, string>();
        foreach (string line in NativeTests.Run("abi_layout", []).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int space = line.IndexOf(' ');
            c[line[..space]] = line[(space + 1)..];
        }
        Dictionary<string, string> managed = ManagedView();
        Assert.Equal(managed.Keys.Order(), c.Keys.Order());
        foreach (var (name, value) in managed)
            Assert.True(value == c[name], $"{name}: managed {value}, C {c[name]}");
    }

    /// <summary>
    /// The same calls through the C fast paths (linked against libnativeheap) and through the
    /// managed ones (a .NET child) return the same blocks in the same order and leave the same
    /// links and keys in the freed ones; with the glibc-2.36 profile, both are also glibc's.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("tcache_count=7")]
    [InlineData("tcache_count=0")]
    [InlineData("profile=glibc-2.36")]
    public void Sequence_LeavesTheSameTcacheThroughCAndManaged(string tunables)
    {
        (string, string)[] env = [(Tunables.Variable, tunables)];
        string c = NativeTests.Run("tcache_abi-nh", ["sequence"], env);
        ProcessResult managed = Child.RunExpectingFailure(nameof(ChildScenarios.TcacheSequence), env);
        Assert.True(managed.ExitCode == 0, $"child exited {managed.ExitCode}: {managed.Error}");
        Assert.Equal(c, managed.Output);
        // Not vacuous: with a tcache, freed blocks carry the key and are linked to the one freed before.
        if (tunables != "tcache_count=0") Assert.Matches(@"freed (\d+) next \d+ key key", c);
        else Assert.DoesNotContain("key key", c);
        Assert.DoesNotMatch("malloc new\n(.|\n)*malloc [0-9]", c); // freed blocks are reused before new ones are cut
        if (tunables == "profile=glibc-2.36")
            Assert.Equal(NativeTests.Run("tcache_abi", ["sequence"]), c);
    }

    /// <summary>
    /// Misuse met by the C fast paths is still reported in glibc's words, linked and preloaded:
    /// a foreign block with a tcache-sized header (glibc takes it in; the ownership test, made
    /// before the header is read, refuses it), a foreign pointer whose header cannot be read
    /// (glibc dies of SIGSEGV), and a tcache link overwritten after free.
    /// </summary>
    [Theory]
    [InlineData("foreign", "free(): invalid pointer")]
    [InlineData("unreadable", "free(): invalid pointer")]
    [InlineData("poisoned", "malloc(): unaligned tcache chunk detected")]
    public void Misuse_ThroughTheCFastPaths_IsReported(string kind, string message)
    {
        foreach (var (program, env) in new[]
        {
            ("tcache_abi-nh", Array.Empty<(string, string)>()),
            ("tcache_abi", [NativeTests.Preload]),
        })
        {
            ProcessResult r = Child.RunProgram(NativeTests.Program(program), ["misuse", kind], env);
            Assert.True(r.ExitCode == 134, $"{program} misuse {kind}: exit {r.ExitCode}, stderr {r.Error}"); // SIGABRT, as glibc ends
            Assert.Contains(message, r.Error);
        }
        ProcessResult glibc = Child.RunProgram(NativeTests.Program("tcache_abi"), ["misuse", kind], []);
        if (kind == "poisoned") Assert.Contains(message, glibc.Error);
        else if (kind == "foreign") Assert.Equal(0, glibc.ExitCode);
        else Assert.Equal(139, glibc.ExitCode); // 128 + SIGSEGV
    }
}
