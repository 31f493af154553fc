using System.Runtime.InteropServices;
using NativeHeap.Lab;

namespace NativeHeap.Benchmarks;

/// <summary>
/// The shared-break stress test (not a BenchmarkDotNet suite, not in CI):
/// <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- break-stress [--seconds 60] [--use-brk 1|0]</c>.
/// One thread makes glibc's main arena grow and trim the break (NativeMemory.Alloc/Free of
/// blocks that cross the trim threshold, glibc limited to its main arena), while two threads
/// make NativeHeap's main arena grow and trim it too (all on the main arena). Every block on
/// both sides carries a pattern checked before it is freed. It runs in a child process, so a
/// crash is reported rather than suffered.
/// </summary>
internal static unsafe class BreakStress
{
    private const int M_MMAP_THRESHOLD = -3, M_ARENA_MAX = -8;


    internal static int Parent(string[] args)
    {
        int seconds = Option(args, "--seconds", 60);
        int useBrk = Option(args, "--use-brk", 1);
        Console.WriteLine($"break-stress: {seconds} s, NativeHeap main arena {(useBrk == 1 ? "on the break" : "on mmap'd heaps")}, glibc on the break");
        // Not captured: the child's report and a crash's message come out as they happen.
        ProcessResult child = ChildProcess.RunSelf(["break-stress-child", seconds.ToString()], new ProcessOptions
        {
            Environment = [(Tunables.Variable, $"use_brk={useBrk}:arena_max=1")],
            CaptureOutput = false,
        }, typeof(BreakStress).Assembly);
        string verdict = child.ExitCode switch
        {
            0 => "no corruption seen",
            1 => "corruption seen (see above)",
            134 => "child aborted (SIGABRT: glibc found its heap corrupted)",
            139 => "child crashed (SIGSEGV)",
            _ => $"child exited {child.ExitCode}",
        };
        Console.WriteLine($"break-stress: {verdict}");
        return child.ExitCode == 0 ? 0 : 1;
    }

    internal static int Child(int seconds)
    {
        // glibc: one arena (its main one, on the break) for every thread, and blocks up to
        // 4 MiB from the break rather than mmap.
        GlibcMalloc.Mallopt(M_ARENA_MAX, 1);
        GlibcMalloc.Mallopt(M_MMAP_THRESHOLD, 4 << 20);
        Precompile.Assembly();

        var stop = DateTime.UtcNow.AddSeconds(seconds);
        long glibcCycles = 0, glibcBreakMoves = 0, nhCycles = 0, corruptions = 0;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        long ourSbrk0 = Os.OsMemory.SbrkMoves;

        var glibc = new Thread(() =>
        {
            var rng = new Random(1);
            var blocks = new (nint P, int Size, byte Fill)[8];
            while (DateTime.UtcNow < stop && errors.IsEmpty)
            {
                nint before = Interop.Libc.Sbrk(0);
                for (int i = 0; i < blocks.Length; i++)
                {
                    int size = rng.Next(200_000, 1_000_000);
                    var p = (byte*)NativeMemory.Alloc((nuint)size);
                    byte fill = (byte)rng.Next(1, 256);
                    new Span<byte>(p, size).Fill(fill);
                    blocks[i] = ((nint)p, size, fill);
                }
                if (Interop.Libc.Sbrk(0) != before) Interlocked.Increment(ref glibcBreakMoves);
                nint grown = Interop.Libc.Sbrk(0);
                foreach (var b in blocks)
                {
                    if (new Span<byte>((void*)b.P, b.Size).IndexOfAnyExcept(b.Fill) >= 0)
                    {
                        Interlocked.Increment(ref corruptions);
                        errors.Enqueue($"glibc block 0x{b.P:x} ({b.Size} bytes) overwritten");
                    }
                    NativeMemory.Free((void*)b.P);
                }
                if (Interop.Libc.Sbrk(0) != grown) Interlocked.Increment(ref glibcBreakMoves);
                glibcCycles++;
            }
        });

        Thread NativeHeapThread(int seed) => new(() =>
        {
            var rng = new Random(seed);
            var blocks = new (nint P, int Size, byte Fill)[64];
            try
            {
                while (DateTime.UtcNow < stop && errors.IsEmpty)
                {
                    for (int i = 0; i < blocks.Length; i++)
                    {
                        int size = rng.Next(8_000, 120_000);
                        var p = (byte*)Heap.Alloc((nuint)size);
                        byte fill = (byte)rng.Next(1, 256);
                        new Span<byte>(p, size).Fill(fill);
                        blocks[i] = ((nint)p, size, fill);
                    }
                    foreach (var b in blocks)
                    {
                        if (new Span<byte>((void*)b.P, b.Size).IndexOfAnyExcept(b.Fill) >= 0)
                        {
                            Interlocked.Increment(ref corruptions);
                            errors.Enqueue($"NativeHeap block 0x{b.P:x} ({b.Size} bytes) overwritten");
                        }
                        Heap.Free((void*)b.P);
                    }
                    if (Interlocked.Increment(ref nhCycles) % 1000 == 0) Heap.Validate();
                }
            }
            catch (HeapCorruptionException e)
            {
                Interlocked.Increment(ref corruptions);
                errors.Enqueue("NativeHeap: " + e.Message);
            }
        });

        var threads = new List<Thread> { glibc, NativeHeapThread(2), NativeHeapThread(3) };
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        try { Heap.Validate(); }
        catch (HeapCorruptionException e) { corruptions++; errors.Enqueue("final check: " + e.Message); }

        Console.WriteLine($"glibc: {glibcCycles} cycles (8 blocks of 200 KB-1 MB each), the break moved on {glibcBreakMoves} of its grow/free phases");
        Console.WriteLine($"NativeHeap: {nhCycles} cycles (64 blocks of 8-120 KB each), {Os.OsMemory.SbrkMoves - ourSbrk0} sbrk calls that moved the break, " +
            $"{Heap.ForeignBreaks} growths that found the break moved by glibc");
        Console.WriteLine($"corruptions seen: {corruptions}");
        foreach (string e in errors.Take(10)) Console.WriteLine("  " + e);
        return corruptions == 0 ? 0 : 1;
    }

    private static int Option(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
    }
}
