using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Symbols;

namespace NativeHeap.Tests;

/// <summary>
/// In-process symbolization (src/NativeHeap.Symbols/ProcessSymbols.cs): a libc function of this
/// process, with its offset checked against libc's symbol table; a JIT-compiled method of a
/// child process after <see cref="ProcessSymbols.EnableManagedNames"/> (a child: the perf map
/// would otherwise stay on for every later test of this host), compiled before the call, and
/// its perf map gone when it exits; the perf-map line reader and the frame format.
/// </summary>
public sealed class ProcessSymbolsTests
{
    private const string LibcPath = "/lib/x86_64-linux-gnu/libc.so.6";

    [Fact]
    public void LibcFunction_IsNamed_WithItsOffsetInLibc()
    {
        nint libc = NativeLibrary.Load("libc.so.6");
        ulong malloc = (ulong)NativeLibrary.GetExport(libc, "malloc");
        IReadOnlyList<SymbolFrame> frames = Assert.Single(ProcessSymbols.Symbolize([malloc + 0x11]));
        SymbolFrame top = frames[^1];
        Assert.Equal("malloc", top.Function);
        Assert.False(top.Inlined);
        Assert.Equal("libc.so.6", Path.GetFileName(top.Module));
        // The load bias from /proc/self/maps and the program headers: the offset is malloc's st_value + 0x11.
        string nm = SymbolizerTests.Fixture.Tool("nm", "-D", "--defined-only", top.Module);
        string line = nm.Split('\n').First(l => l.EndsWith(" malloc@@GLIBC_2.2.5", StringComparison.Ordinal));
        Assert.Equal(Convert.ToUInt64(line.Split(' ')[0], 16) + 0x11, top.Offset);
        Assert.StartsWith($"malloc ", ProcessSymbols.Format(top));
        Assert.EndsWith($"[libc.so.6+0x{top.Offset:x}]", ProcessSymbols.Format(top));
    }

    [Fact]
    public void LibraryLoadedAfterTheFirstCall_IsFound_WithItsSourceLine()
    {
        using var dir = new TempDirectory("nh-procsym-");
        string source = Path.Combine(dir.Path, "late.c"), library = Path.Combine(dir.Path, "liblate.so");
        File.WriteAllText(source, "int nh_late_function(int x)\n{\n    return x * 3 + 1;\n}\n");
        SymbolizerTests.Fixture.Tool("gcc", "-O2", "-g", "-shared", "-fPIC", "-o", library, source);
        _ = ProcessSymbols.Symbolize([(ulong)NativeLibrary.GetExport(NativeLibrary.Load("libc.so.6"), "free") + 1]); // the modules are read

        ulong late = (ulong)NativeLibrary.GetExport(NativeLibrary.Load(library), "nh_late_function");
        SymbolFrame f = Assert.Single(Assert.Single(ProcessSymbols.Symbolize([late + 1])));
        Assert.Equal("nh_late_function", f.Function);
        Assert.Equal(library, f.Module);
        Assert.EndsWith("late.c", f.File);
        Assert.InRange(f.Line, 2, 3);
        Assert.Equal($"nh_late_function ({f.File}:{f.Line}) [liblate.so+0x{f.Offset:x}]", ProcessSymbols.Format(f));
    }

    [Fact]
    public void AddressOutsideEverything_IsUnknown_AndAnEmptyListGivesNone()
    {
        SymbolFrame f = Assert.Single(Assert.Single(ProcessSymbols.Symbolize([0x10])));
        Assert.Equal(new SymbolFrame(null, null, 0, "?", 0x10, false), f);
        Assert.Equal("[0x10]", ProcessSymbols.Format(f));
        Assert.Empty(ProcessSymbols.Symbolize([]));
    }

    [Fact]
    public void Format_GivesFunction_FileLine_AndModuleOffset()
    {
        Assert.Equal("load_config (config.c:88) [app+0x1233]", ProcessSymbols.Format(new SymbolFrame("load_config", "config.c", 88, "/usr/bin/app", 0x1233, false)));
        Assert.Equal("malloc [libc.so.6+0x98941]", ProcessSymbols.Format(new SymbolFrame("malloc", null, 0, LibcPath, 0x98941, false)));
        Assert.Equal("[libc.so.6+0x29d8f]", ProcessSymbols.Format(new SymbolFrame(null, null, 0, LibcPath, 0x29d8f, false)));
        Assert.Equal("App.Main() [0x7f0000001000]", ProcessSymbols.Format(new SymbolFrame("App.Main()", null, 0, "[jit]", 0x7f00_0000_1000, false)));
        Assert.Throws<ArgumentNullException>(() => ProcessSymbols.Format(null!));
    }

