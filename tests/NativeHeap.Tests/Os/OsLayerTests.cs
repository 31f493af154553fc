using NativeHeap.Os;

namespace NativeHeap.Tests;

/// <summary>The OS layer's calls report the errno of their failure (which folders may bind libc: <see cref="ArchitectureTests"/>).</summary>
public unsafe class OsLayerTests
{
    [Fact]
    public void BreakLock_StaysAFreeLockWord_AfterCollectionsReusePinnedMemory()
    {
        Dictionary<string, string> r = Child.Run(nameof(ChildScenarios.BreakLockSurvivesCollections));
        Assert.Equal("0", r["word"]);
        Assert.Equal("True", r["entered"]);
    }

    [Fact]
    public void Mincore_ThroughTmdsLibC_ReportsTheErrnoOfItsFailure()
    {
        byte* page = OsMemory.Map(OsMemory.PageSize);
        byte vec = 0xff;
        page[0] = 1;
        OsMemory.Residency((nuint)page, 1, &vec);
        Assert.Equal(1, vec & 1);
        OsMemory.Unmap(page, OsMemory.PageSize);
        // The second page of the address space is never mapped (vm.mmap_min_addr).
        var e = Assert.Throws<OsCallException>(() => ResidencyOfOnePage(OsMemory.PageSize));
        Assert.Equal(12, e.Errno); // ENOMEM: mincore's word for "not mapped"
        Assert.Contains("ENOMEM", e.Message);
        Assert.Equal((nuint)Environment.SystemPageSize, OsMemory.PageSize);

        static void ResidencyOfOnePage(nuint address)
        {
            byte one;
            OsMemory.Residency(address, 1, &one);
        }
    }

    /// <summary>
    /// The errno in each failure's report is the call's own, even where the error path runs
    /// for the first time (JIT compilation and formatting between the failure and the report
    /// change errno): a fresh child process, nothing compiled ahead.
    /// </summary>
    [Fact]
    public void EveryOsFailure_ReportsItsOwnErrno_WhenItsErrorPathRunsForTheFirstTime()
    {
        var r = Child.Run(nameof(ChildScenarios.OsFailuresFirstTime), (ChildMain.NoPrecompile, "1"));
        Assert.Equal("12", r["mincore"]);  // ENOMEM: not mapped
        Assert.Equal("22", r["munmap"]);   // EINVAL: not page-aligned
        Assert.Equal("22", r["madvise"]);  // EINVAL: not page-aligned
        Assert.StartsWith("mprotect(", r["mprotect"]);
        Assert.Contains("failed: ENOMEM", r["mprotect"]);
        Assert.Contains("failed: ENOMEM", r["mmap"]);
        Assert.Contains("failed: EFAULT", r["mremap"]);
        Assert.Contains("failed: ENOMEM", r["sbrk"]);
        Assert.Equal("4242", r["errno_after_success"]);
    }
}
