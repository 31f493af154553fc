using System.Runtime.CompilerServices;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="DebugHeapTests"/>: each runs with <c>debug=1</c> in a process of its own.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>
    /// Every misuse named in NH_TEST_MISUSE ("overflow:SIZE,underflow:SIZE,..."), one after the
    /// other in this process: each one's report as "CASE.key=value" lines, then the byte it
    /// overwrote is put back, the block freed, and the next case runs on the same heap (a heap
    /// that goes on working after a report is part of what is tested). Last, every size class.
    /// </summary>
    public static void DebugMisuse()
    {
        foreach (string name in Environment.GetEnvironmentVariable("NH_TEST_MISUSE")!.Split(','))
        {
            string[] what = name.Split(':');
            nuint size = nuint.Parse(what[1]);
            byte* damaged = null, block = null;
            byte original = 0;
            // A byte unlike the one there (the canary is random: it could be 0x41).
            byte Overwrite(byte* at)
            {
                damaged = at;
                original = *at;
                *at = original == 0x41 ? (byte)0x42 : (byte)0x41;
                return *at;
            }
            try
            {
                switch (what[0])
                {
                    case "overflow":
                        block = AllocatedByDebugVictim(size);
                        Report($"{name}.wrote", Overwrite(block + size).ToString("x2")); // one byte past the end
                        Heap.Free(block);
                        break;
                    case "underflow":
                        block = AllocatedByDebugVictim(size);
                        Report($"{name}.wrote", Overwrite(block - 1).ToString("x2")); // one byte before the start
                        Heap.Free(block);
                        break;
                    case "write-after-free":
                        block = AllocatedByDebugVictim(size);
                        FreedByDebugVictim(block);
                        Report($"{name}.wrote", Overwrite(block + size / 2).ToString("x2"));
                        block = null; // freed: repairing puts the poison back
                        Heap.Validate();
                        break;
                    case "write-after-free-evicted":
                        // Run with a small quarantine_bytes: freeing other blocks pushes it out, and its check reports.
                        block = AllocatedByDebugVictim(size);
                        FreedByDebugVictim(block);
                        Report($"{name}.wrote", Overwrite(block).ToString("x2"));
                        block = damaged = null; // out of the quarantine and the heap once reported
                        for (int i = 0; i < 64; i++) Heap.Free(Heap.Alloc(size));
                        break;
                    case "double-free":
                        block = AllocatedByDebugVictim(size);
                        FreedByDebugVictim(block);
                        // Without the debug heap, the block would have left the tcache for a bin by now.
                        var others = new List<nint>();
                        for (int i = 0; i < 100; i++) others.Add((nint)Heap.Alloc(size));
                        foreach (nint o in others) Heap.Free((void*)o);
                        byte* again = block;
                        block = null; // in the quarantine: nothing to free after the report
                        Heap.Free(again);
                        break;
                    case "realloc-overflow":
                        block = AllocatedByDebugVictim(size);
                        Report($"{name}.wrote", Overwrite(block + size + 3).ToString("x2"));
                        block = (byte*)Heap.Realloc(block, size * 2);
                        break;
                    case "aligned-overflow":
                        block = (byte*)Heap.AlignedAlloc(size, 4096);
                        Report($"{name}.aligned", ((nuint)block & 4095) == 0);
                        Report($"{name}.wrote", Overwrite(block + size).ToString("x2"));
                        Heap.Validate();
                        break;
                    case "foreign":
                        block = AllocatedByDebugVictim(size);
                        Heap.Free(block + 16); // inside a block
                        break;
                }
                Report($"{name}.reported", false);
            }
            catch (HeapCorruptionException e)
            {
                Report($"{name}.reported", true);
                Report($"{name}.words", e.GlibcMessage);
                string[] lines = e.Details?.Split('\n') ?? [];
                for (int i = 0; i < lines.Length; i++) Report($"{name}.details{i}", lines[i]);
            }
            if (damaged != null) *damaged = block == null ? DebugPoison : original;
            if (block != null) Heap.Free(block); // repaired: it frees as any block
        }
        Heap.Validate();
        var blocks = new List<nint>();
        for (nuint s = 1; s < 70000; s = s * 3 / 2 + 1) blocks.Add((nint)Heap.Alloc(s));
        blocks.Add((nint)Heap.Alloc(1 << 20));
        foreach (nint b in blocks) Heap.Free((void*)b);
        Heap.Validate();
        Report("survived", true);
    }

    /// <summary>
    /// Under guard_sample=1, the access NH_TEST_FAULT names ("read-past:SIZE", "write-past:SIZE",
    /// "read-after-free:SIZE", "write-after-free:SIZE") on a fresh block: it faults, and the
    /// process must end after the fault handler's report ("survived" would say it did not).
    /// </summary>
    public static void DebugGuardFault()
    {
        string[] what = Environment.GetEnvironmentVariable("NH_TEST_FAULT")!.Split(':');
        nuint size = nuint.Parse(what[1]);
        byte* block = AllocatedByDebugVictim(size);
        Report("allocated", true);
        Console.Out.Flush();
        switch (what[0])
        {
            case "read-past": Report("read", Volatile.Read(ref block[size])); break;
            case "write-past": Volatile.Write(ref block[size], 0x41); break;
            case "read-after-free": FreedByDebugVictim(block); Report("read", Volatile.Read(ref block[0])); break;
            case "write-after-free": FreedByDebugVictim(block); Volatile.Write(ref block[size / 2], 0x41); break;
        }
        Report("survived", true);
    }

    /// <summary>What a quarantined block's bytes hold (Debugging/DebugBlock.Poison).</summary>
    private const byte DebugPoison = 0xDF;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static byte* AllocatedByDebugVictim(nuint size)
    {
        var p = (byte*)Heap.Alloc(size);
        new Span<byte>(p, (int)size).Fill(7);
        return p;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void FreedByDebugVictim(byte* p) => Heap.Free(p);

    /// <summary>A busy, correct program under debug=1: no report may come (no false error).</summary>
    public static void DebugCleanWorkload()
    {
        var rng = new Random(7);
        var live = new List<(nint P, nuint Size, byte Fill)>();
        for (int i = 0; i < 60_000; i++)
        {
            int op = rng.Next(10);
            if (op < 5 || live.Count == 0)
            {
                nuint size = (nuint)(rng.Next(4) switch { 0 => rng.Next(0, 33), 1 => rng.Next(0, 1100), 2 => rng.Next(0, 70000), _ => rng.Next(0, 300_000) });
                byte* p = rng.Next(8) switch
                {
                    0 => (byte*)Heap.AlignedAlloc(size, (nuint)1 << rng.Next(4, 13)),
                    1 => (byte*)Heap.AllocZeroed(size, 1),
                    _ => (byte*)Heap.Alloc(size),
                };
                if (Heap.UsableSize(p) != size) throw new InvalidOperationException($"usable size {Heap.UsableSize(p)} for {size}");
                byte fill = (byte)rng.Next(256);
                new Span<byte>(p, (int)size).Fill(fill); // every byte asked for is the caller's
                live.Add(((nint)p, size, fill));
            }
            else if (op < 8)
            {
                int k = rng.Next(live.Count);
                (nint p, nuint size, byte fill) = live[k];
                live[k] = live[^1];
                live.RemoveAt(live.Count - 1);
                if (new Span<byte>((void*)p, (int)size).IndexOfAnyExcept(fill) >= 0) throw new InvalidOperationException("a block's bytes changed");
                Heap.Free((void*)p);
            }
            else
            {
                int k = rng.Next(live.Count);
                (nint p, nuint size, byte fill) = live[k];
                nuint bigger = size + (nuint)rng.Next(0, 5000);
                var q = (byte*)Heap.Realloc((void*)p, bigger);
                if (new Span<byte>(q, (int)size).IndexOfAnyExcept(fill) >= 0) throw new InvalidOperationException("realloc lost bytes");
                new Span<byte>(q, (int)bigger).Fill(fill);
                live[k] = ((nint)q, bigger, fill);
            }
            if (i % 20_000 == 0) Heap.Validate();
        }
        Heap.Validate();
        foreach (var (p, _, _) in live) Heap.Free((void*)p);
        Heap.Validate();
        Report("clean", true);
    }

    /// <summary>debug cannot change once blocks exist: their layout depends on it.</summary>
    public static void DebugAfterFirstAllocation()
    {
        Heap.Free(Heap.Alloc(10));
        try
        {
            Heap.SetOption(HeapOption.Debug, 1);
            Report("refused", false);
        }
        catch (ArgumentOutOfRangeException e)
        {
            Report("refused", e.Message.Contains("before the heap's first allocation"));
        }
    }
}