    [Fact]
    public void PerfMapLines_AreRead_WithOrWithout0x_AndOthersAreSkipped()
    {
        Assert.Equal(new JitCode(0x7f7e10292440, 0x1b, "int32 [pmtest] P::CompiledBefore(int32)[QuickJitted]"),
            ProcessSymbols.ParsePerfMapLine("0x7f7e10292440 1b int32 [pmtest] P::CompiledBefore(int32)[QuickJitted]"));
        Assert.Equal(new JitCode(0x7f00, 0x10, "stub<1> X"), ProcessSymbols.ParsePerfMapLine("7f00 10 stub<1> X"));
        Assert.Null(ProcessSymbols.ParsePerfMapLine(""));
        Assert.Null(ProcessSymbols.ParsePerfMapLine("zz 10 name"));
        Assert.Null(ProcessSymbols.ParsePerfMapLine("7f00 0 empty"));
        Assert.Null(ProcessSymbols.ParsePerfMapLine("7f00 10"));
    }

    [Fact]
    public void JitMethod_CompiledBeforeEnableManagedNames_IsNamed_AndThePerfMapIsDeletedAtExit()
    {
        using var dir = new TempDirectory("nh-procsym-");
        string source = Path.Combine(dir.Path, "retaddr.c"), library = Path.Combine(dir.Path, "libretaddr.so");
        File.WriteAllText(source, "unsigned long nh_return_address(void) { return (unsigned long)__builtin_return_address(0); }\n");
        SymbolizerTests.Fixture.Tool("gcc", "-O2", "-shared", "-fPIC", "-o", library, source);

        var r = Child.Run(nameof(ChildScenarios.ManagedNamesInProcess), (ChildScenarios.ReturnAddressLibrary, library));
        Assert.True(r["existed"] == "False", $"the child's perf map existed before EnableManagedNames:\n{r["stderr"]}");
        Assert.True(r["enabled"] == "True", r["stderr"]);
        Assert.Equal("[jit]", r["module"]);
        Assert.Equal("NativeHeap.Tests.ChildScenarios::CallsNative(native int)", r["function"]);
        Assert.StartsWith("NativeHeap.Tests.ChildScenarios::CallsNative(native int) [0x", r["format"]);
        Assert.Equal("True", r["again"]); // cheap to call again: the same answer
        Assert.False(File.Exists(ProcessSymbolsPerfMap(int.Parse(r["pid"]))), "the perf map EnableManagedNames made is left behind");
    }

    private static string ProcessSymbolsPerfMap(int pid) => $"/tmp/perf-{pid}.map";
}

internal static unsafe partial class ChildScenarios
{
    internal const string ReturnAddressLibrary = "NH_TEST_RETADDR_LIB";

    /// <summary>Calls the fixture's nh_return_address: its return address lies in this method's JIT code.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static ulong CallsNative(nint function) => ((delegate* unmanaged<nuint>)function)();

    /// <summary>Symbolizes a return address in a method compiled before EnableManagedNames.</summary>
    public static void ManagedNamesInProcess()
    {
        nint function = NativeLibrary.GetExport(NativeLibrary.Load(Environment.GetEnvironmentVariable(ReturnAddressLibrary)!), "nh_return_address");
        ulong returnAddress = CallsNative(function); // compiled here, before the perf map is on
        ChildMain.Report("pid", Environment.ProcessId);
        ChildMain.Report("existed", File.Exists($"/tmp/perf-{Environment.ProcessId}.map"));
        ChildMain.Report("enabled", ProcessSymbols.EnableManagedNames());
        SymbolFrame f = ProcessSymbols.Symbolize([returnAddress])[0][^1];
        ChildMain.Report("module", f.Module);
        ChildMain.Report("function", f.Function ?? "(none)");
        ChildMain.Report("format", ProcessSymbols.Format(f));
        ChildMain.Report("again", ProcessSymbols.EnableManagedNames());
    }
}
