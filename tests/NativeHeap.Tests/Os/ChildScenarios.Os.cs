using System.Runtime.InteropServices;
using NativeHeap.Os;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="OsLayerTests"/> that need a process of their own.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>
    /// The break's lock word after collections that free pinned arrays and pinned arrays
    /// allocated after them (a pinned array nothing references is collected, and the next one
    /// may take its memory): the word must still read free, and entering it must not wait.
    /// </summary>
    public static void BreakLockSurvivesCollections()
    {
        int* word = OsMemory.BreakLock;
        var kept = new List<byte[]>();
        for (int round = 0; round < 20; round++)
        {
            for (int i = 0; i < 200; i++) _ = GC.AllocateArray<byte>(64 << (i % 8), pinned: true);
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
            for (int i = 0; i < 50; i++)
            {
                byte[] fresh = GC.AllocateArray<byte>(64 << (i % 8), pinned: true);
                fresh.AsSpan().Fill(0xAB);
                kept.Add(fresh);
            }
        }
        Report("word", *word);
        bool entered = FutexLock.TryEnter(word);
        if (entered) FutexLock.Exit(word);
        Report("entered", entered);
        GC.KeepAlive(kept);
    }

    /// <summary>
    /// Every OS call of the allocator fails once, in a process where nothing was compiled
    /// before (run with <see cref="ChildMain.NoPrecompile"/>): the error path is JIT-compiled
    /// and its message formatted for the first time right after the failure, work that enters
    /// the runtime and changes errno. Reports the errno each failure was described with.
    /// </summary>
    public static void OsFailuresFirstTime()
    {
        nuint page = OsMemory.PageSize;
        byte* mapped = OsMemory.Map(page);
        // Page 1 of the address space is never mapped (vm.mmap_min_addr).
        try { byte one; OsMemory.Residency(page, 1, &one); }
        catch (OsCallException e) { Report("mincore", e.Errno); }
        try { OsMemory.Unmap(mapped + 1, page); }
        catch (OsCallException e) { Report("munmap", e.Errno); }
        try { OsMemory.DontNeed(mapped + 1, page); }
        catch (OsCallException e) { Report("madvise", e.Errno); }
        Report("mprotect", OsMemory.TryCommit((void*)page, page) ? "succeeded" : OsMemory.LastFailure!);
        Report("mmap", OsMemory.Map(nuint.MaxValue & ~(page - 1)) == null ? OsMemory.LastFailure! : "succeeded");
        Report("mremap", OsMemory.Remap((void*)page, page, 2 * page) == null ? OsMemory.LastFailure! : "succeeded");
        Report("sbrk", OsMemory.Sbrk(nint.MaxValue / 2) == OsMemory.SbrkFailure ? OsMemory.LastFailure! : "succeeded");
        // A call that succeeds leaves the caller's errno.
        Marshal.SetLastSystemError(4242);
        OsMemory.Unmap(mapped, page);
        Report("errno_after_success", Marshal.GetLastSystemError());
    }
}
