using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace NativeHeap.AspNetCore;

/// <summary>
/// Kestrel's transport for TCP and Unix-socket endpoints with connection buffers from
/// <see cref="IMemoryPoolFactory{T}"/> (NativeHeap's, once
/// <see cref="Microsoft.Extensions.DependencyInjection.NativeHeapServiceCollectionExtensions.AddNativeHeapMemoryPool"/> ran).
/// </summary>
/// <remarks>
/// Why not Kestrel's own socket transport: in ASP.NET Core 10 it does take its pools from the
/// factory, but it sends a response of several pipe segments with
/// <c>SocketAsyncEventArgs.BufferList</c>, a list of <c>ArraySegment&lt;byte&gt;</c>, and throws
/// "Buffer backed by array was expected" (resetting the connection) for memory that is not a
/// managed array, as NativeHeap's is. This transport sends one segment as it is and copies
/// several into one pooled buffer of up to 64 KiB per send.
/// </remarks>
public sealed class NativeHeapSocketTransportFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    private readonly IMemoryPoolFactory<byte> _pools;

    /// <summary>A transport renting from <paramref name="pools"/>.</summary>
    /// <param name="pools">The factory the listeners' pools come from (owner "kestrel").</param>
    public NativeHeapSocketTransportFactory(IMemoryPoolFactory<byte> pools) => _pools = pools;

    /// <summary>True for the endpoints this transport binds: IP and Unix-domain sockets; Kestrel's own transports take the rest.</summary>
    /// <param name="endpoint">The endpoint Kestrel is about to bind.</param>
    /// <returns>Whether <see cref="BindAsync"/> can bind it.</returns>
    public bool CanBind(EndPoint endpoint) => endpoint is IPEndPoint or UnixDomainSocketEndPoint;

    /// <summary>Binds and listens on <paramref name="endpoint"/>.</summary>
    /// <param name="endpoint">An IP or Unix-domain endpoint (port 0 for an ephemeral port).</param>
    /// <param name="cancellationToken">Unused: binding does not wait.</param>
    /// <returns>The listener, whose <see cref="IConnectionListener.EndPoint"/> is the bound address.</returns>
    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        if (!CanBind(endpoint)) throw new NotSupportedException($"{endpoint.GetType().Name} is not supported by NativeHeap's socket transport.");
        var socket = endpoint is UnixDomainSocketEndPoint
            ? new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endpoint is IPEndPoint ip && ip.Address.Equals(IPAddress.IPv6Any)) socket.DualMode = true;
            socket.Bind(endpoint);
            socket.Listen(512); // Kestrel's default backlog
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            socket.Dispose();
            throw new AddressInUseException(e.Message, e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new(new NativeHeapSocketListener(socket, _pools.Create(new MemoryPoolOptions { Owner = "kestrel" })));
    }
}
