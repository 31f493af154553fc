using System.IO.Compression;
using System.Text;
using System.Text.Json;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// Who pins it: `nativeheap record` captures each allocation's stack, and explain, map and the
/// pprof output name the code that allocated the chunks that pin free memory, for a C program
/// built without frame pointers (native-tests' pinning_fixture) and for a .NET method that calls
/// NativeMemory.Alloc (named through the runtime's perf map).
/// </summary>
public class AllocationSiteTests(AllocationSiteTests.FixtureTrace fixture) : IClassFixture<AllocationSiteTests.FixtureTrace>
{
    /// <summary>pinning_fixture recorded once for the tests of this class.</summary>
    public sealed class FixtureTrace : IDisposable
    {
        private readonly TempDirectory _dir;

        public FixtureTrace() => (Trace, _dir) = Record(NativeTests.Program("pinning_fixture"), []);

        public string Trace { get; }

        public void Dispose() => _dir.Dispose();
    }

    /// <summary>Record a program with the tool; its trace (the one process's).</summary>
    private static (string Trace, TempDirectory Dir) Record(string program, string[] args)
    {
        var dir = new TempDirectory("nativeheap-sites-");
        ProcessResult r = Cli.Run(["record", "-o", Path.Combine(dir.Path, "t-%p.trace"), "--", program, .. args]);
        Assert.True(r.ExitCode == 0, $"record exited {r.ExitCode}:\n{r.Output}\n{r.Error}");
        string[] traces = Directory.GetFiles(dir.Path, "t-*.trace");
        Assert.True(traces.Length >= 1, $"no trace in {dir.Path}:\n{r.Error}");
        // The program's own process: the trace with the most lines (a dotnet host may start others).
        string trace = traces.OrderByDescending(t => TraceFile.Load(t).Length).First();
        return (trace, dir);
    }

    /// <summary>The line of pinning_fixture.c marked SITE.</summary>
    private static int SiteLine()
    {
        string[] lines = File.ReadAllLines(Path.Combine(NativeTests.RepoRoot, "native-tests", "src", "pinning_fixture.c"));
        return Array.FindIndex(lines, l => l.Contains("/* SITE */", StringComparison.Ordinal)) + 1;
    }

    private static JsonElement ExplainJson(string trace, params string[] more)
    {
        ProcessResult r = Cli.Run(["explain", trace, "--at", "exit", "--json", .. more]);
        Assert.True(r.ExitCode == 0, $"explain exited {r.ExitCode}:\n{r.Output}\n{r.Error}");
        return Assert.Single(JsonDocument.Parse(r.Output).RootElement.GetProperty("checkpoints").EnumerateArray());
    }

    [Fact]
    public void Explain_NamesTheFunctionAndLineThatAllocatedEachPinningChunk_WithItsStack()
    {
        JsonElement cp = ExplainJson(fixture.Trace);
        string expected = $"remember_setting {Path.Combine(NativeTests.RepoRoot, "native-tests", "src", "pinning_fixture.c")}:{SiteLine()}";
        JsonElement[] pins = [.. cp.GetProperty("pinned_by").EnumerateArray()];
        Assert.NotEmpty(pins);
        foreach (JsonElement pin in pins)
        {
            Assert.EndsWith($"pinning_fixture.c:{SiteLine()}", pin.GetProperty("site").GetString());
            Assert.StartsWith("remember_setting ", pin.GetProperty("site").GetString());
            string[] functions = [.. pin.GetProperty("stack").EnumerateArray().Select(f => f.GetProperty("function").GetString() ?? "?")];
            // The site, its callers in order; the outermost frames are libc's start and _start.
            int at = Array.IndexOf(functions, "remember_setting");
            Assert.True(at >= 0 && functions[at + 1] == "load_config" && functions[at + 2] == "main", string.Join(" < ", functions));
            JsonElement site = pin.GetProperty("stack")[at];
            Assert.Equal(SiteLine(), site.GetProperty("line").GetInt32());
            Assert.EndsWith("pinning_fixture", site.GetProperty("module").GetString());
        }
        // The two tables: all the pinned bytes are remember_setting's, and its 200 settings are in use.
        JsonElement pinning = Assert.Single(cp.GetProperty("sites_pinning").EnumerateArray());
        Assert.Equal(expected, pinning.GetProperty("site").GetString());
        Assert.Equal(pins.Sum(p => p.GetProperty("frees_bytes").GetInt64()), pinning.GetProperty("bytes").GetInt64());
        JsonElement inUse = cp.GetProperty("sites_in_use").EnumerateArray().Single(s => s.GetProperty("site").GetString() == expected);
        Assert.Equal(200, inUse.GetProperty("chunks").GetInt32());
        Assert.Equal(200 * 96, inUse.GetProperty("bytes").GetInt64()); // malloc(80): a 96-byte chunk each

        ProcessResult text = Cli.Run(["explain", fixture.Trace, "--at", "exit"]);
        Assert.True(text.ExitCode == 0, text.Error);
        Assert.Contains($"allocated at {expected}:", text.Output);
        Assert.Contains("pinned free memory by allocation site", text.Output);
        Assert.Contains("in use by allocation site", text.Output);
    }

