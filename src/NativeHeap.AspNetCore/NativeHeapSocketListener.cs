using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace NativeHeap.AspNetCore;

/// <summary>A listening socket: accepts connections whose pipes rent from the listener's pool, which it disposes with itself.</summary>
internal sealed class NativeHeapSocketListener(Socket socket, MemoryPool<byte> pool) : IConnectionListener
{
    private readonly IOQueue[] _ioQueues = [.. Enumerable.Range(0, IOQueue.DefaultCount).Select(_ => new IOQueue())];
    private long _accepted;
    private int _disposed;

    public EndPoint EndPoint { get; } = socket.LocalEndPoint!;

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            try
            {
                Socket accepted = await socket.AcceptAsync(cancellationToken).ConfigureAwait(false);
                if (accepted.LocalEndPoint is IPEndPoint) accepted.NoDelay = true; // as Kestrel's transport: responses are not held for Nagle
                var connection = new NativeHeapSocketConnection(accepted, pool, _ioQueues[_accepted++ % _ioQueues.Length]);
                connection.Start();
                return connection;
            }
            catch (ObjectDisposedException)
            {
                return null; // unbound
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.OperationAborted)
            {
                return null; // unbound
            }
            catch (SocketException)
            {
                // The peer reset before the accept completed: take the next one, as Kestrel does.
            }
        }
    }

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        socket.Dispose();
        return default;
    }

    public ValueTask DisposeAsync()
    {
        socket.Dispose();
        // Connections still open keep their rented buffers valid: the pool frees them at their Dispose.
        if (Interlocked.Exchange(ref _disposed, 1) == 0) pool.Dispose();
        return default;
    }
}
