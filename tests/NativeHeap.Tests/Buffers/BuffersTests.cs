using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using NativeHeap.Buffers;

namespace NativeHeap.Tests;

/// <summary>NativeHeap.Buffers: the pool, typed buffers, the buffer writer and the SafeHandle, misuse included, and two real consumers.</summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe partial class BuffersTests
{
    [StructLayout(LayoutKind.Sequential, Size = 1 << 20)]
    private struct Megabyte
    {
        public byte First;
    }

    /// <summary>
    /// NativeHeap's in-use bytes (arenas and mmapped chunks, as mallinfo2 counts them, less
    /// the arenas' own headers) once finalizers have run and the figure is steady. The calling thread's tcache and the
    /// finalizer thread's exist first (a 2,000-byte block is not kept in a tcache; smaller freed
    /// blocks would be, and mallinfo counts a tcache's chunks as in use); forgotten buffers of
    /// earlier tests, and the caches of ended threads, are freed by finalizers.
    /// </summary>
    /// <summary>What mallinfo counts as in use for each arena past the main one: its heap_info and malloc_state, which arenas keep for the life of the process.</summary>
    internal static unsafe ulong ArenaHeaderInUse =>
        (ulong)Os.OsMemory.AlignUp((nuint)(sizeof(Arenas.HeapHeader) + sizeof(Arenas.MallocState)), Chunks.Chunk.Alignment);

    internal static ulong InUse()
    {
        Heap.Free(Heap.Alloc(2000));
        Forget();
        ulong last = ulong.MaxValue;
        for (int i = 0; i < 50; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            NativeHeapMemoryPool.Shared.Trim(); // its idle blocks are in use to the heap, and its timer frees them when it likes
            HeapInfo info = Heap.GetInfo();
            ulong now = info.Uordblks + info.Hblkhd - (ulong)(Heap.ArenaCount - 1) * ArenaHeaderInUse;
            if (now == last) return now;
            last = now;
            Thread.Sleep(10); // an ended thread's statics are released a moment after Join returns
        }
        return last;

        static void Forget() => _ = new NativeBuffer<byte>(2000);
    }

    [Fact]
    public void NativeBuffer_LengthsSpansAndZeroing()
    {
        using var ints = new NativeBuffer<int>(1000, zeroed: true);
        Assert.Equal(1000, ints.Length);
        Assert.Equal(1000, ints.Span.Length);
        Assert.Equal(1000, ints.Memory.Length);
        Assert.Equal(-1, ints.Span.IndexOfAnyExcept(0));
        Assert.True(ints.Pointer == (int*)Unsafe.AsPointer(ref ints.Span[0]));
        Assert.Equal(0u, (nuint)ints.Pointer % 16);
        for (int i = 0; i < 1000; i++) ints.Span[i] = i * 3;
        Assert.Equal(2997, ints.Memory.Span[999]);

        using var empty = new NativeBuffer<long>(0);
        Assert.Equal(0, empty.Span.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeBuffer<byte>(-1));
        Assert.Throws<OutOfMemoryException>(() => new NativeBuffer<Megabyte>(int.MaxValue)); // 2 PiB
    }

    [Fact]
    public void NativeBuffer_ResizeKeepsContents_ToZeroAndBack()
    {
        using var buffer = new NativeBuffer<ushort>(10);
        for (int i = 0; i < 10; i++) buffer.Span[i] = (ushort)(i + 1);
        buffer.Resize(100_000); // past the mmap threshold: the block moves
        for (int i = 0; i < 10; i++) Assert.Equal(i + 1, buffer.Span[i]);
        buffer.Span[99_999] = 7;
        buffer.Resize(5);
        Assert.Equal(new ushort[] { 1, 2, 3, 4, 5 }, buffer.Span.ToArray());
        Memory<ushort> stale = buffer.Memory;
        buffer.Resize(0);
        Assert.Equal(0, buffer.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => stale.Span.Length); // taken at 5 elements, now 0
        buffer.Resize(3);
        Assert.Equal(3, buffer.Span.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.Resize(-1));

        using (MemoryHandle pin = buffer.Memory.Pin())
        {
            Assert.True(pin.Pointer == buffer.Pointer);
            Assert.Throws<InvalidOperationException>(() => buffer.Resize(1000)); // pinned: may not move
        }
        buffer.Resize(1000);
        Assert.Equal(1000, buffer.Length);
    }

    [Fact]
    public void NativeBuffer_LargeBuffersPressTheGc_ForgottenOnesAreCollected()
    {
        ulong before = InUse();
        int collections = GC.CollectionCount(2);
        // Up to 12.8 GiB of forgotten 64 MiB buffers held only by small managed objects, over
        // half a second or more (the GC will not collect more often than 20% of its time allows).
        // The reported pressure makes it collect, and the finalizers free them, long before that.
        ulong most = ForgetLargeBuffers();
        Assert.True(GC.CollectionCount(2) > collections, $"no gen-2 collection in 12.8 GiB of native buffers");
        Assert.True(most < 4UL << 30, $"{most >> 20} MiB of forgotten buffers were live at once");
        Assert.Equal(before, InUse());
    }

    [Fact]
    public void Pool_SteadyRentAndDispose_InducesNoCollection()
    {
        // Reporting each 1 MiB buffer to the GC made such a loop force gen-2 collections; the
        // pressure is reported in steps, so a steady working set reports nothing (the pool's
        // first rent mallocs the block it then keeps).
        NativeHeapMemoryPool.Shared.Rent(1 << 20).Dispose();
        long live = GcPressure.Live;
        int collections = GC.CollectionCount(2);
        for (int i = 0; i < 20_000; i++)
        {
            using IMemoryOwner<byte> owner = NativeHeapMemoryPool.Shared.Rent(1 << 20);
            owner.Memory.Span[0] = 1;
        }
        Assert.Equal(collections, GC.CollectionCount(2));
        Assert.Equal(live, GcPressure.Live);
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // no stack slot of the caller keeps the last one alive
    private static ulong ForgetLargeBuffers()
    {
        ulong most = 0;
        for (int i = 0; i < 200; i++)
        {
            var buffer = new NativeBuffer<byte>(64 << 20);
            buffer.Span[0] = 1;
            most = Math.Max(most, Heap.GetInfo().Hblkhd);
            Thread.Sleep(2);
        }
        return most;
    }

    [Fact]
    public void Pool_ConcurrentRentAndDispose_ContentsIntact()
    {
        ulong before = InUse();
        int failures = 0;
        // Dedicated threads, so that when they end their tcaches go back (a pool thread keeps its own).
        var freeQueue = new System.Collections.Concurrent.BlockingCollection<IMemoryOwner<byte>>();
        var freer = new Thread(() =>
        {
            foreach (IMemoryOwner<byte> owner in freeQueue.GetConsumingEnumerable()) owner.Dispose();
        });
        freer.Start();
        var workers = Enumerable.Range(0, 8).Select(t => new Thread(() =>
        {
            var rng = new Random(t);
            var held = new List<(IMemoryOwner<byte> Owner, byte Fill)>();
            for (int i = 0; i < 20_000; i++)
            {
                if (held.Count > 0 && rng.Next(3) == 0)
                {
                    int k = rng.Next(held.Count);
                    var (owner, fill) = held[k];
                    if (owner.Memory.Span.IndexOfAnyExcept(fill) >= 0) Interlocked.Increment(ref failures);
                    held[k] = held[^1];
                    held.RemoveAt(held.Count - 1);
                    // Half of the buffers are freed on another thread than the one that rented them.
                    if (rng.Next(2) == 0) owner.Dispose();
                    else freeQueue.Add(owner);
                }
                else
                {
                    var owner = NativeHeapMemoryPool.Shared.Rent(rng.Next(1, 70_000));
                    byte fill = (byte)rng.Next(256);
                    owner.Memory.Span.Fill(fill);
                    held.Add((owner, fill));
                }
            }
            foreach (var (owner, fill) in held)
            {
                if (owner.Memory.Span.IndexOfAnyExcept(fill) >= 0) Interlocked.Increment(ref failures);
                owner.Dispose();
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        freeQueue.CompleteAdding();
        freer.Join();
        Assert.Equal(0, failures);
        Assert.Equal(before, InUse());
        Heap.Validate();
    }

    [Fact]
    public void BufferWriter_GrowsByRealloc_WrittenAndDetached()
    {
        using var writer = new NativeBufferWriter(4);
        Assert.Equal(4, writer.Capacity);
        var expected = new List<byte>();
        var rng = new Random(3);
        for (int i = 0; i < 5000; i++)
        {
            int n = rng.Next(0, 300);
            Span<byte> span = i % 2 == 0 ? writer.GetSpan(n) : writer.GetMemory(n).Span;
            Assert.True(span.Length >= Math.Max(n, 1), $"asked {n}, got {span.Length}");
            for (int k = 0; k < n; k++) span[k] = (byte)(i + k);
            for (int k = 0; k < n; k++) expected.Add((byte)(i + k));
            writer.Advance(n);
        }
        Assert.Equal(expected.Count, writer.WrittenCount);
        Assert.True(writer.WrittenSpan.SequenceEqual(expected.ToArray()), "WrittenSpan differs");
        Assert.True(writer.WrittenMemory.Span.SequenceEqual(expected.ToArray()), "WrittenMemory differs");
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.Advance(writer.FreeCapacity + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.Advance(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => writer.GetSpan(-1));

        using NativeBuffer<byte> detached = writer.DetachBuffer();
        Assert.Equal(expected.Count, detached.Length);
        Assert.True(detached.Span.SequenceEqual(expected.ToArray()), "detached contents differ");
        nuint usable = Heap.UsableSize(detached.Pointer);
        Assert.True(usable < (nuint)expected.Count + 4096, $"detached block of {expected.Count} bytes still holds {usable}"); // shrunk (a mapped chunk to whole pages)
        Assert.Equal(0, writer.WrittenCount);
        writer.GetSpan(3)[0] = 9;
        writer.Advance(1);
        Assert.Equal(new byte[] { 9 }, writer.WrittenSpan.ToArray());
        writer.Clear();
        Assert.Equal(0, writer.WrittenCount);

        writer.Dispose();
        writer.Dispose();
        Assert.Throws<ObjectDisposedException>(() => writer.GetSpan());
        Assert.Throws<ObjectDisposedException>(() => writer.WrittenCount);
        Assert.Throws<ObjectDisposedException>(() => writer.WrittenSpan.Length);
    }

    [Fact]
    public void SafeHandle_FreedExactlyOnce()
    {
        ulong before = InUse();
        var handle = SafeNativeHeapHandle.Allocate(200_000, zeroed: true);
        Assert.False(handle.IsInvalid);
        Assert.Equal(200_000u, handle.ByteLength);
        Assert.Equal(-1, handle.AsSpan().IndexOfAnyExcept((byte)0));
        handle.Dispose();
        handle.Dispose();
        Assert.True(handle.IsClosed);
        Assert.Throws<ObjectDisposedException>(() => handle.AsSpan().Length);
        Assert.Equal(before, InUse());
        Assert.True(new SafeNativeHeapHandle().IsInvalid);

        // Forgotten: the finalizer frees it.
        static void Forget() => SafeNativeHeapHandle.Allocate(300_000).AsSpan()[0] = 1;
        Forget();
        Assert.Equal(before, InUse());
    }

    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    private static partial nint Pread(SafeFileHandle fd, SafeNativeHeapHandle buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(SafeFileHandle fd, byte* buffer, nuint count);

    [Fact]
    public void Interop_LibcReadsIntoNativeHeapBuffers_SameBytesAsReadAllBytes()
    {
        string path = Path.GetTempFileName();
        try
        {
            var content = new byte[3_000_017];
            new Random(11).NextBytes(content);
            File.WriteAllBytes(path, content);
            byte[] expected = File.ReadAllBytes(path);

            // pread into a SafeNativeHeapHandle, in 64 KiB pieces at their offsets.
            using var handle = SafeNativeHeapHandle.Allocate((nuint)expected.Length);
            using (SafeFileHandle file = File.OpenHandle(path))
            {
                const int piece = 65536;
                using var chunk = SafeNativeHeapHandle.Allocate(piece);
                for (long offset = 0; offset < expected.Length; offset += piece)
                {
                    nint n = Pread(file, chunk, piece, offset);
                    Assert.True(n > 0, $"pread failed: errno {Marshal.GetLastPInvokeError()}");
                    chunk.AsSpan()[..(int)n].CopyTo(handle.AsSpan()[(int)offset..]);
                }
            }
            Assert.True(handle.AsSpan().SequenceEqual(expected));

            // read(2) straight into a NativeBuffer<byte>, whole.
            using var buffer = new NativeBuffer<byte>(expected.Length);
            using (SafeFileHandle file = File.OpenHandle(path))
            {
                int done = 0;
                while (done < expected.Length)
                {
                    nint n = Read(file, buffer.Pointer + done, (nuint)(expected.Length - done));
                    Assert.True(n > 0, $"read failed: errno {Marshal.GetLastPInvokeError()}");
                    done += (int)n;
                }
            }
            Assert.True(buffer.Span.SequenceEqual(expected));
        }
        finally
        {
            File.Delete(path);
        }
    }
}

/// <summary>A real consumer: System.IO.Pipelines with NativeHeap's pool.</summary>
[Trait(Traits.Category, Traits.Allocator)]
public class BuffersPipelineTests
{
    private static ulong InUse() => BuffersTests.InUse();

    /// <summary>System.IO.Pipelines on NativeHeap's pool: 1 GiB from a writer task to a reader task, every byte checked; in-use bytes back where they were.</summary>
    [Fact]
    public void Pipelines_CarryAGigabyte_OnTheNativeHeapPool()
    {
        const long total = 1L << 30;
        static byte At(long position) => (byte)(position * 31 + (position >> 12));
        ulong before = InUse();
        // Inline schedulers and dedicated threads: when they end, their tcaches go back too.
        var pipe = new Pipe(new PipeOptions(pool: NativeHeapMemoryPool.Shared, readerScheduler: PipeScheduler.Inline,
            writerScheduler: PipeScheduler.Inline, pauseWriterThreshold: 1 << 20, resumeWriterThreshold: 1 << 19, useSynchronizationContext: false));
        ulong peak = 0;
        long read = 0;
        Exception? failure = null;

        var writer = new Thread(() =>
        {
            try
            {
                var rng = new Random(5);
                for (long position = 0; position < total;)
                {
                    int n = (int)Math.Min(rng.Next(1, 40_000), total - position);
                    Span<byte> span = pipe.Writer.GetSpan(n);
                    for (int i = 0; i < n; i++) span[i] = At(position + i);
                    pipe.Writer.Advance(n);
                    position += n;
                    pipe.Writer.FlushAsync().AsTask().GetAwaiter().GetResult();
                }
                pipe.Writer.Complete();
            }
            catch (Exception e)
            {
                failure = e;
                pipe.Writer.Complete(e);
            }
        });
        var reader = new Thread(() =>
        {
            try
            {
                while (true)
                {
                    ReadResult result = pipe.Reader.ReadAsync().AsTask().GetAwaiter().GetResult();
                    foreach (ReadOnlyMemory<byte> segment in result.Buffer)
                    {
                        ReadOnlySpan<byte> span = segment.Span;
                        for (int i = 0; i < span.Length; i++)
                        {
                            if (span[i] != At(read + i)) throw new InvalidDataException($"byte {read + i} is {span[i]}, not {At(read + i)}");
                        }
                        read += span.Length;
                    }
                    HeapInfo now = Heap.GetInfo();
                    peak = Math.Max(peak, now.Uordblks + now.Hblkhd);
                    pipe.Reader.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted) break;
                }
                pipe.Reader.Complete();
            }
            catch (Exception e)
            {
                failure ??= e;
                pipe.Reader.Complete(e);
            }
        });
        writer.Start();
        reader.Start();
        writer.Join();
        reader.Join();
        Assert.Null(failure);
        Assert.Equal(total, read);
        Assert.True(peak > before, "the pipe's segments did not come from NativeHeap");
        writer = reader = null!;
        ulong after = InUse();
        Assert.True(before == after, $"in use {before} before, {after} after; {Heap.GetInfo()}");
    }
}
