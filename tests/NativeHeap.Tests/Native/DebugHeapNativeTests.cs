using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// The debug heap (<c>debug=1</c>) from C, under libnativeheap-preload.so: each misuse ends in
/// glibc's abort with a report that names the block and, from the program's own symbols, the
/// functions that allocated and freed it. (libnativeheap is a Release build: the Debug pass
/// would run the same library again, so these are not in Category=Allocator.)
/// </summary>
public class DebugHeapNativeTests
{
    private static ProcessResult MisuseInC(string what, int size, string tunables = "debug=1") =>
        Child.RunProgram(NativeTests.Program("debug_misuse"), [what, size.ToString()],
            [NativeTests.Preload, (Tunables.Variable, tunables)]);

    [Theory]
    [InlineData("overflow", 8, "free(): heap buffer overflow detected", "the byte at offset 8 (0 past the end) was overwritten: found {wrote}")]
    [InlineData("overflow", 4096, "free(): heap buffer overflow detected", "the byte at offset 4096 (0 past the end) was overwritten: found {wrote}")]
    [InlineData("overflow", 262144, "free(): heap buffer overflow detected", "the byte at offset 262144 (0 past the end) was overwritten: found {wrote}")]
    [InlineData("underflow", 8, "free(): heap buffer underflow detected", "the byte at offset -1 (1 before the start) was overwritten: found {wrote}")]
    [InlineData("underflow", 4096, "free(): heap buffer underflow detected", "the byte at offset -1 (1 before the start) was overwritten: found {wrote}")]
    [InlineData("underflow", 262144, "free(): heap buffer underflow detected", "the byte at offset -1 (1 before the start) was overwritten: found {wrote}")]
    [InlineData("write-after-free", 8, "free(): write after free detected", "the byte at offset 4 was written after the block was freed: found {wrote}")]
    [InlineData("write-after-free", 4096, "free(): write after free detected", "the byte at offset 2048 was written after the block was freed: found {wrote}")]
    [InlineData("double-free", 64, "free(): double free detected", "the block was already freed")]
    public void FromC_UnderThePreload_EachMisuseAbortsWithItsReport_NamingWhoAllocatedAndFreed(string what, int size, string words, string finding)
    {
        ProcessResult r = MisuseInC(what, size);
        Assert.True(r.ExitCode == 134, $"debug_misuse {what} {size} exited {r.ExitCode}, not with SIGABRT:\n{r.Output}\n{r.Error}");
        Assert.Contains(words + ": 0x", r.Error);
        Assert.Contains($"{size} bytes asked", r.Error);
        // The byte the program wrote (it says which: the random canary might have held 0x41).
        string wrote = System.Text.RegularExpressions.Regex.Match(r.Error, "wrote ([0-9a-f]{2})") is { Success: true } m ? m.Groups[1].Value : "41";
        Assert.Contains(finding.Replace("{wrote}", wrote), r.Error);
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

    [Theory]
    [InlineData("read-past", 16, "guard page: heap buffer overflow detected: 0x", "a read at offset 16 (0 past the end)")]
    [InlineData("write-past", 4096, "guard page: heap buffer overflow detected: 0x", "a write at offset 4096 (0 past the end)")]
    [InlineData("read-past", 262144, "guard page: heap buffer overflow detected: 0x", "a read at offset 262144 (0 past the end)")]
    [InlineData("read-after-free", 64, "guard page: read after free detected: 0x", "a read at offset 0 of the block after it was freed")]
    [InlineData("write-after-free-now", 4096, "guard page: write after free detected: 0x", "a write at offset 2048 of the block after it was freed")]
    public void FromC_UnderGuardPages_AFaultingAccessIsReported_ThenTheProcessCrashes(string what, int size, string words, string finding)
    {
        ProcessResult r = MisuseInC(what, size, "guard_sample=1");
        // The default action of SIGSEGV, after the report: the process ends as the crash it is.
        Assert.True(r.ExitCode == 139, $"debug_misuse {what} {size} exited {r.ExitCode}, not with SIGSEGV:\n{r.Output}\n{r.Error}");
        Assert.Contains(words, r.Error);
        Assert.Contains($"{size} bytes asked, on pages of its own before the guard page at 0x", r.Error);
        Assert.Contains(finding, r.Error);
        // Who: the access itself, and the allocation (and free), named from the program's symbols.
        Assert.Contains("accessed at:\n  #0 main (", r.Error);
        Assert.Contains("allocated at:\n  #0 allocate_victim (", r.Error);
        Assert.Contains("debug_misuse.c:", r.Error);
        if (what.Contains("after-free")) Assert.Contains("freed at:\n  #0 free_victim (", r.Error);
        Assert.DoesNotContain("no report", r.Output);
    }

    [Theory]
    [InlineData("overflow", 8, "free(): heap buffer overflow detected", "the byte at offset 8 (0 past the end) was overwritten")]
    [InlineData("underflow", 4096, "free(): heap buffer underflow detected", "the byte at offset -1 (1 before the start) was overwritten")]
    [InlineData("double-free", 64, "free(): double free detected", "the block was already freed (its pages are kept inaccessible)")]
    public void FromC_UnderGuardPages_WhatFaultsNot_IsFoundAtFree(string what, int size, string words, string finding)
    {
        ProcessResult r = MisuseInC(what, size, "guard_sample=1");
        Assert.True(r.ExitCode == 134, $"debug_misuse {what} {size} exited {r.ExitCode}, not with SIGABRT:\n{r.Output}\n{r.Error}");
        Assert.Contains(words + ": 0x", r.Error);
        Assert.Contains($"{size} bytes asked, on pages of its own before the guard page", r.Error);
        Assert.Contains(finding, r.Error);
        Assert.Contains("allocated at:\n  #0 allocate_victim (", r.Error);
    }

    [Fact]
    public void FromC_UnderGuardPages_ACorrectProgram_RunsToItsEnd()
    {
        ProcessResult r = MisuseInC("clean", 100, "guard_sample=1");
        Assert.True(r.ExitCode == 0, r.Error);
        Assert.Contains("usable=100", r.Output);
    }
}
