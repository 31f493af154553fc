using System.Buffers;

namespace NativeHeap.Buffers;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of bytes whose buffers are NativeHeap blocks: each
/// <see cref="Rent"/> is a malloc of the size asked for and each owner's Dispose a free, so
/// the "pool" is NativeHeap's own bins and tcache, and memory given back returns to the OS by
/// NativeHeap's rules rather than staying in a managed pool. Switching is one line, e.g.
/// <c>new PipeOptions(pool: NativeHeapMemoryPool.Shared)</c>.
/// </summary>
/// <remarks>
/// Every member is thread-safe. Owners are <see cref="NativeBuffer{T}"/>s: Dispose frees once
/// (a second Dispose does nothing) and using one after Dispose throws
/// <see cref="ObjectDisposedException"/>; an owner never disposed is freed by its finalizer.
/// Disposing the pool changes nothing (buffers rented from it stay valid), as for
/// <see cref="MemoryPool{T}.Shared"/>.
/// </remarks>
public sealed class NativeHeapMemoryPool : MemoryPool<byte>
{
    /// <summary>The length <see cref="Rent"/> gives when asked for the default (-1): 4,096 bytes, as <see cref="MemoryPool{T}.Shared"/>.</summary>
    public const int DefaultBufferSize = 4096;

    /// <summary>The process-wide instance.</summary>
    public static new NativeHeapMemoryPool Shared { get; } = new();

    /// <summary>The largest buffer: a <see cref="Memory{T}"/> holds at most <see cref="int.MaxValue"/> bytes (NativeHeap itself could give more).</summary>
    public override int MaxBufferSize => int.MaxValue;

    /// <summary>A buffer of exactly <paramref name="minimumLength"/> bytes (4,096 for -1), uninitialised, in NativeHeap memory.</summary>
    /// <param name="minimumLength">The bytes wanted, 0 to <see cref="MaxBufferSize"/>, or -1 for <see cref="DefaultBufferSize"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="minimumLength"/> is below -1.</exception>
    /// <exception cref="OutOfMemoryException">No memory could be had.</exception>
    public override IMemoryOwner<byte> Rent(int minimumLength = -1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(minimumLength, -1);
        return new NativeBuffer<byte>(minimumLength == -1 ? DefaultBufferSize : minimumLength);
    }

    /// <summary>Nothing to release: every buffer is its owner's.</summary>
    /// <param name="disposing">Unused.</param>
    protected override void Dispose(bool disposing)
    {
    }
}
