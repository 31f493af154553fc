using Mono.Unix.Native;
using NativeHeap.Diagnostics;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>
/// Scenarios run in a child process by <see cref="BreakAndRssTests"/>. Each reports numbers
/// as key=value lines; the tests assert on them. The break is read through Mono.Posix's sbrk,
/// a view independent of NativeHeap's own interop.
/// </summary>
internal static unsafe partial class ChildScenarios
{
    private const int Block = 4096;

    private const int Blocks = 64 * 1024 * 1024 / Block;

    private static ulong Break => (ulong)Syscall.sbrk(IntPtr.Zero);

    private static long AnonDeltaKib(Statm baseline) => ((long)Statm.Read().AnonymousBytes - (long)baseline.AnonymousBytes) / 1024;

    private static void*[] AllocTouched(int count, int size)
    {
        var blocks = new void*[count];
        for (int i = 0; i < count; i++)
        {
            blocks[i] = Heap.Alloc((nuint)size);
            new Span<byte>(blocks[i], size).Fill((byte)i);
        }
        return blocks;
    }

    /// <summary>64 MiB in 4 KiB blocks comes back when freed; with the top pinned it does not, until Trim(0).</summary>
    public static void RssReturn()
    {
        var blocks = new void*[Blocks];
        Heap.Free(Heap.Alloc(1));
        Statm baseline = Statm.Read();
        blocks = AllocTouched(Blocks, Block);
        Report("alloc_kib", AnonDeltaKib(baseline));
        foreach (void* p in blocks) Heap.Free(p);
        Report("free_kib", AnonDeltaKib(baseline));

        blocks = AllocTouched(Blocks, Block);
        // Bins are empty (all merged into top and trimmed), so the pin comes from top, above every block.
        void* pin = Heap.Alloc(Block);
        Report("pin_above_blocks", (nuint)pin > (nuint)blocks[^1]);
        Report("pinned_alloc_kib", AnonDeltaKib(baseline));
        foreach (void* p in blocks) Heap.Free(p);
        Report("pinned_free_kib", AnonDeltaKib(baseline));
        // Idle, no call into the heap: only the purge timer can give memory back now.
        Thread.Sleep(int.Parse(Environment.GetEnvironmentVariable("NATIVEHEAP_TEST_IDLE_MS") ?? "0"));
        Report("pinned_idle_kib", AnonDeltaKib(baseline));
        Report("trim_result", Heap.Trim(0));
        Report("pinned_trim_kib", AnonDeltaKib(baseline));
        Heap.Validate();
        Heap.Free(pin);
        Heap.Validate();
    }

    /// <summary>Growth moves the break up by what glibc asks for; freeing the top trims it back down.</summary>
    public static void BreakGrowsAndShrinks()
    {
        // Warm up: the JIT and dlopen (Mono.Posix's helper library) malloc on this thread, from
        // glibc's main arena, which moves the break too; do all of that before measuring.
        foreach (void* p in AllocTouched(2, 64 * 1024)) Heap.Free(p);
        _ = Heap.GetInfo();
        _ = Break;
        _ = Heap.ForeignBreaks;
        long foreign0 = Heap.ForeignBreaks;
        ulong start = Break;
        HeapInfo info0 = Heap.GetInfo();
        var blocks = AllocTouched(128, 64 * 1024);
        ulong grown = Break;
        HeapInfo info1 = Heap.GetInfo();
        foreach (void* p in blocks) Heap.Free(p);
        ulong shrunk = Break;
        HeapInfo info2 = Heap.GetInfo();
        Report("start", start);
        Report("grown", grown);
        Report("shrunk", shrunk);
        Report("arena0", info0.Arena);
        Report("arena1", info1.Arena);
        Report("arena2", info2.Arena);
        Report("keepcost2", info2.Keepcost);
        Report("foreign_breaks", Heap.ForeignBreaks - foreign0);
        Report("last_foreign", $"0x{Heap.LastForeignBreak.Break:x} after 0x{Heap.LastForeignBreak.OldEnd:x}");
        Heap.Validate();
    }

    /// <summary>
    /// Someone else moves the break above the heap: trim cannot lower it, so it releases the
    /// top's pages with MADV_DONTNEED; RSS falls, the break stays where the other left it.
    /// </summary>
    public static void ForeignBreakTrim()
    {
        Heap.Free(Heap.Alloc(1));
        Statm baseline = Statm.Read();
        var blocks = AllocTouched(4096, Block);
        Report("alloc_kib", AnonDeltaKib(baseline));
        IntPtr foreign = Syscall.sbrk(new IntPtr(4096));
        ulong foreignEnd = Break;
        foreach (void* p in blocks) Heap.Free(p);
        Report("free_kib", AnonDeltaKib(baseline));
        Report("break_kept", Break == foreignEnd);
        Report("foreign_ok", foreign != new IntPtr(-1));
        // The heap goes on working across the foreign region.
        blocks = AllocTouched(4096, Block);
        foreach (void* p in blocks) Heap.Free(p);
        Report("after_kib", AnonDeltaKib(baseline));
        Heap.Validate();
    }

