using System.Diagnostics;

namespace NativeHeap.Cli;

/// <summary>Runs this command again as a child process: each replay gets a fresh process.</summary>
internal static class Child
{
    internal sealed record Result(int ExitCode, string Output, string Error);

    internal static Result Run(IReadOnlyList<string> args, IReadOnlyDictionary<string, string> environment)
    {
        string self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this program's path");
        var psi = new ProcessStartInfo(self)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // Started as `dotnet nativeheap.dll`: run the same assembly again through the host.
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
        {
            psi.ArgumentList.Add("exec");
            psi.ArgumentList.Add(typeof(Child).Assembly.Location);
        }
        foreach (string a in args) psi.ArgumentList.Add(a);
        foreach (var (name, value) in environment) psi.Environment[name] = value;
        using var process = Process.Start(psi)!;
        Task<string> error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return new Result(process.ExitCode, output, error.Result);
    }
}
