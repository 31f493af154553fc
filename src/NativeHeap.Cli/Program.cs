using System.CommandLine;
using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>
/// nativeheap: watch what an allocator does to a process's memory. `record` records a
/// program's allocations; `explain` and `map` say why a trace's process holds its memory;
/// `scenarios` runs the RSS scenarios under NativeHeap and glibc side by side; `replay`
/// replays a trace and prints each block's placement; `info` prints the heap's statistics.
/// </summary>
internal static class Program
{
    internal const int Disagreement = 1;
    internal const int UsageError = 2;

    private static int Main(string[] args)
    {
        var root = new RootCommand("Watch what an allocator does to a process's memory: NativeHeap (glibc 2.36's algorithm in C#) beside glibc's malloc.");
        root.Add(RecordCommand());
        root.Add(ExplainCommand());
        root.Add(MapCommand());
        root.Add(ScenariosCommand());
        root.Add(ScenariosChildCommand());
        root.Add(ReplayCommand());
        root.Add(InfoCommand());
        root.Add(ExplainChildCommand());
        return root.Parse(args).Invoke();
    }

    private static Option<string> TcacheOption(string description, params string[] values)
    {
        var option = new Option<string>("--tcache") { Description = description, DefaultValueFactory = _ => values[^1] == "both" ? "both" : "on" };
        option.AcceptOnlyFromAmong(values);
        return option;
    }

    private static Command RecordCommand()
    {
        var output = new Option<string?>("--output", "-o")
        {
            Description = "Where each process's trace goes. A directory (one that exists, or a name ending in /, made if missing): DIR/NAME.PID.trace, "
                + "NAME the process's program. A name with %p (the pid) and %n (the program's name): as given. A file name without %p: "
                + "the first process's trace, later ones FILE.1, FILE.2, ... (as is a name already taken). Default: %n.%p.trace here.",
        };
        var program = new Argument<string[]>("PROGRAM") { Description = "The program and its arguments (after --).", Arity = ArgumentArity.OneOrMore };
        var command = new Command("record", "Run a program with the allocation recorder preloaded: one trace per process, with each call's thread and the process's own memory at checkpoints. "
            + "A .NET program writes its perf map (DOTNET_PerfMapEnabled=3 unless set), so JIT-compiled frames can be named; record deletes the maps it caused.")
        {
            output, program,
        };
        command.SetAction(result => Record.Run(result.GetValue(output), result.GetValue(program) ?? []));
        return command;
    }

    private static Option<string?> AtOption() => new("--at") { Description = "The checkpoint (a 'k NAME' line) to look at; all of them when not given (map: the last)." };

    private static Command ExplainCommand()
    {
        var trace = new Argument<string>("TRACE") { Description = "A trace file, or the name of a scenario." };
        var at = AtOption();
        var json = new Option<bool>("--json") { Description = "Print one JSON document instead of text (the same as --format json)." };
        var format = new Option<string>("--format") { Description = "text, json, or pprof (a profile.proto per checkpoint, gzipped, written to --out).", DefaultValueFactory = _ => "text" };
        format.AcceptOnlyFromAmong("text", "json", "pprof");
        var output = new Option<string?>("--out") { Description = "With --format pprof: FILE.pb.gz (with several checkpoints, FILE.NAME.pb.gz each)." };
        var wrapper = new Option<string[]>("--wrapper") { Description = "A function of the program that only wraps malloc (NAME, or PREFIX*): allocation sites are looked for past it. May be given more than once.", Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false };
        var command = new Command("explain", "Replay a trace as glibc 2.36 and explain every resident byte at its checkpoints: where it sits, what pins it and which code allocated that, and what setting would give it back (each measured by a replay).")
        {
            trace, at, json, format, output, wrapper,
        };
        command.SetAction(result => Explain.Run(result.GetValue(trace)!, result.GetValue(at),
            result.GetValue(json) ? "json" : result.GetValue(format)!, result.GetValue(output), result.GetValue(wrapper) ?? []));
        return command;
    }

    private static Command ExplainChildCommand()
    {
        var trace = new Argument<string>("TRACE");
        var explain = new Option<bool>("--explain");
        var at = AtOption();
        var idle = new Option<bool>("--idle");
        var command = new Command(Explain.ChildCommand, "(internal) one replay for explain, a JSON line per checkpoint") { trace, explain, at, idle };
        command.Hidden = true;
        command.SetAction(result => Explain.Child(result.GetValue(trace)!, result.GetValue(explain), result.GetValue(at), result.GetValue(idle)));
        return command;
    }

    private static Command MapCommand()
    {
        var trace = new Argument<string>("TRACE") { Description = "A trace file, or the name of a scenario." };
        var at = AtOption();
        var output = new Option<string>("--out") { Description = "The picture: FILE.svg, FILE.png or FILE.html (zoom, pan, a chunk's details and allocation stack on hover).", Required = true };
        var wrapper = new Option<string[]>("--wrapper") { Description = "A function of the program that only wraps malloc (NAME, or PREFIX*). May be given more than once.", Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false };
        var command = new Command("map", "Replay a trace as glibc 2.36 and draw its heap at a checkpoint: each arena's memory, chunks by state, resident pages, the chunks that pin free memory and where they were allocated.")
        {
            trace, at, output, wrapper,
        };
        command.SetAction(result => Map.Run(result.GetValue(trace)!, result.GetValue(at), result.GetValue(output)!, result.GetValue(wrapper) ?? []));
        return command;
    }

