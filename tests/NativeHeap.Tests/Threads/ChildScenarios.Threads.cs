using NativeHeap.Diagnostics;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="ThreadTests"/> that need a process of their own.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>
    /// Threads that end, one after another, each leaving blocks in its tcache: with no GC in
    /// between, the next thread's first call gives the ended one's tcache and arena back and
    /// takes that arena (glibc does it at thread exit), so the arenas do not multiply.
    /// </summary>
    public static void EndedThreadsGiveTheirArenasBack()
    {
        Heap.Free(Heap.Alloc(16));
        int before = Heap.ArenaCount;
        long cachedBefore = (long)Heap.GetInfo().Uordblks;
        for (int t = 0; t < 6; t++)
        {
            var thread = new Thread(() =>
            {
                var blocks = new nint[30]; // fewer than the default tcache keeps a size
                for (int i = 0; i < blocks.Length; i++) blocks[i] = (nint)Heap.Alloc(100);
                foreach (nint b in blocks) Heap.Free((void*)b); // cached in this thread's tcache
            });
            thread.Start();
            thread.Join();
        }
        Report("new_arenas", Heap.ArenaCount - before);
        // The last thread's tcache is still out; every earlier one's went back.
        Report("cached_bytes_left", (long)Heap.GetInfo().Uordblks - cachedBefore);
        Report("gc_count", GC.CollectionCount(0));
    }

    /// <summary>8 threads allocate at once with arena_max=2.</summary>
    public static void EightThreads()
    {
        int done = 0;
        using var start = new ManualResetEventSlim();
        var threads = Enumerable.Range(0, 8).Select(_ => new Thread(() =>
        {
            start.Wait();
            var blocks = new List<nint>();
            for (int i = 0; i < 20_000; i++) blocks.Add((nint)Heap.Alloc((nuint)(i % 3000)));
            foreach (nint b in blocks) Heap.Free((void*)b);
            Interlocked.Increment(ref done);
        })).ToList();
        threads.ForEach(t => t.Start());
        start.Set();
        threads.ForEach(t => t.Join());
        Report("arenas", Heap.ArenaCount);
        Report("threads_done", done);
        Heap.Validate();
    }

    /// <summary>A thread that is not the first gets an arena of its own; 100 MB there, then freed.</summary>
    public static void HundredMegabytesOnAThreadArena()
    {
        Heap.Free(Heap.Alloc(1)); // this thread takes the main arena
        Statm baseline = Statm.Read();
        long allocKib = 0, freeKib = 0;
        bool nonMain = false;
        var t = new Thread(() =>
        {
            const int Size = 60_000;
            int n = 100_000_000 / Size;
            var blocks = new byte*[n];
            for (int i = 0; i < n; i++)
            {
                blocks[i] = (byte*)Heap.Alloc(Size);
                new Span<byte>(blocks[i], Size).Fill(7);
            }
            nonMain = (((nuint*)blocks[0])[-1] & 4) != 0;
            allocKib = AnonDeltaKib(baseline);
            foreach (byte* b in blocks) Heap.Free(b);
            freeKib = AnonDeltaKib(baseline);
        });
        t.Start();
        t.Join();
        Report("non_main", nonMain);
        Report("alloc_kib", allocKib);
        Report("free_kib", freeKib);
    }

    /// <summary>10,000 threads each allocate (and cache) a little and exit; their caches come back.</summary>
    public static void TenThousandThreads()
    {
        Heap.Free(Heap.Alloc(1));
        GC.Collect();
        GC.WaitForPendingFinalizers();
        ulong before = Heap.GetInfo().Uordblks;
        int threads = 0;
        for (int round = 0; round < 100; round++)
        {
            var batch = Enumerable.Range(0, 100).Select(_ => new Thread(() =>
            {
                // Blocks freed into this thread's tcache stay "in use" until the thread's cache goes back.
                var blocks = new List<nint>();
                for (int i = 0; i < 20; i++) blocks.Add((nint)Heap.Alloc((nuint)(16 * i + 8)));
                foreach (nint b in blocks) Heap.Free((void*)b);
                Interlocked.Increment(ref threads);
            })).ToList();
            batch.ForEach(t => t.Start());
            batch.ForEach(t => t.Join());
        }
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Report("threads", threads);
        Report("uordblks_delta", (long)Heap.GetInfo().Uordblks - (long)before);
        Heap.Validate();
    }
}
