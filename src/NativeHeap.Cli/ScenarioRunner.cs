using NativeHeap.Lab;
using ScottPlot;
using Spectre.Console;

namespace NativeHeap.Cli;

/// <summary>
/// `nativeheap scenarios`: every scenario under NativeHeap and under glibc, each replay in a
/// fresh child process, checkpoints as deltas from the child's own first checkpoint, side by
/// side. Anonymous resident memory (resident - shared) is what a heap owns and what is
/// compared: they agree when within 2% + 512 KiB.
/// </summary>
/// <remarks>
/// glibc runs twice: by P/Invoke in a fresh .NET process (what a .NET program gets), and in a
/// fresh C process (native/replay, when built), whose heap starts empty as
/// NativeHeap's does. The two differ: in a .NET process the runtime has already left holes
/// in glibc's heap, small requests land in them, and neighbouring blocks then merge on free
/// (in seed-002 with the tcache off, 223 of 4000 large blocks were adjacent and their frees
/// consolidated and trimmed before malloc(2000) ran). NativeHeap is compared with the C
/// process when there is one.
/// </remarks>
internal static class ScenarioRunner
{
    private const long ToleranceKib = 512;
    private const double ToleranceShare = 0.02;

    private sealed record ScenarioRun(Scenario Scenario, string Tcache, List<Checkpoint> NativeHeap, List<Checkpoint> Glibc,
        List<Checkpoint>? GlibcC, string Warnings)
    {
        /// <summary>The glibc NativeHeap is held to: the fresh C process when there is one.</summary>
        public List<Checkpoint> Reference => GlibcC ?? Glibc;
    }

    internal static int Run(string[] names, string tcache, DirectoryInfo? outDir)
    {
        var scenarios = new List<Scenario>();
        foreach (string name in names.Length == 0 ? Scenario.All.Select(s => s.Name) : names)
        {
            if (Scenario.Find(name) is not { } s)
                return Program.Fail($"unknown scenario '{name}' (known: {string.Join(", ", Scenario.All.Select(x => x.Name))})");
            scenarios.Add(s);
        }
        string[] modes = tcache == "both" ? ["on", "off"] : [tcache];
        var jobs = scenarios.SelectMany(s => modes.Select(m => (Scenario: s, Tcache: m))).ToList();
        string? replayC = NativeReplayer.Find();
        int steps = replayC is null ? 2 : 3;
        // Redirected output gets 80 columns by default, which folds every table.
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 150);

