using System.Xml.Linq;
using NativeHeap.Arenas;
using NativeHeap.Diagnostics;
using NativeHeap.Os;

namespace NativeHeap.Tests;

/// <summary>The public surface: C semantics where C has them, .NET's conventions for failure.</summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class HeapApiTests
{
    [Fact]
    public void AllocZero_ReturnsAUniqueMinimumBlock()
    {
        void* a = Heap.Alloc(0);
        void* b = Heap.Alloc(0);
        Assert.True(a != null && b != null && a != b);
        Assert.Equal(24UL, (ulong)Heap.UsableSize(a));
        Heap.Free(a);
        Heap.Free(b);
    }

    [Fact]
    public void FreeNull_DoesNothing_AndUsableSizeOfNullIsZero()
    {
        Heap.Free(null);
        Assert.Equal(0UL, (ulong)Heap.UsableSize(null));
    }

    [Fact]
    public void Realloc_NullAllocates_ZeroFrees()
    {
        var p = (byte*)Heap.Realloc(null, 50);
        Assert.True(p != null);
        Assert.True(Heap.UsableSize(p) >= 50);
        Assert.True(Heap.Realloc(p, 0) == null);
    }

    [Fact]
    public void Alloc_OfMoreThanPtrdiffMax_ThrowsOutOfMemory()
    {
        var e = Assert.Throws<OutOfMemoryException>(() => Heap.Alloc(nuint.MaxValue - 8));
        Assert.Contains("PTRDIFF_MAX", e.Message);
        Assert.Throws<OutOfMemoryException>(() => Heap.Alloc(unchecked((nuint)long.MaxValue)));
    }

    [Fact]
    public void Alloc_MoreThanTheMachineCanMap_ThrowsOutOfMemory_NamingTheCallAndErrno()
    {
        var e = Assert.Throws<OutOfMemoryException>(() => Heap.Alloc((nuint)1 << 46));
        Assert.Contains("mmap(NULL, ", e.Message);
        Assert.Contains("ENOMEM", e.Message);
        Heap.Free(Heap.Alloc(100)); // and the heap goes on
    }

    [Fact]
    public void AllocZeroed_Overflow_ThrowsOutOfMemory()
    {
        var e = Assert.Throws<OutOfMemoryException>(() => Heap.AllocZeroed(nuint.MaxValue / 2, 3));
        Assert.Contains("overflows", e.Message);
    }

    [Fact]
    public void AlignedAlloc_RejectsNonPowersOfTwo_AndOverflow()
    {
        Assert.Throws<ArgumentException>(() => Heap.AlignedAlloc(10, 48));
        Assert.Throws<ArgumentException>(() => Heap.AlignedAlloc(10, 0));
        Assert.Throws<OutOfMemoryException>(() => Heap.AlignedAlloc(nuint.MaxValue - 100, 4096));
        void* p = Heap.AlignedAlloc(10, 1 << 20);
        Assert.Equal(0UL, (ulong)((nuint)p & ((1 << 20) - 1)));
        Heap.Free(p);
    }

    [Fact]
    public void Realloc_ToAnImpossibleSize_ThrowsAndLeavesTheBlockAsItWas()
    {
        var p = (byte*)Heap.Alloc(64);
        new Span<byte>(p, 64).Fill(9);
        Assert.Throws<OutOfMemoryException>(() => Heap.Realloc(p, nuint.MaxValue - 8));
        Assert.Throws<OutOfMemoryException>(() => Heap.Realloc(p, (nuint)1 << 46));
        Assert.Equal(-1, new Span<byte>(p, 64).IndexOfAnyExcept((byte)9));
        Heap.Free(p);
        Heap.Validate();
    }

    [Fact]
    public void DoubleFree_IsReportedWithGlibcsWords_AndTheHeapGoesOn()
    {
        void* p = Heap.Alloc(72);
        Heap.Free(p);
        var e = Assert.Throws<HeapCorruptionException>(() => Heap.Free(p));
        Assert.Equal("free(): double free detected in tcache 2", e.GlibcMessage);
        Assert.Equal((nuint)p, e.Address);
        Heap.Validate();
        Heap.Free(Heap.Alloc(72));
    }

    [Fact]
    public void FastbinDoubleFree_IsReportedAsFasttop()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* p = h.Malloc(40);
        h.Malloc(40);
        h.Free(p);
        var e = Assert.Throws<HeapCorruptionException>(() => h.Free(p));
        Assert.Equal("double free or corruption (fasttop)", e.GlibcMessage);
        h.Check();
    }

    [Fact]
    public void FreeOfAMisalignedPointer_IsAnInvalidPointer()
    {
        using var h = new PrivateHeap();
        byte* p = h.Malloc(100);
        var e = Assert.Throws<HeapCorruptionException>(() => h.Free(p + 8));
        Assert.Equal("free(): invalid pointer", e.GlibcMessage);
        h.Free(p);
        h.Check();
    }

    [Fact]
    public void Validate_FindsAnOverwrittenChunkHeader()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        byte* a = h.Malloc(100);
        byte* b = h.Malloc(100);
        h.Malloc(100);
        h.Check();
        ((nuint*)b)[-1] = unchecked((nuint)0x4141414141414141); // a's overflow runs into b's size
        var e = Assert.Throws<HeapCorruptionException>(() => h.Check());
        Assert.StartsWith("heap check: ", e.GlibcMessage);
        ((nuint*)b)[-1] = 113;
        h.Check();
        h.Free(a);
    }

    [Fact]
    public void SetOption_RejectsValuesGlibcRejects()
    {
        using var h = new PrivateHeap();
        Assert.NotNull(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.MxFast, 161));
        Assert.NotNull(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.TcacheCount, 65536));
        Assert.NotNull(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.TcacheMax, 1033));
        Assert.NotNull(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.Perturb, 256));
        Assert.NotNull(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.ArenaMax, 0));
        Assert.Null(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.MmapThreshold, 32 * 1024 * 1024));
        Assert.Equal(1, h.Ctx->Mp.NoDynThreshold);
        // glibc 2.36 takes any threshold (native-tests/glibc_tests measures it); -1 is never.
        Assert.Null(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.MmapThreshold, 64 * 1024 * 1024));
        Assert.Null(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.MmapThreshold, -1));
        Assert.Equal(nuint.MaxValue, h.Ctx->Mp.MmapThreshold);
        Assert.Null(Ptmalloc.SetOption(h.Ctx, ref h.Ctx->Solo, HeapOption.TrimThreshold, -1));
        Assert.Equal(nuint.MaxValue, h.Ctx->Mp.TrimThreshold);
        Assert.Throws<ArgumentOutOfRangeException>(() => Heap.SetOption(HeapOption.MxFast, -1));
    }

    [Fact]
    public void SetOption_TcacheCount_ReturnsCachedChunksToTheArena()
    {
        using var h = new PrivateHeap();
        byte* a = h.Malloc(500);
        h.Malloc(16);
        h.Free(a);
        Assert.Equal(1, (int)h.Tcache->Counts[Bins.BinIndex.Tcache(512)]);
        h.Set(HeapOption.TcacheCount, 0);
        Assert.Equal(0, (int)h.Tcache->Counts[Bins.BinIndex.Tcache(512)]);
        h.Check();
        Assert.True(h.Malloc(500) == a);
    }

    [Fact]
    public void Perturb_FillsFreedAndFreshMemory()
    {
        using var h = new PrivateHeap(tcacheCount: 0);
        h.Set(HeapOption.Perturb, 0x5A);
        byte* p = h.Malloc(200);
        Assert.Equal(-1, new Span<byte>(p, 200).IndexOfAnyExcept((byte)0xA5));
        h.Malloc(16);
        h.Free(p);
        // free_perturb covers chunk size - 16: all but the links (first 16) and the next chunk's prev_size (last 8).
        Assert.Equal(-1, new Span<byte>(p + 16, 176).IndexOfAnyExcept((byte)0x5A));
    }

    [Fact]
    public void Tunables_ParseGlibcNames_WithOrWithoutThePrefix_AndRejectNonsense()
    {
        var settings = Tunables.Parse("tcache_count=0:glibc.malloc.mmap_threshold=0x40000");
        Assert.Equal((HeapOption.TcacheCount, 0L), (settings[0].Option, settings[0].Value));
        Assert.Equal((HeapOption.MmapThreshold, 0x40000L), (settings[1].Option, settings[1].Value));
        Assert.Contains("unknown tunable 'tcache_size'", Assert.Throws<InvalidOperationException>(() => Tunables.Parse("tcache_size=3")).Message);
        Assert.Contains("not a number", Assert.Throws<InvalidOperationException>(() => Tunables.Parse("top_pad=lots")).Message);
        Assert.Contains("name=value", Assert.Throws<InvalidOperationException>(() => Tunables.Parse("top_pad")).Message);
    }

    [Fact]
    public void Tunables_FromTheEnvironment_ApplyBeforeFirstUse_AndABadValueStopsTheStart()
    {
        var on = Child.Run(nameof(ChildScenarios.TcacheOrFastbin));
        var off = Child.Run(nameof(ChildScenarios.TcacheOrFastbin), (Tunables.Variable, "glibc.malloc.tcache_count=0"));
        Assert.Equal("0", on["fastbin_chunks"]);
        Assert.Equal("1", off["fastbin_chunks"]);
        var bad = Child.Run(nameof(ChildScenarios.TcacheOrFastbin), (Tunables.Variable, "tcache_count=70000"));
        Assert.Contains($"{Tunables.Variable}: 'tcache_count=70000': must be 0 to 65535", bad["error"]);
    }

    [Fact]
    public void OsCallException_NamesTheCallTheArgumentsAndTheErrno()
    {
        var e = Assert.Throws<OsCallException>(() => OsMemory.Unmap((void*)1, 4096));
        Assert.Equal("munmap(0x1, 4 KiB) failed: EINVAL (Invalid argument)", e.Message);
        Assert.Equal(22, e.Errno);
    }

    [Fact]
    public void Statm_AgreesWithProcStatus_AndMonoPosixsPageSize()
    {
        Assert.Equal((ulong)Mono.Unix.Native.Syscall.sysconf(Mono.Unix.Native.SysconfName._SC_PAGESIZE), Statm.PageSize);
        Statm s = Statm.Read();
        string status = File.ReadAllText("/proc/self/status");
        ulong vmSizeKib = ulong.Parse(status.Split('\n').First(l => l.StartsWith("VmSize:"))[7..].Trim().Split(' ')[0]);
        Assert.InRange((long)(s.SizeBytes / 1024) - (long)vmSizeKib, -65536, 65536);
        Assert.True(s.ResidentPages > 0 && s.ResidentPages <= s.SizePages);
        Assert.True(s.SharedPages <= s.ResidentPages);
        Assert.Equal((s.ResidentPages - s.SharedPages) * Statm.PageSize, s.AnonymousBytes);
    }

    [Fact]
    public void InfoXml_HasGlibcsShape_AndAgreesWithGetInfo()
    {
        void* keep = Heap.Alloc(3000);
        void* a = Heap.Alloc(3000);
        Heap.Free(a);
        var w = new StringWriter();
        Heap.WriteInfoXml(w);
        HeapInfo info = Heap.GetInfo();
        Heap.Free(keep);
        XElement root = XElement.Parse(w.ToString());
        Assert.Equal("malloc", root.Name.LocalName);
        Assert.Equal("1", root.Attribute("version")!.Value);
        XElement heap = root.Element("heap")!;
        Assert.Equal("0", heap.Attribute("nr")!.Value);
        ulong Total(XElement e, string type) => ulong.Parse(e.Elements("total").Single(t => t.Attribute("type")!.Value == type).Attribute("size")!.Value);
        // One <heap> per arena; fast + rest + the tops = fordblks (the main arena's top is keepcost);
        // current system = arena.
        Assert.Equal(Heap.ArenaCount, root.Elements("heap").Count());
        ulong binned = Total(root, "fast") + Total(root, "rest");
        Assert.True(info.Fordblks >= binned + info.Keepcost, $"fordblks {info.Fordblks} < {binned} + {info.Keepcost}");
        Assert.Equal(info.Arena, ulong.Parse(root.Elements("system").First().Attribute("size")!.Value));
        Assert.Equal(info.Hblkhd, Total(root, "mmap"));
    }

    [Fact]
    public void Stats_HasGlibcsLines()
    {
        var w = new StringWriter();
        Heap.WriteStats(w);
        string[] lines = w.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        int arenas = Array.IndexOf(lines, "Total (incl. mmap):") / 3;
        Assert.True(arenas >= 1);
        for (int i = 0; i < arenas; i++)
        {
            Assert.Equal($"Arena {i}:", lines[3 * i]);
            Assert.Matches(@"^system bytes     = [ \d]{10}$", lines[3 * i + 1]);
            Assert.Matches(@"^in use bytes     = [ \d]{10}$", lines[3 * i + 2]);
        }
        Assert.Matches(@"^max mmap regions = [ \d]{10}$", lines[3 * arenas + 3]);
        Assert.Matches(@"^max mmap bytes   = [ \d]{10,}$", lines[3 * arenas + 4]);
    }
}
