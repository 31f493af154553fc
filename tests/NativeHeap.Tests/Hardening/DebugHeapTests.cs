using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// The debug heap (<c>debug=1</c>): each misuse it exists for is reported with its own words
/// and the block's account, the heap stays usable after, and a correct program gets no report.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public class DebugHeapTests
{
    private static Dictionary<string, string> Misuse(string what, string tunables = "debug=1") =>
        Child.Run(nameof(ChildScenarios.DebugMisuse), (Tunables.Variable, tunables), ("NH_TEST_MISUSE", what));

    private static string Details(Dictionary<string, string> r) =>
        string.Join('\n', r.Where(kv => kv.Key.StartsWith("details", StringComparison.Ordinal)).OrderBy(kv => int.Parse(kv.Key[7..])).Select(kv => kv.Value));

    [Theory]
    [InlineData(8)]
    [InlineData(4096)]
    [InlineData(256 * 1024)]
    public void OneByteOverflow_IsReportedAtFree(int size)
    {
        var r = Misuse($"overflow:{size}");
        Assert.Equal("True", r["reported"]);
        Assert.Equal("free(): heap buffer overflow detected", r["words"]);
        string details = Details(r);
        Assert.Contains($"{size} bytes asked", details);
        Assert.Contains($"the byte at offset {size} (0 past the end) was overwritten: found 41", details);
        Assert.Contains("allocated at:\n#0 NativeHeap.Tests.ChildScenarios.AllocatedByDebugVictim(UIntPtr)", details);
        Assert.Equal("True", r["survived"]);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(4096)]
    [InlineData(256 * 1024)]
    public void OneByteUnderflow_IsReportedAtFree(int size)
    {
        var r = Misuse($"underflow:{size}");
        Assert.Equal("True", r["reported"]);
        Assert.Equal("free(): heap buffer underflow detected", r["words"]);
        string details = Details(r);
        Assert.Contains($"{size} bytes asked", details);
        Assert.Contains("the byte at offset -1 (1 before the start) was overwritten: found 41, expected ", details);
        Assert.Contains("allocated at:\n#0 NativeHeap.Tests.ChildScenarios.AllocatedByDebugVictim(UIntPtr)", details);
        Assert.Equal("True", r["survived"]);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(4096)]
    [InlineData(256 * 1024)]
    public void WriteAfterFree_IsFoundByValidate(int size)
    {
        var r = Misuse($"write-after-free:{size}");
        Assert.Equal("True", r["reported"]);
        Assert.Equal("Heap.Validate(): write after free detected", r["words"]);
        string details = Details(r);
        Assert.Contains($"the byte at offset {size / 2} was written after the block was freed: found 41", details);
        Assert.Contains("allocated at:\n#0 NativeHeap.Tests.ChildScenarios.AllocatedByDebugVictim(UIntPtr)", details);
        Assert.Contains("freed at:\n#0 NativeHeap.Tests.ChildScenarios.FreedByDebugVictim(Byte*)", details);
        Assert.Equal("True", r["survived"]);
    }

    [Fact]
    public void WriteAfterFree_IsFoundWhenTheBlockLeavesTheQuarantine()
    {
        var r = Misuse("write-after-free-evicted:64", "debug=1:quarantine_bytes=1024");
        Assert.Equal("True", r["reported"]);
        Assert.Equal("free(): write after free detected", r["words"]);
        Assert.Contains("the byte at offset 0 was written after the block was freed: found 41", Details(r));
        Assert.Equal("True", r["survived"]);
    }

    [Fact]
    public void DoubleFree_AfterTheTcacheWouldHaveLetItGo_IsReportedWithBothStacks()
    {
        var r = Misuse("double-free:64");
        Assert.Equal("True", r["reported"]);
        Assert.Equal("free(): double free detected", r["words"]);
        string details = Details(r);
        Assert.Contains("allocated at:\n#0 NativeHeap.Tests.ChildScenarios.AllocatedByDebugVictim(UIntPtr)", details);
        Assert.Contains("freed at:\n#0 NativeHeap.Tests.ChildScenarios.FreedByDebugVictim(Byte*)", details);
        Assert.Equal("True", r["survived"]);
    }

    [Fact]
    public void Realloc_ChecksTheOldBlock()
    {
        var r = Misuse("realloc-overflow:100");
        Assert.Equal("realloc(): heap buffer overflow detected", r["words"]);
        Assert.Contains("the byte at offset 103 (3 past the end) was overwritten: found 41", Details(r));
        Assert.Equal("True", r["survived"]);
    }

    [Fact]
    public void AnAlignedBlock_IsAlignedAndChecked()
    {
        var r = Misuse("aligned-overflow:100");
        Assert.Equal("True", r["aligned"]);
        Assert.Equal("Heap.Validate(): heap buffer overflow detected", r["words"]);
        Assert.Equal("True", r["survived"]);
    }

    [Fact]
    public void APointerInsideABlock_IsAnInvalidPointer()
    {
        var r = Misuse("foreign:64");
        Assert.Equal("free(): invalid pointer", r["words"]);
        Assert.Equal("True", r["survived"]);
    }

    [Fact]
    public void ACorrectProgram_GetsNoReport_AndUsableSizeIsTheSizeAsked()
    {
        var r = Child.Run(nameof(ChildScenarios.DebugCleanWorkload), (Tunables.Variable, "debug=1"));
        Assert.Equal("True", r["clean"]);
    }

    [Fact]
    public void Debug_CannotBeTurnedOnOnceBlocksExist()
    {
        var r = Child.Run(nameof(ChildScenarios.DebugAfterFirstAllocation));
        Assert.Equal("True", r["refused"]);
    }

    private static ProcessResult MisuseInC(string what, int size) =>
        Child.RunProgram(NativeTests.Program("debug_misuse"), [what, size.ToString()],
            [NativeTests.Preload, (Tunables.Variable, "debug=1")]);

    [Theory]
    [InlineData("overflow", 8, "free(): heap buffer overflow detected", "the byte at offset 8 (0 past the end) was overwritten: found 41")]
    [InlineData("overflow", 4096, "free(): heap buffer overflow detected", "the byte at offset 4096 (0 past the end) was overwritten: found 41")]
    [InlineData("overflow", 262144, "free(): heap buffer overflow detected", "the byte at offset 262144 (0 past the end) was overwritten: found 41")]
    [InlineData("underflow", 8, "free(): heap buffer underflow detected", "the byte at offset -1 (1 before the start) was overwritten: found 41")]
    [InlineData("underflow", 4096, "free(): heap buffer underflow detected", "the byte at offset -1 (1 before the start) was overwritten: found 41")]
    [InlineData("underflow", 262144, "free(): heap buffer underflow detected", "the byte at offset -1 (1 before the start) was overwritten: found 41")]
    [InlineData("write-after-free", 8, "free(): write after free detected", "the byte at offset 4 was written after the block was freed: found 41")]
    [InlineData("write-after-free", 4096, "free(): write after free detected", "the byte at offset 2048 was written after the block was freed: found 41")]
    [InlineData("double-free", 64, "free(): double free detected", "the block was already freed")]
    public void FromC_UnderThePreload_EachMisuseAbortsWithItsReport_NamingWhoAllocatedAndFreed(string what, int size, string words, string finding)
    {
        ProcessResult r = MisuseInC(what, size);
        Assert.True(r.ExitCode == 134, $"debug_misuse {what} {size} exited {r.ExitCode}, not with SIGABRT:\n{r.Output}\n{r.Error}");
        Assert.Contains(words + ": 0x", r.Error);
        Assert.Contains($"{size} bytes asked", r.Error);
        Assert.Contains(finding, r.Error);
        // The names come from the program's symbol table and DWARF, read in the aborting process.
        Assert.Contains("allocated at:\n  #0 allocate_victim (", r.Error);
        Assert.Contains("debug_misuse.c:", r.Error);
        if (what is "write-after-free" or "double-free") Assert.Contains("freed at:\n  #0 free_victim (", r.Error);
        Assert.DoesNotContain("no report", r.Output);
    }

    [Fact]
    public void FromC_ACorrectProgram_RunsToItsEnd_WithTheSizeAskedAsUsable()
    {
        ProcessResult r = MisuseInC("clean", 100);
        Assert.True(r.ExitCode == 0, r.Error);
        Assert.Contains("usable=100", r.Output);
    }
}
