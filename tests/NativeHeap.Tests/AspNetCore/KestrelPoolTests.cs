namespace NativeHeap.Tests;

/// <summary>
/// NativeHeap.AspNetCore: <c>builder.Services.AddNativeHeapMemoryPool()</c> makes a real Kestrel's
/// connections rent from NativeHeap (the pool's own rented metric moves with the bytes
/// served), and without it they do not. Child processes: the pools' metrics are process-wide.
/// </summary>
[Trait(Traits.Category, "AspNetCore")]
public class KestrelPoolTests
{
    [Fact]
    public void AddNativeHeapMemoryPool_KestrelRentsFromNativeHeap_AsRequestsArrive()
    {
        var r = Child.Run("KestrelPool", Environment());
        Assert.Equal("NativeHeap.AspNetCore.NativeHeapMemoryPoolFactory", r["factory"]);
        Assert.Equal("NativeHeap.AspNetCore.NativeHeapMemoryPoolFactory+Lease", r["connection_pool"]);
        Assert.Equal("1", r["instruments"]);
        long batch = long.Parse(r["batch_bytes"]);
        for (int i = 1; i <= 2; i++)
        {
            // Every request byte Kestrel received landed in a buffer it rented from the pool.
            long kestrel = long.Parse(r[$"batch{i}_rented_kestrel"]);
            Assert.True(kestrel >= batch, $"batch {i}: the kestrel pool rented {kestrel} B for {batch} B of requests");
            Assert.True(long.Parse(r[$"batch{i}_rented_all"]) >= kestrel);
        }
        Assert.Equal("True", r["kestrel_pool_before_stop"]);
        Assert.Equal("False", r["kestrel_pool_after_stop"]); // Kestrel disposed its leases: the pool went with them
    }

    [Fact]
    public void WithoutTheLine_KestrelKeepsItsOwnPool_AndNativeHeapsPoolsDoNotMove()
    {
        var r = Child.Run("KestrelPool", Environment(off: true));
        Assert.DoesNotContain("NativeHeap", r["factory"]);
        Assert.DoesNotContain("NativeHeap", r["connection_pool"]);
        Assert.Equal("1", r["instruments"]); // the listener was live: a zero below is a measurement
        for (int i = 1; i <= 2; i++)
        {
            Assert.Equal("0", r[$"batch{i}_rented_all"]);
            Assert.Equal("0", r[$"batch{i}_rented_kestrel"]);
        }
    }

    [Fact]
    public void TheLineBeforeUseKestrel_StillPutsKestrelsConnectionsOnNativeHeap()
    {
        var r = Child.Run("KestrelPoolRegisteredEarly", Environment());
        Assert.DoesNotContain("NativeHeap", r["factory"]); // UseKestrel's registration came last and wins the factory...
        Assert.Equal("NativeHeap.AspNetCore.NativeHeapMemoryPoolFactory+Lease", r["connection_pool"]); // ...not the connections
        Assert.True(long.Parse(r["kestrel_rented"]) > 0);
    }

    /// <summary>
    /// Why the package carries a transport: Kestrel's own socket transport does take its pool from
    /// the factory, but a response of several segments goes out as a list of arrays, and on
    /// NativeHeap memory it resets the connection. Should a later ASP.NET Core send native memory,
    /// this fails and the transport can go.
    /// </summary>
    [Fact]
    public void TheFactoryAlone_ReachesKestrelsSocketTransport_WhichResetsMultiSegmentResponses()
    {
        var r = Child.Run("KestrelPool", (ChildScenarios.KestrelPoolVariable, "factory-only"), ("DOTNET_TieredCompilation", "1"), (ChildMain.NoPrecompile, "1"));
        Assert.Equal("NativeHeap.AspNetCore.NativeHeapMemoryPoolFactory+Lease", r["connection_pool"]); // Kestrel's SocketConnection got the factory's pool
        Assert.True(long.Parse(r["kestrel_rented"]) > 0, "Kestrel's socket transport rented from the NativeHeap pool");
        Assert.Equal("HttpRequestException", r["echo"]);
    }

    // Tiered JIT and no precompiling: ASP.NET Core is large and these tests measure no timing.
    private static (string, string)[] Environment(bool off = false) =>
    [
        (ChildScenarios.KestrelPoolVariable, off ? "0" : "1"),
        ("DOTNET_TieredCompilation", "1"),
        (ChildMain.NoPrecompile, "1"),
    ];
}
