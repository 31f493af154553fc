using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using NativeHeap.AspNetCore;
using NativeHeap.Buffers;

namespace NativeHeap.Tests;

internal static partial class ChildScenarios
{
    internal const string KestrelPoolVariable = "NATIVEHEAP_TEST_KESTREL_POOL";

    /// <summary>
    /// A real Kestrel on a loopback ephemeral port, with AddNativeHeapMemoryPool when
    /// <see cref="KestrelPoolVariable"/> is 1: echoes two batches of POSTs and reports the
    /// NativeHeap pools' rented bytes (their own metric, nativeheap.memory_pool.rented) around each.
    /// "factory-only": NativeHeap's IMemoryPoolFactory alone, with Kestrel's own socket transport.
    /// </summary>
    private static void KestrelPool()
    {
        string mode = Environment.GetEnvironmentVariable(KestrelPoolVariable) ?? "0";
        bool on = mode == "1";
        _ = NativeHeapMemoryPool.Shared.Name; // the meter exists either way: the listener below really listens

        long all = 0, kestrel = 0;
        int instruments = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name != "NativeHeap.MemoryPool" || instrument.Name != "nativeheap.memory_pool.rented") return;
            instruments++;
            l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            all += value;
            foreach (KeyValuePair<string, object?> tag in tags)
                if (tag.Key == "nativeheap.memory_pool.owner" && tag.Value as string == "kestrel") kestrel += value;
        });
        listener.Start();
        (long All, long Kestrel) Read()
        {
            all = kestrel = 0;
            listener.RecordObservableInstruments();
            return (all, kestrel);
        }

        WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders(); // stdout carries only key=value lines
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        if (on) builder.Services.AddNativeHeapMemoryPool();
        if (mode == "factory-only") builder.Services.AddSingleton<IMemoryPoolFactory<byte>, NativeHeapMemoryPoolFactory>();
        WebApplication app = builder.Build();
        app.MapPost("/echo", (HttpContext context) => context.Request.Body.CopyToAsync(context.Response.Body));
        app.MapGet("/pool", (HttpContext context) => context.Features.Get<IMemoryPoolFeature>()?.MemoryPool.GetType().FullName ?? "none");
        app.StartAsync().GetAwaiter().GetResult();
        string url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();

        const int Requests = 20, BodyBytes = 64 * 1024;
        byte[] body = new byte[BodyBytes];
        Random.Shared.NextBytes(body);
        using var client = new HttpClient { BaseAddress = new Uri(url) };
        ChildMain.Report("factory", app.Services.GetRequiredService<IMemoryPoolFactory<byte>>().GetType().FullName!);
        ChildMain.Report("connection_pool", client.GetStringAsync("/pool").GetAwaiter().GetResult());
        ChildMain.Report("instruments", instruments);
        ChildMain.Report("batch_bytes", Requests * BodyBytes);
        var before = Read();
        if (mode == "factory-only")
        {
            try
            {
                using HttpResponseMessage response = client.PostAsync("/echo", new ByteArrayContent(body)).GetAwaiter().GetResult();
                ChildMain.Report("echo", response.Content.ReadAsByteArrayAsync().GetAwaiter().GetResult().AsSpan().SequenceEqual(body) ? "ok" : "differs");
            }
            catch (HttpRequestException e)
            {
                ChildMain.Report("echo", e.GetType().Name);
            }
            ChildMain.Report("kestrel_rented", Read().Kestrel - before.Kestrel);
            app.StopAsync().GetAwaiter().GetResult();
            return;
        }
        for (int batch = 1; batch <= 2; batch++)
        {
            for (int i = 0; i < Requests; i++)
            {
                using HttpResponseMessage response = client.PostAsync("/echo", new ByteArrayContent(body)).GetAwaiter().GetResult();
                byte[] echoed = response.Content.ReadAsByteArrayAsync().GetAwaiter().GetResult();
                if (!echoed.AsSpan().SequenceEqual(body)) throw new InvalidOperationException("echo differs");
            }
            var after = Read();
            ChildMain.Report($"batch{batch}_rented_all", after.All - before.All);
            ChildMain.Report($"batch{batch}_rented_kestrel", after.Kestrel - before.Kestrel);
            before = after;
        }

        NativeHeapMemoryPoolFactory? factory = app.Services.GetService<NativeHeapMemoryPoolFactory>();
        ChildMain.Report("kestrel_pool_before_stop", factory?.GetStatistics("kestrel") is not null);
        app.StopAsync().GetAwaiter().GetResult();
        ChildMain.Report("kestrel_pool_after_stop", factory?.GetStatistics("kestrel") is not null);
        ((IDisposable)app).Dispose();
    }

    /// <summary>
    /// The line before the web host is configured (the generic host, ConfigureServices first):
    /// UseKestrel's factory registration then comes last, and Kestrel's connections must still
    /// rent from NativeHeap. Reports the connection's pool and the kestrel pool's rented bytes.
    /// </summary>
    private static void KestrelPoolRegisteredEarly()
    {
        IHost host = Host.CreateDefaultBuilder([])
            .ConfigureLogging(logging => logging.ClearProviders())
            .ConfigureServices(services => services.AddNativeHeapMemoryPool())
            .ConfigureWebHostDefaults(web => web.UseUrls("http://127.0.0.1:0").Configure(app =>
                app.Run(context => context.Response.WriteAsync(context.Features.Get<IMemoryPoolFeature>()?.MemoryPool.GetType().FullName ?? "none"))))
            .Build();
        host.Start();
        string url = host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        using var client = new HttpClient { BaseAddress = new Uri(url) };
        ChildMain.Report("factory", host.Services.GetRequiredService<IMemoryPoolFactory<byte>>().GetType().FullName!);
        ChildMain.Report("connection_pool", client.GetStringAsync("/").GetAwaiter().GetResult());
        ChildMain.Report("kestrel_rented", host.Services.GetRequiredService<NativeHeapMemoryPoolFactory>().GetStatistics("kestrel")?.RentedBytes ?? -1);
        host.StopAsync().GetAwaiter().GetResult();
        host.Dispose();
    }
}
