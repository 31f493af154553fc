using System.ComponentModel;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>
/// `nativeheap record`: run a program with the recorder preloaded (native/recorder.c,
/// carried inside the tool) and say which trace files it wrote: one per process, named after
/// its program and pid unless told otherwise, with each call's thread and, every
/// NH_TRACE_EVERY calls and at exit, the process's own statm. The closing hint names the
/// trace with the most operations: a program started through a wrapper (a pyenv shim, a
/// shell script) writes the wrapper's small traces too.
/// </summary>
internal static class Record
{
    /// <summary>Each process's trace when -o names no file: the recorder puts the program's name for %n, its pid for %p.</summary>
    internal const string PerProcessName = "%n.%p.trace";

    private const string PerfMapEnabled = "DOTNET_PerfMapEnabled";

    /// <summary>
    /// 3: the perf map only (/tmp/perf-PID.map, JIT-compiled code and stubs), not the jitdump
    /// (1 writes both, 2 the jitdump alone). .NET 10's runtime writes no perfinfo-PID.map.
    /// </summary>
    private const string PerfMapOnly = "3";

    internal static int Run(string? output, string[] command)
    {
        if (command.Length == 0) return Program.Fail("record needs a program to run: nativeheap record [-o FILE|DIR] -- PROGRAM ARGS...");
        string? recorder = NativeTools.Find("librecorder.so");
        if (recorder is null) return Program.Fail(NativeTools.Missing("librecorder.so"));

        if (Pattern(output, out string? error) is not { } pattern) return Program.Fail(error!);
        string dir = Path.GetDirectoryName(pattern)!;
        if (!CanWrite(dir)) return Program.Fail($"cannot write {pattern}: {dir} is not writable");
        Regex names = NameRegex(Path.GetFileName(pattern));
        Dictionary<string, (DateTime, long)> before = Matching(dir, names);

        string preload = Environment.GetEnvironmentVariable("LD_PRELOAD") is { Length: > 0 } p ? $"{recorder}:{p}" : recorder;
        var environment = new List<(string, string)> { ("LD_PRELOAD", preload), ("NH_TRACE", pattern) };
        // A .NET program's JIT-compiled frames are named from the runtime's perf map; one the user asked for is theirs to keep.
        bool perfMaps = string.IsNullOrEmpty(Environment.GetEnvironmentVariable(PerfMapEnabled))
            && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("COMPlus_PerfMapEnabled"));
        if (perfMaps) environment.Add((PerfMapEnabled, PerfMapOnly));
        DateTime started = DateTime.UtcNow;
        ProcessResult r;
        try
        {
            r = ChildProcess.Run(command[0], command[1..], new ProcessOptions { CaptureOutput = false, Environment = environment });
        }
        catch (Win32Exception e)
        {
            return Program.Fail($"cannot run {command[0]}: {e.Message}");
        }

