using System.Diagnostics.Metrics;
using NativeHeap.Arenas;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Diagnostics;

/// <summary>
/// The process heap's metrics, meter <c>NativeHeap</c>: bytes in use, free bytes by where the
/// heap holds them, bytes mapped, bytes given back, arenas and threads with a tcache.
/// Observable instruments: nothing is counted on the allocation paths; a collection reads
/// mallinfo2's sums (each arena under its own lock, one at a time, so no call waits for more
/// than one arena's walk) and the tcaches' byte counts as they stand. One reading serves every
/// instrument of a collection.
/// </summary>
internal static unsafe class HeapMetrics
{
    internal const string MeterName = "NativeHeap";
    internal const string LocationTag = "nativeheap.heap.free.location";

    /// <summary>Instruments read within this long of a reading share it: a collection reads each instrument in turn.</summary>
    private const long ShareMs = 100;

    private static readonly Meter s_meter = new(MeterName);
    private static readonly Lock s_readLock = new();
    private static HeapReading? s_last;
    private static long s_lastAt;

    /// <summary>Where readings come from: the façade's, which never starts the heap; null until <see cref="Create"/>.</summary>
    private static Func<HeapReading?>? s_source;

    /// <summary>Whether the meter exists.</summary>
    internal static bool Created => Volatile.Read(ref s_source) is not null;

    /// <summary>Create the meter (once), its readings taken by <paramref name="source"/>.</summary>
    internal static void Create(Func<HeapReading?> source)
    {
        lock (s_readLock) s_source ??= source;
        _ = s_instruments;
    }

    private static readonly object[] s_instruments =
    [
        s_meter.CreateObservableUpDownCounter("nativeheap.heap.used", () => Measure(r => r.Used), "By",
            "Bytes in blocks the program holds (mmapped blocks included; the tcaches' chunks are free, not in use)."),
        s_meter.CreateObservableUpDownCounter("nativeheap.heap.free", MeasureFree, "By",
            "Free bytes the heap holds, by where (nativeheap.heap.free.location: tcache, fastbins, bins, top)."),
        s_meter.CreateObservableUpDownCounter("nativeheap.heap.mapped", () => Measure(r => r.Mapped), "By",
            "Bytes the heap has mapped from the kernel: its arenas' memory and mmapped blocks."),
        s_meter.CreateObservableCounter("nativeheap.heap.released", () => Measure(r => r.Released), "By",
            "Total bytes given back to the kernel by the purge and by trim (madvise, a lowered break, shrunk or unmapped heaps)."),
        s_meter.CreateObservableUpDownCounter("nativeheap.heap.arenas", () => Measure(r => r.Arenas), "{arena}",
            "Number of arenas, the main one included."),
        s_meter.CreateObservableUpDownCounter("nativeheap.heap.threads", () => Measure(r => r.Threads), "{thread}",
            "Number of live .NET threads that have a tcache."),
    ];

    private static IEnumerable<Measurement<long>> Measure(Func<HeapReading, long> figure)
    {
        if (Shared() is HeapReading r) yield return new Measurement<long>(figure(r));
    }

    private static IEnumerable<Measurement<long>> MeasureFree()
    {
        if (Shared() is not HeapReading r) yield break;
        yield return new Measurement<long>(r.FreeTcache, new KeyValuePair<string, object?>(LocationTag, "tcache"));
        yield return new Measurement<long>(r.FreeFastbins, new KeyValuePair<string, object?>(LocationTag, "fastbins"));
        yield return new Measurement<long>(r.FreeBins, new KeyValuePair<string, object?>(LocationTag, "bins"));
        yield return new Measurement<long>(r.FreeTop, new KeyValuePair<string, object?>(LocationTag, "top"));
    }

    /// <summary>The reading of this collection: a fresh one unless one was taken within <see cref="ShareMs"/>; null before the heap starts.</summary>
    private static HeapReading? Shared()
    {
        lock (s_readLock)
        {
            long now = Environment.TickCount64;
            if (s_last is null || now - s_lastAt >= ShareMs) (s_last, s_lastAt) = (s_source?.Invoke(), now);
            return s_last;
        }
    }

