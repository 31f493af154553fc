using System.Globalization;
using System.Text;
using NativeHeap.Arenas;
using NativeHeap.Diagnostics;
using NativeHeap.Lab;
using ScottPlot;
using Spectre.Console;

namespace NativeHeap.Cli;

/// <summary>
/// `nativeheap scenarios`: every scenario under NativeHeap and under glibc, each replay in a
/// fresh child process, checkpoints as deltas from the child's own first checkpoint, side by
/// side. Anonymous resident memory (resident - shared) is what a heap owns and what is
/// compared: they agree when within 2% + 512 KiB. NativeHeap runs on its glibc-2.36 profile,
/// held to glibc, and on its default profile, shown beside them and held to nothing: at each
/// checkpoint, and again once its purge delay has passed idle (<see cref="DefaultChild"/>).
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

    /// <summary>The hidden command of the default profile's child (<see cref="DefaultChild"/>).</summary>
    internal const string ChildCommand = "scenarios-default-child";

    /// <summary>The second field of the child's line for a checkpoint once idle (replay's own lines have "k").</summary>
    private const string IdleMark = "i";

    private static string DefaultTunables(string tcache) => tcache == "off" ? "profile=nativeheap:tcache_count=0" : "profile=nativeheap";

    /// <summary>How long the default profile waits before it purges (purge_delay), for the labels.</summary>
    private static string PurgeDelay => $"{MallocParams.NativeHeapPurgeDelayMs / 1000.0:0.###} s";

    private sealed record ScenarioRun(Scenario Scenario, string Tcache, List<Checkpoint> NativeHeap, List<Checkpoint> Glibc,
        List<Checkpoint>? GlibcC, List<Checkpoint> Default, List<Checkpoint> DefaultIdle, string Warnings)
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
        int steps = replayC is null ? 3 : 4;
        // Redirected output gets 80 columns by default, which folds every table.
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 180);

        var runs = new List<ScenarioRun>();
        string? failure = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                ProgressTask task = ctx.AddTask("scenarios", maxValue: jobs.Count * steps);
                foreach (var (scenario, mode) in jobs)
                {
                    task.Description = $"{scenario.Name} (tcache {mode})";
                    // Two children at a time (each measures only its own memory): NativeHeap's
                    // two profiles, then glibc's two. One job at a time, as native/replay's
                    // temporary file is named after the scenario.
                    (List<Checkpoint> Checkpoints, string Warnings, string? Error) nh = ([], "", null), gl = nh, c = nh;
                    (List<Checkpoint> Checkpoints, List<Checkpoint> Idle, string? Error) def = ([], [], null);
                    Parallel.Invoke(
                        () =>
                        {
                            nh = ReplayInChild(scenario, "nativeheap", mode);
                            task.Increment(1);
                            gl = ReplayInChild(scenario, "glibc", mode);
                            task.Increment(1);
                        },
                        () =>
                        {
                            def = DefaultInChild(scenario, mode);
                            task.Increment(1);
                            if (replayC is null) return;
                            c = NativeReplayer.Run(replayC, scenario, mode);
                            task.Increment(1);
                        });
                    failure = nh.Error ?? def.Error ?? gl.Error ?? c.Error;
                    if (failure is not null) return;
                    runs.Add(new ScenarioRun(scenario, mode, nh.Checkpoints, gl.Checkpoints,
                        replayC is null ? null : c.Checkpoints, def.Checkpoints, def.Idle, nh.Warnings + gl.Warnings));
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

    /// <summary>The default profile's replay: its checkpoints, and each again once idle.</summary>
    private static (List<Checkpoint> Checkpoints, List<Checkpoint> Idle, string? Error) DefaultInChild(Scenario scenario, string tcache)
    {
        ProcessResult r = ChildProcess.RunSelf([ChildCommand, scenario.Name],
            new ProcessOptions { Environment = [(Tunables.Variable, DefaultTunables(tcache))] });
        if (r.ExitCode != 0)
            return ([], [], $"the default profile's replay of {scenario.Name} failed ({r.ExitCode}): {r.Error.Trim()}");
        List<Checkpoint> checkpoints = Checkpoint.ParseAll(r.Output);
        // The idle lines have the checkpoint lines' fields: read them as such.
        List<Checkpoint> idle = Checkpoint.ParseAll(string.Join('\n', r.Output.Split('\n')
            .Select(line => line.Split(' ', 3)).Where(f => f.Length == 3 && f[1] == IdleMark).Select(f => $"{f[0]} k {f[2]}")));
        if (checkpoints.Count == 0 || idle.Count != checkpoints.Count)
            return ([], [], $"the default profile's replay of {scenario.Name} printed {checkpoints.Count} checkpoint(s) and {idle.Count} idle one(s)");
        return (checkpoints, idle, null);
    }

    /// <summary>
    /// The default profile's child (NATIVEHEAP_TUNABLES set by the runner): the scenario on
    /// NativeHeap, each checkpoint's line as `replay` prints it, then an "i" line with the same
    /// figures once <see cref="Heap.PurgeAsIfIdle"/> has released what the purge timer releases
    /// after purge_delay with no call. Then the replay goes on: the program paused at each
    /// checkpoint. (Really waiting would cost the delay, 1 s, at each of the 60 checkpoints.)
    /// </summary>
    internal static int DefaultChild(string name)
    {
        if (Scenario.Find(name) is not { } scenario) return Program.Fail($"unknown scenario '{name}'");
        var target = new NativeHeapTarget();
        using Stream stdout = Console.OpenStandardOutput();
        var options = new ReplayOptions
        {
            Placements = false,
            Checkpoint = cp =>
            {
                Heap.PurgeAsIfIdle();
                Statm s = Statm.Read();
                HeapInfo info = target.GetInfo();
                string line = string.Create(CultureInfo.InvariantCulture,
                    $"{cp.Line} {IdleMark} {cp.Name} {s.AnonymousBytes / 1024} {s.ResidentBytes / 1024} {s.SizeBytes / 1024} {info.Arena} {info.Uordblks} {info.Fordblks} {info.Hblkhd}\n");
                stdout.Write(Encoding.ASCII.GetBytes(line));
                stdout.Flush();
            },
        };
        TraceReplayer.Replay(scenario.Trace, target, stdout, options);
        return 0;
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
        table.AddColumn(new TableColumn("anon default").RightAligned())
            .AddColumn(new TableColumn("default, idle").RightAligned());
        table.AddColumn(new TableColumn("resident NH").RightAligned())
            .AddColumn(new TableColumn("resident glibc").RightAligned())
            .AddColumn(new TableColumn("size NH").RightAligned())
            .AddColumn(new TableColumn("size glibc").RightAligned());
        int disagreements = 0;
        int n = Shown(run);
        for (int i = 0; i < n; i++)
        {
            Checkpoint a = run.NativeHeap[i], b = reference[i];
            long anonA = a.AnonKib - run.NativeHeap[0].AnonKib, anonB = b.AnonKib - reference[0].AnonKib;
            bool agree = Agree(anonA, anonB);
            if (!agree) disagreements++;
            var cells = new List<string> { Markup.Escape(a.Name), $"{anonA:N0}", $"{anonB:N0}", agree ? "[green]yes[/]" : "[red]no[/]" };
            if (withC) cells.Add($"{run.Glibc[i].AnonKib - run.Glibc[0].AnonKib:N0}");
            // Both over the default run's own start: the idle line is the same process, later.
            cells.Add($"{run.Default[i].AnonKib - run.Default[0].AnonKib:N0}");
            cells.Add($"{run.DefaultIdle[i].AnonKib - run.Default[0].AnonKib:N0}");
            cells.AddRange([
                $"{a.ResidentKib - run.NativeHeap[0].ResidentKib:N0}", $"{b.ResidentKib - reference[0].ResidentKib:N0}",
                $"{a.SizeKib - run.NativeHeap[0].SizeKib:N0}", $"{b.SizeKib - reference[0].SizeKib:N0}"]);
            table.AddRow(cells.ToArray());
        }
        if (run.NativeHeap.Count != reference.Count) disagreements++;
        AnsiConsole.Write(table);
        if (withC) AnsiConsole.MarkupLine("[grey]glibc: a fresh C process (native/replay). glibc*: glibc by P/Invoke in a fresh .NET process, whose heap the runtime has already used.[/]");
        AnsiConsole.MarkupLineInterpolated($"[grey]NH: NativeHeap's glibc-2.36 profile, held to glibc. default: its default profile (profile=nativeheap), shown, not compared; default, idle: the same process once its purge delay ({PurgeDelay}) has passed with no call (Heap.PurgeAsIfIdle), after which the replay goes on.[/]");
        if (run.Warnings.Length > 0) AnsiConsole.MarkupLineInterpolated($"[yellow]{run.Warnings.Trim()}[/]");
        AnsiConsole.WriteLine();
        return disagreements;
    }

    /// <summary>The checkpoints every run reached.</summary>
    private static int Shown(ScenarioRun run) =>
        new[] { run.NativeHeap.Count, run.Glibc.Count, run.Reference.Count, run.Default.Count, run.DefaultIdle.Count }.Min();

    private static void Plot(ScenarioRun run, DirectoryInfo outDir)
    {
        outDir.Create();
        var plot = new Plot();
        int n = Shown(run);
        double[] xs = Enumerable.Range(0, n).Select(i => (double)i).ToArray();
        double Mib(long kib) => kib / 1024.0;
        var nh = plot.Add.Scatter(xs, run.NativeHeap.Take(n).Select(c => Mib(c.AnonKib - run.NativeHeap[0].AnonKib)).ToArray());
        nh.LegendText = "NativeHeap, glibc-2.36 profile";
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
        var def = plot.Add.Scatter(xs, run.Default.Take(n).Select(c => Mib(c.AnonKib - run.Default[0].AnonKib)).ToArray());
        def.LegendText = "NativeHeap, default profile";
        def.LineWidth = 2;
        def.MarkerSize = 7;
        def.MarkerShape = MarkerShape.FilledSquare;
        var idle = plot.Add.Scatter(xs, run.DefaultIdle.Take(n).Select(c => Mib(c.AnonKib - run.Default[0].AnonKib)).ToArray());
        idle.LegendText = $"NativeHeap, default profile, {PurgeDelay} idle";
        idle.LineWidth = 2;
        idle.LinePattern = LinePattern.DenselyDashed;
        idle.MarkerSize = 7;
        idle.MarkerShape = MarkerShape.FilledDiamond;
        plot.Axes.Bottom.SetTicks(xs, run.NativeHeap.Take(n).Select(c => c.Name).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 25;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 130;
        plot.Axes.Right.MinimumSize = 60;
        plot.Axes.Margins(left: 0.03, right: 0.12, bottom: 0.05, top: 0.15);
        plot.Title($"{run.Scenario.Name} (tcache {run.Tcache})");
        plot.YLabel("anonymous RSS, MiB over start");
        plot.ShowLegend(Edge.Right); // outside: inside, it hid the lines at the last checkpoint
        plot.SavePng(Path.Combine(outDir.FullName, $"{run.Scenario.Name}-tcache-{run.Tcache}.png"), 1250, 560);
    }
}
