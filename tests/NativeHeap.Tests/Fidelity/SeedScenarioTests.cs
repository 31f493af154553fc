namespace NativeHeap.Tests;

/// <summary>
/// The seed that started the project (seeds/002), in a child process, against what DESIGN.md
/// measured for glibc 2.36: with the tcache on, seven cached 32-byte chunks pin the top and
/// all 200 MiB stay resident; with it off, malloc(2000) consolidates and everything returns;
/// malloc_trim(0) returns it either way.
/// </summary>
public class SeedScenarioTests
{
    private const long HeapKib = 4000L * (52736 + 32) / 1024;

    /// <summary>The seed is about the break: the main arena on it, as glibc's.</summary>
    private static Dictionary<string, string> RunUndisturbed(string tunables = "profile=glibc-2.36", params (string, string)[] env)
    {
        Dictionary<string, string> r = [];
        for (int attempt = 0; attempt < 5; attempt++)
        {
            r = Child.Run(nameof(ChildScenarios.Seed002), [.. env, (Tunables.Variable, tunables)]);
            if (r["foreign_breaks"] == "0") return r;
        }
        Assert.Fail("glibc moved the break during every attempt: " + string.Join(", ", r));
        return r;
    }

    private static long L(Dictionary<string, string> r, string k) => long.Parse(r[k]);

    [Fact]
    public void TcacheOn_MemoryStaysResident()
    {
        var r = RunUndisturbed();
        Assert.InRange(L(r, "mallocs_kib"), HeapKib - 1024, HeapKib + 4096);
        Assert.InRange(L(r, "frees_kib"), HeapKib - 1024, HeapKib + 4096);
        Assert.InRange(L(r, "last_kib"), HeapKib - 1024, HeapKib + 4096);
    }

    [Fact]
    public void TcacheOff_Malloc2000ConsolidatesAndEverythingReturns()
    {
        var r = RunUndisturbed("profile=glibc-2.36:tcache_count=0");
        Assert.InRange(L(r, "frees_kib"), HeapKib - 1024, HeapKib + 4096);
        Assert.InRange(L(r, "last_kib"), -2048, 2048);
    }

    [Fact]
    public void TcacheOn_MallocTrimReturnsIt()
    {
        var r = RunUndisturbed("profile=glibc-2.36", ("NATIVEHEAP_SEED_TRIM", "1"));
        Assert.InRange(L(r, "last_kib"), HeapKib - 1024, HeapKib + 4096);
        Assert.Equal("True", r["trimmed"]);
        Assert.InRange(L(r, "trim_kib"), -2048, 2048);
    }
}
