using System.Buffers;
using System.Runtime.CompilerServices;

namespace NativeHeap.Buffers;

/// <summary>
/// A buffer of <typeparamref name="T"/> in NativeHeap memory, owned by this object: its
/// <see cref="Span"/> and <see cref="Memory"/> lie in a block from <see cref="Heap.Alloc"/>,
/// which <see cref="Dispose()"/> (or, if forgotten, the finalizer) frees exactly once.
/// </summary>
/// <remarks>
/// <para>The bytes every buffer holds are reported to the GC (<see cref="GC.AddMemoryPressure(long)"/>,
/// in steps of 16 MiB for all buffers together), so that a program that holds large native
/// buffers through small managed objects still collects in time.</para>
/// <para>Thread safety is that of <see cref="IMemoryOwner{T}"/> implementations: reading and
/// writing the contents from several threads is the caller's to coordinate; <see cref="Dispose()"/>
/// may be called from any thread and more than once (only the first frees), but not while
/// another thread is using the buffer or calling <see cref="Resize"/>. After disposal, every
/// member but <see cref="Dispose()"/> throws <see cref="ObjectDisposedException"/>.</para>
/// </remarks>
/// <typeparam name="T">An unmanaged element type.</typeparam>
public sealed unsafe class NativeBuffer<T> : IMemoryOwner<T> where T : unmanaged
{
    private readonly Manager _manager;
    private T* _pointer;
    private int _length;
    private long _bytes;
    private int _pins;
    private int _disposed;

    /// <summary>Allocates a buffer of <paramref name="length"/> elements.</summary>
    /// <param name="length">The number of elements, 0 or more.</param>
    /// <param name="zeroed">Whether the contents start as zeros (calloc) rather than as whatever the block held.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="OutOfMemoryException">No memory could be had.</exception>
    public NativeBuffer(int length, bool zeroed = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        nuint bytes = ByteCount(length);
        _pointer = (T*)(zeroed ? Heap.AllocZeroed(bytes, 1) : Heap.Alloc(bytes));
        _length = length;
        _manager = new Manager(this);
        SetBytes((long)bytes);
    }

    /// <summary>
    /// Frees the block if <see cref="Dispose()"/> was never called. A <see cref="Memory{T}"/> of
    /// the buffer keeps it alive; a bare <see cref="Span"/> does not, so dispose what you allocate.
    /// </summary>
    ~NativeBuffer() => Free();

    /// <summary>The number of elements.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public int Length
    {
        get
        {
            ThrowIfDisposed();
            return _length;
        }
    }

    /// <summary>The elements, in place.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public Span<T> Span
    {
        get
        {
            ThrowIfDisposed();
            return new Span<T>(_pointer, _length);
        }
    }

    /// <summary>The elements as <see cref="Memory{T}"/> (through a <see cref="MemoryManager{T}"/> that keeps this buffer alive).</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public Memory<T> Memory
    {
        get
        {
            ThrowIfDisposed();
            return _manager.Memory;
        }
    }

    /// <summary>The address of the first element. It changes when <see cref="Resize"/> moves the block, and is invalid after <see cref="Dispose()"/>.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public T* Pointer
    {
        get
        {
            ThrowIfDisposed();
            return _pointer;
        }
    }

    /// <summary>
    /// Changes the length to <paramref name="newLength"/> elements with realloc: the first
    /// min(old, new) elements are kept, added ones are uninitialised, and the block may move.
    /// A <see cref="Memory{T}"/> taken before keeps its old length: after a shrink, using it throws.
    /// </summary>
    /// <param name="newLength">The new number of elements, 0 or more.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="newLength"/> is negative.</exception>
    /// <exception cref="InvalidOperationException">The buffer's memory is pinned (<see cref="Memory{T}.Pin"/>): its address may not change.</exception>
    /// <exception cref="OutOfMemoryException">No memory; the buffer keeps its old length and contents.</exception>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public void Resize(int newLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(newLength);
        ThrowIfDisposed();
        if (Volatile.Read(ref _pins) != 0)
            throw new InvalidOperationException("A pinned NativeBuffer cannot be resized: its address may change.");
        nuint bytes = ByteCount(newLength);
        // Realloc(p, 0) would free the block; keep a minimum block so that the buffer stays owned.
        _pointer = (T*)Heap.Realloc(_pointer, bytes == 0 ? 1 : bytes);
        _length = newLength;
        SetBytes((long)bytes);
    }

    /// <summary>Frees the block (the first call only).</summary>
    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    private void Free()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        T* p = _pointer;
        _pointer = null;
        _length = 0;
        Heap.Free(p);
        SetBytes(0);
    }

    // int elements of at most 2^31 bytes each cannot overflow 64 bits; the heap refuses what it cannot hold.
    private static nuint ByteCount(int length) => (nuint)((ulong)length * (ulong)sizeof(T));

    private void SetBytes(long bytes)
    {
        GcPressure.Change(bytes - _bytes);
        _bytes = bytes;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed != 0, this);

    /// <summary>What <see cref="Memory{T}"/> sees: the owner's current block. Pinning counts, so that <see cref="Resize"/> can refuse to move a pinned block.</summary>
    private sealed class Manager(NativeBuffer<T> owner) : MemoryManager<T>
    {
        public override Span<T> GetSpan() => owner.Span;

        public override MemoryHandle Pin(int elementIndex = 0)
        {
            Span<T> span = owner.Span;
            ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, span.Length);
            Interlocked.Increment(ref owner._pins);
            return new MemoryHandle(owner._pointer + elementIndex, pinnable: this);
        }

        public override void Unpin() => Interlocked.Decrement(ref owner._pins);

        // The owner frees the block; disposing the manager (IMemoryOwner's other face) does nothing.
        protected override void Dispose(bool disposing)
        {
        }
    }
}
