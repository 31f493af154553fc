using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>`nativeheap replay`: one trace on one allocator, in this process.</summary>
internal static class Replay
{
    internal const string GlibcTunables = "GLIBC_TUNABLES";
    internal const string GlibcTcacheOff = "glibc.malloc.tcache_count=0";

    internal static int Run(string nameOrPath, string allocator, string tcache, bool placements, ulong alignBreak)
    {
        byte[]? trace = Program.LoadTrace(nameOrPath, out string label);
        if (trace is null) return Program.UsageError;
        if (Program.Validate(trace, label) is null) return Program.UsageError;
        if (alignBreak != 0 && (alignBreak & (alignBreak - 1)) != 0) return Program.Fail("--align-break must be a power of two");

        ReplayTarget target;
        if (allocator == "glibc")
        {
            // glibc reads its tunables when the process starts: run again with them set.
            bool tunableSet = Environment.GetEnvironmentVariable(GlibcTunables)?.Contains(GlibcTcacheOff) == true;
            if (tcache == "off" && !tunableSet) return RunAgainWithTcacheOff();
            target = new GlibcTarget();
        }
        else
        {
            Program.UseGlibcProfile();
            if (tcache == "off") Heap.SetOption(HeapOption.TcacheCount, 0);
            target = new NativeHeapTarget();
        }

        using Stream stdout = Console.OpenStandardOutput();
        // The Memory overload: the Span one copies the trace, which would double a large one in the measured process.
        ReplayResult result = TraceReplayer.Replay(trace, target, stdout, new ReplayOptions { AlignBreak = (nuint)alignBreak, Placements = placements });
        if (result.ForeignBreaks > 0)
        {
            Console.Error.WriteLine($"warning: someone else (glibc's malloc in this process) moved the program break {result.ForeignBreaks} time(s) " +
                "during the replay; NativeHeap fenced off its old top and went on above, so placements after that differ from a lone glibc's.");
        }
        return 0;
    }

    private static int RunAgainWithTcacheOff()
    {
        string[] args = Environment.GetCommandLineArgs()[1..];
        string tunables = Environment.GetEnvironmentVariable(GlibcTunables) is { Length: > 0 } t ? $"{t}:{GlibcTcacheOff}" : GlibcTcacheOff;
        ProcessResult r = ChildProcess.RunSelf(args, new ProcessOptions { Environment = [(GlibcTunables, tunables)] });
        Console.Out.Write(r.Output);
        Console.Error.Write(r.Error);
        return r.ExitCode;
    }
}
