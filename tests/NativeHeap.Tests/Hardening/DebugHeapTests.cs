using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// The debug heap (<c>debug=1</c>): each misuse it exists for is reported with its own words
/// and the block's account, the heap stays usable after, and a correct program gets no report.
/// The misuses run one after another in one child process (each block repaired after its
/// report), so that one start serves them all.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public class DebugHeapTests
{
    private const string Cases = "overflow:8,overflow:4096,overflow:262144,underflow:8,underflow:4096,underflow:262144,"
        + "write-after-free:8,write-after-free:4096,write-after-free:262144,double-free:64,realloc-overflow:100,aligned-overflow:100,foreign:64";

    private static readonly Lazy<Dictionary<string, string>> s_run = new(() =>
        Child.Run(nameof(ChildScenarios.DebugMisuse), (Tunables.Variable, "debug=1"), ("NH_TEST_MISUSE", Cases)));

    private static readonly Lazy<Dictionary<string, string>> s_smallQuarantine = new(() =>
        Child.Run(nameof(ChildScenarios.DebugMisuse), (Tunables.Variable, "debug=1:quarantine_bytes=1024"), ("NH_TEST_MISUSE", "write-after-free-evicted:64")));

    /// <summary>One case's report: its words, its details joined by lines, what it wrote (the child trims each line).</summary>
    private static (string Words, string Details, string Wrote) Case(string name, Dictionary<string, string>? run = null)
    {
        Dictionary<string, string> r = run ?? s_run.Value;
        Assert.True(r.GetValueOrDefault($"{name}.reported") == "True", $"{name}: no report\n{r["stderr"]}");
        Assert.Equal("True", r["survived"]);
        string details = string.Join('\n', r.Where(kv => kv.Key.StartsWith($"{name}.details", StringComparison.Ordinal))
            .OrderBy(kv => int.Parse(kv.Key[(name.Length + 8)..])).Select(kv => kv.Value));
        return (r[$"{name}.words"], details, r.GetValueOrDefault($"{name}.wrote", ""));
    }

    private const string AllocatedHere = "allocated at:\n#0 NativeHeap.Tests.ChildScenarios.AllocatedByDebugVictim(UIntPtr)";
    private const string FreedHere = "freed at:\n#0 NativeHeap.Tests.ChildScenarios.FreedByDebugVictim(Byte*)";

    [Theory]
    [InlineData(8)]
    [InlineData(4096)]
    [InlineData(256 * 1024)]
    public void OneByteOverflow_IsReportedAtFree(int size)
    {
        var (words, details, wrote) = Case($"overflow:{size}");
        Assert.Equal("free(): heap buffer overflow detected", words);
        Assert.Contains($"{size} bytes asked", details);
        Assert.Contains($"the byte at offset {size} (0 past the end) was overwritten: found {wrote}", details);
        Assert.Contains(AllocatedHere, details);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(4096)]
    [InlineData(256 * 1024)]
    public void OneByteUnderflow_IsReportedAtFree(int size)
    {
        var (words, details, wrote) = Case($"underflow:{size}");
        Assert.Equal("free(): heap buffer underflow detected", words);
        Assert.Contains($"{size} bytes asked", details);
        Assert.Contains($"the byte at offset -1 (1 before the start) was overwritten: found {wrote}, expected ", details);
        Assert.Contains(AllocatedHere, details);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(4096)]
    [InlineData(256 * 1024)]
    public void WriteAfterFree_IsFoundByValidate(int size)
    {
        var (words, details, wrote) = Case($"write-after-free:{size}");
        Assert.Equal("Heap.Validate(): write after free detected", words);
        Assert.Contains($"the byte at offset {size / 2} was written after the block was freed: found {wrote}", details);
        Assert.Contains(AllocatedHere, details);
        Assert.Contains(FreedHere, details);
    }

    [Fact]
    public void WriteAfterFree_IsFoundWhenTheBlockLeavesTheQuarantine()
    {
        var (words, details, wrote) = Case("write-after-free-evicted:64", s_smallQuarantine.Value);
        Assert.Equal("free(): write after free detected", words);
        Assert.Contains($"the byte at offset 0 was written after the block was freed: found {wrote}", details);
        Assert.Contains(FreedHere, details);
    }

    [Fact]
    public void DoubleFree_AfterTheTcacheWouldHaveLetItGo_IsReportedWithBothStacks()
    {
        var (words, details, _) = Case("double-free:64");
        Assert.Equal("free(): double free detected", words);
        Assert.Contains("the block was already freed (it is in the quarantine)", details);
        Assert.Contains(AllocatedHere, details);
        Assert.Contains(FreedHere, details);
    }

    [Fact]
    public void Realloc_ChecksTheOldBlock()
    {
        var (words, details, wrote) = Case("realloc-overflow:100");
        Assert.Equal("realloc(): heap buffer overflow detected", words);
        Assert.Contains($"the byte at offset 103 (3 past the end) was overwritten: found {wrote}", details);
    }

    [Fact]
    public void AnAlignedBlock_IsAlignedAndChecked()
    {
        var (words, details, wrote) = Case("aligned-overflow:100");
        Assert.Equal("True", s_run.Value["aligned-overflow:100.aligned"]);
        Assert.Equal("Heap.Validate(): heap buffer overflow detected", words);
        Assert.Contains($"the byte at offset 100 (0 past the end) was overwritten: found {wrote}", details);
    }

    [Fact]
    public void APointerInsideABlock_IsAnInvalidPointer()
    {
        var (words, details, _) = Case("foreign:64");
        Assert.Equal("free(): invalid pointer", words);
        Assert.Contains("no intact debug header before it", details);
    }

    [Fact]
    public void ACorrectProgram_GetsNoReport_AndUsableSizeIsTheSizeAsked()
    {
        var r = Child.Run(nameof(ChildScenarios.DebugCleanWorkload), (Tunables.Variable, "debug=1"));
        Assert.Equal("True", r["clean"]);
    }

    // Under guard pages: what does not fault (the canary in the up to 15 bytes before the guard
    // page, the header, a second free) is still found, with the block's pages named.
    private static readonly Lazy<Dictionary<string, string>> s_guarded = new(() =>
        Child.Run(nameof(ChildScenarios.DebugMisuse), (Tunables.Variable, "guard_sample=1"),
            ("NH_TEST_MISUSE", "overflow:8,underflow:4096,double-free:64,realloc-overflow:100,aligned-overflow:100,foreign:64")));

    [Theory]
    [InlineData("overflow:8", "free(): heap buffer overflow detected", "the byte at offset 8 (0 past the end) was overwritten")]
    [InlineData("underflow:4096", "free(): heap buffer underflow detected", "the byte at offset -1 (1 before the start) was overwritten")]
    [InlineData("double-free:64", "free(): double free detected", "the block was already freed (its pages are kept inaccessible)")]
    [InlineData("realloc-overflow:100", "realloc(): heap buffer overflow detected", "the byte at offset 103 (3 past the end) was overwritten")]
    [InlineData("aligned-overflow:100", "Heap.Validate(): heap buffer overflow detected", "the byte at offset 100 (0 past the end) was overwritten")]
    public void UnderGuardPages_WhatDoesNotFault_IsFoundAsWithout(string name, string words, string finding)
    {
        var (w, details, _) = Case(name, s_guarded.Value);
        Assert.Equal(words, w);
        Assert.Contains("on pages of its own before the guard page at 0x", details);
        Assert.Contains(finding, details);
        if (!name.StartsWith("aligned", StringComparison.Ordinal)) Assert.Contains(AllocatedHere, details);
    }

    [Fact]
    public void UnderGuardPages_APointerInsideABlock_IsAnInvalidPointer()
    {
        var (words, _, _) = Case("foreign:64", s_guarded.Value);
        Assert.Equal("free(): invalid pointer", words);
    }

    [Theory]
    [InlineData("read-past:16", "guard page: heap buffer overflow detected: 0x", "a read at offset 16 (0 past the end)")]
    [InlineData("write-past:4096", "guard page: heap buffer overflow detected: 0x", "a write at offset 4096 (0 past the end)")]
    [InlineData("read-past:262144", "guard page: heap buffer overflow detected: 0x", "a read at offset 262144 (0 past the end)")]
    [InlineData("read-after-free:64", "guard page: read after free detected: 0x", "a read at offset 0 of the block after it was freed")]
    [InlineData("write-after-free:4096", "guard page: write after free detected: 0x", "a write at offset 2048 of the block after it was freed")]
    public void UnderGuardPages_AFaultingAccess_IsReported_ThenTheRuntimeEndsTheProcess(string fault, string words, string finding)
    {
        ProcessResult r = Child.RunExpectingFailure(nameof(ChildScenarios.DebugGuardFault), (Tunables.Variable, "guard_sample=1"), ("NH_TEST_FAULT", fault));
        Assert.Contains("allocated=True", r.Output);
        Assert.DoesNotContain("survived", r.Output);
        Assert.True(r.ExitCode != 0, $"exit {r.ExitCode}\n{r.Error}");
        Assert.Contains(words, r.Error);
        Assert.Contains(finding, r.Error);
        Assert.Contains("on pages of its own before the guard page at 0x", r.Error);
        // The handler prints the .NET stacks made when the block was allocated and freed; the
        // runtime's own handler then reports the access and its stack, as for any access violation.
        Assert.Contains("allocated at:\n  #0 NativeHeap.Tests.ChildScenarios.AllocatedByDebugVictim(UIntPtr)", r.Error);
        if (fault.Contains("after-free")) Assert.Contains("freed at:\n  #0 NativeHeap.Tests.ChildScenarios.FreedByDebugVictim(Byte*)", r.Error);
        Assert.Contains("System.AccessViolationException", r.Error);
        Assert.Contains("ChildScenarios.DebugGuardFault()", r.Error);
    }

    [Fact]
    public void UnderGuardPages_ACorrectProgram_GetsNoReport()
    {
        var r = Child.Run(nameof(ChildScenarios.DebugCleanWorkload), (Tunables.Variable, "guard_sample=3"));
        Assert.Equal("True", r["clean"]);
    }

    [Fact]
    public void Debug_CannotBeTurnedOnOnceBlocksExist()
    {
        var r = Child.Run(nameof(ChildScenarios.DebugAfterFirstAllocation));
        Assert.Equal("True", r["refused"]);
    }
}
