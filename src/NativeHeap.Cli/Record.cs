using System.ComponentModel;
using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>
/// `nativeheap record`: run a program with the recorder preloaded (native/recorder.c,
/// carried inside the tool) and say which trace files it wrote: one per process, with each
/// call's thread and, every NH_TRACE_EVERY calls and at exit, the process's own statm.
/// </summary>
internal static class Record
{
    internal static int Run(string? output, string[] command)
    {
        if (command.Length == 0) return Program.Fail("record needs a program to run: nativeheap record [-o FILE] -- PROGRAM ARGS...");
        string? recorder = NativeTools.Find("librecorder.so");
        if (recorder is null) return Program.Fail(NativeTools.Missing("librecorder.so"));

        string pattern = Path.GetFullPath(output ?? $"{Path.GetFileName(command[0])}-%p.trace");
        string? dir = Path.GetDirectoryName(pattern);
        if (dir is null || !Directory.Exists(dir)) return Program.Fail($"cannot write {pattern}: no directory {dir}");
        if (!CanWrite(dir)) return Program.Fail($"cannot write {pattern}: {dir} is not writable");

        string preload = Environment.GetEnvironmentVariable("LD_PRELOAD") is { Length: > 0 } p ? $"{recorder}:{p}" : recorder;
        DateTime started = DateTime.UtcNow;
        ProcessResult r;
        try
        {
            r = ChildProcess.Run(command[0], command[1..], new ProcessOptions
            {
                CaptureOutput = false,
                Environment = [("LD_PRELOAD", preload), ("NH_TRACE", pattern)],
            });
        }
        catch (Win32Exception e)
        {
            return Program.Fail($"cannot run {command[0]}: {e.Message}");
        }

        // The recorder names each process's file after the pattern (%p the pid; .1, .2 on a clash).
        string name = Path.GetFileName(pattern);
        int cut = name.IndexOf("%p", StringComparison.Ordinal);
        string prefix = cut < 0 ? name : name[..cut];
        var files = Directory.GetFiles(dir, prefix + "*")
            .Where(f => File.GetLastWriteTimeUtc(f) >= started.AddSeconds(-1) && (cut >= 0 || Path.GetFileName(f).StartsWith(name, StringComparison.Ordinal)))
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        if (files.Count == 0)
        {
            Console.Error.WriteLine($"error: {command[0]} exited {r.ExitCode} and no trace was written (was it a static program, or one that never allocated?)");
            return r.ExitCode != 0 ? r.ExitCode : Program.UsageError;
        }
        Console.Error.WriteLine($"{command[0]} exited {r.ExitCode}; {files.Count} trace file{(files.Count == 1 ? "" : "s")} (one per process):");
        foreach (string f in files)
        {
            try
            {
                TraceSummary t = TraceReplayer.Validate(File.ReadAllBytes(f));
                Console.Error.WriteLine($"  {f}: {t.Operations:N0} lines, {t.Threads} thread{(t.Threads == 1 ? "" : "s")}, {t.Checkpoints.Count} checkpoint{(t.Checkpoints.Count == 1 ? "" : "s")}");
            }
            catch (TraceFormatException e)
            {
                Console.Error.WriteLine($"  {f}: does not replay: {e.Message}");
            }
        }
        Console.Error.WriteLine($"next: nativeheap explain {files[0]}   (or nativeheap map {files[0]} --out map.html)");
        return r.ExitCode;
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
