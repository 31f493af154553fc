using System.Diagnostics;
using NativeHeap.Diagnostics;

namespace NativeHeap.Tests;

/// <summary>
/// The heap's meter (<see cref="HeapMetrics"/>): its figures against what a child process did,
/// and the real dotnet-counters reading them, with the pool's, from a running process.
/// </summary>
public class HeapMetricsTests
{
    /// <summary>dotnet-counters as NuGet serves it here (/work/.library/env/packages/nuget.tsv).</summary>
    private const string DotnetCountersVersion = "10.0.750501";

    private static readonly string[] Locations = ["tcache", "fastbins", "bins", "top"];

    [Fact]
    public void Metrics_MoveWithAllocationsFreesThreadsAndTrim()
    {
        Dictionary<string, string> r = Child.Run(nameof(ChildScenarios.HeapMetricsSteps));
        long V(string key) => long.Parse(r.TryGetValue(key, out string? v) ? v : throw new KeyNotFoundException($"{key} not reported:\n{string.Join('\n', r)}"));

        foreach (string step in new[] { "start", "allocated", "tcached", "threads", "trimmed" })
        {
            // Every byte mapped is in use or free somewhere, by one location each.
            long free = Locations.Sum(l => V($"{step}.nativeheap.heap.free.{l}"));
            Assert.Equal(V($"{step}.nativeheap.heap.mapped"), V($"{step}.nativeheap.heap.used") + free);
            Assert.All(Locations, l => Assert.True(V($"{step}.nativeheap.heap.free.{l}") >= 0, $"{step}: free.{l} negative"));
        }
        Assert.True(V("allocated.nativeheap.heap.used") - V("start.nativeheap.heap.used") >= 64 * 65536, "4 MiB allocated, used did not grow by it");
        Assert.True(V("tcached.nativeheap.heap.free.tcache") - V("allocated.nativeheap.heap.free.tcache") >= 7 * 32, "7 blocks freed, the tcache did not grow by them");
        Assert.True(V("threads.nativeheap.heap.threads") >= V("tcached.nativeheap.heap.threads") + 3, "3 more threads with a tcache not counted");
        Assert.Equal(V("threads.expected_arenas"), V("threads.nativeheap.heap.arenas"));
        Assert.True(V("threads.nativeheap.heap.used") - V("trimmed.nativeheap.heap.used") >= 63 * 65536, "4 MiB freed, used did not fall by it");
        Assert.True(V("trimmed.nativeheap.heap.released") - V("threads.nativeheap.heap.released") >= 3 << 20, "4 MiB freed and trimmed, released did not grow by 3 MiB");
        Assert.True(V("start.nativeheap.heap.released") >= 0);
    }

    [Fact]
    public void DotnetCounters_ShowsTheHeapsAndThePoolsInstruments_OfARunningProcess()
    {
        using var temp = new TempDirectory("nativeheap-counters-");
        string counters = DotnetTool.Install("dotnet-counters", "dotnet-counters", Path.Combine(temp.Path, "tool"), temp.Path,
            "--version", DotnetCountersVersion);

        var psi = new ProcessStartInfo(Environment.ProcessPath!)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (string a in (string[])["exec", typeof(ChildMain).Assembly.Location, "child", nameof(ChildScenarios.HeapMetricsLoad)]) psi.ArgumentList.Add(a);
        psi.Environment.Remove(Tunables.Variable);
        using Process child = Process.Start(psi)!;
        string csv = Path.Combine(temp.Path, "counters.csv");
        try
        {
            Assert.Equal("ready", child.StandardOutput.ReadLine());
            var collect = Child.RunProgram(counters,
                ["collect", "--process-id", child.Id.ToString(), "--counters", $"{HeapMetrics.MeterName},NativeHeap.MemoryPool",
                 "--format", "csv", "--refresh-interval", "1", "--duration", "00:00:00:03", "-o", csv],
                DotnetTool.Environment, temp.Path, timeoutSeconds: 60);
            Assert.True(collect.ExitCode == 0, $"dotnet-counters exited {collect.ExitCode}:\n{collect.Output}\n{collect.Error}");
        }
        finally
        {
            child.StandardInput.Close();
            if (!child.WaitForExit(30_000)) child.Kill();
        }
        Assert.Equal(0, child.ExitCode);
        string text = File.ReadAllText(csv);
        foreach (string instrument in (string[])["used", "free", "mapped", "released", "arenas", "threads"])
            Assert.Contains($"nativeheap.heap.{instrument}", text);
        foreach (string location in Locations) Assert.Contains($"{HeapMetrics.LocationTag}={location}", text);
        Assert.Contains("nativeheap.memory_pool.rented", text);
        // The load keeps allocating: used is read more than once, and not as zero.
        string[] used = text.Split('\n').Where(l => l.Contains("nativeheap.heap.used")).ToArray();
        Assert.True(used.Length >= 2, $"nativeheap.heap.used read {used.Length} times:\n{text}");
        Assert.All(used, l => Assert.True(double.Parse(l.Split(',')[^1], System.Globalization.CultureInfo.InvariantCulture) > 0, l));
    }
}
