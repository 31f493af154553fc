using Mono.Unix.Native;
using NativeHeap.Diagnostics;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>
/// Scenarios of <see cref="BreakAndRssTests"/> that need a process of their own.
/// The break is read through Mono.Posix's sbrk, a view independent of NativeHeap's own interop.
/// </summary>
internal static unsafe partial class ChildScenarios
{
    private const int Block = 4096;

    private const int Blocks = 64 * 1024 * 1024 / Block;

    private static ulong Break => (ulong)Syscall.sbrk(IntPtr.Zero);

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
}
