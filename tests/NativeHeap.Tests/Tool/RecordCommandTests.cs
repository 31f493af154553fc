using System.Text.RegularExpressions;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// nativeheap record, run as a user runs it: where each process's trace goes for every form
/// of -o, which trace the closing hint names when a program runs through a wrapper, and a
/// .NET program's perf map written for the recording and deleted after it.
/// </summary>
public class RecordCommandTests
{
    /// <summary>`nativeheap record ARGS` in <paramref name="workDir"/>, the perf map settings of the test process removed.</summary>
    private static ProcessResult Record(string workDir, IEnumerable<string> args, params (string Name, string Value)[] environment)
    {
        ProcessResult r = ChildProcess.Run(Environment.ProcessPath!, ["exec", Cli.Dll, "record", .. args], new ProcessOptions
        {
            RemoveEnvironment = [Tunables.Variable, "GLIBC_TUNABLES", "LD_PRELOAD", "NH_TRACE",
                "DOTNET_PerfMapEnabled", "COMPlus_PerfMapEnabled", "DOTNET_PerfMapJitDumpPath"],
            Environment = environment,
            WorkingDirectory = workDir,
            Timeout = TimeSpan.FromSeconds(120),
        });
        Assert.False(r.TimedOut, "record did not finish in 120 s");
        Assert.True(r.ExitCode == 0, $"record exited {r.ExitCode}:\n{r.Output}\n{r.Error}");
        return r;
    }

    /// <summary>The trace the closing hint names.</summary>
    private static string Hinted(ProcessResult r) => Regex.Match(r.Error, @"\nnext: nativeheap explain (\S+) ").Groups[1].Value;

    /// <summary>The recorder's "# pid N" line.</summary>
    private static string HeaderPid(string trace) => Regex.Match(System.Text.Encoding.ASCII.GetString(TraceFile.Load(trace)), @"\n# pid (\d+)\n").Groups[1].Value;

    [Fact]
    public void AProcessKilledMidRun_LeavesATraceTheCommandsStillRead()
    {
        using var temp = new TempDirectory("nh-record-killed");
        // SIGKILL: no exit flush, so the zstd frame is left open and ends inside a block.
        ProcessResult r = ChildProcess.Run(Environment.ProcessPath!, ["exec", Cli.Dll, "record", "-o", "k-%p.trace", "--", "/usr/bin/python3", "-c",
            "import os, signal\nkeep = [str(i) * 3 for i in range(400000)]\nos.kill(os.getpid(), signal.SIGKILL)"], new ProcessOptions
        {
            RemoveEnvironment = [Tunables.Variable, "GLIBC_TUNABLES", "LD_PRELOAD", "NH_TRACE"],
            Environment = [("PYTHONMALLOC", "malloc")],
            WorkingDirectory = temp.Path,
            Timeout = TimeSpan.FromSeconds(120),
        });
        Assert.False(r.TimedOut);
        Assert.Contains("cut short", r.Error);
        string trace = Assert.Single(Directory.GetFiles(temp.Path, "k-*.trace"));
        Assert.Throws<InvalidDataException>(() => TraceFile.Load(trace)); // the strict reader says so
        byte[] text = TraceFile.Load(trace, out string? cut);
        Assert.NotNull(cut);
        Assert.Equal((byte)'\n', text[^1]); // whole lines only
        Assert.True(TraceReplayer.Validate(text).Operations > 100_000, "fewer lines than the program's calls");
        ProcessResult info = Cli.Run(["info", trace]);
        Assert.True(info.ExitCode == 0, $"info exited {info.ExitCode}:\n{info.Output}\n{info.Error}");
        Assert.Contains("stops in the middle of a frame", info.Error);
    }

    [Theory]
    [InlineData(null, @"true\.(\d+)\.trace")] // default: here, after the program
    [InlineData("out", @"out/true\.(\d+)\.trace")] // an existing directory
    [InlineData("new/sub/", @"new/sub/true\.(\d+)\.trace")] // a name ending in /, made
    [InlineData("t-%p.trace", @"t-(\d+)\.trace")] // %p: as given
    [InlineData("%n-%p.log", @"true-(\d+)\.log")] // %n and %p: as given
    public void EachProcessTrace_IsNamedAsTheOutputOptionSays(string? output, string expected)
    {
        using var temp = new TempDirectory("nh-record-names");
        Directory.CreateDirectory(Path.Combine(temp.Path, "out"));
        ProcessResult r = Record(temp.Path, [.. output is null ? Array.Empty<string>() : ["-o", output], "--", "/bin/true"]);
        string trace = Assert.Single(Directory.GetFiles(temp.Path, "*", SearchOption.AllDirectories));
        Match m = Regex.Match(Path.GetRelativePath(temp.Path, trace), $"^{expected}$");
        Assert.True(m.Success, $"{trace} is not {expected}");
        Assert.Equal(HeaderPid(trace), m.Groups[1].Value); // the pid in the name is the process's
        Assert.Equal(trace, Hinted(r));
    }

