using Mono.Unix.Native;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="RobustnessTests"/> that need a process of their own (hundreds of MiB, or a page made unreadable).</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>malloc-large's shape: 20 live zeroed blocks of 5-25 MiB, one replaced 400 times, every page touched (seed from NH_SEED).</summary>
    public static void LargeCallocChurn()
    {
        // C's example rand() (an LCG), so that a seed picks the same sizes on every runtime.
        uint state = uint.Parse(Environment.GetEnvironmentVariable("NH_SEED")!);
        uint Rand() => (state = state * 1103515245 + 12345) / 65536 % 32768;
        var blocks = new nint[20];
        for (int i = 0; i < 400; i++)
        {
            int k = (int)(Rand() % 20);
            Heap.Free((void*)blocks[k]);
            blocks[k] = 0;
            nuint size = (nuint)(5 + Rand() % 21) << 20;
            try
            {
                blocks[k] = (nint)Heap.AllocZeroed(1, size);
            }
            catch (OutOfMemoryException e)
            {
                Report("failed", $"round {i}: {e.Message}");
                return;
            }
            for (nuint o = 0; o < size; o += 4096) ((byte*)blocks[k])[o] = 1;
        }
        Heap.Validate();
        foreach (nint p in blocks) Heap.Free((void*)p);
        Report("rounds", 400);
    }

    /// <summary>
    /// free() of a foreign pointer at the start of an unreadable page, behind a header that looks
    /// like a tcache-sized chunk's: refused as an invalid pointer before anything past the
    /// header (the tcache key at ptr+8) is read.
    /// </summary>
    public static void ForeignPointerBeforeAnUnreadablePage()
    {
        Heap.Free(Heap.Alloc(24)); // the thread's tcache exists: the fast path is live
        nuint page = (nuint)Environment.SystemPageSize;
        byte* m = (byte*)Syscall.mmap(IntPtr.Zero, 2 * page, MmapProts.PROT_READ | MmapProts.PROT_WRITE,
            MmapFlags.MAP_PRIVATE | MmapFlags.MAP_ANONYMOUS, -1, 0);
        Report("mapped", m != (byte*)-1);
        byte* ptr = m + page;
        ((nuint*)ptr)[-1] = 32 | 1; // size 32, PREV_INUSE: a tcache size
        Syscall.mprotect((IntPtr)ptr, page, MmapProts.PROT_NONE);
        try
        {
            Heap.Free(ptr);
            Report("result", "accepted");
        }
        catch (HeapCorruptionException e)
        {
            Report("result", e.GlibcMessage);
        }
        Heap.Validate();
    }

    /// <summary>
    /// free() and realloc() of a foreign pointer at the start of a page after an unreadable one,
    /// where its header would be: refused by address before the header is read (free's fast
    /// path and the ownership test read the size word first and died of SIGSEGV, as glibc does).
    /// </summary>
    public static void ForeignPointerAfterAnUnreadablePage()
    {
        Heap.Free(Heap.Alloc(24)); // the thread's tcache exists: the fast path is live
        nuint page = (nuint)Environment.SystemPageSize;
        byte* m = (byte*)Syscall.mmap(IntPtr.Zero, 2 * page, MmapProts.PROT_READ | MmapProts.PROT_WRITE,
            MmapFlags.MAP_PRIVATE | MmapFlags.MAP_ANONYMOUS, -1, 0);
        Report("mapped", m != (byte*)-1 && Syscall.mprotect((IntPtr)m, page, MmapProts.PROT_NONE) == 0);
        byte* ptr = m + page;
        try
        {
            Heap.Free(ptr);
            Report("free", "accepted");
        }
        catch (HeapCorruptionException e)
        {
            Report("free", e.GlibcMessage);
        }
        try
        {
            Heap.Realloc(ptr, 100);
            Report("realloc", "accepted");
        }
        catch (HeapCorruptionException e)
        {
            Report("realloc", e.GlibcMessage);
        }
        Heap.Validate();
    }

    /// <summary>A heap whose header names another arena, met by a large free: in Debug, glibc's assert(heap->ar_ptr == av) stops it there.</summary>
    public static void HeapHeaderOfAnotherArena()
    {
        using var h = new PrivateHeap(useBrk: false);
        byte* a = h.Malloc(100_000);
        h.Malloc(100_000); // keeps a away from top
        Arenas.HeapHeader.For(h.Top)->Arena = (Arenas.MallocState*)0x1000;
        h.Free(a);
        Report("result", "no assertion");
    }
}
