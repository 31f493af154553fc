using NativeHeap.Diagnostics;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="HardeningTests"/> that need a process of their own.</summary>
internal static unsafe partial class ChildScenarios
{
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
