using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using NativeHeap.Diagnostics;

namespace NativeHeap.Benchmarks;

/// <summary>
/// What a read of the heap's metrics costs while 8 threads allocate and free (random sizes of
/// 16 B to 4 KiB, 2,000 live blocks each): a listener records every NativeHeap instrument each
/// 10 ms, a fresh reading each time. Prints the read's median, p99 and longest time (wall clock, and the reading thread's CPU time), and the
/// threads' operations per second with and without the reads (alternating phases), and a read of the same heap once its threads are idle.
/// <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- heap-metrics [--seconds N]</c>
/// </summary>
internal static unsafe class HeapMetricsRead
{
    private const int Threads = 8;

    internal static int Run(string[] args)
    {
        int seconds = args.SkipWhile(a => a != "--seconds").Skip(1).Select(int.Parse).FirstOrDefault(12);
        long ops = 0;
        bool stop = false;
        using var idle = new CountdownEvent(Threads);
        using var done = new ManualResetEventSlim();
        var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            var live = new nint[2000];
            var random = new Random(t);
            while (!Volatile.Read(ref stop))
            {
                for (int i = 0; i < 1000; i++)
                {
                    int k = random.Next(live.Length);
                    Heap.Free((void*)live[k]);
                    live[k] = (nint)Heap.Alloc((nuint)random.Next(16, 4097));
                }
                Interlocked.Add(ref ops, 1000);
            }
            idle.Signal();
            done.Wait();
            foreach (nint p in live) Heap.Free((void*)p);
        })).ToList();
        workers.ForEach(w => w.Start());

        long values = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == HeapMetrics.MeterName) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => values += value);
        listener.Start();

        var reads = new List<double>();
        var cpu = new List<double>();
        double withReads = 0, without = 0;
        // One-second phases, alternating, after a second of warm-up.
        Thread.Sleep(1000);
        for (int phase = 0; phase < seconds; phase++)
        {
            bool reading = phase % 2 == 0;
            long before = Interlocked.Read(ref ops);
            var phaseClock = Stopwatch.StartNew();
            while (phaseClock.ElapsedMilliseconds < 1000)
            {
                if (reading)
                {
                    HeapMetrics.ForgetReading();
                    long start = Stopwatch.GetTimestamp();
                    double cpuStart = ThreadCpuMicroseconds();
                    listener.RecordObservableInstruments();
                    cpu.Add(ThreadCpuMicroseconds() - cpuStart);
                    reads.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds);
                }
                Thread.Sleep(10);
            }
            double rate = (Interlocked.Read(ref ops) - before) / phaseClock.Elapsed.TotalSeconds;
            if (reading) withReads += rate;
            else without += rate;
        }
        Volatile.Write(ref stop, true);
        // The same heap with its threads idle: the walks alone.
        idle.Wait();
        var quiet = new List<double>();
        for (int i = 0; i < 50; i++)
        {
            HeapMetrics.ForgetReading();
            double cpuStart = ThreadCpuMicroseconds();
            listener.RecordObservableInstruments();
            quiet.Add(ThreadCpuMicroseconds() - cpuStart);
        }
        quiet.Sort();
        done.Set();
        workers.ForEach(w => w.Join());

        reads.Sort();
        cpu.Sort();
        var c = CultureInfo.InvariantCulture;
        Console.WriteLine(string.Create(c, $"heap-metrics: {reads.Count} reads with {Threads} threads allocating, {Heap.ArenaCount} arenas: median {reads[reads.Count / 2]:F0} us, p99 {reads[(int)(reads.Count * 0.99)]:F0} us, longest {reads[^1]:F0} us"));
        Console.WriteLine(string.Create(c, $"heap-metrics: the reading thread's CPU time a read: median {cpu[cpu.Count / 2]:F0} us, p99 {cpu[(int)(cpu.Count * 0.99)]:F0} us, longest {cpu[^1]:F0} us"));
        Console.WriteLine(string.Create(c, $"heap-metrics: the same heap with its threads idle: median {quiet[quiet.Count / 2]:F0} us a read"));
        Console.WriteLine(string.Create(c, $"heap-metrics: the threads' alloc+free pairs per second: {withReads / (seconds / 2) / 1e6:F2} M with a read each 10 ms, {without / (seconds / 2) / 1e6:F2} M without (sum of values {values})"));
        return 0;
    }

    /// <summary>CPU time of the calling thread (clock_gettime(CLOCK_THREAD_CPUTIME_ID)): a read's own cost, apart from waiting for a core.</summary>
    private static double ThreadCpuMicroseconds()
    {
        long* ts = stackalloc long[2];
        _ = ClockGetTime(3, ts);
        return ts[0] * 1e6 + ts[1] / 1e3;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, long* ts);
}
