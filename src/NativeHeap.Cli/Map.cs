using NativeHeap.Symbols;
using NativeHeap.Diagnostics;
using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>`nativeheap map`: replay a trace as glibc 2.36 in this process and draw the heap at a checkpoint.</summary>
internal static class Map
{
    internal static int Run(string nameOrPath, string? at, string output, string[] wrappers)
    {
        byte[]? trace = Program.LoadTrace(nameOrPath, out string label);
        if (trace is null || Program.Validate(trace, label) is not { } summary) return Program.UsageError;
        TraceStacks stacks = TraceStacks.Parse(trace);
        using Symbolizer? symbolizer = stacks.NodeCount > 0 ? new Symbolizer(stacks.JitCode) : null;
        AllocationSites? sites = symbolizer is null ? null : new AllocationSites(stacks, symbolizer, wrappers);
        string extension = Path.GetExtension(output).ToLowerInvariant();
        if (extension is not (".svg" or ".png" or ".html"))
            return Program.Fail($"--out {output}: the picture's name must end in .svg, .png or .html");
        IReadOnlyList<(int Line, string Name)> checkpoints = summary.Checkpoints;
        if (checkpoints.Count == 0) return Program.Fail($"{label}: the trace has no checkpoint ('k NAME' line) to draw");
        int line = at is null ? checkpoints[^1].Line : checkpoints.FirstOrDefault(c => c.Name == at).Line;
        if (line == 0)
            return Program.Fail($"{label}: no checkpoint named '{at}' (checkpoints: {string.Join(", ", checkpoints.Select(c => c.Name).Distinct())})");

        FileStream file;
        try
        {
            file = File.Create(output);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Program.Fail($"cannot write {output}: {e.Message}");
        }
        using (file)
        {
            Program.UseGlibcProfile();
            bool drawn = false;
            TraceReplayer.Replay(trace, new NativeHeapTarget(), Stream.Null, new ReplayOptions
            {
                Placements = false,
                Checkpoint = cp =>
                {
                    if (cp.Line != line) return;
                    HeapExplanation e = Heap.Explain();
                    var options = new HeapMapOptions
                    {
                        Title = $"{label} at {cp.Name} (line {cp.Line}), replayed as glibc 2.36",
                        Pinned = e.PinnedBy,
                        Describe = c => cp.Owner(c.UserAddress) is { } o
                            ? sites?.Of(stacks.StackOfLine(o.Line)) is { Frames.Count: > 0 } site ? $"line {o.Line} (id {o.Id}), at {site.Name}" : $"line {o.Line} (id {o.Id})"
                            : null,
                        // The whole stack, on hover only (one copy per stack in the page).
                        Details = sites is null ? null : c => cp.Owner(c.UserAddress) is { } o && sites.Of(stacks.StackOfLine(o.Line)) is { Frames.Count: > 0 } site
                            ? "allocated by:\n" + string.Join("\n", site.Frames.Select((f, k) => (k == site.SiteIndex ? "> " : "  ") + f))
                            : null,
                    };
                    if (extension == ".png") MapPng.Write(e.Snapshot, file, options);
                    else HeapMap.Write(e.Snapshot, file, extension == ".svg" ? HeapMapFormat.Svg : HeapMapFormat.Html, options);
                    drawn = true;
                },
            });
            if (!drawn) return Program.Fail($"{label}: the replay never reached line {line}");
        }
        foreach (string warning in symbolizer?.Warnings ?? []) Console.Error.WriteLine($"warning: {warning}");
        Console.Error.WriteLine($"wrote {output}");
        return 0;
    }
}
