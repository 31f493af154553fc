using System.Globalization;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>The C programs of native-tests/ (built by `make -C native-tests`, the tool's replayer among them), run as glibc's reference.</summary>
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

    /// <summary>The scenario traces the nativeheap command carries.</summary>
    internal static string ScenarioTraces => Path.Combine(RepoRoot, "src", "NativeHeap.Cli", "scenarios");

    /// <summary>The traces recorded from real programs (test data, with how they were recorded).</summary>
    internal static string RecordedTraces => Path.Combine(RepoRoot, "native-tests", "traces", "recorded");

    internal static string Program(string name)
    {
        string path = Path.Combine(RepoRoot, "native-tests", "build", name);
        Assert.True(File.Exists(path), $"{path} is missing: run `make -C native-tests` (CI does).");
        return path;
    }

    /// <summary>The LD_PRELOAD entry that puts libnativeheap-preload.so (published to artifacts/native) under a program.</summary>
    internal static (string Name, string Value) Preload
    {
        get
        {
            string path = Path.Combine(RepoRoot, "artifacts", "native", "libnativeheap-preload.so");
            Assert.True(File.Exists(path), $"{path} is missing: run `dotnet publish src/NativeHeap.Native -c Release -o artifacts/native` (CI does).");
            return ("LD_PRELOAD", path);
        }
    }

    /// <summary>Run a native-tests program; returns its standard output.</summary>
    internal static string Run(string name, IEnumerable<string> args, params (string Name, string Value)[] environment)
    {
        ProcessResult r = Child.RunProgram(Program(name), args, environment);
        Assert.True(r.ExitCode == 0, $"{name} exited {r.ExitCode}: {r.Error}");
        return r.Output;
    }

    /// <summary>
    /// Two replays of one trace (glibc's first): identical placement lines, and checkpoints
    /// whose anonymous RSS moved alike since the first, within 2% + 512 KiB.
    /// </summary>
    internal static void AssertSameReplay(string glibc, string ours, string label)
    {
        string[] a = glibc.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string[] b = ours.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(a.Length == b.Length, $"{label}: glibc printed {a.Length} lines, NativeHeap {b.Length}");
        long? base0 = null, base1 = null;
        for (int i = 0; i < a.Length; i++)
        {
            string[] x = a[i].Split(' '), y = b[i].Split(' ');
            if (x.Length > 1 && x[1] == "k")
            {
                Assert.True(y.Length > 1 && y[1] == "k" && x[2] == y[2], $"{label} line {i + 1}: glibc '{a[i]}', NativeHeap '{b[i]}'");
                long anonGlibc = long.Parse(x[3], CultureInfo.InvariantCulture), anonOurs = long.Parse(y[3], CultureInfo.InvariantCulture);
                base0 ??= anonGlibc;
                base1 ??= anonOurs;
                long dg = anonGlibc - base0.Value, dn = anonOurs - base1.Value;
                Assert.True(Math.Abs(dg - dn) <= 0.02 * Math.Abs(dg) + 512,
                    $"{label} checkpoint {x[2]}: anonymous RSS +{dg} KiB on glibc, +{dn} KiB on NativeHeap");
            }
            else
            {
                Assert.True(a[i] == b[i], $"{label} output line {i + 1}: glibc '{a[i]}', NativeHeap '{b[i]}'");
            }
        }
    }
}
