using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using NativeHeap.Lab;
using ScottPlot;

namespace NativeHeap.Benchmarks;

/// <summary>
/// The allocator authors' yardstick: mimalloc-bench's programs (../shared/mimalloc-bench, built
/// here with the lines its README gives), each under glibc and under each allocator preloaded
/// as mimalloc-bench's bench.sh does (<c>/usr/bin/time -f "%e %M" env LD_PRELOAD=LIB PROGRAM ARGS</c>),
/// the allocators taking turns within a round (wall time measured around that command). Prints the medians and their ratios to glibc
/// (wall time, or the program's own throughput where it prints one; peak RSS), and writes
/// the tables, every sample and two plots to the output folder.
/// <code>
/// dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- mimalloc-bench
///     [--rounds N] [--tiny] [--programs a,b] [--allocators a,b] [--source DIR] [--out DIR] [--baseline DIR]
/// </code>
/// <c>--baseline DIR</c> adds NativeHeap's rows again under the preload library of another build
/// (DIR: its <c>dotnet publish src/NativeHeap.Native -o DIR</c>), named "... (baseline)".
/// (after <c>dotnet publish src/NativeHeap.Native -c Release -o artifacts/native</c> and
/// benchmarks/NativeHeap.Benchmarks/setup.sh). <c>--tiny</c>: one round, small arguments,
/// what CI runs so that the command never rots.
/// </summary>
internal static class MimallocBench
{
    /// <summary>
    /// A program run: bench.sh's arguments ({P}: the cores), the tiny ones (null: it has no
    /// smaller work to give, so --tiny only builds it), and the pattern of the throughput line
    /// where the program measures a fixed time instead of a fixed work.
    /// </summary>
    private sealed record Bench(string Name, string Binary, string Args, string? TinyArgs, string? Throughput = null, string Unit = "");

    private static readonly Bench[] Benches =
    [
        new("glibc-simple", "glibc-simple", "", null),
        new("glibc-thread", "glibc-thread", "{P}", "{P}", @"(\d+) iterations", "iterations"),
        new("larson", "larson", "5 8 1000 5000 100 4141 {P}", "1 8 1000 500 10 4141 {P}", @"Throughput =\s*(\d+)", "ops/s"),
        new("xmalloc-test", "xmalloc-test", "-w {P} -t 5 -s 64", "-w {P} -t 1 -s 64", @"free/sec: ([\d.]+)", "M frees/s"),
        new("mstress", "mstress", "{P} 50 25", "{P} 10 2"),
        new("mleak", "mleak", "5", "1"),
        new("cache-scratch1", "cache-scratch", "1 1000 1 2000000 {P}", "1 100 1 20000 {P}"),
        new("cache-scratchP", "cache-scratch", "{P} 1000 1 2000000 {P}", "{P} 100 1 20000 {P}"),
        new("cache-thrash", "cache-thrash", "1 1000 1 2000000 {P}", "1 100 1 20000 {P}"),
        new("alloc-test1", "alloc-test", "1", null),
        new("alloc-testP", "alloc-test", "{P}", null),
        new("malloc-large", "malloc-large", "", null),
        new("rptest", "rptest", "{P} 0 1 2 500 1000 100 8 16000", null, @"(\d+) memory ops/CPU second", "ops/CPU s"), // runs 16 s whatever the counts
    ];

    /// <summary>How each program is built: mimalloc-bench's README, one line each.</summary>
    private static readonly (string Binary, string Compiler, string Flags, string[] Sources, string Libs)[] Builds =
    [
        ("glibc-simple", "gcc", "-O2", ["glibc-bench/bench-malloc-simple.c"], "-lpthread"),
        ("glibc-thread", "gcc", "-O2", ["glibc-bench/bench-malloc-thread.c"], "-lpthread -lm"),
        ("larson", "g++", "-O2 -DCPP=1", ["larson/larson.cpp"], "-lpthread"),
        ("xmalloc-test", "gcc", "-O2", ["xmalloc-test/xmalloc-test.c"], "-lpthread"),
        ("mstress", "gcc", "-O2", ["mstress/mstress.c"], "-lpthread"),
        ("mleak", "gcc", "-O2", ["mleak/mleak.c"], "-lpthread"),
        ("cache-scratch", "g++", "-O2", ["cache-scratch/cache-scratch.cpp"], "-lpthread"),
        ("cache-thrash", "g++", "-O2", ["cache-thrash/cache-thrash.cpp"], "-lpthread"),
        ("alloc-test", "g++", "-O2 -DBENCH=4", ["alloc-test/test_common.cpp", "alloc-test/allocator_tester.cpp"], "-lpthread"),
        ("malloc-large", "g++", "-O2", ["malloc-large/malloc-large.cpp"], "-lpthread"),
        ("rptest", "gcc", "-O2 -Irptest -fpermissive -w", ["rptest/rptest.c", "rptest/thread.c", "rptest/timer.c"], "-lpthread -lm"),
    ];

