using System.Buffers;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using NativeHeap.Buffers;
using static NativeHeap.Tests.BuffersTests;

namespace NativeHeap.Tests;

/// <summary>NativeHeapMemoryPool: size classes, owner reuse and its version stamp, no GC allocation, eviction, forgotten owners, dead threads, metrics, disposal.</summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class PoolTests
{
    [Fact]
    public void SizeClasses_CoverEveryLength_WithAtMostAQuarterMore()
    {
        int previous = 0;
        for (int c = 0; c < PoolSizeClass.Count; c++)
        {
            int size = PoolSizeClass.Size(c);
            Assert.True(size > previous, $"class {c}");
            Assert.Equal(c, PoolSizeClass.Of(size));
            Assert.Equal(c, PoolSizeClass.Of(previous + 1));
            if (previous >= 64) Assert.True(size <= previous * 5 / 4 + 16, $"class {c}: {size} after {previous}");
            previous = size;
        }
        Assert.Equal(PoolSizeClass.MaxCached, previous);
        Assert.Equal(0, PoolSizeClass.Of(0));
        for (int length = 1; length <= 1 << 20; length++)
        {
            int c = PoolSizeClass.Of(length);
            Assert.True(PoolSizeClass.Size(c) >= length && (c == 0 || PoolSizeClass.Size(c - 1) < length));
        }
        Assert.Equal(PoolSizeClass.Bare, PoolSizeClass.Of(PoolSizeClass.MaxCached + 1));
        Assert.Equal(PoolSizeClass.Bare, PoolSizeClass.Of(int.MaxValue));
    }

    [Fact]
    public void Rent_GivesNativeHeapMemoryOfTheLengthAsked()
    {
        var pool = NativeHeapMemoryPool.Shared;
        Assert.Same(pool, NativeHeapMemoryPool.Shared);
        Assert.Equal("shared", pool.Name);
        Assert.Equal(int.MaxValue, pool.MaxBufferSize);
        foreach (int length in new[] { 0, 1, 16, 17, 255, 4096, 65536, 1 << 20, PoolSizeClass.MaxCached, PoolSizeClass.MaxCached + 1, 40 << 20 })
        {
            for (int round = 0; round < 3; round++) // fresh, then reused
            {
                using IMemoryOwner<byte> owner = pool.Rent(length);
                Assert.Equal(length, owner.Memory.Length);
                owner.Memory.Span.Fill(0x5a);
                if (length > 0)
                {
                    fixed (byte* p = owner.Memory.Span)
                        Assert.True(Heap.UsableSize(p) >= (nuint)length); // a live NativeHeap block
                    using MemoryHandle pin = owner.Memory.Slice(length - 1).Pin();
                    Assert.Equal(0x5a, *(byte*)pin.Pointer);
                }
            }
        }
        using (IMemoryOwner<byte> defaultSize = pool.Rent())
            Assert.Equal(NativeHeapMemoryPool.DefaultBufferSize, defaultSize.Memory.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(-2));
        pool.Dispose(); // the shared pool stays usable, as MemoryPool<byte>.Shared does
        using IMemoryOwner<byte> after = pool.Rent(10);
        Assert.Equal(10, after.Memory.Length);
        Heap.Validate();
    }

    [Fact]
    public void Owner_IsReused_AndEveryEarlierMemoryStaysInvalid()
    {
        using var pool = new NativeHeapMemoryPool("stamp");
        IMemoryOwner<byte> owner = pool.Rent(1000);
        Memory<byte> memory = owner.Memory;
        Memory<byte> slice = memory.Slice(10, 5);
        Memory<byte> empty = memory[..0];
        memory.Span.Fill(1);
        owner.Dispose();
        owner.Dispose(); // a second Dispose while it waits in the pool does nothing

        // Waiting in the pool: every use throws ObjectDisposedException.
        Assert.Throws<ObjectDisposedException>(() => owner.Memory);
        Assert.Throws<ObjectDisposedException>(() => memory.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => slice.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => memory.Pin());
        Assert.Throws<ObjectDisposedException>(() => memory.ToArray());

        // Rented again (the same object, the same block): the old Memory never reaches the new renter's bytes.
        IMemoryOwner<byte> again = pool.Rent(900);
        Assert.Same(owner, again);
        again.Memory.Span.Fill(2);
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.Span.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => slice.Span.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => empty.Span.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.ToArray());
        Assert.Throws<ObjectDisposedException>(() => memory.Pin());
        Assert.Throws<ObjectDisposedException>(() => slice.Pin());
        Assert.True(again.Memory.Span.IndexOfAnyExcept((byte)2) < 0);
        Assert.Equal(900, again.Memory.Length);

        // The current Memory, sliced and pinned, is the block.
        fixed (byte* start = again.Memory.Span)
        {
            using MemoryHandle pin = again.Memory.Slice(100).Pin();
            Assert.Equal((nint)(start + 100), (nint)pin.Pointer);
            using MemoryHandle end = again.Memory[900..].Pin(); // the end of the window is a valid place to pin
            Assert.Equal((nint)(start + 900), (nint)end.Pointer);
        }
        // A MemoryManager's caller who asks for an index before the window gets an argument error.
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetMemoryManager<byte, MemoryManager<byte>>(again.Memory, out MemoryManager<byte>? manager, out int index, out int length));
        Assert.Equal(900, length);
        Assert.Throws<ArgumentOutOfRangeException>(() => manager!.Pin(index - 1));
        Assert.Equal(900, manager!.GetSpan().Slice(index, length).Length);
        again.Dispose();
    }

    [Fact]
    public void Owner_WhoseWindowsAreUsedUp_IsRetired_AndItsMemoryThrowsForGood()
    {
        using var pool = new NativeHeapMemoryPool("retire");
        IMemoryOwner<byte> first = pool.Rent(1 << 20);
        Memory<byte> firstMemory = first.Memory;
        first.Dispose();
        var owners = new HashSet<object>(ReferenceEqualityComparer.Instance);
        IMemoryOwner<byte>? last = null;
        // 2^31 bytes of windows hold 2,047 rents of 1 MiB; then the block moves to a new object.
        for (int i = 0; i < 2100; i++)
        {
            last = pool.Rent(1 << 20);
            owners.Add(last);
            last.Memory.Span[^1] = 7;
            if (i < 2099) last.Dispose();
        }
        Assert.Equal(2, owners.Count);
        Assert.NotSame(first, last);
        Assert.Throws<ObjectDisposedException>(() => firstMemory.Span.Length); // retired: never rented again
        Assert.Throws<ObjectDisposedException>(() => first.Memory);
        first.Dispose(); // does nothing
        Assert.Equal(7, last!.Memory.Span[^1]);
        last.Dispose();
        Assert.Equal(1L << 20, pool.GetStatistics().AllocatedBytes); // one block all along
    }

    [Fact]
    public void SteadyRentAndDispose_AllocatesNothingOnTheGcHeap_ButARetiredOwnerPer2GiBOfWindows()
    {
        foreach (int size in new[] { 0, 256, 4096, 65536 })
        {
            Cycle(size, 100); // warm: the owner and the thread's cache exist
            long before = GC.GetAllocatedBytesForCurrentThread();
            Cycle(size, 10_000);
            Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
        }
        // Each rent uses length + 1 bytes of the owner's 2^31 bytes of windows (the version
        // stamp); then a new owner object (about 80 bytes) takes the block over.
        foreach (int size in new[] { 1 << 20, 20 << 20 })
        {
            Cycle(size, 100);
            long before = GC.GetAllocatedBytesForCurrentThread();
            Cycle(size, 10_000);
            long retirements = 10_000L * (size + 1) / (1L << 31) + 1;
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(allocated <= retirements * 128, $"{allocated} bytes in 10,000 rents of {size}: more than {retirements} owners");
        }

        static void Cycle(int size, int count)
        {
            for (int i = 0; i < count; i++)
            {
                using IMemoryOwner<byte> owner = NativeHeapMemoryPool.Shared.Rent(size);
                Span<byte> span = owner.Memory.Span;
                if (size > 0) span[^1] = span[0];
            }
        }
    }

    [Fact]
    public void Eviction_HalvesWhatNoRentNeeded_EachPeriod_AndNothingWhileBusy()
    {
        ulong before = InUse();
        // Stepped by hand: a timer tick between two steps would halve once more.
        using var pool = new NativeHeapMemoryPool("evict") { EvictedByTimer = false };
        RentAndDisposeAll(pool, 41, 65536); // 40 in the depot, one in this thread's slot
        long block = PoolSizeClass.Size(PoolSizeClass.Of(65536));
        Assert.Equal(41 * block, pool.GetStatistics().PooledBytes);

        pool.Evict(all: false); // the first look: the stack's low-water mark was 0, the thread was just seen
        Assert.Equal(41 * block, pool.GetStatistics().PooledBytes);
        // Busy: every block rented during the period (low-water 0) keeps them all.
        RentAndDisposeAll(pool, 41, 65536);
        pool.Evict(all: false);
        Assert.Equal(41 * block, pool.GetStatistics().PooledBytes);

        // Idle: the thread's block joins the depot, and half of what sat unused goes, period after period.
        var seen = new List<long>();
        for (int i = 0; i < 10; i++)
        {
            pool.Evict(all: false);
            seen.Add(pool.GetStatistics().PooledBytes / block);
        }
        // 41 blocks: the first idle period frees about half (each processor's stack rounds up on its own), and it goes on so.
        Assert.InRange(seen[0], 19, 22);
        for (int i = 1; i < seen.Count; i++) Assert.True(seen[i] == 0 || seen[i] <= (seen[i - 1] + 1) / 2 + 1, string.Join(", ", seen));
        Assert.Equal(0, seen[7]);
        NativeHeapMemoryPoolStatistics stats = pool.GetStatistics();
        Assert.Equal(stats.AllocatedBytes, stats.EvictedBytes);
        Assert.Equal(before, InUse());
    }

    [Fact]
    public void Trim_FreesEveryIdleBlock_RentedOnesStay()
    {
        ulong before = InUse();
        using var pool = new NativeHeapMemoryPool("trim");
        RentAndDisposeAll(pool, 10, 100_000);
        IMemoryOwner<byte> held = pool.Rent(100_000);
        held.Memory.Span.Fill(9);
        Assert.NotEqual(0, pool.GetStatistics().PooledBytes);
        pool.Trim();
        Assert.Equal(0, pool.GetStatistics().PooledBytes);
        Assert.True(held.Memory.Span.IndexOfAnyExcept((byte)9) < 0);
        held.Dispose();
        pool.Trim();
        Assert.Equal(before, InUse());
    }

    [Fact]
    public void DisposedPool_RefusesRents_FreesItsIdleBlocks_AndBuffersStillRentedAtTheirDispose()
    {
        ulong before = InUse();
        var pool = new NativeHeapMemoryPool("disposed");
        RentAndDisposeAll(pool, 5, 3000);
        IMemoryOwner<byte> held = pool.Rent(3000);
        held.Memory.Span.Fill(3);
        pool.Dispose();
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Rent(10));
        Assert.Equal(0, pool.GetStatistics().PooledBytes);
        Assert.True(held.Memory.Span.IndexOfAnyExcept((byte)3) < 0);
        held.Dispose();
        Assert.Throws<ObjectDisposedException>(() => held.Memory);
        Assert.Equal(before, InUse());
    }

    [Fact]
    public void ForgottenOwners_AreFreedByTheirFinalizer_AndPressTheGc()
    {
        ulong before = InUse();
        using var pool = new NativeHeapMemoryPool("forgotten");
        int collections = GC.CollectionCount(2);
        ulong most = ForgetLargeOwners(pool);
        Assert.True(GC.CollectionCount(2) > collections, "no gen-2 collection in 12.8 GiB of forgotten pool buffers");
        Assert.True(most < 4UL << 30, $"{most >> 20} MiB of forgotten buffers were live at once");
        ForgetSmallOwner(pool);
        Assert.Equal(before, InUse());
    }

    [Fact]
    public void DeadThreadsCaches_AreFreed_AndTheirCountsKept()
    {
        ulong before = InUse();
        using var pool = new NativeHeapMemoryPool("threads");
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() => RentAndDisposeAll(pool, 3, 20_000))).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Equal(12L * 20_000, pool.GetStatistics().RentedBytes);
        // The threads' slots died with them: their owners' finalizers free the blocks (InUse collects).
        pool.Trim();
        Assert.Equal(before, InUse());
        NativeHeapMemoryPoolStatistics stats = pool.GetStatistics();
        Assert.Equal(12L * 20_000, stats.RentedBytes);
        Assert.Equal(0, stats.PooledBytes);
        Assert.Equal(stats.AllocatedBytes, stats.EvictedBytes);
    }

    [Fact]
    public void RentOnOneThread_DisposeOnAnother_ComesBackThroughTheDepot()
    {
        using var pool = new NativeHeapMemoryPool("cross");
        var owners = new IMemoryOwner<byte>[200];
        int failures = 0;
        for (int round = 0; round < 5; round++)
        {
            var renter = new Thread(() =>
            {
                for (int i = 0; i < owners.Length; i++)
                {
                    owners[i] = pool.Rent(4096);
                    owners[i].Memory.Span.Fill((byte)i);
                }
            });
            renter.Start();
            renter.Join();
            var disposer = new Thread(() =>
            {
                for (int i = 0; i < owners.Length; i++)
                {
                    if (owners[i].Memory.Span.IndexOfAnyExcept((byte)i) >= 0) failures++;
                    owners[i].Dispose();
                }
            });
            disposer.Start();
            disposer.Join();
        }
        Assert.Equal(0, failures);
        // 64 owners per depot stack are kept; the rounds after the first take them back instead of allocating.
        long block = PoolSizeClass.Size(PoolSizeClass.Of(4096));
        NativeHeapMemoryPoolStatistics stats = pool.GetStatistics();
        Assert.True(stats.AllocatedBytes < 5 * 200 * block, $"{stats.AllocatedBytes / block} blocks allocated for 1,000 rents");
        Assert.Equal(5L * 200 * 4096, stats.RentedBytes);
        pool.Trim();
        Heap.Validate();
    }

    [Fact]
    public void Metrics_ReportTheStatistics_TaggedWithThePoolsName()
    {
        using var pool = new NativeHeapMemoryPool("metrics-test");
        RentAndDisposeAll(pool, 3, 5000);
        var seen = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == PoolMetrics.MeterName) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            foreach (KeyValuePair<string, object?> tag in tags)
                if (tag.Key == PoolMetrics.OwnerTag && (string?)tag.Value == "metrics-test") seen[instrument.Name] = value;
        });
        listener.Start();
        listener.RecordObservableInstruments();
        NativeHeapMemoryPoolStatistics stats = pool.GetStatistics();
        Assert.Equal(stats.PooledBytes, seen["nativeheap.memory_pool.pooled"]);
        Assert.Equal(stats.AllocatedBytes, seen["nativeheap.memory_pool.allocated"]);
        Assert.Equal(stats.EvictedBytes, seen["nativeheap.memory_pool.evicted"]);
        Assert.Equal(3L * 5000, seen["nativeheap.memory_pool.rented"]);
        Assert.Equal(3L * PoolSizeClass.Size(PoolSizeClass.Of(5000)), stats.PooledBytes);
        pool.Trim();
        listener.RecordObservableInstruments();
        Assert.Equal(0, seen["nativeheap.memory_pool.pooled"]);
        Assert.Equal(stats.AllocatedBytes, seen["nativeheap.memory_pool.evicted"]);
    }

    [Fact]
    [Trait(Traits.Pass, Traits.ReleaseOnly)] // most of its 20 s is the idle wait
    public void RssComesBack_AfterAGigabyteBurst_AndIdle()
    {
        var r = Child.Run(nameof(ChildScenarios.PoolBurstRss));
        long burst = long.Parse(r["burst_kib"]), idle = long.Parse(r["idle_kib"]);
        Assert.True(burst > 900_000, $"the burst raised anonymous RSS by only {burst} KiB");
        Assert.True(Math.Abs(idle) < 2048, $"{idle} KiB above the start after {r["idle_s"]} s idle (burst {burst} KiB)");
        Assert.Equal("0", r["pooled_bytes"]);
    }

    internal static void RentAndDisposeAll(NativeHeapMemoryPool pool, int count, int length)
    {
        var owners = new IMemoryOwner<byte>[count];
        for (int i = 0; i < count; i++)
        {
            owners[i] = pool.Rent(length);
            owners[i].Memory.Span[^1] = 1;
        }
        foreach (IMemoryOwner<byte> owner in owners) owner.Dispose();
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // no stack slot of the caller keeps the last one alive
    private static ulong ForgetLargeOwners(NativeHeapMemoryPool pool)
    {
        ulong most = 0;
        for (int i = 0; i < 200; i++)
        {
            pool.Rent(64 << 20).Memory.Span[0] = 1;
            most = Math.Max(most, Heap.GetInfo().Hblkhd);
            Thread.Sleep(2);
        }
        return most;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ForgetSmallOwner(NativeHeapMemoryPool pool) => pool.Rent(3000).Memory.Span[0] = 1;
}
