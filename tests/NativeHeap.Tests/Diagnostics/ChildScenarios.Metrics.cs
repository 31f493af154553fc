using System.Diagnostics.Metrics;
using NativeHeap.Buffers;
using NativeHeap.Diagnostics;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="HeapMetricsTests"/>: the heap's figures move only with what the scenario does.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>
    /// The meter as a listener sees it, read before and after each step: 4 MiB allocated in
    /// 64 KiB blocks, 7 small blocks freed into the tcache, 3 threads that allocated and wait,
    /// the 4 MiB freed and trimmed. Prints each reading as <c>STEP.INSTRUMENT[.LOCATION]=value</c>.
    /// </summary>
    public static void HeapMetricsSteps()
    {
        Heap.Free(Heap.Alloc(16)); // the heap, and with it the meter, exists before the listener starts
        var seen = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == HeapMetrics.MeterName) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            string name = instrument.Name;
            foreach (KeyValuePair<string, object?> tag in tags)
                if (tag.Key == HeapMetrics.LocationTag) name += "." + tag.Value;
            seen[name] = value;
        });
        listener.Start();
        void Reading(string step)
        {
            HeapMetrics.ForgetReading();
            seen.Clear();
            listener.RecordObservableInstruments();
            foreach (var (name, value) in seen.OrderBy(p => p.Key, StringComparer.Ordinal)) Report($"{step}.{name}", value);
        }

        Reading("start");
        var big = new nint[64];
        for (int i = 0; i < big.Length; i++) big[i] = (nint)Heap.Alloc(65536);
        Reading("allocated");
        var small = new nint[7];
        for (int i = 0; i < small.Length; i++) small[i] = (nint)Heap.Alloc(32);
        foreach (nint p in small) Heap.Free((void*)p);
        Reading("tcached");
        using (var release = new ManualResetEventSlim())
        using (var started = new CountdownEvent(3))
        {
            var threads = Enumerable.Range(0, 3).Select(_ => new Thread(() =>
            {
                Heap.Free(Heap.Alloc(100));
                started.Signal();
                release.Wait();
            })).ToList();
            threads.ForEach(t => t.Start());
            started.Wait();
            Reading("threads");
            Report("threads.expected_arenas", Heap.ArenaCount);
            release.Set();
            threads.ForEach(t => t.Join());
        }
        foreach (nint p in big) Heap.Free((void*)p);
        Heap.Trim(0);
        Reading("trimmed");
    }

    /// <summary>
    /// A process under load for dotnet-counters: one thread allocates and frees on the heap and
    /// rents from the shared pool until standard input closes (at most 60 s). Prints <c>ready</c> once running.
    /// </summary>
    public static void HeapMetricsLoad()
    {
        var stop = new ManualResetEventSlim();
        var worker = new Thread(() =>
        {
            var live = new nint[256];
            var random = new Random(29);
            while (!stop.IsSet)
            {
                for (int i = 0; i < 10_000; i++)
                {
                    int k = random.Next(live.Length);
                    Heap.Free((void*)live[k]);
                    live[k] = (nint)Heap.Alloc((nuint)random.Next(16, 70_000));
                }
                using (NativeHeapMemoryPool.Shared.Rent(4096)) { }
                Thread.Sleep(1);
            }
            foreach (nint p in live) Heap.Free((void*)p);
        });
        worker.Start();
        Console.WriteLine("ready");
        Console.Out.Flush();
        Task.Run(() => Console.In.ReadToEnd()).Wait(TimeSpan.FromSeconds(60));
        stop.Set();
        worker.Join();
    }
}
