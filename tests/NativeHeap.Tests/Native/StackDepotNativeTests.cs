using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// The native stack depot (src/NativeHeap/native/stackdepot.c, in libnativeheap-debug.so):
/// native-tests' stackdepot_test, built without frame pointers, checks that ids deduplicate, that
/// frames are the callers' return addresses (__builtin_return_address) with skip and depth
/// applied, that eight threads adding the same stacks at once get the same ids, and that captures
/// in a dlopen'd library's constructor, inside dl_iterate_phdr and beside them (rule-cache misses)
/// do not deadlock, nor do children forked meanwhile.
/// </summary>
public class StackDepotNativeTests
{
    [Fact]
    public void StackDepot_Dedups_MatchesReturnAddresses_AndNeverDeadlocks()
    {
        string library = NativeTests.Program("libstackdepot_dl.so");
        ProcessResult r = Child.RunProgram(NativeTests.Program("stackdepot_test"), [library, "2"], [], timeoutSeconds: 120);
        Assert.True(r.ExitCode == 0, $"stackdepot_test exited {r.ExitCode} (3: a deadlock): {r.Error}\n{r.Output}");
        string[] passed = r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[1]).ToArray();
        Assert.Equal(["unknown-ids", "frames", "dedup", "threads", "loader-lock", "fork"], passed);
    }

    /// <summary>
    /// The depot built with small bounds (15 ids; 300 words of frames), given 50 distinct stacks:
    /// ids until it is full, then 0, and the stacks added before keep their ids and frames.
    /// </summary>
    [Theory]
    [InlineData("stackdepot_full_ids", 15)]
    [InlineData("stackdepot_full_frames", 0)]
    public void AFullDepot_Returns0_AndKeepsWhatItHas(string program, int ids)
    {
        ProcessResult r = Child.RunProgram(NativeTests.Program(program), [], [], timeoutSeconds: 60);
        Assert.True(r.ExitCode == 0, $"{program} exited {r.ExitCode}: {r.Error}");
        Assert.StartsWith("ok full: ", r.Output);
        int given = int.Parse(r.Output.Trim()["ok full: ".Length..].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        if (ids > 0) Assert.Equal(ids, given);
        else Assert.InRange(given, 1, 49);
    }
}
