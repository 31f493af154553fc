using System.Runtime.CompilerServices;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="DebugHeapTests"/>: each runs with <c>debug=1</c> in a process of its own.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>The misuse named by NH_TEST_MISUSE ("overflow:SIZE", "underflow:SIZE", ...), then proof that the heap still works.</summary>
    public static void DebugMisuse()
    {
        string[] what = Environment.GetEnvironmentVariable("NH_TEST_MISUSE")!.Split(':');
        nuint size = what.Length > 1 ? nuint.Parse(what[1]) : 64;
        try
        {
            switch (what[0])
            {
                case "overflow":
                {
                    byte* p = AllocatedByDebugVictim(size);
                    p[size] = 0x41; // one byte past the end
                    Heap.Free(p);
                    break;
                }
                case "underflow":
                {
                    byte* p = AllocatedByDebugVictim(size);
                    p[-1] = 0x41; // one byte before the start
                    Heap.Free(p);
                    break;
                }
                case "write-after-free":
                {
                    byte* p = AllocatedByDebugVictim(size);
                    FreedByDebugVictim(p);
                    p[size / 2] = 0x41;
                    Heap.Validate();
                    break;
                }
                case "write-after-free-evicted":
                {
                    // quarantine_bytes is small in this run: freeing other blocks pushes p out, and its check reports.
                    byte* p = AllocatedByDebugVictim(size);
                    FreedByDebugVictim(p);
                    p[0] = 0x41;
                    for (int i = 0; i < 64; i++) Heap.Free(Heap.Alloc(size));
                    break;
                }
                case "double-free":
                {
                    byte* p = AllocatedByDebugVictim(size);
                    FreedByDebugVictim(p);
                    // Without the debug heap, p would have left the tcache for a bin by now.
                    var others = new List<nint>();
                    for (int i = 0; i < 100; i++) others.Add((nint)Heap.Alloc(size));
                    foreach (nint o in others) Heap.Free((void*)o);
                    Heap.Free(p);
                    break;
                }
                case "realloc-overflow":
                {
                    byte* p = AllocatedByDebugVictim(size);
                    p[size + 3] = 0x41;
                    Heap.Realloc(p, size * 2);
                    break;
                }
                case "aligned-overflow":
                {
                    var p = (byte*)Heap.AlignedAlloc(size, 4096);
                    Report("aligned", ((nuint)p & 4095) == 0);
                    p[size] = 0x41;
                    Heap.Validate();
                    break;
                }
                case "foreign":
                {
                    byte* p = AllocatedByDebugVictim(size);
                    Heap.Free(p + 16); // inside a block
                    break;
                }
            }
            Report("reported", false);
        }
        catch (HeapCorruptionException e)
        {
            Report("reported", true);
            Report("words", e.GlibcMessage);
            string[] lines = e.Details?.Split('\n') ?? [];
            for (int i = 0; i < lines.Length; i++) Report($"details{i}", lines[i]);
        }
        // Everything still works, every size class and a mapped one.
        var blocks = new List<nint>();
        for (nuint s = 1; s < 70000; s = s * 3 / 2 + 1) blocks.Add((nint)Heap.Alloc(s));
        blocks.Add((nint)Heap.Alloc(1 << 20));
        foreach (nint b in blocks) Heap.Free((void*)b);
        Report("survived", true);
    }

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
