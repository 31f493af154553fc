using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace NativeHeap.Benchmarks;

/// <summary>
/// The first pair: one alloc+free of a small block, and a batch of 1024 random sizes freed in
/// random order, NativeHeap against glibc through NativeMemory (what .NET programs call today).
/// Ratios are to the NativeMemory baseline.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public unsafe class AllocFreeBenchmarks
{
    private const int BatchSize = 1024;
    private readonly nuint[] _sizes = new nuint[BatchSize];
    private readonly int[] _freeOrder = new int[BatchSize];
    private readonly nint[] _blocks = new nint[BatchSize];

    [Params(64)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(42);
        for (int i = 0; i < BatchSize; i++)
        {
            _sizes[i] = (nuint)rng.Next(16, 1025);
            _freeOrder[i] = i;
        }
        rng.Shuffle(_freeOrder);
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Pair")]
    public void PairNativeMemory() => NativeMemory.Free(NativeMemory.Alloc((nuint)Size));

    [Benchmark, BenchmarkCategory("Pair")]
    public void PairNativeHeap() => Heap.Free(Heap.Alloc((nuint)Size));

    [Benchmark(Baseline = true), BenchmarkCategory("RandomBatch")]
    public void RandomBatchNativeMemory()
    {
        for (int i = 0; i < BatchSize; i++) _blocks[i] = (nint)NativeMemory.Alloc(_sizes[i]);
        for (int i = 0; i < BatchSize; i++) NativeMemory.Free((void*)_blocks[_freeOrder[i]]);
    }

    [Benchmark, BenchmarkCategory("RandomBatch")]
    public void RandomBatchNativeHeap()
    {
        for (int i = 0; i < BatchSize; i++) _blocks[i] = (nint)Heap.Alloc(_sizes[i]);
        for (int i = 0; i < BatchSize; i++) Heap.Free((void*)_blocks[_freeOrder[i]]);
    }
}
