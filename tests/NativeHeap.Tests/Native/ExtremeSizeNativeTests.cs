using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// native-tests/src/extremes.c: every malloc-family call at extreme sizes and alignments
/// (0, 2^k±1, PTRDIFF_MAX-k, SIZE_MAX-k; alignments 1..2^63 and odd ones), one line per case.
/// Under libnativeheap-preload.so it must print, family by family, what it prints on glibc:
/// the same successes, the same NULLs and return codes, the same errno, and no crash.
/// </summary>
public class ExtremeSizeNativeTests
{
    private static readonly string[] Families =
        ["malloc", "calloc", "realloc", "reallocarray", "memalign", "posix_memalign", "aligned_alloc", "valloc", "pvalloc"];

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (string family in Families)
            foreach (string tunables in new[] { "", "profile=glibc-2.36" })
                data.Add(family, tunables);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Preloaded_PrintsWhatGlibcPrints(string family, string tunables)
    {
        string program = NativeTests.Program("extremes");
        ProcessResult glibc = Child.RunProgram(program, [family], [], timeoutSeconds: 120);
        Assert.True(glibc.ExitCode == 0, $"extremes {family} on glibc exited {glibc.ExitCode}: {glibc.Error}");
        var environment = new List<(string, string)> { NativeTests.Preload };
        if (tunables.Length > 0) environment.Add((Tunables.Variable, tunables));
        ProcessResult ours = Child.RunProgram(program, [family], environment, timeoutSeconds: 120);

        string[] expected = glibc.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string[] actual = ours.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("done ", expected[^1]);
        // One line per case, in the same order: a crash shows as the first case with no line.
        var differences = Enumerable.Range(0, Math.Min(expected.Length, actual.Length))
            .Where(i => expected[i] != actual[i])
            .Take(8)
            .Select(i => $"line {i + 1}: glibc '{expected[i]}', NativeHeap '{actual[i]}'")
            .ToList();
        if (actual.Length < expected.Length)
            differences.Add($"no line from line {actual.Length + 1} on, where glibc has '{expected[actual.Length]}'");
        else if (actual.Length > expected.Length)
            differences.Add($"extra line {expected.Length + 1}: '{actual[expected.Length]}'");
        Assert.True(ours.ExitCode == 0 && differences.Count == 0,
            $"extremes {family} preloaded ({(tunables.Length == 0 ? "default" : tunables)}) exited {ours.ExitCode} after {actual.Length} of {expected.Length} lines"
            + (ours.Error.Length > 0 ? $", stderr: {ours.Error.Trim()}" : "") + "\n" + string.Join('\n', differences));
    }
}
