using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>native/replay: glibc's malloc in a fresh C process, whose heap starts empty.</summary>
internal static class NativeReplayer
{
    /// <summary>The replayer the tool carries, or src/NativeHeap.Cli/native/build's (see <see cref="NativeTools"/>).</summary>
    internal static string? Find() => NativeTools.Find("replay");

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
