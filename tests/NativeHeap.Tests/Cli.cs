using System.Diagnostics;

namespace NativeHeap.Tests;

/// <summary>The nativeheap command (src/NativeHeap.Cli), run as a user runs it, from the build of this configuration.</summary>
internal static class Cli
{
    internal sealed record Result(int ExitCode, string Output, string Error);

    internal static string Dll
    {
        get
        {
            // tests/NativeHeap.Tests/bin/<Configuration>/net10.0/ -> src/NativeHeap.Cli/bin/<Configuration>/net10.0/
            string here = AppContext.BaseDirectory.TrimEnd('/');
            string configuration = Path.GetFileName(Path.GetDirectoryName(here))!;
            string dll = Path.Combine(NativeTests.RepoRoot, "src", "NativeHeap.Cli", "bin", configuration, "net10.0", "NativeHeap.Cli.dll");
            Assert.True(File.Exists(dll), $"{dll} is missing: build the solution first.");
            return dll;
        }
    }

    internal static Result Run(IEnumerable<string> args, params (string Name, string Value)[] environment)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(Dll);
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment.Remove("NATIVEHEAP_TUNABLES");
        psi.Environment.Remove("GLIBC_TUNABLES");
        foreach (var (n, v) in environment) psi.Environment[n] = v;
        using var process = Process.Start(psi)!;
        Task<string> error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(300_000), "nativeheap did not finish in 5 minutes");
        return new Result(process.ExitCode, output, error.Result);
    }
}