        // New files, or rewritten ones: the recorder opens with O_EXCL, so an old file is never reused.
        var traces = Matching(dir, names)
            .Where(f => !before.TryGetValue(f.Key, out var old) || old != f.Value)
            .Select(f => Inspect(f.Key, names))
            .OrderByDescending(t => t.Summary?.Operations ?? -1).ThenByDescending(t => t.Bytes).ThenBy(t => t.Path, StringComparer.Ordinal)
            .ToList();
        if (perfMaps) DeletePerfMaps(traces.Select(t => t.Pid), started);
        if (traces.Count == 0)
        {
            Console.Error.WriteLine($"error: {command[0]} exited {r.ExitCode} and no trace was written (was it a static program, or one that never allocated?)");
            return r.ExitCode != 0 ? r.ExitCode : Program.UsageError;
        }
        Console.Error.WriteLine($"{command[0]} exited {r.ExitCode}; {traces.Count} trace file{(traces.Count == 1 ? "" : "s")} (one per process), most operations first:");
        foreach (Trace t in traces)
        {
            Console.Error.WriteLine(t.Summary is { } s
                ? $"  {t.Path}: {s.Operations:N0} operation{(s.Operations == 1 ? "" : "s")}, {s.Threads} thread{(s.Threads == 1 ? "" : "s")}, {s.Checkpoints} checkpoint{(s.Checkpoints == 1 ? "" : "s")}{(s.Cut ? " (cut short: the process did not end normally; the commands read its whole lines)" : "")}"
                : $"  {t.Path}: cannot be read: {t.Error}");
        }
        string best = traces[0].Path;
        Console.Error.WriteLine($"next: nativeheap explain {best}   (or nativeheap map {best} --out map.html)");
        return r.ExitCode;
    }

    /// <summary>NH_TRACE for the recorder, as a full path, from -o (see the option's help); null and why when it cannot be.</summary>
    internal static string? Pattern(string? output, out string? error)
    {
        error = null;
        string pattern;
        if (output is { Length: 0 })
        {
            error = "-o needs a file or a directory";
            return null;
        }
        if (output is null) pattern = Path.GetFullPath(PerProcessName);
        else if (output.EndsWith('/') || Directory.Exists(output))
        {
            try
            {
                Directory.CreateDirectory(output); // ending in /, it names a directory: made if missing
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                error = $"cannot create the directory {output}: {e.Message}";
                return null;
            }
            pattern = Path.Combine(Path.GetFullPath(output), PerProcessName);
        }
        else pattern = Path.GetFullPath(output);

        string dir = Path.GetDirectoryName(pattern)!;
        if (dir.Contains("%p", StringComparison.Ordinal) || dir.Contains("%n", StringComparison.Ordinal))
            error = $"-o {output}: %p and %n may stand only in the file's name, not in its directory";
        else if (!Directory.Exists(dir))
            error = $"cannot write {pattern}: no directory {dir}";
        return error is null ? pattern : null;
    }

    /// <summary>
    /// The files the recorder may write for <paramref name="fileName"/>: %n any name, %p a pid
    /// (the first one captured as "pid"), and ".N" after it when the name was taken.
    /// </summary>
    internal static Regex NameRegex(string fileName)
    {
        var sb = new StringBuilder("^");
        bool pid = false;
        for (int i = 0; i < fileName.Length; i++)
        {
            if (fileName[i] == '%' && i + 1 < fileName.Length && fileName[i + 1] is 'p' or 'n')
            {
                sb.Append(fileName[++i] == 'n' ? ".+" : pid ? "[0-9]+" : "(?<pid>[0-9]+)");
                pid |= fileName[i] == 'p';
            }
            else sb.Append(Regex.Escape(fileName[i].ToString()));
        }
        return new Regex(sb.Append(@"(\.[0-9]+)?$").ToString(), RegexOptions.CultureInvariant);
    }

    private static Dictionary<string, (DateTime, long)> Matching(string dir, Regex names)
    {
        var files = new Dictionary<string, (DateTime, long)>();
        foreach (FileInfo f in new DirectoryInfo(dir).EnumerateFiles())
            if (names.IsMatch(f.Name)) files[f.FullName] = (f.LastWriteTimeUtc, f.Length);
        return files;
    }

    /// <summary>A trace the run wrote: its counts, or why it cannot be read.</summary>
    private sealed record Trace(string Path, long Bytes, TraceCounts? Summary, string? Error, int? Pid);

    /// <summary>A trace's size and operations, and its process's pid: from its name (%p), else from its "# pid" line.</summary>
    private static Trace Inspect(string path, Regex names)
    {
        Match m = names.Match(System.IO.Path.GetFileName(path));
        int? pid = m.Groups["pid"].Success ? int.Parse(m.Groups["pid"].Value, CultureInfo.InvariantCulture) : null;
        long bytes = new FileInfo(path).Length;
        try
        {
            // Counted, not checked: checking a long trace costs as much as recording it, and
            // explain, map and replay check it before they run.
            TraceCounts counts = TraceFile.Count(path);
            return new Trace(path, bytes, counts, null, pid ?? counts.Pid);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            return new Trace(path, bytes, null, e.Message, pid);
        }
    }

    /// <summary>The perf maps the recorded processes wrote because this command asked for them.</summary>
    private static void DeletePerfMaps(IEnumerable<int?> pids, DateTime started)
    {
        string dir = Environment.GetEnvironmentVariable("DOTNET_PerfMapJitDumpPath") is { Length: > 0 } d ? d : "/tmp";
        foreach (int pid in pids.OfType<int>().Distinct())
        {
            foreach (string name in new[] { $"perf-{pid}.map", $"perfinfo-{pid}.map" })
            {
                var f = new FileInfo(Path.Combine(dir, name));
                // Older than the run: another process of that pid wrote it, not one of ours.
                if (!f.Exists || f.LastWriteTimeUtc < started.AddSeconds(-1)) continue;
                try
                {
                    f.Delete();
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    Console.Error.WriteLine($"warning: cannot delete {f.FullName}: {e.Message}");
                }
            }
        }
    }

    private static bool CanWrite(string dir)
    {
        string probe = Path.Combine(dir, $".nativeheap-{Environment.ProcessId}");
        try
        {
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
