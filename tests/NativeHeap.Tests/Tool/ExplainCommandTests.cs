using System.Text.Json;

namespace NativeHeap.Tests;

/// <summary>
/// nativeheap explain, map and record, run as a user runs them: the scenarios explained as
/// glibc's behaviour says they must be (checked from the JSON), the pictures written, a
/// threaded program recorded and explained, and every bad input a clear error.
/// </summary>
public class ExplainCommandTests
{
    private const long MiB = 1 << 20;

    private static JsonElement ExplainJson(string trace, params string[] more)
    {
        var r = Cli.Run(["explain", trace, "--json", .. more]);
        Assert.True(r.ExitCode == 0, r.Output + r.Error);
        return JsonDocument.Parse(r.Output).RootElement;
    }

    private static JsonElement At(JsonElement doc, string name) =>
        doc.GetProperty("checkpoints").EnumerateArray().Single(c => c.GetProperty("name").GetString() == name);

    private static long Saved(JsonElement checkpoint, string settingPart) =>
        checkpoint.GetProperty("what_if").EnumerateArray().Single(w => w.GetProperty("setting").GetString()!.Contains(settingPart)).GetProperty("bytes_saved").GetInt64();

    /// <summary>Every checkpoint's named parts add up to its statm figure within 1%.</summary>
    private static void AssertAddsUp(JsonElement doc)
    {
        foreach (JsonElement c in doc.GetProperty("checkpoints").EnumerateArray())
        {
            long anon = c.GetProperty("resident_anon_bytes").GetInt64();
            long sum = c.GetProperty("breakdown").EnumerateObject().Sum(p => p.Value.GetInt64());
            Assert.True(Math.Abs(sum - anon) <= anon / 100, $"{c.GetProperty("name")}: parts {sum}, statm {anon}");
        }
    }

    [Fact]
    public void Seed002_SevenTcacheChunksPinIt_TcacheOffAndTrimGiveItBack()
    {
        JsonElement doc = ExplainJson("seed-002");
        AssertAddsUp(doc);
        Assert.Equal("glibc-2.36", doc.GetProperty("profile").GetString());
        foreach (string name in new[] { "after-frees", "after-malloc-2000-free" })
        {
            JsonElement c = At(doc, name);
            JsonElement[] pins = [.. c.GetProperty("pinned_by").EnumerateArray()];
            Assert.Equal(7, pins.Length);
            Assert.All(pins, p => Assert.Equal("cached in a tcache", p.GetProperty("state").GetString()));
            Assert.All(pins, p => Assert.Equal(32, p.GetProperty("chunk_size").GetInt64()));
            Assert.All(pins, p => Assert.True(p.GetProperty("trace_line").GetInt32() > 0)); // named by the line that allocated it
            Assert.Equal(0, pins[0].GetProperty("above").GetInt32()); // the highest right below top
            Assert.InRange(pins.Max(p => p.GetProperty("pinned_bytes").GetInt64()), 200 * MiB, 202 * MiB);
            long trim = Saved(c, "malloc_trim(0)");
            Assert.InRange(trim, 200 * MiB, 202 * MiB);
            long estimate = c.GetProperty("trim_estimate_bytes").GetInt64();
            Assert.True(Math.Abs(estimate - trim) <= trim / 50, $"{name}: estimated {estimate}, a replay with malloc_trim(0) saved {trim}");
        }
        // Before malloc(2000) consolidates, tcache_count=0 saves nothing yet; after it, everything.
        Assert.InRange(Saved(At(doc, "after-frees"), "tcache_count=0"), -MiB, MiB);
        Assert.InRange(Saved(At(doc, "after-malloc-2000-free"), "tcache_count=0"), 200 * MiB, 202 * MiB);
        Assert.InRange(Saved(At(doc, "after-malloc-2000-free"), "NativeHeap's default profile"), 199 * MiB, 202 * MiB);
    }

