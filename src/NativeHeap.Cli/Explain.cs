using System.Globalization;
using System.Text;
using System.Text.Json;
using NativeHeap.Symbols;
using NativeHeap.Diagnostics;
using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>
/// `nativeheap explain`: replay a trace on the glibc-2.36 profile in a fresh child process and,
/// at each checkpoint, break its anonymous resident memory down (Heap.Explain), name the live
/// chunks that pin free memory by the trace line and, where the trace has stacks, the code that
/// allocated them, total the bytes in use and pinned by allocation site, and measure what-ifs:
/// the same trace replayed, each in a fresh process, with one setting changed.
/// </summary>
internal static class Explain
{
    /// <summary>The child's command (hidden): one replay, one JSON line per checkpoint on stdout.</summary>
    internal const string ChildCommand = "explain-child";

    private const string Profile = "profile=glibc-2.36";

    /// <summary>A what-if: how the user would set it, and how a replay sets it.</summary>
    private sealed record WhatIf(string Setting, string Tunables, bool Idle = false, bool ThreadsOnly = false);

    private static readonly WhatIf[] s_whatIfs =
    [
        new("GLIBC_TUNABLES=glibc.malloc.tcache_count=0", Profile + ":tcache_count=0"),
        // A trim threshold raised by the dynamic mmap threshold comes back to glibc's default and stays.
        new("GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072", Profile + ":trim_threshold=131072"),
        new("GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072", Profile + ":mmap_threshold=131072"),
        new("MALLOC_ARENA_MAX=2", Profile + ":arena_max=2", ThreadsOnly: true),
        new("NativeHeap's default profile, once idle for its purge delay (LD_PRELOAD=libnativeheap-preload.so for a C program)", "profile=nativeheap", Idle: true),
    ];

    /// <summary>One checkpoint as a child reported it.</summary>
    private sealed record Point(int Line, string Name, long Anon, long HeapResident, JsonElement? Recorded, JsonElement? Explanation, string[] Pinning,
        List<(int Node, long Bytes, int Chunks)> InUse);

    /// <summary>Bytes and chunks of one allocation site.</summary>
    private sealed record SiteTotal(AllocationSites.Site Site, long Bytes, int Chunks);

    /// <summary>How many sites the text shows per table (JSON and pprof have them all).</summary>
    private const int SitesShown = 10;