    [Fact]
    public void Explain_Wrapper_MovesTheSiteToItsCaller()
    {
        JsonElement cp = ExplainJson(fixture.Trace, "--wrapper", "remember_setting");
        JsonElement pinning = Assert.Single(cp.GetProperty("sites_pinning").EnumerateArray());
        Assert.StartsWith("load_config ", pinning.GetProperty("site").GetString());
    }

    [Fact]
    public void ExplainPprof_AndMap_CarryTheSiteAndStack()
    {
        using var temp = new TempDirectory("nativeheap-pprof-");
        string profile = Path.Combine(temp.Path, "heap.pb.gz");
        ProcessResult r = Cli.Run(["explain", fixture.Trace, "--at", "exit", "--format", "pprof", "--out", profile]);
        Assert.True(r.ExitCode == 0, $"explain --format pprof exited {r.ExitCode}:\n{r.Output}\n{r.Error}");
        using (var gzip = new GZipStream(File.OpenRead(profile), CompressionMode.Decompress))
        using (var raw = new MemoryStream())
        {
            gzip.CopyTo(raw);
            string strings = Encoding.UTF8.GetString(raw.ToArray());
            foreach (string s in (string[])["pinned_space", "inuse_space", "free_resident_space", "remember_setting", "load_config", "pinning_fixture.c"])
                Assert.Contains(s, strings);
        }

        string map = Path.Combine(temp.Path, "map.html");
        r = Cli.Run(["map", fixture.Trace, "--at", "exit", "--out", map]);
        Assert.True(r.ExitCode == 0, $"map exited {r.ExitCode}:\n{r.Output}\n{r.Error}");
        string html = File.ReadAllText(map);
        Assert.Contains($"at remember_setting ", html); // the pinning chunks' labels
        Assert.Contains("allocated by:\\n> remember_setting", html); // the hover's stack, site marked
        Assert.Contains("load_config", html);
    }

    [Fact]
    public void Explain_NamesTheManagedMethodThatCalledNativeMemoryAlloc()
    {
        var (trace, dir) = Record(Environment.ProcessPath!, ["exec", typeof(Child).Assembly.Location, "child", nameof(ChildScenarios.NativeMemoryPinning)]);
        using (dir)
        {
            JsonElement cp = ExplainJson(trace);
            string[] sites = [.. cp.GetProperty("pinned_by").EnumerateArray().Select(p => p.TryGetProperty("site", out JsonElement s) ? s.GetString()! : "")];
            Assert.Contains(sites, s => s.Contains("ChildScenarios::RememberSetting", StringComparison.Ordinal) || s.Contains("ChildScenarios.RememberSetting", StringComparison.Ordinal));
        }
    }
}