        var runs = new List<ScenarioRun>();
        string? failure = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                ProgressTask task = ctx.AddTask("scenarios", maxValue: jobs.Count * steps);
                foreach (var (scenario, mode) in jobs)
                {
                    task.Description = $"{scenario.Name} (tcache {mode}): NativeHeap";
                    var nh = ReplayInChild(scenario, "nativeheap", mode);
                    task.Increment(1);
                    task.Description = $"{scenario.Name} (tcache {mode}): glibc";
                    var gl = ReplayInChild(scenario, "glibc", mode);
                    task.Increment(1);
                    (List<Checkpoint> Checkpoints, string Warnings, string? Error) c = ([], "", null);
                    if (replayC is not null)
                    {
                        task.Description = $"{scenario.Name} (tcache {mode}): glibc in C";
                        c = NativeReplayer.Run(replayC, scenario, mode);
                        task.Increment(1);
                    }
                    failure = nh.Error ?? gl.Error ?? c.Error;
                    if (failure is not null) return;
                    runs.Add(new ScenarioRun(scenario, mode, nh.Checkpoints, gl.Checkpoints,
                        replayC is null ? null : c.Checkpoints, nh.Warnings + gl.Warnings));
                }
            });
        if (failure is not null) return Program.Fail(failure);

        int disagreements = 0;
        foreach (ScenarioRun run in runs)
        {
            disagreements += Report(run);
            if (outDir is not null) Plot(run, outDir);
        }
        if (outDir is not null) AnsiConsole.MarkupLineInterpolated($"Plots written to [bold]{outDir.FullName}[/].");
        AnsiConsole.MarkupLine(replayC is null
            ? $"NativeHeap was compared with glibc by P/Invoke in .NET processes. [yellow]{Markup.Escape(NativeTools.Missing("replay"))}[/]: with it, glibc also runs in fresh C processes, whose heap starts empty as NativeHeap's does, and NativeHeap is compared with that."
            : $"glibc ran by P/Invoke in .NET processes (glibc*) and in fresh C processes ({Markup.Escape(replayC)}); NativeHeap is compared with the C processes.");
        if (disagreements > 0)
        {
            AnsiConsole.MarkupLineInterpolated($"[red]{disagreements} checkpoint(s) where NativeHeap and glibc disagree by more than 2% + 512 KiB.[/]");
            return Program.Disagreement;
        }
        AnsiConsole.MarkupLine("[green]NativeHeap and glibc agree at every checkpoint (within 2% + 512 KiB of anonymous RSS).[/]");
        return 0;
    }

    private static (List<Checkpoint> Checkpoints, string Warnings, string? Error) ReplayInChild(Scenario scenario, string allocator, string tcache)
    {
        var env = new List<(string Name, string Value)>();
        if (tcache == "off")
        {
            if (allocator == "glibc") env.Add((Replay.GlibcTunables, Replay.GlibcTcacheOff));
            else env.Add((Tunables.Variable, "tcache_count=0"));
        }
        ProcessResult r = ChildProcess.RunSelf(["replay", scenario.Name, "--allocator", allocator, "--checkpoints-only"],
            new ProcessOptions { Environment = env });
        if (r.ExitCode != 0)
            return ([], "", $"the {allocator} replay of {scenario.Name} failed ({r.ExitCode}): {r.Error.Trim()}");
        List<Checkpoint> checkpoints = Checkpoint.ParseAll(r.Output);
        if (checkpoints.Count == 0)
            return ([], "", $"the {allocator} replay of {scenario.Name} printed no checkpoint");
        return (checkpoints, r.Error, null);
    }

    internal static bool Agree(long nativeHeapKib, long glibcKib) =>
        Math.Abs(nativeHeapKib - glibcKib) <= ToleranceShare * Math.Abs(glibcKib) + ToleranceKib;

    private static int Report(ScenarioRun run)
    {
        List<Checkpoint> reference = run.Reference;
        bool withC = run.GlibcC is not null;
        var table = new Table()
            .Title($"[bold]{Markup.Escape(run.Scenario.Name)}[/] (tcache {run.Tcache}): KiB over '{Markup.Escape(run.NativeHeap[0].Name)}'")
            .Caption(Markup.Escape(run.Scenario.Description))
            .AddColumn("checkpoint")
            .AddColumn(new TableColumn("anon NH").RightAligned())
            .AddColumn(new TableColumn("anon glibc").RightAligned())
            .AddColumn(new TableColumn("agree").Centered());
        if (withC) table.AddColumn(new TableColumn("anon glibc*").RightAligned());
        table.AddColumn(new TableColumn("resident NH").RightAligned())
            .AddColumn(new TableColumn("resident glibc").RightAligned())
            .AddColumn(new TableColumn("size NH").RightAligned())
            .AddColumn(new TableColumn("size glibc").RightAligned());
        int disagreements = 0;
        int n = Math.Min(run.NativeHeap.Count, Math.Min(run.Glibc.Count, reference.Count));
        for (int i = 0; i < n; i++)
        {
            Checkpoint a = run.NativeHeap[i], b = reference[i];
            long anonA = a.AnonKib - run.NativeHeap[0].AnonKib, anonB = b.AnonKib - reference[0].AnonKib;
            bool agree = Agree(anonA, anonB);
            if (!agree) disagreements++;
            var cells = new List<string> { Markup.Escape(a.Name), $"{anonA:N0}", $"{anonB:N0}", agree ? "[green]yes[/]" : "[red]no[/]" };
            if (withC) cells.Add($"{run.Glibc[i].AnonKib - run.Glibc[0].AnonKib:N0}");
            cells.AddRange([
                $"{a.ResidentKib - run.NativeHeap[0].ResidentKib:N0}", $"{b.ResidentKib - reference[0].ResidentKib:N0}",
                $"{a.SizeKib - run.NativeHeap[0].SizeKib:N0}", $"{b.SizeKib - reference[0].SizeKib:N0}"]);
            table.AddRow(cells.ToArray());
        }
        if (run.NativeHeap.Count != reference.Count) disagreements++;
        AnsiConsole.Write(table);
        if (withC) AnsiConsole.MarkupLine("[grey]glibc: a fresh C process (native/replay). glibc*: glibc by P/Invoke in a fresh .NET process, whose heap the runtime has already used.[/]");
        if (run.Warnings.Length > 0) AnsiConsole.MarkupLineInterpolated($"[yellow]{run.Warnings.Trim()}[/]");
        AnsiConsole.WriteLine();
        return disagreements;
    }

    private static void Plot(ScenarioRun run, DirectoryInfo outDir)
    {
        outDir.Create();
        var plot = new Plot();
        int n = Math.Min(run.NativeHeap.Count, Math.Min(run.Glibc.Count, run.Reference.Count));
        double[] xs = Enumerable.Range(0, n).Select(i => (double)i).ToArray();
        double Mib(long kib) => kib / 1024.0;
        var nh = plot.Add.Scatter(xs, run.NativeHeap.Take(n).Select(c => Mib(c.AnonKib - run.NativeHeap[0].AnonKib)).ToArray());
        nh.LegendText = "NativeHeap";
        nh.LineWidth = 3;
        nh.MarkerSize = 9;
        var gl = plot.Add.Scatter(xs, run.Glibc.Take(n).Select(c => Mib(c.AnonKib - run.Glibc[0].AnonKib)).ToArray());
        gl.LegendText = run.GlibcC is null ? "glibc" : "glibc (P/Invoke, .NET process)";
        gl.LinePattern = LinePattern.Dashed;
        gl.MarkerSize = 6;
        if (run.GlibcC is { } cRun)
        {
            var gc = plot.Add.Scatter(xs, cRun.Take(n).Select(c => Mib(c.AnonKib - cRun[0].AnonKib)).ToArray());
            gc.LegendText = "glibc (fresh C process)";
            gc.LinePattern = LinePattern.Dotted;
            gc.MarkerSize = 6;
        }
        plot.Axes.Bottom.SetTicks(xs, run.NativeHeap.Take(n).Select(c => c.Name).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 25;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 130;
        plot.Axes.Right.MinimumSize = 60;
        plot.Axes.Margins(left: 0.03, right: 0.12, bottom: 0.05, top: 0.15);
        plot.Title($"{run.Scenario.Name} (tcache {run.Tcache})");
        plot.YLabel("anonymous RSS, MiB over start");
        plot.ShowLegend(Alignment.UpperRight);
        plot.SavePng(Path.Combine(outDir.FullName, $"{run.Scenario.Name}-tcache-{run.Tcache}.png"), 1000, 560);
    }
}
