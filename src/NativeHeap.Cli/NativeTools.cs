namespace NativeHeap.Cli;

/// <summary>
/// The C programs the command runs (native/ in this project): replay (a trace on glibc's
/// malloc in a fresh C process) and librecorder.so (the LD_PRELOAD recorder). The packed tool
/// carries them in its native/ folder, built for linux-x64 when it was packed; in the
/// repository they are src/NativeHeap.Cli/native/build's.
/// </summary>
internal static class NativeTools
{
    /// <summary>A folder to take them from instead (for tests and for builds of one's own).</summary>
    internal const string Variable = "NATIVEHEAP_NATIVE_TOOLS";

    /// <summary>The program's path, or null: $NATIVEHEAP_NATIVE_TOOLS, the tool's native/ folder, src/NativeHeap.Cli/native/build above this program.</summary>
    internal static string? Find(string name)
    {
        string? path = Candidates(name).FirstOrDefault(File.Exists);
        if (path is not null && !name.EndsWith(".so", StringComparison.Ordinal)) EnsureExecutable(path);
        return path;
    }

    internal static string Missing(string name) =>
        $"{name} was not found: not in ${Variable}, not in this tool's native/ folder (a tool packed without gcc has none), " +
        "and no src/NativeHeap.Cli/native/build above it (make -C src/NativeHeap.Cli/native builds it)";

    private static IEnumerable<string> Candidates(string name)
    {
        if (Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } dir) yield return Path.Combine(dir, name);
        yield return Path.Combine(AppContext.BaseDirectory, "native", name);
        for (string? d = AppContext.BaseDirectory; d != null; d = Path.GetDirectoryName(d))
            yield return Path.Combine(d, "src", "NativeHeap.Cli", "native", "build", name);
    }

    /// <summary>NuGet does not keep a file's mode: a program unpacked from the tool's package comes without its execute bit.</summary>
    private static void EnsureExecutable(string path)
    {
        if (OperatingSystem.IsWindows()) return;
        UnixFileMode mode = File.GetUnixFileMode(path);
        const UnixFileMode exec = UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        if ((mode & UnixFileMode.UserExecute) != 0) return;
        try
        {
            File.SetUnixFileMode(path, mode | exec);
        }
        catch (UnauthorizedAccessException)
        {
            // A tool installed by someone else: the caller's run fails and says so.
        }
    }
}
