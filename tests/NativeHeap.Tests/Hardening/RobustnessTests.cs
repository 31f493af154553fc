using NativeHeap.Arenas;
using NativeHeap.Diagnostics;
using NativeHeap.Lab;
using NativeHeap.Os;

namespace NativeHeap.Tests;

/// <summary>
/// Never a crash, never a false error, never a false out-of-memory: each case was a failure
/// of NativeHeap's that glibc does not have, met the way a program met it.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class RobustnessTests
{
    private static readonly string[] Profiles = ["", "profile=glibc-2.36"];

    /// <summary>
    /// malloc-large's shape from .NET. Before the fix the default profile threw "could not
    /// allocate N bytes" on a 24 GiB machine for these seeds (at rounds 302, 263 and 59): sysmalloc freed the old top as glibc does, that
    /// free's heap_trim deleted the heap just made for the request, and malloc failed.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(6)]
    public void LargeCallocChurn_FromDotNet_NeverRunsOutOfMemory(int seed)
    {
        foreach (string profile in Profiles)
        {
            var r = Child.Run(nameof(ChildScenarios.LargeCallocChurn), ("NH_SEED", seed.ToString()), (Tunables.Variable, profile));
            Assert.False(r.ContainsKey("failed"), $"seed {seed}, profile '{profile}': {r.GetValueOrDefault("failed")}");
            Assert.Equal("400", r["rounds"]);
        }
    }

    /// <summary>
    /// A fastbin free reads the arena's system_mem without the lock. A trim lowers system_mem
    /// before it shrinks top, so in between a correct free saw a top larger than the arena and
    /// reported "free(): invalid next size (fast)". The state is made here exactly: the lock
    /// held, system_mem already lowered, top not yet; the free must wait for the lock and then
    /// find nothing wrong, as glibc's re-test under the lock does.
    /// </summary>
    [Fact]
    public void FastbinFree_DuringAHalfDoneTrim_WaitsInsteadOfReportingCorruption()
    {
        using var h = new PrivateHeap(tcacheCount: 0, useBrk: false);
        byte* p = h.Malloc(24); // just below top: its next chunk is top
        Assert.Equal((nuint)(p - 16) + PrivateHeap.ChunkSize(p), (nuint)h.Top);
        MallocState* av = h.Arena;
        nuint systemMem = av->SystemMem;

        FutexLock.Enter(&av->Mutex);
        av->SystemMem = h.TopSize; // the trim's first store; its second (top's size) is still to come
        Exception? error = null;
        nint block = (nint)p;
        var freer = new Thread(() =>
        {
            try { h.Free((void*)block); }
            catch (Exception e) { error = e; }
        });
        freer.Start();
        bool finishedEarly = freer.Join(300);
        av->SystemMem = systemMem; // the trim completes (here: as if it released nothing)
        FutexLock.Exit(&av->Mutex);
        freer.Join();

        Assert.Null(error);
        Assert.False(finishedEarly, "the free decided without waiting for the arena's lock");
        Assert.True(h.Malloc(24) == p, "the chunk did not go to its fastbin");
        h.Check();
    }

    /// <summary>
    /// free() of a foreign pointer whose header looks like a tcache chunk's, at the start of an
    /// unreadable page: the fast path read the tcache key at ptr+8 before the ownership test and
    /// crashed the process; now the pointer is refused first.
    /// </summary>
    [Fact]
    public void Free_OfAForeignPointerBeforeAnUnreadablePage_IsRefusedNotACrash()
    {
        var r = Child.Run(nameof(ChildScenarios.ForeignPointerBeforeAnUnreadablePage));
        Assert.Equal("True", r["mapped"]);
        Assert.Equal("free(): invalid pointer", r["result"]);
    }

    /// <summary>free() and realloc() of a foreign pointer whose header lies in an unreadable page: refused, not a crash.</summary>
    [Fact]
    public void FreeAndRealloc_OfAForeignPointerAfterAnUnreadablePage_AreRefusedNotACrash()
    {
        var r = Child.Run(nameof(ChildScenarios.ForeignPointerAfterAnUnreadablePage));
        Assert.Equal("True", r["mapped"]);
        Assert.Equal("free(): invalid pointer", r["free"]);
        Assert.Equal("realloc(): invalid pointer", r["realloc"]);
    }

    /// <summary>mallinfo2 and malloc_info walk the fastbins with glibc's alignment check; the bad bin is dropped and both work again.</summary>
    [Fact]
    public void StatisticsWalks_OfAnOverwrittenFastbinLink_ReportItAndRecover()
    {
        foreach (var (walk, message) in new (Action<PrivateHeap>, string)[]
        {
            (h => _ = h.Info, "int_mallinfo(): unaligned fastbin chunk detected"),
            (h => MallocReport.InfoXml(h.Ctx), "__malloc_info(): unaligned fastbin chunk detected"),
        })
        {
            using var h = new PrivateHeap(tcacheCount: 0);
            h.FastbinWithAnOverwrittenLink();
            var e = Assert.Throws<HeapCorruptionException>(() => walk(h));
            Assert.Equal(message, e.GlibcMessage);
            walk(h);
            Assert.Equal(0ul, (ulong)h.Info.Smblks);
            h.Free(h.Malloc(40));
        }
    }

#if DEBUG
    /// <summary>Debug builds check glibc's assertions where glibc makes them (CI runs the allocator's tests in Debug too).</summary>
    [Fact]
    public void DebugBuild_CatchesABrokenInvariantWhereItBreaks()
    {
        ProcessResult r = Child.RunExpectingFailure(nameof(ChildScenarios.HeapHeaderOfAnotherArena));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("Assert", r.Output + r.Error);
        Assert.Contains("IntFreeLocked", r.Output + r.Error);
    }
#endif
}
