using System.Reflection;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// Runs a scenario in a child process of its own (this test assembly, started with
/// <c>dotnet exec</c>), for tests that assert on the program break or on RSS: the test host's
/// own allocations and threads would blur them. The child prints <c>key=value</c> lines.
/// Runs the C programs and commands the tests compare with, too (<see cref="RunProgram"/>).
/// </summary>
internal static class Child
{
    private const int ScenarioTimeoutSeconds = 120;

    /// <summary>Run a scenario that is expected to end the process; returns how it ended.</summary>
    internal static ProcessResult RunExpectingFailure(string scenario, params (string Name, string Value)[] environment) =>
        RunScenario(scenario, environment);

    private static ProcessResult RunScenario(string scenario, (string Name, string Value)[] environment)
    {
        ProcessResult r = ChildProcess.RunSelf(["child", scenario], new ProcessOptions
        {
            RemoveEnvironment = [Tunables.Variable],
            // Compile once, on first call: no background re-JIT mallocing while a scenario measures.
            Environment = [("DOTNET_TieredCompilation", "0"), .. environment],
            Timeout = TimeSpan.FromSeconds(ScenarioTimeoutSeconds),
        }, typeof(Child).Assembly);
        Assert.False(r.TimedOut, $"child {scenario} did not finish in {ScenarioTimeoutSeconds} s");
        return r;
    }

    internal static Dictionary<string, string> Run(string scenario, params (string Name, string Value)[] environment)
    {
        ProcessResult r = RunScenario(scenario, environment);
        Assert.True(r.ExitCode == 0, $"child {scenario} exited {r.ExitCode}:\n{r.Output}\n{r.Error}");
        var result = new Dictionary<string, string>();
        foreach (string line in r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = line.IndexOf('=');
            if (eq > 0) result[line[..eq]] = line[(eq + 1)..].Trim();
        }
        result["stderr"] = r.Error;
        return result;
    }

    /// <summary>Run a program to its end with the tunables of the test process removed and the given environment added.</summary>
    internal static ProcessResult RunProgram(string file, IEnumerable<string> args, IEnumerable<(string Name, string Value)> environment,
        string? workingDirectory = null, int timeoutSeconds = 300)
    {
        ProcessResult r = ChildProcess.Run(file, args, new ProcessOptions
        {
            RemoveEnvironment = [Tunables.Variable, "GLIBC_TUNABLES", "LD_PRELOAD"],
            Environment = environment,
            WorkingDirectory = workingDirectory,
            Timeout = TimeSpan.FromSeconds(timeoutSeconds),
        });
        if (r.TimedOut) Assert.Fail($"{Path.GetFileName(file)} {string.Join(' ', args)} did not finish in {timeoutSeconds} s");
        return r;
    }
}

/// <summary>The child process's entry point: <c>child SCENARIO</c> runs a static method of <see cref="ChildScenarios"/>.</summary>
public static class ChildMain
{
    /// <summary>Entry point of the test assembly when started as a child process.</summary>
    public static int Main(string[] args)
    {
        if (args.Length != 2 || args[0] != "child")
        {
            Console.Error.WriteLine("usage: dotnet exec NativeHeap.Tests.dll child SCENARIO");
            return 2;
        }
        MethodInfo? method = typeof(ChildScenarios).GetMethod(args[1], BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic);
        if (method is null)
        {
            Console.Error.WriteLine($"unknown scenario {args[1]}");
            return 2;
        }
        try
        {
            // Nothing JIT-compiled in a measured window: compile NativeHeap and the scenarios first
            // (unless the scenario is about what first-time compilation does).
            if (Environment.GetEnvironmentVariable(NoPrecompile) != "1")
            {
                Precompile.Assembly();
                Precompile.Type(typeof(ChildScenarios));
            }
            // And glibc's own malloc off the break: the scenarios measure NativeHeap's.
            if (Environment.GetEnvironmentVariable(Tunables.Variable) is { } t && (t.Contains("use_brk=1") || t.Contains("profile=glibc-2.36")))
                GlibcRoom.Make();
            method.Invoke(null, null);
            return 0;
        }
        catch (TargetInvocationException e)
        {
            Console.Error.WriteLine(e.InnerException);
            return 1;
        }
    }

    /// <summary>Set to 1: the child compiles each method on first call, in the scenario itself.</summary>
    internal const string NoPrecompile = "NATIVEHEAP_TEST_NO_PRECOMPILE";

    internal static void Report(string key, object value) => Console.WriteLine($"{key}={value}");
}
