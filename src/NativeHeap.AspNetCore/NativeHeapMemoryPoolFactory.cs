using System.Buffers;
using Microsoft.AspNetCore.Connections;
using NativeHeap.Buffers;

namespace NativeHeap.AspNetCore;

/// <summary>
/// ASP.NET Core's <see cref="IMemoryPoolFactory{T}"/> over <see cref="NativeHeapMemoryPool"/>: the
/// pools Kestrel's socket transport (and any other component that asks the factory) rents its
/// connection buffers from. <see cref="Microsoft.Extensions.DependencyInjection.NativeHeapServiceCollectionExtensions.AddNativeHeapMemoryPool"/>
/// registers it.
/// </summary>
/// <remarks>
/// One <see cref="NativeHeapMemoryPool"/> per owner (<see cref="MemoryPoolOptions.Owner"/>, e.g.
/// "kestrel"; "aspnetcore" when none is given), named after it, so its metrics
/// (<c>nativeheap.memory_pool.*</c>, tag <c>nativeheap.memory_pool.owner</c>) show one series per
/// owner: the socket transport asks once per I/O queue, and one pool per ask would report the
/// same owner several times. Each <see cref="Create"/> hands out a lease on that pool; when the
/// last lease is disposed (Kestrel disposes its pools when it stops listening), the pool is
/// disposed, its idle blocks freed to NativeHeap.
/// </remarks>
public sealed class NativeHeapMemoryPoolFactory : IMemoryPoolFactory<byte>
{
    /// <summary>The pool name used when the caller gives no owner.</summary>
    public const string DefaultOwner = "aspnetcore";

    private readonly Lock _lock = new();
    private readonly Dictionary<string, Shared> _pools = new(StringComparer.Ordinal);

    /// <summary>A pool of NativeHeap memory for <paramref name="options"/>' owner; dispose it when done, as with any factory's pool.</summary>
    /// <param name="options">The owner's name (the pool's name in metrics); null for <see cref="DefaultOwner"/>.</param>
    /// <returns>A lease on the owner's <see cref="NativeHeapMemoryPool"/>.</returns>
    public MemoryPool<byte> Create(MemoryPoolOptions? options = null)
    {
        string owner = options?.Owner ?? DefaultOwner;
        lock (_lock)
        {
            if (!_pools.TryGetValue(owner, out Shared? shared))
                _pools[owner] = shared = new Shared(owner, new NativeHeapMemoryPool(owner));
            shared.Leases++;
            return new Lease(this, shared);
        }
    }

    /// <summary>The counters of the pool that serves <paramref name="owner"/> now, or null if no lease on one is open.</summary>
    /// <param name="owner">The owner's name, e.g. "kestrel".</param>
    /// <returns>The pool's counters, the figures of its metrics.</returns>
    public NativeHeapMemoryPoolStatistics? GetStatistics(string owner)
    {
        lock (_lock)
            return _pools.TryGetValue(owner, out Shared? shared) ? shared.Pool.GetStatistics() : null;
    }

    private void Release(Shared shared)
    {
        lock (_lock)
        {
            if (--shared.Leases > 0) return;
            _pools.Remove(shared.Owner);
        }
        shared.Pool.Dispose();
    }

    private sealed class Shared(string owner, NativeHeapMemoryPool pool)
    {
        internal readonly string Owner = owner;
        internal readonly NativeHeapMemoryPool Pool = pool;
        internal int Leases; // under the factory's lock
    }

    /// <summary>What <see cref="Create"/> gives: the owner's pool, disposed with its last lease.</summary>
    private sealed class Lease(NativeHeapMemoryPoolFactory factory, Shared shared) : MemoryPool<byte>
    {
        private int _disposed;

        public override int MaxBufferSize => shared.Pool.MaxBufferSize;

        public override IMemoryOwner<byte> Rent(int minimumLength = -1)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            return shared.Pool.Rent(minimumLength);
        }

        protected override void Dispose(bool disposing)
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) factory.Release(shared);
        }
    }
}