    [Fact]
    public void Seed002_Text_SaysItInWords()
    {
        var r = Cli.Run(["explain", "seed-002", "--at", "after-malloc-2000-free"]);
        Assert.True(r.ExitCode == 0, r.Output + r.Error);
        Assert.Contains("checkpoint after-malloc-2000-free (line 24009)", r.Output);
        Assert.Contains("7 live chunks (7 x 32 B cached in a tcache)", r.Output);
        Assert.Contains("right below top", r.Output);
        Assert.Matches(@"saves +201\.\d MiB +GLIBC_TUNABLES=glibc\.malloc\.tcache_count=0", r.Output);
        Assert.Matches(@"saves +201\.\d MiB +call malloc_trim\(0\) here", r.Output);
        Assert.DoesNotContain("checkpoint after-frees", r.Output);
    }

    [Fact]
    public void TheOtherScenarios_ExplainedAsTheirStoriesSay()
    {
        // pinned-top: one live block above 2000 freed ones; trimming returns them, the tcache is not the cause.
        JsonElement doc = ExplainJson("pinned-top", "--at", "after-frees-top-pinned");
        AssertAddsUp(doc);
        JsonElement c = At(doc, "after-frees-top-pinned");
        JsonElement pin = c.GetProperty("pinned_by").EnumerateArray().OrderByDescending(p => p.GetProperty("frees_bytes").GetInt64()).First();
        Assert.Equal("in use", pin.GetProperty("state").GetString());
        Assert.InRange(pin.GetProperty("pinned_bytes").GetInt64(), 37 * MiB, 40 * MiB);
        Assert.InRange(Saved(c, "malloc_trim(0)"), 37 * MiB, 40 * MiB);
        Assert.InRange(Saved(c, "tcache_count=0"), -MiB, MiB);

        // mmap-threshold: the freed heap block stays below the raised trim threshold; fixing either threshold returns it.
        doc = ExplainJson("mmap-threshold");
        AssertAddsUp(doc);
        c = At(doc, "second-block-freed");
        Assert.InRange(Saved(c, "mmap_threshold=131072"), 150_000, 260_000);
        Assert.InRange(Saved(c, "trim_threshold=131072"), 150_000, 260_000);

        // lazy-pages: a 48 MiB mapped block is resident only once written.
        doc = ExplainJson("lazy-pages");
        AssertAddsUp(doc);
        long Mapped(string name) => At(doc, name).GetProperty("breakdown").GetProperty("mmapped").GetInt64();
        Assert.InRange(Mapped("after-malloc-48mib"), 0, 8192);
        Assert.InRange(Mapped("after-write-48mib"), 50_000_000, 50_100_000);
        Assert.Equal(0, Mapped("after-free-48mib"));

        // seed-002-trim: after malloc_trim(0) the free pages are gone; another trim would save nothing.
        doc = ExplainJson("seed-002-trim", "--at", "after-malloc-trim");
        AssertAddsUp(doc);
        c = At(doc, "after-malloc-trim");
        Assert.InRange(Saved(c, "malloc_trim(0)"), -MiB, MiB);
        Assert.True(c.GetProperty("free_not_resident_bytes").GetInt64() > 200 * MiB, "the trimmed chunks' pages are released, not resident");

        // module-unload: survivors pin the freed modules; malloc_trim(0) releases the pages inside.
        doc = ExplainJson("module-unload", "--at", "modules-unloaded");
        AssertAddsUp(doc);
        c = At(doc, "modules-unloaded");
        Assert.True(c.GetProperty("pinned_by").GetArrayLength() > 0);
        Assert.True(Saved(c, "malloc_trim(0)") > 50 * MiB, c.ToString());
    }

    public static TheoryData<string> RecordedTraces()
    {
        var data = new TheoryData<string>();
        foreach (string file in Directory.EnumerateFiles(NativeTests.RecordedTraces, "*.trace").Order())
            data.Add(Path.GetFileName(file));
        return data;
    }

