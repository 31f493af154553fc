using System.Buffers;
using BenchmarkDotNet.Attributes;
using NativeHeap.Buffers;

namespace NativeHeap.Benchmarks;

/// <summary>
/// Rent and give back one buffer, and touch it, from each of the pools a .NET program would
/// use: MemoryPool&lt;byte&gt;.Shared (the baseline), ArrayPool&lt;byte&gt;.Shared, and NativeHeap's pool.
/// <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- --filter '*PoolBenchmarks*'</c>
/// </summary>
[MemoryDiagnoser]
public class PoolBenchmarks
{
    [Params(256, 4096, 65536, 1 << 20)]
    public int Size { get; set; }

    [Benchmark(Baseline = true, Description = "MemoryPool<byte>.Shared Rent+Dispose")]
    public byte MemoryPoolShared()
    {
        using IMemoryOwner<byte> owner = MemoryPool<byte>.Shared.Rent(Size);
        Span<byte> span = owner.Memory.Span;
        span[0] = 1;
        return span[Size - 1];
    }

    [Benchmark(Description = "ArrayPool<byte>.Shared Rent+Return")]
    public byte ArrayPoolShared()
    {
        byte[] array = ArrayPool<byte>.Shared.Rent(Size);
        array[0] = 1;
        byte last = array[Size - 1];
        ArrayPool<byte>.Shared.Return(array);
        return last;
    }

    [Benchmark(Description = "NativeHeapMemoryPool.Shared Rent+Dispose")]
    public byte NativeHeapPool()
    {
        using IMemoryOwner<byte> owner = NativeHeapMemoryPool.Shared.Rent(Size);
        Span<byte> span = owner.Memory.Span;
        span[0] = 1;
        return span[Size - 1];
    }

    [Benchmark(Description = "NativeBuffer<byte> new+Dispose")]
    public byte NativeBufferDirect()
    {
        using var buffer = new NativeBuffer<byte>(Size);
        Span<byte> span = buffer.Span;
        span[0] = 1;
        return span[Size - 1];
    }
}
