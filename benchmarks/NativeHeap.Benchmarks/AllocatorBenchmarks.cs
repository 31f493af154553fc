using BenchmarkDotNet.Attributes;

namespace NativeHeap.Benchmarks;

/// <summary>An allocator's benchmarks refuse to run, with the reason, when its library is missing.</summary>
public abstract class AllocatorBenchmark<T> where T : struct, IAllocator
{
    [GlobalSetup]
    public virtual void Setup()
    {
        if (T.Missing is { } why) throw new InvalidOperationException($"{T.Name}: {why}");
    }
}

[GenericTypeArguments(typeof(NativeMemoryAllocator))]
[GenericTypeArguments(typeof(GlibcAllocator))]
[GenericTypeArguments(typeof(NativeHeapAllocator))]
[GenericTypeArguments(typeof(MimallocAllocator))]
[GenericTypeArguments(typeof(JemallocAllocator))]
public unsafe class Micro<T> : AllocatorBenchmark<T> where T : struct, IAllocator
{
    [Params(16, 64, 256, 1024, 4096, 65536, 262144, 4194304)]
    public int Size { get; set; }

    [Benchmark(Description = "alloc+free pair")]
    public void Pair() => T.Free(T.Alloc((nuint)Size));
}

/// <summary>
/// realloc and aligned allocation, where glibc 2.38 and 2.39 changed what the arena is asked:
/// a block grown by a few bytes within its usable size, and a 64-byte-aligned small block.
/// </summary>
[GenericTypeArguments(typeof(NativeMemoryAllocator))]
[GenericTypeArguments(typeof(GlibcAllocator))]
[GenericTypeArguments(typeof(NativeHeapAllocator))]
[GenericTypeArguments(typeof(MimallocAllocator))]
[GenericTypeArguments(typeof(JemallocAllocator))]
public unsafe class Reshape<T> : AllocatorBenchmark<T> where T : struct, IAllocator
{
    [Benchmark(Description = "malloc 20, realloc 22, realloc 24, free")]
    public void ReallocGrow()
    {
        void* p = T.Alloc(20);
        p = T.Realloc(p, 22);
        p = T.Realloc(p, 24);
        T.Free(p);
    }

    [Benchmark(Description = "aligned_alloc(64) of 40 bytes + free")]
    public void Aligned() => T.AlignedFree(T.AlignedAlloc(40, 64));
}

[GenericTypeArguments(typeof(NativeMemoryAllocator))]
[GenericTypeArguments(typeof(GlibcAllocator))]
[GenericTypeArguments(typeof(NativeHeapAllocator))]
[GenericTypeArguments(typeof(MimallocAllocator))]
[GenericTypeArguments(typeof(JemallocAllocator))]
public unsafe class Batch<T> : AllocatorBenchmark<T> where T : struct, IAllocator
{
    private readonly nuint[] _sizes = new nuint[1024];
    private readonly int[] _order = new int[1024];
    private readonly nint[] _blocks = new nint[1024];

    public override void Setup()
    {
        base.Setup();
        var rng = new Random(42);
        for (int i = 0; i < 1024; i++)
        {
            _sizes[i] = (nuint)rng.Next(16, 1025);
            _order[i] = i;
        }
        rng.Shuffle(_order);
    }

    /// <summary>1024 random sizes 16..1024, freed in random order; time per allocation.</summary>
    [Benchmark(Description = "random batch", OperationsPerInvoke = 1024)]
    public void RandomBatch()
    {
        for (int i = 0; i < 1024; i++) _blocks[i] = (nint)T.Alloc(_sizes[i]);
        for (int i = 0; i < 1024; i++) T.Free((void*)_blocks[_order[i]]);
    }
}

[GenericTypeArguments(typeof(NativeMemoryAllocator))]
[GenericTypeArguments(typeof(GlibcAllocator))]
[GenericTypeArguments(typeof(NativeHeapAllocator))]
[GenericTypeArguments(typeof(MimallocAllocator))]
[GenericTypeArguments(typeof(JemallocAllocator))]
public class Workload<T> : AllocatorBenchmark<T> where T : struct, IAllocator
{
    [Benchmark(Description = "bench-malloc-simple")] public long Simple() => Workloads<T>.Simple();
    [Benchmark(Description = "bench-malloc-thread, 1 thread")] public long Thread1() => Workloads<T>.Thread(1);
    [Benchmark(Description = "bench-malloc-thread, 2 threads")] public long Thread2() => Workloads<T>.Thread(2);
    [Benchmark(Description = "larson")] public long Larson() => Workloads<T>.Larson();
    [Benchmark(Description = "xmalloc-test")] public long XMalloc() => Workloads<T>.XMalloc();
    [Benchmark(Description = "mstress")] public long MStress() => Workloads<T>.MStress();
    [Benchmark(Description = "malloc-large")] public long Large() => Workloads<T>.Large();
}

/// <summary>Churn (free one random live block, allocate a replacement) with 10^3, 10^5 or 10^7 blocks live.</summary>
[GenericTypeArguments(typeof(NativeMemoryAllocator))]
[GenericTypeArguments(typeof(GlibcAllocator))]
[GenericTypeArguments(typeof(NativeHeapAllocator))]
[GenericTypeArguments(typeof(MimallocAllocator))]
[GenericTypeArguments(typeof(JemallocAllocator))]
public unsafe class Scaling<T> : AllocatorBenchmark<T> where T : struct, IAllocator
{
    private nint[] _live = [];
    private Random _rng = new(1);

    [Params(1_000, 100_000, 10_000_000)]
    public int LiveBlocks { get; set; }

    public override void Setup()
    {
        base.Setup();
        _rng = new Random(1);
        _live = new nint[LiveBlocks];
        for (int i = 0; i < _live.Length; i++) _live[i] = (nint)T.Alloc((nuint)_rng.Next(16, 257));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (nint p in _live) T.Free((void*)p);
    }

    [Benchmark(Description = "churn among live blocks")]
    public void Churn()
    {
        int k = _rng.Next(_live.Length);
        T.Free((void*)_live[k]);
        _live[k] = (nint)T.Alloc((nuint)_rng.Next(16, 257));
    }
}
