using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace NativeHeap.Benchmarks;

/// <summary>
/// Two threads at once, each doing 64-byte alloc+free pairs: NativeHeap's per-thread tcache
/// against glibc (through NativeMemory) with its own per-thread tcache. Time per pair, so a
/// ratio below 1 is more throughput than glibc.
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public unsafe class ThreadBenchmarks
{
    private const int PairsPerThread = 100_000;
    private const int Threads = 2;
    private Barrier? _start;
    private Thread[]? _workers;
    private volatile bool _useNativeHeap;
    private volatile bool _quit;
    private CountdownEvent? _done;

    [GlobalSetup]
    public void Setup()
    {
        _start = new Barrier(Threads + 1);
        _done = new CountdownEvent(Threads);
        _workers = Enumerable.Range(0, Threads).Select(_ => new Thread(Work) { IsBackground = true }).ToArray();
        foreach (Thread t in _workers) t.Start();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _quit = true;
        _start!.SignalAndWait();
    }

    private void Work()
    {
        for (;;)
        {
            _start!.SignalAndWait();
            if (_quit) return;
            if (_useNativeHeap)
                for (int i = 0; i < PairsPerThread; i++) Heap.Free(Heap.Alloc(64));
            else
                for (int i = 0; i < PairsPerThread; i++) NativeMemory.Free(NativeMemory.Alloc(64));
            _done!.Signal();
        }
    }

    private void RunBoth(bool nativeHeap)
    {
        _useNativeHeap = nativeHeap;
        _done!.Reset();
        _start!.SignalAndWait();
        _done.Wait();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = PairsPerThread * Threads), BenchmarkCategory("TwoThreadsPair64")]
    public void TwoThreadsNativeMemory() => RunBoth(nativeHeap: false);

    [Benchmark(OperationsPerInvoke = PairsPerThread * Threads), BenchmarkCategory("TwoThreadsPair64")]
    public void TwoThreadsNativeHeap() => RunBoth(nativeHeap: true);
}