    private static Command ScenariosCommand()
    {
        var names = new Argument<string[]>("NAME") { Description = "Scenarios to run (all when none is named).", Arity = ArgumentArity.ZeroOrMore };
        var tcache = TcacheOption("Run with the tcache on, off, or both (default both).", "on", "off", "both");
        var outDir = new Option<DirectoryInfo?>("--out") { Description = "Write one PNG plot per scenario into this directory." };
        var command = new Command("scenarios", "Run RSS scenarios under NativeHeap and glibc, each in a fresh child process, and compare them side by side.")
        {
            names, tcache, outDir,
        };
        command.SetAction(result => ScenarioRunner.Run(
            result.GetValue(names) ?? [], result.GetValue(tcache)!, result.GetValue(outDir)));
        return command;
    }

    private static Command ScenariosChildCommand()
    {
        var name = new Argument<string>("NAME");
        var command = new Command(ScenarioRunner.ChildCommand, "(internal) a scenario on the default profile, each checkpoint again once idle") { name };
        command.Hidden = true;
        command.SetAction(result => ScenarioRunner.DefaultChild(result.GetValue(name)!));
        return command;
    }

    private static Command ReplayCommand()
    {
        var trace = new Argument<string>("TRACE") { Description = "A trace file, or the name of a scenario." };
        var allocator = new Option<string>("--allocator") { Description = "nativeheap or glibc.", DefaultValueFactory = _ => "nativeheap" };
        allocator.AcceptOnlyFromAmong("nativeheap", "glibc");
        var tcache = TcacheOption("Tcache on or off.", "on", "off");
        var checkpointsOnly = new Option<bool>("--checkpoints-only") { Description = "Print the checkpoints, not every placement." };
        var alignBreak = new Option<ulong>("--align-break") { Description = "First move the program break to a multiple of this power of two (as native/replay does with REPLAY_ALIGN_BREAK)." };
        var command = new Command("replay", "Replay a trace and print each allocation's placement and each checkpoint.")
        {
            trace, allocator, tcache, checkpointsOnly, alignBreak,
        };
        command.SetAction(result => Replay.Run(result.GetValue(trace)!, result.GetValue(allocator)!, result.GetValue(tcache)!,
            !result.GetValue(checkpointsOnly), result.GetValue(alignBreak)));
        return command;
    }

    private static Command InfoCommand()
    {
        var trace = new Argument<string?>("TRACE") { Description = "A trace file or scenario to replay first.", Arity = ArgumentArity.ZeroOrOne };
        var tcache = TcacheOption("Tcache on or off.", "on", "off");
        var command = new Command("info", "Print NativeHeap's statistics (mallinfo2, malloc_stats, malloc_info), after an optional trace.")
        {
            trace, tcache,
        };
        command.SetAction(result => Info.Run(result.GetValue(trace), result.GetValue(tcache)!));
        return command;
    }

    /// <summary>
    /// The lab reproduces glibc's decisions: the glibc-2.36 profile unless NATIVEHEAP_TUNABLES
    /// names one, its single tunables still applying over it (the heap reads them at its first
    /// use, which comes after this).
    /// </summary>
    internal static void UseGlibcProfile()
    {
        string? tunables = Environment.GetEnvironmentVariable(Tunables.Variable);
        if (tunables?.Contains("profile=") != true)
            Environment.SetEnvironmentVariable(Tunables.Variable, "profile=glibc-2.36:" + tunables);
    }

    /// <summary>An error for the user, not a stack trace.</summary>
    internal static int Fail(string message)
    {
        Console.Error.WriteLine($"error: {message}");
        return UsageError;
    }

    /// <summary>
    /// A trace file's text (decompressed, a version-2 trace's IDs made absolute: <see cref="TraceFile.Load(string, out string?)"/>),
    /// or a scenario's; null (after an error message) when neither exists or the file cannot be decoded.
    /// </summary>
    internal static byte[]? LoadTrace(string nameOrPath, out string label)
    {
        label = nameOrPath;
        if (File.Exists(nameOrPath))
        {
            try
            {
                byte[] text = TraceFile.Load(nameOrPath, out string? cut);
                if (cut is not null) Console.Error.WriteLine($"warning: {nameOrPath}: {cut}");
                return text;
            }
            catch (Exception e) when (e is TraceFormatException or InvalidDataException)
            {
                Fail($"{nameOrPath}: {e.Message}");
                return null;
            }
        }
        if (Scenario.Find(nameOrPath) is { } scenario) return scenario.Trace;
        Fail($"cannot open {nameOrPath}: no such file, and no scenario of that name (scenarios: {string.Join(", ", Scenario.All.Select(s => s.Name))})");
        return null;
    }

    /// <summary>Check a trace before anything runs, so a bad line is reported with its number; null after the error.</summary>
    internal static TraceSummary? Validate(byte[] trace, string label)
    {
        try
        {
            return TraceReplayer.Validate(trace);
        }
        catch (TraceFormatException e)
        {
            Fail($"{label}: {e.Message}");
            return null;
        }
    }
}
