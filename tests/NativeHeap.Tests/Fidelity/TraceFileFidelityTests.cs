using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// Every trace, the tool's scenarios and the recorded programs, replayed by
/// glibc in a fresh C process and by the nativeheap command in a fresh .NET process, tcache on
/// and off: identical placement lines, and checkpoints whose anonymous RSS deltas agree within
/// 2% + 512 KiB. A replay whose break someone else moved says so and does not pass.
/// </summary>
public class TraceFileFidelityTests
{
    private const string AlignBreak = "1048576";

    public static TheoryData<string, string> Traces()
    {
        var data = new TheoryData<string, string>();
        foreach (string file in new[] { NativeTests.ScenarioTraces, NativeTests.RecordedTraces }
                     .SelectMany(dir => Directory.EnumerateFiles(dir, "*.trace")).Order())
        {
            string relative = Path.GetRelativePath(NativeTests.RepoRoot, file);
            data.Add(relative, "on");
            data.Add(relative, "off");
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Traces))]
    public void Trace_ReplaysAsOnGlibc(string trace, string tcache)
    {
        string path = Path.Combine(NativeTests.RepoRoot, trace);
        string glibc = NativeTests.Run("replay", [path],
            ("GLIBC_TUNABLES", tcache == "off" ? "glibc.malloc.tcache_count=0" : ""), ("REPLAY_ALIGN_BREAK", AlignBreak));

        ProcessResult ours = default!;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            ours = Cli.Run(["replay", path, "--align-break", AlignBreak],
                (Tunables.Variable, tcache == "off" ? "tcache_count=0" : ""));
            Assert.True(ours.ExitCode == 0, ours.Error);
            if (!ours.Error.Contains("moved the program break")) break;
        }
        Assert.False(ours.Error.Contains("moved the program break"), $"every attempt was disturbed: {ours.Error}");

        NativeTests.AssertSameReplay(glibc, ours.Output, $"{trace} (tcache {tcache})");
    }
}
