using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace NativeHeap.AspNetCore;

/// <summary>
/// One accepted socket as Kestrel sees it: a duplex pipe whose buffers come from the listener's
/// pool, a receive loop filling the input and a send loop draining the output, modelled on
/// Kestrel's SocketConnection.
/// </summary>
internal sealed class NativeHeapSocketConnection : ConnectionContext, IMemoryPoolFeature, IConnectionIdFeature,
    IConnectionTransportFeature, IConnectionItemsFeature, IConnectionLifetimeFeature, IConnectionEndPointFeature
{
    private const int MaxCoalescedBytes = 64 * 1024;       // one send of several segments: at most this much copied
    private const long MaxReadBufferBytes = 1024 * 1024;   // Kestrel's defaults (KestrelServerLimits)
    private const long MaxWriteBufferBytes = 64 * 1024;

    private static long s_lastId;

    private readonly Socket _socket;
    private readonly SocketOperation _receiver, _sender;
    private readonly Pipe _input, _output;
    private readonly CancellationTokenSource _closed = new();
    private readonly Lock _shutdownLock = new();
    private readonly TaskCompletionSource _closedFired = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Exception? _shutdownReason;
    private Task _receiving = Task.CompletedTask, _sending = Task.CompletedTask;

    internal NativeHeapSocketConnection(Socket socket, MemoryPool<byte> pool, IOQueue ioQueue)
    {
        _socket = socket;
        // As Kestrel's transport: receive completions on the connection's I/O queue, sends inline
        // (the send loop already runs there), the application's side on the thread pool.
        _receiver = new SocketOperation(ioQueue);
        _sender = new SocketOperation(PipeScheduler.Inline);
        MemoryPool = pool;
        LocalEndPoint = socket.LocalEndPoint;
        RemoteEndPoint = socket.RemoteEndPoint;
        ConnectionClosed = _closed.Token;
        ConnectionId = "nh" + Interlocked.Increment(ref s_lastId).ToString("x");
        _input = new Pipe(new PipeOptions(pool, PipeScheduler.ThreadPool, ioQueue,
            MaxReadBufferBytes, MaxReadBufferBytes / 2, useSynchronizationContext: false));
        _output = new Pipe(new PipeOptions(pool, ioQueue, PipeScheduler.ThreadPool,
            MaxWriteBufferBytes, MaxWriteBufferBytes / 2, useSynchronizationContext: false));
        Transport = new DuplexPipe(_input.Reader, _output.Writer);
        Features = new FeatureCollection();
        Features.Set<IMemoryPoolFeature>(this);
        Features.Set<IConnectionIdFeature>(this);
        Features.Set<IConnectionTransportFeature>(this);
        Features.Set<IConnectionItemsFeature>(this);
        Features.Set<IConnectionLifetimeFeature>(this);
        Features.Set<IConnectionEndPointFeature>(this);
    }

    public MemoryPool<byte> MemoryPool { get; }
    public override string ConnectionId { get; set; }
    public override IFeatureCollection Features { get; }
    public override IDictionary<object, object?> Items { get; set; } = new Dictionary<object, object?>();
    public override IDuplexPipe Transport { get; set; }
    public override CancellationToken ConnectionClosed { get; set; }
    public override EndPoint? LocalEndPoint { get; set; }
    public override EndPoint? RemoteEndPoint { get; set; }

    internal void Start()
    {
        _receiving = ReceiveLoop();
        _sending = SendLoop();
    }

    public override void Abort(ConnectionAbortedException abortReason)
    {
        Shutdown(abortReason);
        _output.Reader.CancelPendingRead();
    }

    public override async ValueTask DisposeAsync()
    {
        Transport.Input.Complete();
        Transport.Output.Complete();
        await _receiving.ConfigureAwait(false);
        await _sending.ConfigureAwait(false);
        _receiver.Dispose();
        _sender.Dispose();
        _closed.Dispose();
    }

    private async Task ReceiveLoop()
    {
        Exception? error = null;
        PipeWriter input = _input.Writer;
        try
        {
            while (_shutdownReason == null)
            {
                // Wait for data with no buffer: an idle connection holds no pool memory.
                await _receiver.ReceiveAsync(_socket, Memory<byte>.Empty);
                Memory<byte> memory = input.GetMemory(2048);
                int received = await _receiver.ReceiveAsync(_socket, memory);
                if (received == 0) break; // FIN
                input.Advance(received);
                FlushResult flush = await input.FlushAsync();
                if (flush.IsCompleted || flush.IsCanceled) break;
            }
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.Shutdown)
        {
            error = new ConnectionResetException(e.Message, e);
        }
        catch (Exception e)
        {
            error = _shutdownReason == null ? e : null; // after a shutdown, the socket's errors are its consequence
        }
        finally
        {
            input.Complete(_shutdownReason ?? error);
            // Off this thread, as Kestrel's transport: ConnectionClosed's callbacks may block.
            ThreadPool.UnsafeQueueUserWorkItem(static c =>
            {
                try { c._closed.Cancel(); } catch (ObjectDisposedException) { }
                c._closedFired.TrySetResult();
            }, this, preferLocal: false);
            await _closedFired.Task.ConfigureAwait(false);
        }
    }

    private async Task SendLoop()
    {
        Exception? shutdownReason = null, unexpected = null;
        PipeReader output = _output.Reader;
        try
        {
            while (true)
            {
                ReadResult result = await output.ReadAsync();
                if (result.IsCanceled) break;
                ReadOnlySequence<byte> buffer = result.Buffer;
                if (buffer.IsSingleSegment) await SendAll(buffer.First);
                else if (!buffer.IsEmpty) await SendCoalesced(buffer);
                output.AdvanceTo(buffer.End);
                if (result.IsCompleted) break;
            }
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.Shutdown or SocketError.ConnectionAborted or SocketError.OperationAborted)
        {
            shutdownReason = e;
        }
        catch (ObjectDisposedException e)
        {
            shutdownReason = e;
        }
        catch (Exception e)
        {
            shutdownReason = unexpected = e;
        }
        finally
        {
            Shutdown(shutdownReason);
            output.Complete(unexpected);
            _input.Writer.CancelPendingFlush();
        }
    }

    private async ValueTask SendAll(ReadOnlyMemory<byte> memory)
    {
        while (!memory.IsEmpty)
        {
            int sent = await _sender.SendAsync(_socket, memory);
            memory = memory[sent..];
        }
    }

    /// <summary>Several segments: copied into one pooled buffer per send (one syscall), since the socket's gather list takes only arrays.</summary>
    private async ValueTask SendCoalesced(ReadOnlySequence<byte> buffer)
    {
        using IMemoryOwner<byte> staging = MemoryPool.Rent((int)Math.Min(buffer.Length, MaxCoalescedBytes));
        while (!buffer.IsEmpty)
        {
            int length = (int)Math.Min(buffer.Length, staging.Memory.Length);
            buffer.Slice(0, length).CopyTo(staging.Memory.Span);
            await SendAll(staging.Memory[..length]);
            buffer = buffer.Slice(length);
        }
    }

    private void Shutdown(Exception? reason)
    {
        lock (_shutdownLock)
        {
            if (_shutdownReason != null) return;
            _shutdownReason = reason ?? new ConnectionAbortedException("The socket transport's send loop completed gracefully.");
            if (reason != null)
            {
                _socket.Close(0); // an error: reset, as Kestrel's transport does
                return;
            }
            try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { }
            _socket.Dispose();
        }
    }

    string IConnectionIdFeature.ConnectionId { get => ConnectionId; set => ConnectionId = value; }
    IDuplexPipe IConnectionTransportFeature.Transport { get => Transport; set => Transport = value; }
    IDictionary<object, object?> IConnectionItemsFeature.Items { get => Items; set => Items = value; }
    CancellationToken IConnectionLifetimeFeature.ConnectionClosed { get => ConnectionClosed; set => ConnectionClosed = value; }
    EndPoint? IConnectionEndPointFeature.LocalEndPoint { get => LocalEndPoint; set => LocalEndPoint = value; }
    EndPoint? IConnectionEndPointFeature.RemoteEndPoint { get => RemoteEndPoint; set => RemoteEndPoint = value; }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }
}
