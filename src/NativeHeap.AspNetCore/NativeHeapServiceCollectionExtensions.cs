using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using NativeHeap.AspNetCore;

// In DI's namespace, as ASP.NET Core's own Add* methods: no using needed at the call site.
namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers NativeHeap's memory pool with ASP.NET Core.</summary>
public static class NativeHeapServiceCollectionExtensions
{
    /// <summary>
    /// Makes Kestrel rent its connection buffers from NativeHeap: registers a
    /// <see cref="NativeHeapMemoryPoolFactory"/> as the <see cref="IMemoryPoolFactory{T}"/> of bytes
    /// and <see cref="NativeHeapSocketTransportFactory"/> as Kestrel's transport for IP and Unix sockets.
    /// </summary>
    /// <remarks>
    /// The factory alone does not do: Kestrel's own socket transport takes its pools from it but
    /// sends multi-segment responses as a list of arrays, and fails on native memory (see
    /// <see cref="NativeHeapSocketTransportFactory"/>). <c>UseKestrel</c> registers its factory
    /// with <c>AddSingleton</c> and the container resolves the last registration: call this after
    /// the web host is set up, as <c>builder.Services.AddNativeHeapMemoryPool()</c> after
    /// <c>WebApplication.CreateBuilder</c> does.
    /// </remarks>
    /// <param name="services">The application's services.</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    public static IServiceCollection AddNativeHeapMemoryPool(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddSingleton<NativeHeapMemoryPoolFactory>();
        services.AddSingleton<IMemoryPoolFactory<byte>>(sp => sp.GetRequiredService<NativeHeapMemoryPoolFactory>());
        // Kestrel tries the transports registered last first: ours takes IP and Unix sockets.
        services.AddSingleton<IConnectionListenerFactory, NativeHeapSocketTransportFactory>();
        return services;
    }
}