    internal static int Run(string nameOrPath, string? at, string format, string? output, string[] wrappers)
    {
        if (format == "pprof" && output is null) return Program.Fail("--format pprof writes files: give --out FILE.pb.gz");
        byte[]? trace = Program.LoadTrace(nameOrPath, out string label);
        if (trace is null || Program.Validate(trace, label) is not { } summary) return Program.UsageError;
        TraceStacks stacks = TraceStacks.Parse(trace);
        using Symbolizer? symbolizer = stacks.NodeCount > 0 ? new Symbolizer(stacks.JitCode) : null;
        AllocationSites? sites = symbolizer is null ? null : new AllocationSites(stacks, symbolizer, wrappers);
        var names = summary.Checkpoints;
        if (names.Count == 0) return Program.Fail($"{label}: the trace has no checkpoint ('k NAME' line) to explain");
        if (at is not null && !names.Any(c => c.Name == at))
            return Program.Fail($"{label}: no checkpoint named '{at}' (checkpoints: {string.Join(", ", names.Select(c => c.Name).Distinct())})");

        string file = Path.Combine(Path.GetTempPath(), $"nativeheap-explain-{Environment.ProcessId}.trace");
        try
        {
            File.WriteAllBytes(file, trace);
            List<Point>? base0 = RunChild(file, Profile, explain: true, at, idle: false, out string? error);
            if (base0 is null) return Program.Fail(error!);

            // Every what-if is a replay of its own; two at a time (their children are single-threaded).
            bool threads = summary.Threads > 1;
            var jobs = new List<(string Setting, string File, string Tunables, bool Idle, int Checkpoint)>();
            foreach (WhatIf w in s_whatIfs)
                if (!w.ThreadsOnly || threads) jobs.Add((w.Setting, file, w.Tunables, w.Idle, -1));
            // malloc_trim(0) at a checkpoint: the trace up to it, a trim, then the checkpoint.
            for (int i = 0; i < base0.Count; i++)
            {
                if (at is not null && base0[i].Name != at) continue;
                string prefix = $"{file}.{i}";
                File.WriteAllBytes(prefix, TraceReplayer.TrimBefore(trace, base0[i].Line));
                jobs.Add(("call malloc_trim(0) here", prefix, Profile, false, i));
            }
            var results = new (List<Point>? Points, string? Error)[jobs.Count];
            try
            {
                Parallel.For(0, jobs.Count, new ParallelOptions { MaxDegreeOfParallelism = 2 }, j =>
                {
                    var (_, path, tunables, idle, _) = jobs[j];
                    results[j] = (RunChild(path, tunables, explain: false, at: null, idle, out string? e), e);
                });
            }
            finally
            {
                foreach (var job in jobs.Where(j => j.Checkpoint >= 0)) File.Delete(job.File);
            }
            var savings = new Dictionary<int, List<(string Setting, long Saved)>>();
            for (int j = 0; j < jobs.Count; j++)
            {
                var (setting, _, _, _, checkpoint) = jobs[j];
                if (results[j].Points is not { } points) return Program.Fail($"what-if {setting}: {results[j].Error}");
                for (int i = 0; i < base0.Count && i < points.Count; i++)
                {
                    if (checkpoint >= 0 && i != checkpoint) continue;
                    Point measured = checkpoint >= 0 ? points[^1] : points[i];
                    if (!savings.TryGetValue(i, out var list)) savings[i] = list = [];
                    list.Add((setting, base0[i].HeapResident - measured.HeapResident));
                }
            }

            var shown = Enumerable.Range(0, base0.Count).Where(i => at is null || base0[i].Name == at).ToList();
            var context = new Context(label, base0, shown, savings, stacks, sites);
            int status = 0;
            if (format == "json") WriteJson(context);
            else if (format == "pprof") status = WritePprof(context, output!);
            else WriteText(context);
            // Why a frame has no name: a module gone or rebuilt since it was recorded, unreadable debug data.
            foreach (string warning in symbolizer?.Warnings ?? []) Console.Error.WriteLine($"warning: {warning}");
            return status;
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>Replay <paramref name="file"/> in a fresh process with <paramref name="tunables"/>; null (and why) on failure.</summary>
    private static List<Point>? RunChild(string file, string tunables, bool explain, string? at, bool idle, out string? error)
    {
        var args = new List<string> { ChildCommand, file };
        if (explain) args.Add("--explain");
        if (at is not null) args.AddRange(["--at", at]);
        if (idle) args.Add("--idle");
        ProcessResult r = ChildProcess.RunSelf(args, new ProcessOptions { Environment = [(Tunables.Variable, tunables)] });
        if (r.ExitCode != 0)
        {
            error = $"the replay ({tunables}) failed with exit code {r.ExitCode}: {r.Error.Trim()}";
            return null;
        }
        error = null;
        var points = new List<Point>();
        foreach (string line in r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            JsonElement e = JsonDocument.Parse(line).RootElement;
            points.Add(new Point(e.GetProperty("line").GetInt32(), e.GetProperty("name").GetString()!, e.GetProperty("anon").GetInt64(),
                e.GetProperty("heap_resident").GetInt64(),
                e.TryGetProperty("recorded", out JsonElement rec) ? rec : null,
                e.TryGetProperty("explanation", out JsonElement ex) ? ex : null,
                e.TryGetProperty("pinning", out JsonElement pinning) ? [.. pinning.EnumerateArray().Select(x => x.GetString()!)] : [],
                e.TryGetProperty("in_use_by_stack", out JsonElement inUse)
                    ? [.. inUse.EnumerateArray().Select(x => (x[0].GetInt32(), x[1].GetInt64(), x[2].GetInt32()))] : []));
        }
        return points;
    }

    /// <summary>The child: replay on this process's NativeHeap, one JSON line per checkpoint.</summary>
    internal static int Child(string path, bool explain, string? at, bool idle)
    {
        byte[]? trace = Program.LoadTrace(path, out string label);
        if (trace is null || Program.Validate(trace, label) is null) return Program.UsageError;
        TraceStacks? stacks = explain ? TraceStacks.Parse(trace) : null;
        if (stacks is { NodeCount: 0 }) stacks = null;
        using Stream stdout = Console.OpenStandardOutput();
        var options = new ReplayOptions
        {
            Placements = false,
            Checkpoint = cp =>
            {
                if (idle) Heap.PurgeAsIfIdle();
                bool wanted = explain && (at is null || cp.Name == at);
                HeapExplanation e = Heap.Explain();
                using var json = new Utf8JsonWriter(stdout);
                json.WriteStartObject();
                json.WriteNumber("line", cp.Line);
                json.WriteString("name", cp.Name);
                json.WriteNumber("anon", e.ResidentAnonymousBytes);
                json.WriteNumber("heap_resident", e.Snapshot.ResidentBytes);
                if (cp.Recorded.Count > 0)
                {
                    json.WriteStartObject("recorded");
                    foreach (var (key, value) in cp.Recorded) json.WriteNumber(key, value);
                    json.WriteEndObject();
                }
                if (wanted)
                {
                    json.WritePropertyName("explanation");
                    e.WriteJson(json, (w, chunk) =>
                    {
                        if (cp.Owner(chunk.UserAddress) is not { } o) return;
                        w.WriteNumber("trace_line", o.Line);
                        w.WriteNumber("id", o.Id);
                    });
                    json.WriteStartArray("pinning");
                    foreach (string sentence in e.PinningSummary()) json.WriteStringValue(sentence);
                    json.WriteEndArray();
                    if (stacks is not null) WriteInUseByStack(json, e.Snapshot, cp, stacks);
                }
                json.WriteEndObject();
                json.Flush();
                stdout.WriteByte((byte)'\n');
                stdout.Flush();
            },
        };
        TraceReplayer.Replay(trace, new NativeHeapTarget(), Stream.Null, options);
        return 0;
    }

    /// <summary>The live blocks' bytes and count per stack node of the line that allocated them (node 0: none recorded).</summary>
    private static void WriteInUseByStack(Utf8JsonWriter json, HeapSnapshot snapshot, ReplayCheckpoint cp, TraceStacks stacks)
    {
        var byNode = new Dictionary<int, (long Bytes, int Chunks)>();
        foreach (HeapChunk chunk in snapshot.Chunks)
        {
            if (chunk.State is not (ChunkState.InUse or ChunkState.Mmapped)) continue;
            int node = cp.Owner(chunk.UserAddress) is { } o ? stacks.StackOfLine(o.Line) : 0;
            var (bytes, chunks) = byNode.GetValueOrDefault(node);
            byNode[node] = (bytes + (long)chunk.Size, chunks + 1);
        }
        json.WriteStartArray("in_use_by_stack");
        foreach (var (node, (bytes, chunks)) in byNode)
        {
            json.WriteStartArray();
            json.WriteNumberValue(node);
            json.WriteNumberValue(bytes);
            json.WriteNumberValue(chunks);
            json.WriteEndArray();
        }
        json.WriteEndArray();
    }

    /// <summary>What the writers share.</summary>
    private sealed record Context(string Label, List<Point> Points, List<int> Shown, Dictionary<int, List<(string Setting, long Saved)>> Savings,
        TraceStacks Stacks, AllocationSites? Sites)
    {
        /// <summary>The site of the chunk a pinned_by entry names, or null (no stacks, or no line).</summary>
        public AllocationSites.Site? SiteOf(JsonElement pin) =>
            Sites is not null && pin.TryGetProperty("trace_line", out JsonElement line) ? Sites.Of(Stacks.StackOfLine(line.GetInt32())) : null;

        /// <summary>Checkpoint <paramref name="i"/>'s pinning chunks' freed bytes (what freeing each adds) by allocation site, most first.</summary>
        public List<SiteTotal> Pinning(int i) => Totals(Points[i].Explanation!.Value.GetProperty("pinned_by").EnumerateArray()
            .Select(pin => (SiteOf(pin) ?? AllocationSites.None, pin.GetProperty("frees_bytes").GetInt64(), 1)));

        /// <summary>Checkpoint <paramref name="i"/>'s bytes in use by allocation site, most first.</summary>
        public List<SiteTotal> InUse(int i) => Totals(Points[i].InUse.Select(x => (Sites?.Of(x.Node) ?? AllocationSites.None, x.Bytes, x.Chunks)));

        /// <summary>Bytes and chunks summed by site name (stacks that differ above their site are one site), most first.</summary>
        private static List<SiteTotal> Totals(IEnumerable<(AllocationSites.Site Site, long Bytes, int Chunks)> parts)
        {
            var totals = new Dictionary<string, SiteTotal>();
            foreach (var (site, bytes, chunks) in parts)
                totals[site.Name] = totals.TryGetValue(site.Name, out SiteTotal? t) ? t with { Bytes = t.Bytes + bytes, Chunks = t.Chunks + chunks } : new SiteTotal(site, bytes, chunks);
            return [.. totals.Values.OrderByDescending(t => t.Bytes).ThenBy(t => t.Site.Name, StringComparer.Ordinal)];
        }
    }

    private static string Size(long bytes) => Os.Sizes.Approximate(bytes);

    private static void WriteSites(StringBuilder sb, string title, List<SiteTotal> totals)
    {
        if (totals.Count == 0) return;
        sb.Append(title).Append(" (top ").Append(Math.Min(SitesShown, totals.Count)).Append(" of ").Append(totals.Count).Append("):\n");
        foreach (SiteTotal t in totals.Take(SitesShown))
            sb.Append(CultureInfo.InvariantCulture, $"  {Size(t.Bytes),10}  {t.Chunks,7:N0} chunk{(t.Chunks == 1 ? " " : "s")}  {t.Site.Name}\n");
    }
    private static void WriteText(Context context)
    {
        var (label, points, shown, savings, _, sites) = context;
        var sb = new StringBuilder();
        CultureInfo c = CultureInfo.InvariantCulture;
        sb.Append(c, $"{label}, replayed as glibc 2.36 (NativeHeap's glibc-2.36 profile places every block where glibc does)\n");
        foreach (int i in shown)
        {
            Point p = points[i];
            JsonElement e = p.Explanation!.Value;
            JsonElement parts = e.GetProperty("breakdown");
            sb.Append(c, $"\ncheckpoint {p.Name} (line {p.Line}): {Size(p.Anon)} anonymous resident (statm)\n");
            long heapTotal = 0;
            var heapParts = new List<string>();
            foreach (JsonProperty part in parts.EnumerateObject())
            {
                long bytes = part.Value.GetInt64();
                if (part.Name == "outside_heap" || bytes == 0) continue;
                heapTotal += bytes;
                heapParts.Add($"{part.Name.Replace('_', ' ')} {Size(bytes)}");
            }
            sb.Append(c, $"  in the heap: {Size(heapTotal)} ({string.Join(", ", heapParts)})\n");
            sb.Append(c, $"  outside the heap: {Size(parts.GetProperty("outside_heap").GetInt64())} (the .NET runtime replaying the trace, its GC heap, glibc's own malloc)\n");
            sb.Append(c, $"  free but not resident (given back, or never touched): {Size(e.GetProperty("free_not_resident_bytes").GetInt64())}\n");
            if (p.Recorded is { } rec && rec.TryGetProperty("anon_kib", out JsonElement anonKib))
            {
                string recorder = rec.TryGetProperty("recorder_kib", out JsonElement r) ? $", of which the recorder's own {Size(r.GetInt64() * 1024)}" : "";
                sb.Append(c, $"  the recorded program held {Size(anonKib.GetInt64() * 1024)} anonymous resident here{recorder}\n");
            }

            sb.Append("why it stays:\n");
            foreach (string sentence in p.Pinning) sb.Append("  ").Append(sentence).Append('\n');
            foreach (JsonElement pin in e.GetProperty("pinned_by").EnumerateArray().OrderByDescending(x => x.GetProperty("frees_bytes").GetInt64()).Take(8))
            {
                string who = pin.TryGetProperty("trace_line", out JsonElement tl) ? $"line {tl.GetInt32()} (id {pin.GetProperty("id").GetInt64()})" : pin.GetProperty("address").GetString()!;
                string where = context.SiteOf(pin) is { Frames.Count: > 0 } site ? $", allocated at {site.Name}" : "";
                sb.Append(c, $"    arena {pin.GetProperty("arena").GetInt32()}, {who}{where}: {pin.GetProperty("chunk_size").GetInt64()} B {pin.GetProperty("state").GetString()}, {pin.GetProperty("above").GetInt32()} above it; freeing it (and those above) frees {Size(pin.GetProperty("frees_bytes").GetInt64())} more\n");
            }
            if (p.Pinning.Length == 0) sb.Append("  no live chunk pins a page or more of free memory\n");
            sb.Append(c, $"  malloc_trim(0) would return about {Size(e.GetProperty("trim_estimate_bytes").GetInt64())} now (estimated from the free pages; measured below)\n");
            if (sites is not null)
            {
                WriteSites(sb, "pinned free memory by allocation site (what freeing its chunks adds)", context.Pinning(i));
                WriteSites(sb, "in use by allocation site", context.InUse(i));
            }

            sb.Append("what would give it back (each measured by replaying the whole trace again, best first):\n");
            foreach (var (setting, saved) in savings.GetValueOrDefault(i, []).OrderByDescending(s => s.Saved))
                sb.Append(c, $"  {(saved >= 0 ? "saves" : "costs"),-5} {Size(Math.Abs(saved)),10}  {setting}\n");
        }
        Console.Out.Write(sb.ToString());
    }

    private static void WriteJson(Context context)
    {
        var (label, points, shown, savings, _, sites) = context;
        using Stream stdout = Console.OpenStandardOutput();
        using var json = new Utf8JsonWriter(stdout, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteString("trace", label);
        json.WriteString("profile", "glibc-2.36");
        json.WriteStartArray("checkpoints");
        foreach (int i in shown)
        {
            Point p = points[i];
            json.WriteStartObject();
            json.WriteString("name", p.Name);
            json.WriteNumber("line", p.Line);
            foreach (JsonProperty prop in p.Explanation!.Value.EnumerateObject())
            {
                if (prop.Name != "pinned_by" || sites is null)
                {
                    prop.WriteTo(json);
                    continue;
                }
                json.WriteStartArray("pinned_by");
                foreach (JsonElement pin in prop.Value.EnumerateArray())
                {
                    json.WriteStartObject();
                    foreach (JsonProperty field in pin.EnumerateObject()) field.WriteTo(json);
                    if (context.SiteOf(pin) is { } site) WriteSite(json, site);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
            }
            if (sites is not null)
            {
                WriteSiteTotals(json, "sites_pinning", context.Pinning(i));
                WriteSiteTotals(json, "sites_in_use", context.InUse(i));
            }
            if (p.Recorded is { } rec)
            {
                json.WritePropertyName("recorded");
                rec.WriteTo(json);
            }
            json.WriteStartArray("what_if");
            foreach (var (setting, saved) in savings.GetValueOrDefault(i, []).OrderByDescending(s => s.Saved))
            {
                json.WriteStartObject();
                json.WriteString("setting", setting);
                json.WriteNumber("bytes_saved", saved);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
        json.Flush();
        stdout.WriteByte((byte)'\n');
    }

    /// <summary>
    /// A pprof profile per checkpoint: a sample per allocation stack with its live chunks' bytes
    /// (inuse_space) and what freeing its pinning chunks adds (pinned_space), and a sample per
    /// kind of free memory the heap keeps resident (free_resident_space), under a one-frame
    /// stack named after it ("[free: unsorted]").
    /// </summary>
    private static int WritePprof(Context context, string output)
    {
        var (label, points, shown, _, stacks, sites) = context;
        var written = new List<string>();
        foreach (int i in shown)
        {
            Point p = points[i];
            var byNode = new Dictionary<int, (long InUse, long Pinned)>();
            foreach (var (node, bytes, _) in p.InUse)
                byNode[node] = (byNode.GetValueOrDefault(node).InUse + bytes, byNode.GetValueOrDefault(node).Pinned);
            foreach (JsonElement pin in p.Explanation!.Value.GetProperty("pinned_by").EnumerateArray())
            {
                int node = pin.TryGetProperty("trace_line", out JsonElement tl) ? stacks.StackOfLine(tl.GetInt32()) : 0;
                var (inUse, pinned) = byNode.GetValueOrDefault(node);
                byNode[node] = (inUse, pinned + pin.GetProperty("frees_bytes").GetInt64());
            }
            var samples = new List<PprofSample>();
            foreach (var (node, (inUse, pinned)) in byNode.OrderBy(kv => kv.Key))
            {
                if (node == 0 || sites is null)
                {
                    samples.Add(Synthetic("[no stack recorded]", inUse, pinned, 0));
                    continue;
                }
                AllocationSites.Site site = sites.Of(node);
                samples.Add(PprofSample.FromFlat(stacks.Frames(node), site.Frames, inUse, pinned, 0));
            }
            foreach (JsonProperty part in p.Explanation!.Value.GetProperty("breakdown").EnumerateObject())
                if (part.Name is "tcache" or "fastbins" or "unsorted" or "small_bins" or "large_bins" or "top" && part.Value.GetInt64() > 0)
                    samples.Add(Synthetic($"[free: {part.Name.Replace('_', ' ')}]", 0, 0, part.Value.GetInt64()));
            string path = Pprof.PathFor(output, p.Name, shown.Count > 1);
            try
            {
                Pprof.WriteFile(path, samples, new PprofInfo(Comments: [$"nativeheap explain {label}, checkpoint {p.Name} (line {p.Line}), replayed as glibc 2.36"]));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return Program.Fail($"cannot write {path}: {e.Message}");
            }
            written.Add(path);
        }
        foreach (string path in written) Console.Error.WriteLine($"wrote {path}");
        return 0;

        static PprofSample Synthetic(string name, long inUse, long pinned, long free) =>
            new([new PprofFrame(new RecordedFrame(0, null), [new SymbolFrame(name, null, 0, "?", 0, false)])], inUse, pinned, free);
    }

    /// <summary><c>site</c> ("function file:line") and <c>stack</c> (every frame, innermost first).</summary>
    private static void WriteSite(Utf8JsonWriter json, AllocationSites.Site site)
    {
        json.WriteString("site", site.Name);
        json.WriteStartArray("stack");
        foreach (SymbolFrame f in site.Frames)
        {
            json.WriteStartObject();
            if (f.Function is null) json.WriteNull("function");
            else json.WriteString("function", f.Function);
            if (f.File is null) json.WriteNull("file");
            else json.WriteString("file", f.File);
            json.WriteNumber("line", f.Line);
            json.WriteString("module", f.Module);
            json.WriteString("offset", $"0x{f.Offset:x}");
            json.WriteBoolean("inlined", f.Inlined);
            json.WriteEndObject();
        }
        json.WriteEndArray();
    }

    private static void WriteSiteTotals(Utf8JsonWriter json, string name, List<SiteTotal> totals)
    {
        json.WriteStartArray(name);
        foreach (SiteTotal t in totals)
        {
            json.WriteStartObject();
            json.WriteNumber("bytes", t.Bytes);
            json.WriteNumber("chunks", t.Chunks);
            WriteSite(json, t.Site);
            json.WriteEndObject();
        }
        json.WriteEndArray();
    }
}
