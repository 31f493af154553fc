using System.Buffers;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace NativeHeap.Buffers;

/// <summary>
/// An owner handed out by <see cref="NativeHeapMemoryPool"/>, and its own MemoryManager: one
/// object, reused rent after rent, with a block of a size class kept while it waits in the pool.
/// </summary>
/// <remarks>
/// <para><b>The version stamp.</b> A Memory&lt;byte&gt; holds (manager, index, length), and
/// Memory.Span checks index + length against GetSpan().Length before it adds the index to the
/// span's start. Each rent gets a window: its Memory is (this, W, length) and GetSpan returns
/// the span that starts W bytes before the block, W + length long. W goes down at every rent,
/// by at least the new length + 1, so every Memory of an earlier rent, and every slice of one,
/// has an index at or above its own W, which is past the end of the current window: Memory.Span
/// throws (ArgumentOutOfRangeException, Memory's own check) and Pin throws
/// ObjectDisposedException. While the owner waits in the pool, GetSpan and Pin throw
/// ObjectDisposedException. When W would go below 0 (2^31 bytes of windows used: 8 million rents
/// of 256 bytes, 2,047 of 1 MiB) the pool retires this object and moves the block to a new one.</para>
/// <para>So GetSpan's span is not the buffer: its first W bytes are not this owner's. Only
/// Memory&lt;byte&gt; (which slices it) should call it; the BCL's callers all do.</para>
/// <para><b>Who touches what.</b> <see cref="State"/>, the window and the length are written by
/// the thread that rents or disposes (plain fields: IMemoryOwner.Dispose is not thread-safe
/// against a second Dispose of the same owner, as MemoryPool&lt;byte&gt;.Shared's owners; the
/// pool checks State again when it takes an owner back out, and drops one it finds rented).
/// Block, Class and Capacity change only while the owner is in no cache and not rented.</para>
/// </remarks>
internal sealed unsafe class PooledBuffer : MemoryManager<byte>, IMemoryOwner<byte>
{
    internal const int Idle = 0, Rented = 1, Retired = 2;

    /// <summary>The window start no rent has used yet: W = FirstWindow - length - 1 on the first rent.</summary>
    private const uint FirstWindow = 1u << 31;

    internal readonly NativeHeapMemoryPool Pool;
    internal byte* Block;      // null for a bare owner (PoolSizeClass.Bare, no block)
    internal int Class;        // the block's size class; Bare for a block of exactly the length (above MaxCached) or none
    internal int Capacity;     // the block's bytes
    internal int State;        // Idle, Rented or Retired (never rented again)
    internal int ParkedIn;     // the Id of the thread cache whose slot holds it idle, else 0; written under that cache's handshake
    private uint _window = FirstWindow;
    private int _length;

    internal PooledBuffer(NativeHeapMemoryPool pool)
    {
        Pool = pool;
        Class = PoolSizeClass.Bare;
    }

    /// <summary>A forgotten rented owner frees its block; so does an idle one the pool lost (a dead thread's cache).</summary>
    /// <remarks>CA2015's hazard is the documented contract, as NativeBuffer's: a Memory keeps the owner alive, a bare Span does not; dispose what you rent.</remarks>
    [SuppressMessage("Reliability", "CA2015", Justification = "Freeing forgotten owners is the pool's promise; a Span alone does not keep an owner, as documented.")]
    ~PooledBuffer() => Pool.Finalized(this);

    /// <summary>Starts a rent of <paramref name="length"/> bytes with a new window; false when the windows are used up.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryStart(int length)
    {
        Debug.Assert(State == Idle && length <= Capacity && Block != null);
        long w = (long)_window - length - 1;
        if (w < 0) return false;
        _window = (uint)w;
        _length = length;
        State = Rented;
        return true;
    }

    /// <summary>The rented bytes as Memory (a window of this manager: see the remarks).</summary>
    public override Memory<byte> Memory
    {
        get
        {
            if (State != Rented) ThrowDisposed();
            return CreateMemory((int)_window, _length);
        }
    }

    /// <summary>Memory&lt;byte&gt;'s view: starts the window's W bytes before the block (see the remarks).</summary>
    public override Span<byte> GetSpan()
    {
        if (State != Rented) ThrowDisposed();
        return new Span<byte>(Block - _window, (int)_window + _length);
    }

    /// <summary>Pins the byte at <paramref name="elementIndex"/> of the window (the block never moves).</summary>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        int start = (int)_window;
        // An earlier rent's Memory has an index past this window's end.
        if (State != Rented || elementIndex > start + _length) ThrowDisposed();
        ArgumentOutOfRangeException.ThrowIfLessThan(elementIndex, start);
        return new MemoryHandle(Block + (elementIndex - start), pinnable: this);
    }

    /// <summary>Nothing to do: native memory does not move.</summary>
    public override void Unpin()
    {
    }

    /// <summary>Gives the buffer back to the pool. A second Dispose does nothing while the owner waits in the pool.</summary>
    public void Dispose()
    {
        if (State != Rented) return;
        State = Idle;
        Pool.Return(this);
    }

    /// <summary>MemoryManager's protected face of <see cref="Dispose()"/>.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing) Dispose();
    }

    /// <summary>This object will not be rented again: its block has gone to another owner or been freed.</summary>
    internal void Retire()
    {
        Debug.Assert(State != Rented && Block == null);
        State = Retired;
        GC.SuppressFinalize(this);
    }

    [DoesNotReturn]
    private void ThrowDisposed() => throw new ObjectDisposedException(nameof(NativeHeapMemoryPool) + " buffer",
        "The buffer was given back to its NativeHeapMemoryPool (Dispose): a Memory or owner of it is no longer valid.");
}