    /// <summary>The next collection reads afresh (tests compare readings taken just apart).</summary>
    internal static void ForgetReading()
    {
        lock (s_readLock) s_last = null;
    }

    /// <summary>A fresh reading of heap <paramref name="ctx"/>, its .NET threads' tcaches holding <paramref name="tcache"/> bytes.</summary>
    internal static HeapReading Read(MallocContext* ctx, ulong tcache, int threads)
    {
        // mallinfo2's sums, arena by arena (see ReadArena).
        ulong arenaMem = 0, inUse = 0, fast = 0, free = 0, tops = 0;
        s_arenas ??= new ArenaReading[MallocContext.ArenaCapacity + 1];
        MallocState* a = &ctx->Main;
        do
        {
            ref ArenaReading r = ref s_arenas[a->Index];
            ReadArena(ctx, a, ref r);
            arenaMem += r.Info.Arena;
            inUse += r.Info.Uordblks;
            fast += r.Info.Fsmblks;
            free += r.Info.Fordblks;
            tops += r.Top;
            a = (MallocState*)Volatile.Read(ref *(nint*)&a->Next);
        }
        while (a != &ctx->Main);
        var info = new HeapInfo { Arena = arenaMem, Uordblks = inUse, Fsmblks = fast, Fordblks = free, Hblkhd = ctx->Mp.MmappedMem };
        // mallinfo2 counts cached chunks as in use; a racy tcache count may exceed what the arenas now say.
        ulong inArenas = info.Uordblks > tcache ? info.Uordblks - tcache : 0;
        return new HeapReading
        {
            Used = (long)(inArenas + info.Hblkhd),
            FreeTcache = (long)tcache,
            FreeFastbins = (long)info.Fsmblks,
            FreeBins = (long)(info.Fordblks - info.Fsmblks - tops),
            FreeTop = (long)tops,
            Mapped = (long)(info.Arena + info.Hblkhd),
            Released = Volatile.Read(ref ctx->ReleasedBytes),
            Arenas = Volatile.Read(ref ctx->NArenas),
            Threads = threads,
        };
    }

    /// <summary>Each arena's last walk, by its index; guarded by s_readLock.</summary>
    private static ArenaReading[]? s_arenas;

    /// <summary>Readings in a row an arena may keep its last walk because its lock was busy.</summary>
    private const int MaxMisses = 4;

    /// <summary>
    /// Walk arena <paramref name="av"/> under its lock if the lock is free within a few
    /// microseconds of trying; otherwise keep its last walk, up to <see cref="MaxMisses"/>
    /// readings in a row, then wait for the lock. A reader never sleeps behind the threads that
    /// keep an arena busy (the lock is not fair: a sleeping waiter is mostly woken after its
    /// holder has taken it again), and no thread waits longer than one arena's walk.
    /// </summary>
    private static void ReadArena(MallocContext* ctx, MallocState* av, ref ArenaReading r)
    {
        int* word = &av->Mutex;
        bool held = false;
        for (int i = 0; i < 64 && !(held = FutexLock.TryEnter(word)); i++) Thread.SpinWait(8);
        if (!held)
        {
            if (r.Walked && r.Misses < MaxMisses)
            {
                r.Misses++;
                return;
            }
            FutexLock.Enter(word);
        }
        try
        {
            r.Info = MallInfo.Add(default, av, av == &ctx->Main);
            r.Top = Chunk.SizeOf(av->Top);
            r.Walked = true;
            r.Misses = 0;
        }
        finally
        {
            FutexLock.Exit(word);
        }
    }

    private struct ArenaReading
    {
        public HeapInfo Info;
        public ulong Top;
        public bool Walked;
        public int Misses;
    }
}

/// <summary>One reading of the heap's metrics, in bytes but for the two counts.</summary>
internal readonly record struct HeapReading
{
    public long Used { get; init; }
    public long FreeTcache { get; init; }
    public long FreeFastbins { get; init; }
    public long FreeBins { get; init; }
    public long FreeTop { get; init; }
    public long Mapped { get; init; }
    public long Released { get; init; }
    public long Arenas { get; init; }
    public long Threads { get; init; }
}
