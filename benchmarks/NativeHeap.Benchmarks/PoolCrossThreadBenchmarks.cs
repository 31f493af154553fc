using System.Buffers;
using BenchmarkDotNet.Attributes;
using NativeHeap.Buffers;

namespace NativeHeap.Benchmarks;

/// <summary>
/// 8 threads in a ring, each renting a batch of buffers (touching each), handing the batch to
/// the next thread and disposing the batch the previous thread handed it: every buffer is
/// rented on one thread and disposed on another. Time per buffer (one Rent + one Dispose).
/// <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- --filter '*PoolCrossThread*'</c>
/// </summary>
[MemoryDiagnoser]
public class PoolCrossThreadBenchmarks
{
    private const int Threads = 8, Buffers = 256 * 50; // per thread per invocation

    private Ring? _memoryPool, _nativeHeapPool;

    [Params(4096, 65536)]
    public int Size { get; set; }

    /// <summary>Buffers a thread rents before it hands them over: 16 stay within both pools' caches, 256 do not (8 threads hold up to 4,096).</summary>
    [Params(16, 256)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _memoryPool = new Ring(MemoryPool<byte>.Shared, Size, Batch);
        _nativeHeapPool = new Ring(NativeHeapMemoryPool.Shared, Size, Batch);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _memoryPool!.Dispose();
        _nativeHeapPool!.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Threads * Buffers, Description = "MemoryPool<byte>.Shared, 8 threads, disposed on another")]
    public void MemoryPoolShared() => _memoryPool!.Run();

    [Benchmark(OperationsPerInvoke = Threads * Buffers, Description = "NativeHeapMemoryPool.Shared, 8 threads, disposed on another")]
    public void NativeHeapPool() => _nativeHeapPool!.Run();

    /// <summary>The threads live for the whole benchmark; each Run lets each of them rent and hand over <see cref="Buffers"/> buffers.</summary>
    private sealed class Ring : IDisposable
    {
        private readonly MemoryPool<byte> _pool;
        private readonly int _size, _batch;
        private readonly IMemoryOwner<byte>[]?[] _mailboxes = new IMemoryOwner<byte>[]?[Threads]; // thread t hands to t + 1
        private readonly Barrier _start = new(Threads + 1), _end = new(Threads + 1);
        private readonly Thread[] _threads = new Thread[Threads];
        private volatile bool _stop;

        internal Ring(MemoryPool<byte> pool, int size, int batch)
        {
            _pool = pool;
            _size = size;
            _batch = batch;
            for (int t = 0; t < Threads; t++)
            {
                int me = t;
                _threads[t] = new Thread(() => Work(me)) { IsBackground = true };
                _threads[t].Start();
            }
        }

        internal void Run()
        {
            _start.SignalAndWait();
            _end.SignalAndWait();
        }

        private void Work(int me)
        {
            var batches = new[] { new IMemoryOwner<byte>[_batch], new IMemoryOwner<byte>[_batch] };
            int next = (me + 1) % Threads;
            while (true)
            {
                _start.SignalAndWait();
                if (_stop) return;
                for (int round = 0; round < Buffers / _batch; round++)
                {
                    IMemoryOwner<byte>[] mine = batches[round & 1];
                    for (int i = 0; i < _batch; i++)
                    {
                        IMemoryOwner<byte> owner = _pool.Rent(_size);
                        Span<byte> span = owner.Memory.Span;
                        span[0] = (byte)i;
                        span[_size - 1] = (byte)i;
                        mine[i] = owner;
                    }
                    var spin = new SpinWait();
                    while (Interlocked.CompareExchange(ref _mailboxes[next], mine, null) != null) spin.SpinOnce(sleep1Threshold: -1);
                    spin = new SpinWait();
                    IMemoryOwner<byte>[]? theirs;
                    while ((theirs = Interlocked.Exchange(ref _mailboxes[me], null)) == null) spin.SpinOnce(sleep1Threshold: -1);
                    foreach (IMemoryOwner<byte> owner in theirs) owner.Dispose();
                    batches[round & 1] = theirs; // the arrays circulate with the batches
                }
                _end.SignalAndWait();
            }
        }

        public void Dispose()
        {
            _stop = true;
            _start.SignalAndWait();
            foreach (Thread thread in _threads) thread.Join();
        }
    }
}
