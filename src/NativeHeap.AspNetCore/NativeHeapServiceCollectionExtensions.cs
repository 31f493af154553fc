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
    /// <see cref="NativeHeapSocketTransportFactory"/>). Kestrel's connections use NativeHeap
    /// wherever the line is; other components that ask for <see cref="IMemoryPoolFactory{T}"/>
    /// get the last registration, and <c>UseKestrel</c> registers its own: call this after the web
    /// host is set up, as <c>builder.Services.AddNativeHeapMemoryPool()</c> after
    /// <c>WebApplication.CreateBuilder</c> does.
    /// </remarks>
    /// <param name="services">The application's services.</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    public static IServiceCollection AddNativeHeapMemoryPool(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddSingleton<NativeHeapMemoryPoolFactory>();
        services.AddSingleton<IMemoryPoolFactory<byte>>(sp => sp.GetRequiredService<NativeHeapMemoryPoolFactory>());
        // Kestrel tries the transports registered last first: ours takes IP and Unix sockets. It is
        // given NativeHeap's factory itself, so that Kestrel's connections rent from NativeHeap
        // even where UseKestrel's factory registration comes after this one.
        services.AddSingleton<IConnectionListenerFactory>(sp => new NativeHeapSocketTransportFactory(sp.GetRequiredService<NativeHeapMemoryPoolFactory>()));
        return services;
    }
}
