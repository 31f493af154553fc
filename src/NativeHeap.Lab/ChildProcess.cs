using System.Diagnostics;
using System.Reflection;

namespace NativeHeap.Lab;

/// <summary>How a program run by <see cref="ChildProcess"/> ended, and what it printed.</summary>
/// <param name="ExitCode">The exit code (128 + the signal's number when a signal ended it).</param>
/// <param name="Output">Its standard output; empty when not captured.</param>
/// <param name="Error">Its standard error; empty when not captured.</param>
/// <param name="TimedOut">Whether it outlived <see cref="ProcessOptions.Timeout"/> and was killed with its children.</param>
/// <param name="Elapsed">From just before the start to the end of the process, its output's end not waited for.</param>
public sealed record ProcessResult(int ExitCode, string Output, string Error, bool TimedOut, TimeSpan Elapsed);

/// <summary>What a program run by <see cref="ChildProcess"/> starts with, besides its arguments.</summary>
public sealed record ProcessOptions
{
    /// <summary>Variables removed from the environment this process passes on (before <see cref="Environment"/> is applied).</summary>
    public IEnumerable<string> RemoveEnvironment { get; init; } = [];

    /// <summary>Variables set in the child's environment, after <see cref="RemoveEnvironment"/>; a later one of the same name wins.</summary>
    public IEnumerable<(string Name, string Value)> Environment { get; init; } = [];

    /// <summary>The child's working directory; null for this process's.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>Text written to the child's standard input, which is then closed; null to let it inherit this process's.</summary>
    public string? Input { get; init; }

    /// <summary>How long the child may run before it and its children are killed; null to wait for it however long.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>Capture standard output and error (read concurrently, so neither pipe fills); false lets the child write to this process's.</summary>
    public bool CaptureOutput { get; init; } = true;
}

/// <summary>
/// Runs a program to its end: the one place the nativeheap command, the tests and the
/// benchmarks start a process (each replay, RSS measurement or C program in a fresh one).
/// </summary>
public static class ChildProcess
{
    /// <summary>Run <paramref name="file"/> with <paramref name="args"/> to its end (or its timeout).</summary>
    /// <param name="file">The program: a path, or a name looked up on PATH.</param>
    /// <param name="args">Its arguments, each passed as it is (no shell).</param>
    /// <param name="options">Environment, working directory, input, timeout, capture; null for the defaults.</param>
    /// <exception cref="System.ComponentModel.Win32Exception">The program could not be started.</exception>
    public static ProcessResult Run(string file, IEnumerable<string> args, ProcessOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(args);
        options ??= new ProcessOptions();
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = options.CaptureOutput,
            RedirectStandardError = options.CaptureOutput,
            RedirectStandardInput = options.Input is not null,
            UseShellExecute = false,
        };
        if (options.WorkingDirectory is not null) psi.WorkingDirectory = options.WorkingDirectory;
        foreach (string a in args) psi.ArgumentList.Add(a);
        foreach (string name in options.RemoveEnvironment) psi.Environment.Remove(name);
        foreach (var (name, value) in options.Environment) psi.Environment[name] = value;

        var clock = Stopwatch.StartNew();
        using var process = Process.Start(psi)!;
        Task<string> output = options.CaptureOutput ? process.StandardOutput.ReadToEndAsync() : Task.FromResult("");
        Task<string> error = options.CaptureOutput ? process.StandardError.ReadToEndAsync() : Task.FromResult("");
        if (options.Input is not null)
        {
            try
            {
                process.StandardInput.Write(options.Input);
                process.StandardInput.Close();
            }
            catch (IOException)
            {
                // The child ended, or closed its input, before reading it all: its exit says why.
            }
        }
        bool timedOut = false;
        if (options.Timeout is { } timeout && !process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            timedOut = true;
        }
        process.WaitForExit();
        TimeSpan elapsed = clock.Elapsed;
        return new ProcessResult(process.ExitCode, output.Result, error.Result, timedOut, elapsed);
    }

    /// <summary>
    /// Run a .NET program of this build again in a child process: <paramref name="assembly"/>'s
    /// entry point with <paramref name="args"/>. Under the <c>dotnet</c> host (<c>dotnet
    /// program.dll</c>, or a test host) that is <c>dotnet exec ASSEMBLY ARGS</c>; from an
    /// application host (an installed tool), the same executable again.
    /// </summary>
    /// <param name="args">The program's arguments.</param>
    /// <param name="options">As for <see cref="Run"/>.</param>
    /// <param name="assembly">The assembly whose entry point runs; null for this process's entry assembly.</param>
    /// <exception cref="InvalidOperationException">This process's path is unknown, or another assembly was asked of an application host.</exception>
    public static ProcessResult RunSelf(IEnumerable<string> args, ProcessOptions? options = null, Assembly? assembly = null)
    {
        ArgumentNullException.ThrowIfNull(args);
        string self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this program's path");
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            string location = (assembly ?? Assembly.GetEntryAssembly())?.Location
                ?? throw new InvalidOperationException("this program has no entry assembly to run again");
            return Run(self, ["exec", location, .. args], options);
        }
        if (assembly is not null && assembly != Assembly.GetEntryAssembly())
            throw new InvalidOperationException($"{assembly.GetName().Name} can be run again only under the dotnet host, not from {self}");
        return Run(self, args, options);
    }
}
