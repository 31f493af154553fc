using System.Diagnostics;

namespace NativeHeap.Tests;

/// <summary>What a program run by a test printed, and how it ended.</summary>
internal sealed record ProcessResult(int ExitCode, string Output, string Error);

/// <summary>Runs a program to its end with the tunables of the test process removed and the given environment added.</summary>
internal static class ChildProcess
{
    internal static ProcessResult Run(string file, IEnumerable<string> args, IEnumerable<(string Name, string Value)> environment,
        string? workingDirectory = null, int timeoutSeconds = 300)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (workingDirectory != null) psi.WorkingDirectory = workingDirectory;
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment.Remove("NATIVEHEAP_TUNABLES");
        psi.Environment.Remove("GLIBC_TUNABLES");
        psi.Environment.Remove("LD_PRELOAD");
        foreach (var (n, v) in environment) psi.Environment[n] = v;
        using var process = Process.Start(psi)!;
        Task<string> error = process.StandardError.ReadToEndAsync();
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(timeoutSeconds * 1000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{Path.GetFileName(file)} {string.Join(' ', args)} did not finish in {timeoutSeconds} s");
        }
        return new ProcessResult(process.ExitCode, output.Result, error.Result);
    }
}