    /// <summary>Every recorded trace, explained at every checkpoint by the command's own replay child: the parts add up to statm within 1%.</summary>
    [Theory]
    [MemberData(nameof(RecordedTraces))]
    public void RecordedTrace_BreakdownAddsUpAtEveryCheckpoint(string trace)
    {
        string path = Path.Combine(NativeTests.RecordedTraces, trace);
        var r = Cli.Run(["explain-child", path, "--explain"], (Tunables.Variable, "profile=glibc-2.36"));
        Assert.True(r.ExitCode == 0, r.Error);
        string[] lines = r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.NotEmpty(lines);
        foreach (string line in lines)
        {
            JsonElement point = JsonDocument.Parse(line).RootElement;
            JsonElement e = point.GetProperty("explanation");
            long anon = e.GetProperty("resident_anon_bytes").GetInt64();
            long sum = e.GetProperty("breakdown").EnumerateObject().Sum(p => p.Value.GetInt64());
            Assert.True(Math.Abs(sum - anon) <= anon / 100, $"{trace} {point.GetProperty("name")}: parts {sum}, statm {anon}");
            Assert.True(e.GetProperty("breakdown").GetProperty("in_use").GetInt64() > 0);
        }
    }

    [Fact]
    public void Map_Seed002_InEachFormat()
    {
        using var temp = new TempDirectory("nh-map");
        string dir = temp.Path;
        foreach (string ext in new[] { "svg", "png", "html" })
        {
            string file = Path.Combine(dir, $"seed-002.{ext}");
            var r = Cli.Run(["map", "seed-002", "--at", "after-frees", "--out", file]);
            Assert.True(r.ExitCode == 0, r.Output + r.Error);
            byte[] bytes = File.ReadAllBytes(file);
            Assert.True(bytes.Length > 3000, $"{file}: {bytes.Length} bytes");
            if (ext == "png") Assert.Equal(0x89, bytes[0]);
            else
            {
                string text = System.Text.Encoding.UTF8.GetString(bytes);
                Assert.Contains("seed-002 at after-frees", text);
                Assert.Contains("line 16003 (id 8000)", text); // the highest pinning chunk, named
            }
        }
    }

    [Fact]
    public void RecordAThreadedProgram_ThenExplainIt()
    {
        using var temp = new TempDirectory("nh-record");
        string dir = temp.Path;
        string pattern = Path.Combine(dir, "threads-%p.trace");
        var r = Cli.Run(["record", "-o", pattern, "--", NativeTests.Program("threads")]);
        Assert.True(r.ExitCode == 0, r.Output + r.Error);
        string trace = Assert.Single(Directory.GetFiles(dir));
        Assert.Contains("5 threads", r.Error);
        string text = System.Text.Encoding.ASCII.GetString(NativeHeap.Lab.TraceFile.Load(trace));
        Assert.Contains("\nT 2\n", text);
        Assert.Contains("\nx 2\n", text);
        Assert.Matches(@"\nk exit anon_kib=\d+ rss_kib=\d+ size_kib=\d+ recorder_kib=\d+", text);

        JsonElement doc = ExplainJson(trace);
        AssertAddsUp(doc);
        JsonElement exit = At(doc, "exit");
        Assert.Equal(4, exit.GetProperty("arenas").GetArrayLength()); // main and three, one reused after x 2
        Assert.True(exit.GetProperty("recorded").GetProperty("anon_kib").GetInt64() > 0);
        Assert.Contains(exit.GetProperty("what_if").EnumerateArray(), w => w.GetProperty("setting").GetString() == "MALLOC_ARENA_MAX=2");
    }

    [Theory]
    [InlineData("explain", "--at", "nowhere", "no checkpoint named 'nowhere' (checkpoints: start, after-mallocs, after-frees, after-malloc-2000-free)")]
    [InlineData("map", "--out", "/no/such/dir/map.svg", "cannot write /no/such/dir/map.svg")]
    [InlineData("map", "--out", "map.txt", "--out map.txt: the picture's name must end in .svg, .png or .html")]
    public void BadInput_IsAClearError(string command, string option, string value, string message)
    {
        var r = Cli.Run([command, "seed-002", option, value]);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(message, r.Error);
        Assert.DoesNotContain("   at ", r.Error);
    }

    [Fact]
    public void BadTrace_AndMissingProgram_AreClearErrors()
    {
        string file = Path.GetTempFileName();
        File.WriteAllText(file, "k start\nm 1 100\nT 0\n");
        var r = Cli.Run(["explain", file]);
        File.Delete(file);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"error: {file}: line 3: TID not in 1..1000000", r.Error.Trim());

        r = Cli.Run(["record", "--", "/no/such/program"]);
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("error: cannot run /no/such/program", r.Error);
        Assert.DoesNotContain("   at ", r.Error);
    }
}