    [Fact]
    public void AFileWithoutPid_IsTheFirstProcesss_LaterOnesGetSuffixes_AnOldOneIsLeftOut()
    {
        using var temp = new TempDirectory("nh-record-file");
        string file = Path.Combine(temp.Path, "out.trace");
        File.WriteAllText(file, "# an earlier run's\n");
        ProcessResult r = Record(temp.Path, ["-o", file, "--", "sh", "-c", "/bin/true; /bin/true"]);
        // Two /bin/true processes (dash itself does not malloc): the name was taken, so .1 and .2.
        Assert.Equal(["out.trace", "out.trace.1", "out.trace.2"], Directory.GetFiles(temp.Path).Select(Path.GetFileName).Order());
        Assert.Contains("2 trace files", r.Error);
        Assert.DoesNotContain($"{file}:", r.Error); // the earlier run's is not this run's
        Assert.Matches(@"out\.trace\.[12]$", Hinted(r));
    }

    [Fact]
    public void TheHint_NamesTheTraceWithTheMostOperations_NotTheWrappers()
    {
        using var temp = new TempDirectory("nh-record-hint");
        ProcessResult r = Record(temp.Path, ["--", "sh", "-c", "/bin/true; /usr/bin/python3 -c 'x=[0]*1000'"]);
        string[] traces = Directory.GetFiles(temp.Path);
        Assert.True(traces.Length >= 2, r.Error);
        long Operations(string f) => File.ReadLines(f).Count(l => l.Length > 0 && l[0] != '#');
        string most = traces.MaxBy(Operations)!;
        Assert.StartsWith("python3", Path.GetFileName(most));
        Assert.Equal(most, Hinted(r));
        // Listed most operations first.
        var listed = Regex.Matches(r.Error, @"\n  (\S+): ([\d,]+) operations?").Select(m => long.Parse(m.Groups[2].Value.Replace(",", ""))).ToList();
        Assert.Equal(traces.Length, listed.Count);
        Assert.Equal(listed.OrderDescending(), listed);
    }

    /// <summary>
    /// `dotnet --version` runs the SDK's managed code, whose JIT-compiled methods the perf map
    /// names (98 of them, besides stubs, when measured). A shell between record and dotnet
    /// looks at the map after dotnet ends and before record does.
    /// </summary>
    [Fact]
    public void ADotnetProgram_WritesItsPerfMap_WhichRecordDeletes_UnlessTheUserAskedForIt()
    {
        using var temp = new TempDirectory("nh-record-perfmap");
        const string Script = @"""$0"" --version > /dev/null & p=$!; wait $p; echo $p > pid; grep -c '\[System.Private.CoreLib\]' ${DOTNET_PerfMapJitDumpPath:-/tmp}/perf-$p.map > methods";
        string[] args = ["--", "sh", "-c", Script, Environment.ProcessPath!];

        Record(temp.Path, args);
        string pid = File.ReadAllText(Path.Combine(temp.Path, "pid")).Trim();
        Assert.True(int.Parse(File.ReadAllText(Path.Combine(temp.Path, "methods"))) > 10, "the perf map names no CoreLib method");
        Assert.NotEmpty(Directory.GetFiles(temp.Path, $"dotnet.{pid}.trace*"));
        Assert.False(File.Exists($"/tmp/perf-{pid}.map"), "record left the perf map it caused");

        // The user's own setting: the maps (record's own too) go to a folder of the test's, and stay.
        File.Delete(Path.Combine(temp.Path, "pid"));
        string maps = Directory.CreateDirectory(Path.Combine(temp.Path, "maps")).FullName;
        Record(temp.Path, args, ("DOTNET_PerfMapEnabled", "3"), ("DOTNET_PerfMapJitDumpPath", maps));
        pid = File.ReadAllText(Path.Combine(temp.Path, "pid")).Trim();
        Assert.True(File.Exists(Path.Combine(maps, $"perf-{pid}.map")), "record deleted a perf map the user asked for");
    }
}
