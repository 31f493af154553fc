using System.Diagnostics;
using System.Reflection;

namespace NativeHeap.Tests;

/// <summary>
/// Runs a scenario in a child process of its own (this test assembly, started with
/// <c>dotnet exec</c>), for tests that assert on the program break or on RSS: the test host's
/// own allocations and threads would blur them. The child prints <c>key=value</c> lines.
/// </summary>
internal static class Child
{
    internal sealed record Outcome(int ExitCode, string Output, string Error);

    /// <summary>Run a scenario that is expected to end the process; returns how it ended.</summary>
    internal static Outcome RunExpectingFailure(string scenario, params (string Name, string Value)[] environment)
    {
        using var process = Start(scenario, environment);
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(120_000), $"child {scenario} did not finish in 120 s");
        return new Outcome(process.ExitCode, stdout, stderr.Result);
    }

    private static Process Start(string scenario, (string Name, string Value)[] environment)
    {
        string assembly = typeof(Child).Assembly.Location;
        var psi = new ProcessStartInfo(Environment.ProcessPath!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(assembly);
        psi.ArgumentList.Add("child");
        psi.ArgumentList.Add(scenario);
        psi.Environment.Remove("NATIVEHEAP_TUNABLES");
        // Compile once, on first call: no background re-JIT mallocing while a scenario measures.
        psi.Environment["DOTNET_TieredCompilation"] = "0";
        foreach (var (name, value) in environment) psi.Environment[name] = value;
        return Process.Start(psi)!;
    }

    internal static Dictionary<string, string> Run(string scenario, params (string Name, string Value)[] environment)
    {
        using var process = Start(scenario, environment);
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(120_000), $"child {scenario} did not finish in 120 s");
        Assert.True(process.ExitCode == 0, $"child {scenario} exited {process.ExitCode}:\n{stdout}\n{stderr.Result}");
        var result = new Dictionary<string, string>();
        foreach (string line in stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = line.IndexOf('=');
            if (eq > 0) result[line[..eq]] = line[(eq + 1)..].Trim();
        }
        result["stderr"] = stderr.Result;
        return result;
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
            // Nothing JIT-compiled in a measured window: compile NativeHeap and the scenarios first.
            Diagnostics.Precompile.Assembly();
            Diagnostics.Precompile.Type(typeof(ChildScenarios));
            // And glibc's own malloc off the break: the scenarios measure NativeHeap's.
            if (Environment.GetEnvironmentVariable("NATIVEHEAP_TUNABLES") is { } t && (t.Contains("use_brk=1") || t.Contains("profile=glibc-2.36")))
                Diagnostics.GlibcRoom.Make();
            method.Invoke(null, null);
            return 0;
        }
        catch (TargetInvocationException e)
        {
            Console.Error.WriteLine(e.InnerException);
            return 1;
        }
    }

    internal static void Report(string key, object value) => Console.WriteLine($"{key}={value}");
}