    /// <summary>A foreign sbrk between two growths: the heap fences off its old top and goes on above the gap.</summary>
    public static void ForeignBreakGrowth()
    {
        var first = AllocTouched(64, 1000);
        HeapInfo before = Heap.GetInfo();
        ulong brkBefore = Break;
        Syscall.sbrk(new IntPtr(3 * 4096));
        var second = AllocTouched(400, 2000);
        HeapInfo after = Heap.GetInfo();
        Heap.Validate();
        Report("arena_before", before.Arena);
        Report("arena_after", after.Arena);
        Report("brk_before", brkBefore);
        Report("first_block_past_gap", (ulong)second[^1] > brkBefore + 3 * 4096);
        foreach (void* p in first) Heap.Free(p);
        foreach (void* p in second) Heap.Free(p);
        Heap.Validate();
        Report("ok", true);
    }

    /// <summary>A mapping right above the break makes sbrk fail: the heap maps 1 MiB regions instead.</summary>
    public static void SbrkFailsFallsBackToMmap()
    {
        Heap.Free(Heap.Alloc(1));
        ulong brk = Break;
        ulong page = (ulong)Syscall.sysconf(SysconfName._SC_PAGESIZE);
        ulong blockAt = (brk + page - 1) / page * page + 64 * 1024;
        const int MAP_FIXED_NOREPLACE = 0x100000;
        nint wall = Interop.Libc.Mmap((nint)blockAt, (nuint)page, Interop.Libc.PROT_NONE,
            Interop.Libc.MAP_PRIVATE | Interop.Libc.MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        Report("wall", wall == (nint)blockAt);
        HeapInfo before = Heap.GetInfo();
        var blocks = AllocTouched(40, 100 * 1024);
        HeapInfo after = Heap.GetInfo();
        Report("arena_growth", after.Arena - before.Arena);
        Report("break_unchanged", Break == brk);
        Heap.Validate();
        foreach (void* p in blocks) Heap.Free(p);
        Heap.Validate();
        Report("ok", true);
    }

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

    /// <summary>
    /// The profile chosen by the program (Heap.SetOption) before its first allocation, with
    /// whatever NATIVEHEAP_TUNABLES says: twenty 40-byte blocks freed show the tcache's depth.
    /// </summary>
    public static void ProfileSetByTheProgram()
    {
        try
        {
            Heap.SetOption(HeapOption.Profile, (long)HeapProfile.Glibc236);
        }
        catch (ArgumentOutOfRangeException e)
        {
            Report("refused", e.Message.Split(" (Parameter")[0]);
        }
        var blocks = new nint[20];
        for (int i = 0; i < blocks.Length; i++) blocks[i] = (nint)Heap.Alloc(40);
        Heap.Alloc(40);
        foreach (nint b in blocks) Heap.Free((void*)b);
        Report("uses_brk", Heap.UsesBrk ? 1 : 0);
        Report("fastbin_chunks", Heap.GetInfo().Smblks);
    }

    /// <summary>Free one small block: with the tcache on it is cached, with tcache_count=0 it goes to a fastbin.</summary>
    public static void TcacheOrFastbin()
    {
        try
        {
            void* p = Heap.Alloc(40);
            Heap.Alloc(40);
            Heap.Free(p);
            Report("fastbin_chunks", Heap.GetInfo().Smblks);
        }
        catch (InvalidOperationException e)
        {
            Report("error", e.Message);
        }
    }

    /// <summary>What the process heap's profile set: where the main arena lives, and how deep the tcache is.</summary>
    public static void ProfileReport()
    {
        try
        {
            // Ten 40-byte blocks freed: a 7-deep tcache (glibc 2.36) sends three to the fastbin.
            var blocks = new nint[10];
            for (int i = 0; i < blocks.Length; i++) blocks[i] = (nint)Heap.Alloc(40);
            Heap.Alloc(40);
            foreach (nint b in blocks) Heap.Free((void*)b);
            Report("uses_brk", Heap.UsesBrk ? 1 : 0);
            Report("fastbin_chunks", Heap.GetInfo().Smblks);
        }
        catch (InvalidOperationException e)
        {
            Report("error", e.Message);
        }
    }

    /// <summary>
    /// seeds/002: 4000 x (malloc(52722), malloc(1)), all touched, freed in reverse, then
    /// malloc(2000) and free; NATIVEHEAP_SEED_TRIM=1 adds malloc_trim(0) at the end.
    /// </summary>
    public static void Seed002()
    {
        const int N = 4000;
        var a = new byte*[N];
        var b = new byte*[N];
        Heap.Free(Heap.Alloc(1));
        long foreign0 = Heap.ForeignBreaks;
        Statm baseline = Statm.Read();
        for (int i = 0; i < N; i++)
        {
            a[i] = (byte*)Heap.Alloc(52722);
            new Span<byte>(a[i], 52722).Fill(1);
            b[i] = (byte*)Heap.Alloc(1);
            b[i][0] = 1;
        }
        long mallocs = AnonDeltaKib(baseline);
        for (int i = N - 1; i >= 0; i--)
        {
            Heap.Free(a[i]);
            Heap.Free(b[i]);
        }
        long frees = AnonDeltaKib(baseline);
        Heap.Free(Heap.Alloc(2000));
        long last = AnonDeltaKib(baseline);
        bool trimmed = Environment.GetEnvironmentVariable("NATIVEHEAP_SEED_TRIM") == "1" && Heap.Trim(0);
        long trim = AnonDeltaKib(baseline);
        Report("mallocs_kib", mallocs);
        Report("frees_kib", frees);
        Report("last_kib", last);
        Report("trimmed", trimmed);
        Report("trim_kib", trim);
        Report("foreign_breaks", Heap.ForeignBreaks - foreign0);
        Report("last_foreign", $"0x{Heap.LastForeignBreak.Break:x} after 0x{Heap.LastForeignBreak.OldEnd:x}");
        Heap.Validate();
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

    /// <summary>A double free; with fail_fast=1 the process ends there.</summary>
    public static void DoubleFree()
    {
        void* p = Heap.Alloc(64);
        Heap.Free(p);
        try
        {
            Heap.Free(p);
        }
        catch (HeapCorruptionException e)
        {
            Report("caught", e.GlibcMessage);
        }
        Heap.Free(Heap.Alloc(64));
        Report("survived", true);
    }

    [System.Runtime.InteropServices.DllImport("libc.so.6", SetLastError = true)]
    private static extern int setrlimit(int resource, ulong* limits);

    /// <summary>
    /// Out of memory for real: the address space limited to what the process has plus 256 MiB,
    /// then exhausted with 1 MiB (mapped) and 64 KiB (heap) blocks. Every failure must be an
    /// OutOfMemoryException; the heap must check out; after freeing, allocation works again.
    /// </summary>
    public static void OutOfAddressSpace()
    {
        var blocks = new List<nint>(1 << 16);
        Heap.Free(Heap.Alloc(100));
        try { Heap.Alloc((nuint)1 << 46); } catch (OutOfMemoryException) { } // compile the failure path now
        ulong limit = Statm.Read().SizeBytes + (256UL << 20);
        ulong* limits = stackalloc ulong[2] { limit, limit };
        const int RLIMIT_AS = 9;
        if (setrlimit(RLIMIT_AS, limits) != 0) throw new InvalidOperationException("setrlimit failed");

        int oom = 0, other = 0;
        string? firstMessage = null;
        foreach (nuint size in new nuint[] { 1 << 20, 64 << 10, 100 })
        {
            for (int misses = 0; misses < 3 && blocks.Count < blocks.Capacity;)
            {
                try
                {
                    blocks.Add((nint)Heap.Alloc(size));
                }
                catch (OutOfMemoryException e)
                {
                    oom++;
                    misses++;
                    firstMessage ??= e.Message;
                }
                catch (Exception)
                {
                    other++;
                    misses++;
                }
            }
        }
        Heap.Validate();
        foreach (nint b in blocks) Heap.Free((void*)b);
        Heap.Validate();
        void* again = Heap.Alloc(1 << 20);
        Heap.Free(again);
        Report("blocks", blocks.Count);
        Report("oom", oom);
        Report("other", other);
        Report("message", firstMessage ?? "");
        Report("again", again != null);
    }

    /// <summary>Checked mode: an overflow into the next chunk's size is caught by the next call, whatever it does.</summary>
    public static void CheckedModeCatchesAnOverflow()
    {
        var a = (byte*)Heap.Alloc(100);
        var b = (byte*)Heap.Alloc(100);
        Heap.Free(Heap.Alloc(10));
        Report("clean", true);
        new Span<byte>(a, 100 + 16).Fill(0x41); // 16 bytes too many: over b's size field
        try
        {
            Heap.Free(Heap.Alloc(10));
            Report("caught", "nothing");
        }
        catch (HeapCorruptionException e)
        {
            Report("caught", e.GlibcMessage);
        }
        _ = b;
    }
}
