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
}