    private sealed record Allocator(string Name, string? Preload, string? Tunables = null);

    private static readonly Allocator[] Allocators =
    [
        new("glibc", null),
        new("NativeHeap", Program.NativeHeapPreload),
        new("NativeHeap glibc-2.36", Program.NativeHeapPreload, "profile=glibc-2.36"),
        new("NativeHeap debug", Program.NativeHeapPreload, "debug=1"), // the debug heap's cost (README: The debug heap)
        new("mimalloc", Program.MimallocPreload),
        new("jemalloc", Program.JemallocPreload),
    ];

    /// <summary>A run's wall seconds, peak RSS (KiB, /usr/bin/time's %M) and throughput (NaN where the program prints none).</summary>
    private sealed record Sample(double Seconds, long PeakKib, double Throughput);

    internal static int Run(string[] args)
    {
        string? Option(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
        bool tiny = args.Contains("--tiny");
        int rounds = int.Parse(Option("--rounds") ?? (tiny ? "1" : "3"), CultureInfo.InvariantCulture);
        string root = Program.RepoRoot();
        string source = Path.GetFullPath(Option("--source") ?? Path.Combine(root, "..", "shared", "mimalloc-bench"));
        string outDir = Path.GetFullPath(Option("--out") ?? Path.Combine(root, "artifacts", tiny ? "mimalloc-bench-tiny" : "mimalloc-bench"));
        Bench[] benches = Select(Benches, Option("--programs"), b => b.Name);
        // --baseline DIR: the same profiles from another build's artifacts/native, in the same rounds (a change's before and after).
        string? baseline = Option("--baseline") is { } dir ? Path.Combine(Path.GetFullPath(dir), Path.GetFileName(Program.NativeHeapPreload)) : null;
        Allocator[] all = baseline is null ? Allocators : [.. Allocators,
            .. Allocators.Where(a => a.Preload == Program.NativeHeapPreload).Select(a => a with { Name = a.Name + " (baseline)", Preload = baseline })];
        Allocator[] allocators = Select(all, Option("--allocators"), a => a.Name);
        if (benches.Length == 0 || allocators.Length == 0 || !allocators.Any(a => a.Name == "glibc"))
            return Fail("choose at least one program and glibc among the allocators (--programs, --allocators)");
        if (!Directory.Exists(source))
            return Fail($"{source} not found (the programs come from ../shared/mimalloc-bench; --source DIR)");
        if (!File.Exists("/usr/bin/time"))
            return Fail("/usr/bin/time is missing (apt-get install time)");
        foreach (string lib in allocators.Select(a => a.Preload).OfType<string>().Select(p => Path.Combine(root, p)).Distinct())
            if (!File.Exists(lib))
                return Fail($"{lib} is missing (dotnet publish src/NativeHeap.Native -c Release -o artifacts/native; setup.sh for mimalloc and jemalloc)");

        string bin = Path.Combine(outDir, "build");
        Directory.CreateDirectory(bin);
        foreach (var build in Builds.Where(b => benches.Any(x => x.Binary == b.Binary)))
            if (BuildProgram(source, bin, build) is string error) return Fail(error);
        if (tiny) benches = benches.Where(b => b.TinyArgs is not null).ToArray();

        string work = Directory.CreateTempSubdirectory("mimalloc-bench-").FullName; // rptest writes its samples to the working folder
        string cores = Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture);
        var samples = new Dictionary<(string Bench, string Allocator), List<Sample>>();
        var failures = new List<string>();
        using var csv = new StreamWriter(Path.Combine(outDir, "samples.csv"));
        csv.WriteLine("round,program,allocator,seconds,peak_kib,throughput");
        int total = rounds * benches.Length * allocators.Length, done = 0;
        var clock = Stopwatch.StartNew();
        for (int round = 0; round < rounds; round++)
        {
            foreach (Bench b in benches)
            {
                for (int i = 0; i < allocators.Length; i++)
                {
                    Allocator a = allocators[(i + round) % allocators.Length]; // a different one first each round
                    string arguments = (tiny ? b.TinyArgs! : b.Args).Replace("{P}", cores);
                    var (sample, error) = RunOnce(Path.Combine(bin, b.Binary), arguments, a, root, work, b.Throughput);
                    done++;
                    if (error is not null)
                    {
                        failures.Add($"{b.Name} under {a.Name}: {error}");
                        Console.Error.WriteLine($"mimalloc-bench: [{done}/{total}] {b.Name} {a.Name}: FAILED {error}");
                        continue;
                    }
                    if (!samples.TryGetValue((b.Name, a.Name), out var list)) samples[(b.Name, a.Name)] = list = [];
                    list.Add(sample!);
                    csv.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{round + 1},{b.Name},{a.Name},{sample!.Seconds},{sample.PeakKib},{(double.IsNaN(sample.Throughput) ? "" : sample.Throughput)}"));
                    Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"mimalloc-bench: [{done}/{total}, {clock.Elapsed:mm\\:ss}] round {round + 1}: {b.Name} {a.Name}: {sample.Seconds:F2} s, {sample.PeakKib / 1024.0:F1} MiB{(double.IsNaN(sample.Throughput) ? "" : $", {sample.Throughput} {b.Unit}")}"));
                }
            }
        }
        Directory.Delete(work, recursive: true);

        string report = Report(benches, allocators, samples, rounds, tiny);
        Console.WriteLine(report);
        File.WriteAllText(Path.Combine(outDir, "results.md"), report);
        Plot(benches, allocators, samples, Path.Combine(outDir, "time.png"), time: true);
        Plot(benches, allocators, samples, Path.Combine(outDir, "peak.png"), time: false);
        Console.Error.WriteLine($"mimalloc-bench: wrote results.md, samples.csv, time.png and peak.png to {outDir}");
        foreach (string f in failures) Console.Error.WriteLine($"mimalloc-bench: failed: {f}");
        return failures.Count == 0 ? 0 : 1;
    }

    private static T[] Select<T>(T[] all, string? names, Func<T, string> name)
    {
        if (names is null) return all;
        var wanted = names.Split(',', StringSplitOptions.RemoveEmptyEntries);
        foreach (string w in wanted.Where(w => !all.Any(x => name(x) == w)))
            Console.Error.WriteLine($"mimalloc-bench: '{w}' is not one of: {string.Join(", ", all.Select(name))}");
        return all.Where(x => wanted.Contains(name(x))).ToArray();
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine($"mimalloc-bench: {message}");
        return 2;
    }

    /// <summary>Builds one program unless its binary is newer than every source; the error, or null.</summary>
    private static string? BuildProgram(string source, string bin, (string Binary, string Compiler, string Flags, string[] Sources, string Libs) b)
    {
        string output = Path.Combine(bin, b.Binary);
        string[] sources = b.Sources.Select(s => Path.Combine(source, s)).ToArray();
        if (File.Exists(output) && sources.All(s => File.GetLastWriteTimeUtc(s) <= File.GetLastWriteTimeUtc(output))) return null;
        string command = $"{b.Compiler} {b.Flags} -o {output} {string.Join(' ', sources)} {b.Libs}";
        Console.Error.WriteLine($"mimalloc-bench: {command}");
        // In the source folder, as the README's lines are written (rptest's -Irptest).
        string[] arguments = $"{b.Flags} -o".Split(' ', StringSplitOptions.RemoveEmptyEntries).Append(output).Concat(sources)
            .Concat(b.Libs.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToArray();
        try
        {
            ProcessResult p = ChildProcess.Run(b.Compiler, arguments, new ProcessOptions { WorkingDirectory = source });
            return p.ExitCode == 0 ? null : $"building {b.Binary} failed ({command}):\n{p.Error}";
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"building {b.Binary} needs {b.Compiler} ({e.Message}; apt-get install {(b.Compiler == "g++" ? "g++" : "gcc")})";
        }
    }

    /// <summary>One run, as bench.sh makes it: /usr/bin/time around env, which sets the preload for the program alone.</summary>
    private static (Sample? Sample, string? Error) RunOnce(string program, string arguments, Allocator a, string root, string work, string? throughputPattern)
    {
        string timeFile = Path.Combine(work, "time.txt");
        var args = new List<string> { "-f", "%e %M", "-o", timeFile, "/usr/bin/env" };
        if (a.Preload is not null) args.Add("LD_PRELOAD=" + Path.Combine(root, a.Preload));
        if (a.Tunables is not null) args.Add(Tunables.Variable + "=" + a.Tunables);
        args.Add(program);
        args.AddRange(arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries));

        // Wall time (the runner's Elapsed, from just before the start to the exit; /usr/bin/time's
        // %e has 10 ms steps): it adds time's and env's start, under a millisecond, alike for every allocator.
        ProcessResult p = ChildProcess.Run("/usr/bin/time", args, new ProcessOptions
        {
            RemoveEnvironment = ["LD_PRELOAD", Tunables.Variable, "GLIBC_TUNABLES", "MALLOC_ARENA_MAX"],
            WorkingDirectory = work,
            Timeout = TimeSpan.FromMinutes(10),
        });
        if (p.TimedOut) return (null, "did not finish in 10 minutes");
        double seconds = p.Elapsed.TotalSeconds;
        string output = p.Output + p.Error;
        if (p.ExitCode != 0)
            return (null, $"exited {p.ExitCode}: {Tail(output)}");
        string[] time = File.ReadAllLines(timeFile).Last().Split(' ');
        double throughput = double.NaN;
        if (throughputPattern is not null)
        {
            Match m = Regex.Match(output, throughputPattern);
            if (!m.Success) return (null, $"no throughput line (/{throughputPattern}/) in: {Tail(output)}");
            throughput = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        return (new Sample(seconds, long.Parse(time[1], CultureInfo.InvariantCulture), throughput), null);
    }

    private static string Tail(string text) => text.Length <= 400 ? text.Trim() : "..." + text[^400..].Trim();


    /// <summary>
    /// The cost an allocator gave program b, as a ratio to glibc's (lower is better): wall time,
    /// or glibc's throughput over its own where the program measures a fixed time.
    /// </summary>
    private static double TimeRatio(Bench b, List<Sample> s, List<Sample> glibc) => b.Throughput is null
        ? Program.Median(s.Select(x => x.Seconds)) / Program.Median(glibc.Select(x => x.Seconds))
        : Program.Median(glibc.Select(x => x.Throughput)) / Program.Median(s.Select(x => x.Throughput));

    private static double PeakRatio(List<Sample> s, List<Sample> glibc) =>
        Program.Median(s.Select(x => (double)x.PeakKib)) / Program.Median(glibc.Select(x => (double)x.PeakKib));

    private static string Report(Bench[] benches, Allocator[] allocators, Dictionary<(string, string), List<Sample>> samples, int rounds, bool tiny)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine($"Medians of {rounds} round{(rounds == 1 ? "" : "s")}{(tiny ? " (tiny arguments: not for comparison)" : "")}, " +
            $"{Environment.ProcessorCount} cores; in brackets the ratio to glibc, lower is better (for a throughput, glibc's over the allocator's).");
        sb.AppendLine();
        void Table(string title, Func<Bench, List<Sample>, string> value, Func<Bench, List<Sample>, List<Sample>, double> ratio)
        {
            sb.AppendLine(title);
            sb.AppendLine();
            sb.AppendLine("| program | " + string.Join(" | ", allocators.Select(a => a.Name)) + " |");
            sb.AppendLine("|---|" + string.Concat(allocators.Select(_ => "---:|")));
            foreach (Bench b in benches)
            {
                samples.TryGetValue((b.Name, "glibc"), out var glibc);
                var cells = allocators.Select(a => !samples.TryGetValue((b.Name, a.Name), out var s) ? "failed"
                    : a.Name == "glibc" || glibc is null ? value(b, s)
                    : $"{value(b, s)} ({ratio(b, s, glibc).ToString("F2", inv)})");
                sb.AppendLine($"| {b.Name} | {string.Join(" | ", cells)} |");
            }
            sb.AppendLine();
        }
        Table("Time (wall seconds, or the program's throughput):",
            (b, s) => b.Throughput is null
                ? Program.Median(s.Select(x => x.Seconds)).ToString("F3", inv) + " s"
                : Program.Median(s.Select(x => x.Throughput)).ToString("G4", inv) + " " + b.Unit,
            TimeRatio);
        Table("Peak RSS (MiB, /usr/bin/time's %M):",
            (_, s) => (Program.Median(s.Select(x => (double)x.PeakKib)) / 1024).ToString("F1", inv),
            (_, s, glibc) => PeakRatio(s, glibc));
        // Issue 14's goals for the default profile: time at most glibc's, peak RSS at most
        // glibc's plus 2 MiB (the runtime's fixed cost).
        if (allocators.Any(a => a.Name == "NativeHeap"))
        {
            sb.AppendLine("NativeHeap (default profile) against its goals: time at most 1.00 x glibc's, peak RSS at most glibc's + 2 MiB:");
            sb.AppendLine();
            sb.AppendLine("| program | time ratio | peak RSS over glibc's | time | peak |");
            sb.AppendLine("|---|---:|---:|---|---|");
            foreach (Bench b in benches)
            {
                if (!samples.TryGetValue((b.Name, "NativeHeap"), out var s) || !samples.TryGetValue((b.Name, "glibc"), out var glibc)) continue;
                double r = TimeRatio(b, s, glibc);
                double over = (Program.Median(s.Select(x => (double)x.PeakKib)) - Program.Median(glibc.Select(x => (double)x.PeakKib))) / 1024;
                string timeVerdict = r <= 1.0 ? "met" : $"missed by {(r - 1) * 100:F1} %";
                string peakVerdict = over <= 2.0 ? "met" : $"missed by {over - 2:F2} MiB";
                sb.AppendLine(string.Create(inv, $"| {b.Name} | {r:F2} | {over:+0.0;-0.0} MiB | {timeVerdict} | {peakVerdict} |"));
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }

    private static void Plot(Bench[] benches, Allocator[] allocators, Dictionary<(string, string), List<Sample>> samples, string png, bool time)
    {
        var plot = new Plot();
        Allocator[] shown = allocators.Where(a => a.Name != "glibc").ToArray();
        for (int a = 0; a < shown.Length; a++)
        {
            var bars = new List<Bar>();
            for (int i = 0; i < benches.Length; i++)
            {
                if (!samples.TryGetValue((benches[i].Name, shown[a].Name), out var s) || !samples.TryGetValue((benches[i].Name, "glibc"), out var glibc)) continue;
                double r = time ? TimeRatio(benches[i], s, glibc) : PeakRatio(s, glibc);
                bars.Add(new Bar { Position = i * (shown.Length + 1) + a, Value = Math.Min(r, 4), FillColor = Colors.Category10[a] });
            }
            plot.Add.Bars(bars).LegendText = shown[a].Name;
        }
        plot.Add.HorizontalLine(1, 1, Colors.Black, LinePattern.Dashed);
        plot.Axes.Bottom.SetTicks(benches.Select((_, i) => i * (shown.Length + 1) + (shown.Length - 1) / 2.0).ToArray(), benches.Select(b => b.Name).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 120;
        plot.Title(time ? "mimalloc-bench: time / glibc's (lower is better)" : "mimalloc-bench: peak RSS / glibc's (lower is better)");
        plot.YLabel((time ? "time" : "peak RSS") + " / glibc (capped at 4)");
        plot.Axes.SetLimitsY(0, 4.2);
        plot.ShowLegend(Edge.Right);
        plot.SavePng(png, Math.Max(1400, benches.Length * 100), 700);
    }
}
