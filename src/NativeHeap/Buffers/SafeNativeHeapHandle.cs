using System.Runtime.InteropServices;

namespace NativeHeap.Buffers;

/// <summary>
/// A NativeHeap block as a <see cref="SafeHandle"/>: pass it to P/Invoke signatures that take
/// a pointer (the marshaller keeps it alive for the call), and it is freed exactly once, by
/// Dispose or, if forgotten, by finalization.
/// </summary>
/// <remarks>Thread-safe as every SafeHandle: the block is not freed while a call that uses it is running.</remarks>
public sealed unsafe class SafeNativeHeapHandle : SafeHandle
{
    /// <summary>An invalid handle (for marshalling); <see cref="Allocate"/> makes a real one.</summary>
    public SafeNativeHeapHandle()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    private SafeNativeHeapHandle(void* block, nuint byteLength)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle((nint)block);
        ByteLength = byteLength;
    }

    /// <summary>Allocates a block of <paramref name="byteLength"/> bytes.</summary>
    /// <param name="byteLength">The bytes wanted.</param>
    /// <param name="zeroed">Whether the block starts as zeros.</param>
    /// <exception cref="OutOfMemoryException">No memory could be had.</exception>
    public static SafeNativeHeapHandle Allocate(nuint byteLength, bool zeroed = false) =>
        new(zeroed ? Heap.AllocZeroed(byteLength, 1) : Heap.Alloc(byteLength), byteLength);

    /// <summary>The bytes asked for (the block may hold more: <see cref="Heap.UsableSize"/>).</summary>
    public nuint ByteLength { get; }

    /// <summary>Whether the handle holds no block (never allocated, or already freed).</summary>
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>
    /// The block's bytes. Valid while the handle is not disposed; for use across a call that
    /// may dispose it, hold a reference with <see cref="SafeHandle.DangerousAddRef"/>.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The handle was disposed or holds no block.</exception>
    /// <exception cref="InvalidOperationException">The block is larger than a span can hold.</exception>
    public Span<byte> AsSpan()
    {
        ObjectDisposedException.ThrowIf(IsClosed || IsInvalid, this);
        if (ByteLength > int.MaxValue) throw new InvalidOperationException($"{ByteLength} bytes are more than a Span<byte> can hold.");
        return new Span<byte>((void*)handle, (int)ByteLength);
    }

    /// <summary>Frees the block; the runtime calls it once.</summary>
    protected override bool ReleaseHandle()
    {
        Heap.Free((void*)handle);
        return true;
    }
}
