using System.Diagnostics;

namespace NativeHeap.Tests;

/// <summary>The C programs of native-tests/ (built by `make -C native-tests`), run as glibc's reference.</summary>
internal static class NativeTests
{
    internal static string RepoRoot
    {
        get
        {
            string? dir = AppContext.BaseDirectory;
            while (dir != null && !File.Exists(Path.Combine(dir, "NativeHeap.sln"))) dir = Path.GetDirectoryName(dir);
            return dir ?? throw new InvalidOperationException("NativeHeap.sln not found above " + AppContext.BaseDirectory);
        }
    }

    internal static string Program(string name)
    {
        string path = Path.Combine(RepoRoot, "native-tests", "build", name);
        Assert.True(File.Exists(path), $"{path} is missing: run `make -C native-tests` (CI does).");
        return path;
    }

    /// <summary>Run a native-tests program; returns its standard output.</summary>
    internal static string Run(string name, IEnumerable<string> args, params (string Name, string Value)[] environment)
    {
        var psi = new ProcessStartInfo(Program(name))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment.Remove("GLIBC_TUNABLES");
        foreach (var (n, v) in environment) psi.Environment[n] = v;
        using var process = Process.Start(psi)!;
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{name} exited {process.ExitCode}: {stderr.Result}");
        return stdout;
    }
}
