using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>native-tests/build/replay: glibc's malloc in a fresh C process, whose heap starts empty.</summary>
internal static class NativeReplayer
{
    internal const string Variable = "NATIVEHEAP_GLIBC_REPLAY";

    /// <summary>$NATIVEHEAP_GLIBC_REPLAY, or native-tests/build/replay in a folder above this program.</summary>
    internal static string? Find()
    {
        if (Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } path)
            return File.Exists(path) ? path : null;
        for (string? dir = AppContext.BaseDirectory; dir != null; dir = Path.GetDirectoryName(dir))
        {
            string candidate = Path.Combine(dir, "native-tests", "build", "replay");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    internal static (List<Checkpoint> Checkpoints, string Warnings, string? Error) Run(string replay, Scenario scenario, string tcache)
    {
        string file = Path.Combine(Path.GetTempPath(), $"nativeheap-{Environment.ProcessId}-{scenario.Name}.trace");
        File.WriteAllBytes(file, scenario.Trace);
        try
        {
            ProcessResult r = ChildProcess.Run(replay, [file],
                new ProcessOptions { Environment = [("GLIBC_TUNABLES", tcache == "off" ? Replay.GlibcTcacheOff : "")] });
            if (r.ExitCode != 0)
                return ([], "", $"{replay} {scenario.Name} failed ({r.ExitCode}): {r.Error.Trim()}");
            return (Checkpoint.ParseAll(r.Output), "", null);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
