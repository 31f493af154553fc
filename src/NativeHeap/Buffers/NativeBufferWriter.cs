using System.Buffers;

namespace NativeHeap.Buffers;

/// <summary>
/// An <see cref="IBufferWriter{T}"/> of bytes over one NativeHeap block that grows by realloc
/// (in place when NativeHeap can, as glibc would). What was written is
/// <see cref="WrittenSpan"/> / <see cref="WrittenMemory"/>; <see cref="DetachBuffer"/> hands
/// it over as a <see cref="NativeBuffer{T}"/> without copying.
/// </summary>
/// <remarks>
/// Not thread-safe, as <see cref="ArrayBufferWriter{T}"/>. A span or memory from
/// <see cref="GetSpan"/>/<see cref="GetMemory"/> is valid until the next call that may grow the
/// block. After <see cref="Dispose"/>, every member but Dispose throws <see cref="ObjectDisposedException"/>.
/// </remarks>
public sealed class NativeBufferWriter : IBufferWriter<byte>, IDisposable
{
    private const int MinimumGrowth = 256;

    private NativeBuffer<byte> _buffer;
    private int _written;
    private bool _disposed;

    /// <summary>Creates a writer whose block starts with room for <paramref name="initialCapacity"/> bytes.</summary>
    /// <param name="initialCapacity">Bytes of room to start with, 0 or more.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="initialCapacity"/> is negative.</exception>
    public NativeBufferWriter(int initialCapacity = MinimumGrowth)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(initialCapacity);
        _buffer = new NativeBuffer<byte>(initialCapacity);
    }

    /// <summary>The bytes written so far.</summary>
    public int WrittenCount
    {
        get
        {
            ThrowIfDisposed();
            return _written;
        }
    }

    /// <summary>The block's length: written bytes plus free room.</summary>
    public int Capacity => Buffer.Length;

    /// <summary>The room left before the block must grow.</summary>
    public int FreeCapacity => Buffer.Length - _written;

    /// <summary>The bytes written so far, in place.</summary>
    public ReadOnlySpan<byte> WrittenSpan => Buffer.Span[.._written];

    /// <summary>The bytes written so far, in place.</summary>
    public ReadOnlyMemory<byte> WrittenMemory => Buffer.Memory[.._written];

    /// <summary>Forgets what was written (the block and its capacity stay).</summary>
    public void Clear()
    {
        ThrowIfDisposed();
        _written = 0;
    }

    /// <summary>Marks <paramref name="count"/> bytes of the last span or memory handed out as written.</summary>
    /// <param name="count">Bytes written, at most <see cref="FreeCapacity"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or more than the room left.</exception>
    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, FreeCapacity);
        _written += count;
    }

    /// <summary>Room for at least <paramref name="sizeHint"/> bytes (at least one when 0), growing the block if needed.</summary>
    /// <param name="sizeHint">Bytes wanted, 0 or more.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sizeHint"/> is negative.</exception>
    /// <exception cref="OutOfMemoryException">The block cannot grow; what was written is kept.</exception>
    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return Buffer.Memory[_written..];
    }

    /// <summary>Room for at least <paramref name="sizeHint"/> bytes (at least one when 0), growing the block if needed.</summary>
    /// <param name="sizeHint">Bytes wanted, 0 or more.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sizeHint"/> is negative.</exception>
    /// <exception cref="OutOfMemoryException">The block cannot grow; what was written is kept.</exception>
    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return Buffer.Span[_written..];
    }

    /// <summary>
    /// Hands over what was written as a buffer of exactly <see cref="WrittenCount"/> bytes (the
    /// block shrunk by realloc, not copied), which the caller then owns; the writer starts again,
    /// empty, with a new block.
    /// </summary>
    public NativeBuffer<byte> DetachBuffer()
    {
        NativeBuffer<byte> written = Buffer;
        written.Resize(_written);
        _buffer = new NativeBuffer<byte>(MinimumGrowth);
        _written = 0;
        return written;
    }

    /// <summary>Frees the block (the first call only).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _buffer.Dispose();
    }

    private NativeBuffer<byte> Buffer
    {
        get
        {
            ThrowIfDisposed();
            return _buffer;
        }
    }

    private void Reserve(int sizeHint)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        int needed = Math.Max(sizeHint, 1);
        NativeBuffer<byte> buffer = Buffer;
        if (buffer.Length - _written >= needed) return;
        // Double, as ArrayBufferWriter does, so that n bytes cost O(n) copying at most.
        long wanted = Math.Max((long)_written + needed, Math.Max((long)buffer.Length * 2, MinimumGrowth));
        if ((long)_written + needed > int.MaxValue)
            throw new OutOfMemoryException($"NativeBufferWriter: {(long)_written + needed} bytes is more than a Memory<byte> can hold.");
        buffer.Resize((int)Math.Min(wanted, int.MaxValue));
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
