using System.Globalization;
using NativeHeap.Lab;
using NativeHeap.Symbols;

namespace NativeHeap.Tests;

/// <summary>
/// The offline symbolizer (src/NativeHeap.Symbols) on a C program built here with
/// gcc -O2 -g and no frame pointers, whose return addresses the program itself reports: names,
/// file:line, an inlined frame and its caller, a stripped copy, a separate debug file by build-id
/// and by .gnu_debuglink, a changed or missing file, JIT code, an address outside everything, and
/// libc's malloc.
/// </summary>
public sealed class SymbolizerTests(SymbolizerTests.Fixture fx) : IClassFixture<SymbolizerTests.Fixture>
{
    /// <summary>The fixture program, built and run once: its addresses and where it was loaded.</summary>
    public sealed class Fixture : IDisposable
    {
        private readonly TempDirectory _dir = new("nh-sym-");
        public string Dir => _dir.Path;
        public string Source { get; }
        public string Binary { get; }
        public string BuildId { get; }
        public TraceModule Module { get; }
        public Dictionary<string, ulong> Address { get; } = [];
        public ulong LibcMalloc { get; }
        public TraceModule Libc { get; }

        public Fixture()
        {
            Source = Path.Combine(Dir, "symfixture.c");
            File.Copy(Path.Combine(NativeTests.RepoRoot, "tests", "NativeHeap.Tests", "Tool", "fixtures", "symfixture.c"), Source);
            Binary = Path.Combine(Dir, "symfixture");
            Tool("gcc", "-O2", "-g", "-fomit-frame-pointer", "-o", Binary, Source);
            BuildId = BuildIdOf(Binary);
            string output = Tool(Binary);
            ulong bias = 0;
            foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                string[] f = line.Split(' ', 4);
                Address[f[0]] = Hex(f[1]);
                if (f[0] == "record_caller") bias = Hex(f[2]);
                if (f[0] == "malloc")
                {
                    LibcMalloc = Hex(f[1]);
                    Libc = new TraceModule(Hex(f[2]), Hex(f[2]) + (1UL << 30), Hex(f[2]), BuildIdOf(f[3]), f[3]);
                }
            }
            Assert.True(Libc is not null && bias != 0, output);
            Module = new TraceModule(bias, bias + (1UL << 24), bias, BuildId, Binary);
        }

        private static ulong Hex(string s) => ulong.Parse(s.AsSpan(s.StartsWith("0x") ? 2 : 0), NumberStyles.HexNumber, CultureInfo.InvariantCulture);

        public static string BuildIdOf(string file)
        {
            string notes = Tool("readelf", "-n", file);
            int at = notes.IndexOf("Build ID: ", StringComparison.Ordinal);
            Assert.True(at >= 0, $"{file} has no build-id:\n{notes}");
            return notes[(at + 10)..].Split('\n')[0].Trim();
        }

        public static string Tool(string program, params string[] args)
        {
            ProcessResult r = Child.RunProgram(program, args, []);
            Assert.True(r.ExitCode == 0, $"{program} {string.Join(' ', args)}: exit {r.ExitCode}\n{r.Output}{r.Error}");
            return r.Output;
        }

        /// <summary>The number of the fixture source line holding MARK:<paramref name="mark"/>.</summary>
        public int Line(string mark) => Array.FindIndex(File.ReadAllLines(Source), l => l.Contains($"MARK:{mark} ")) + 1;

        public void Dispose() => _dir.Dispose();
    }

    /// <summary>A symbolizer with the tests' options: extra debug directories, the system's or none, demangling or not.</summary>
    private sealed class Sym(IEnumerable<JitCode>? jit = null, string[]? debugDirectories = null, bool systemDebug = true, bool demangle = true) : IDisposable
    {
        private readonly Symbolizer _symbolizer = new(jit ?? [], new SymbolizerOptions
        {
            DebugDirectories = debugDirectories ?? [],
            SystemDebugDirectory = systemDebug ? "/usr/lib/debug" : null,
            Demangle = demangle,
        });

        public IReadOnlyList<SymbolFrame> Symbolize(RecordedFrame frame) => _symbolizer.Symbolize(frame);

        public IReadOnlyList<IReadOnlyList<SymbolFrame>> SymbolizeAll(IEnumerable<RecordedFrame> frames) => _symbolizer.SymbolizeAll(frames);

        public void Dispose() => _symbolizer.Dispose();

        public IReadOnlyList<string> Warnings => _symbolizer.Warnings;
    }

    private RecordedFrame At(string what, TraceModule? module = null) => new(fx.Address[what], module ?? fx.Module);

    private void AssertFullFrames(IReadOnlyList<SymbolFrame> inlined, IReadOnlyList<SymbolFrame> direct, string module)
    {
        Assert.Collection(inlined,
            f =>
            {
                Assert.Equal(("inlined_step", "symfixture.c", fx.Line("inlined-call"), true), (f.Function, Path.GetFileName(f.File), f.Line, f.Inlined));
                Assert.Equal(module, f.Module);
            },
            f => Assert.Equal(("outer_function", "symfixture.c", fx.Line("inline-site"), false), (f.Function, Path.GetFileName(f.File), f.Line, f.Inlined)));
        Assert.Equal(fx.Address["inlined"] - fx.Module.Bias, inlined[0].Offset);
        SymbolFrame d = Assert.Single(direct);
        Assert.Equal(("outer_function", "symfixture.c", fx.Line("direct-call"), false), (d.Function, Path.GetFileName(d.File), d.Line, d.Inlined));
        Assert.Equal($"outer_function {d.File}:{fx.Line("direct-call")}", d.ToString());
    }

    [Fact]
    public void ReturnAddresses_GiveFunctionFileLine_AndTheInlinedFrameBeforeItsCaller()
    {
        var sym = new Sym();
        AssertFullFrames(sym.Symbolize(At("inlined")), sym.Symbolize(At("direct")), fx.Binary);
        Assert.Equal(Path.Combine(fx.Dir, "symfixture.c"), sym.Symbolize(At("direct"))[0].File);
        // A function's own first byte, as a return address one past it.
        var start = sym.Symbolize(new RecordedFrame(fx.Address["record_caller"] + 1, fx.Module));
        Assert.Equal("record_caller", start[^1].Function);
        Assert.Empty(sym.Warnings);
    }

    [Theory]
    [InlineData("-gdwarf-4")]
    [InlineData("-gdwarf-5")]
    [InlineData("-gdwarf64")]
    public void EachDwarfVersion_GivesTheSameFrames(string flag)
    {
        string binary = Path.Combine(fx.Dir, "symfixture" + flag);
        Fixture.Tool("gcc", "-O2", "-g", flag, "-fomit-frame-pointer", "-o", binary, fx.Source);
        var seen = Fixture.Tool(binary).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')).ToDictionary(f => f[0]);
        ulong bias = Convert.ToUInt64(seen["record_caller"][2], 16);
        var module = new TraceModule(bias, bias + (1UL << 24), bias, Fixture.BuildIdOf(binary), binary);
        var sym = new Sym(systemDebug: false);
        var inlined = sym.Symbolize(new RecordedFrame(Convert.ToUInt64(seen["inlined"][1], 16), module));
        var direct = sym.Symbolize(new RecordedFrame(Convert.ToUInt64(seen["direct"][1], 16), module));
        Assert.Equal(
            [("inlined_step", "symfixture.c", fx.Line("inlined-call"), true), ("outer_function", "symfixture.c", fx.Line("inline-site"), false)],
            inlined.Select(f => (f.Function, Path.GetFileName(f.File), f.Line, f.Inlined)));
        Assert.Equal([("outer_function", "symfixture.c", fx.Line("direct-call"), false)], direct.Select(f => (f.Function, Path.GetFileName(f.File), f.Line, f.Inlined)));
        Assert.Empty(sym.Warnings);
    }

    [Fact]
    public void Batch_GivesTheSameAsOneByOne()
    {
        RecordedFrame[] frames = [At("inlined"), At("direct"), At("inlined"), new(1, null)];
        var batch = new Sym().SymbolizeAll(frames);
        var single = new Sym();
        Assert.Equal(frames.Length, batch.Count);
        for (int i = 0; i < frames.Length; i++) Assert.Equal(single.Symbolize(frames[i]), batch[i]);

        // The same file loaded elsewhere later (dlclose, dlopen): its own offsets, not the first place's cache.
        const ulong moved = 0x10_0000;
        var elsewhere = fx.Module with { Low = fx.Module.Low + moved, High = fx.Module.High + moved, Bias = fx.Module.Bias + moved };
        var both = single.SymbolizeAll([At("direct"), new RecordedFrame(fx.Address["direct"], elsewhere), new RecordedFrame(fx.Address["direct"] + moved, elsewhere)]);
        Assert.Equal(both[0], both[2]);
        Assert.Equal(fx.Address["direct"] - elsewhere.Bias, Assert.Single(both[1]).Offset);
    }

    [Fact]
    public void StrippedCopy_GivesModulePlusOffset()
    {
        string stripped = Path.Combine(fx.Dir, "symfixture-stripped");
        Fixture.Tool("strip", "-o", stripped, fx.Binary);
        var module = fx.Module with { Path = stripped };
        var sym = new Sym(systemDebug: false);
        foreach (string what in new[] { "inlined", "direct" })
        {
            SymbolFrame f = Assert.Single(sym.Symbolize(At(what, module)));
            ulong offset = fx.Address[what] - fx.Module.Bias;
            Assert.Equal(new SymbolFrame(null, null, 0, stripped, offset, false), f);
            Assert.Equal($"symfixture-stripped+0x{offset:x}", f.ToString());
        }
    }

    [Fact]
    public void SeparateDebugFile_FoundByBuildId_InTheGivenDirectory()
    {
        string debugDir = Path.Combine(fx.Dir, "debug-by-id");
        string target = Path.Combine(debugDir, ".build-id", fx.BuildId[..2], fx.BuildId[2..] + ".debug");
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        Fixture.Tool("objcopy", "--only-keep-debug", fx.Binary, target);
        string stripped = Path.Combine(fx.Dir, "symfixture-by-id");
        Fixture.Tool("strip", "-o", stripped, fx.Binary);
        var module = fx.Module with { Path = stripped };

        var sym = new Sym(debugDirectories: [debugDir], systemDebug: false);
        AssertFullFrames(sym.Symbolize(At("inlined", module)), sym.Symbolize(At("direct", module)), stripped);
        // Without the directory, the same binary has nothing to say.
        Assert.Null(new Sym(systemDebug: false).Symbolize(At("direct", module))[0].Function);
    }

    [Fact]
    public void SeparateDebugFile_FoundByDebuglink_NextToTheBinary()
    {
        string dir = Path.Combine(fx.Dir, "by-link");
        Directory.CreateDirectory(dir);
        string debug = Path.Combine(dir, "symfixture.dbg");
        Fixture.Tool("objcopy", "--only-keep-debug", fx.Binary, debug);
        string binary = Path.Combine(dir, "symfixture");
        Fixture.Tool("objcopy", "--strip-debug", "--strip-unneeded", $"--add-gnu-debuglink={debug}", fx.Binary, binary);
        var module = fx.Module with { Path = binary };
        AssertFullFrames(new Sym(systemDebug: false).Symbolize(At("inlined", module)), new Sym(systemDebug: false).Symbolize(At("direct", module)), binary);
    }

    [Fact]
    public void DwzSupplementaryFile_NamesTheInlinedFunction_AndItsAbsenceNamesNone()
    {
        Assert.True(OnPath("dwz"), "dwz is missing: .ci/run installs it (Debian package dwz), as Debian's debug packages are made with it");
        string dir = Path.Combine(fx.Dir, "dwz");
        Directory.CreateDirectory(dir);
        string a = Path.Combine(dir, "a"), b = Path.Combine(dir, "b");
        File.Copy(fx.Binary, a);
        File.Copy(fx.Binary, b);
        // Both files' shared DIEs move to common.dwz; they refer to it as DW_FORM_GNU_ref_alt.
        ProcessResult r = Child.RunProgram("dwz", ["-m", "common.dwz", "-M", "common.dwz", "a", "b"], [], workingDirectory: dir);
        Assert.True(r.ExitCode == 0, r.Output + r.Error);
        Assert.Contains(".gnu_debugaltlink", Fixture.Tool("readelf", "-S", a));
        var module = fx.Module with { Path = a, BuildId = Fixture.BuildIdOf(a) };

        AssertFullFrames(new Sym(systemDebug: false).Symbolize(At("inlined", module)), new Sym(systemDebug: false).Symbolize(At("direct", module)), a);

        File.Move(Path.Combine(dir, "common.dwz"), Path.Combine(dir, "common.moved"));
        var sym = new Sym(systemDebug: false);
        var frames = sym.Symbolize(At("inlined", module));
        Assert.Equal(2, frames.Count);
        Assert.Equal((null, fx.Line("inlined-call"), true), (frames[0].Function, frames[0].Line, frames[0].Inlined));
        Assert.Equal("outer_function", frames[1].Function);
        Assert.Contains(sym.Warnings, w => w.Contains("common.dwz"));
    }

    private static bool OnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':').Any(d => File.Exists(Path.Combine(d, tool)));

    [Fact]
    public void ChangedOrMissingFile_GivesNoWrongNames()
    {
        var changed = fx.Module with { BuildId = new string('0', 40) };
        var sym = new Sym(systemDebug: false);
        SymbolFrame f = Assert.Single(sym.Symbolize(At("direct", changed)));
        Assert.Equal((null, null, 0), (f.Function, f.File, f.Line));
        Assert.Contains(sym.Warnings, w => w.Contains(fx.Binary) && w.Contains("build-id"));

        var missing = fx.Module with { Path = Path.Combine(fx.Dir, "gone") };
        SymbolFrame g = Assert.Single(sym.Symbolize(At("direct", missing)));
        Assert.Equal($"gone+0x{fx.Address["direct"] - fx.Module.Bias:x}", g.ToString());
        Assert.Contains(sym.Warnings, w => w.Contains("gone") && w.Contains("missing"));
    }

    [Fact]
    public void BadFiles_GiveModulePlusOffsetOrNamesOnly_WithAWarning()
    {
        var sym = new Sym(systemDebug: false);
        string garbage = Path.Combine(fx.Dir, "garbage.so");
        File.WriteAllBytes(garbage, [.. Enumerable.Range(0, 4096).Select(i => (byte)(i * 7))]);
        string truncated = Path.Combine(fx.Dir, "truncated");
        File.WriteAllBytes(truncated, File.ReadAllBytes(fx.Binary)[..200]);
        foreach (string path in new[] { garbage, truncated })
        {
            var module = fx.Module with { Path = path, BuildId = null };
            SymbolFrame f = Assert.Single(sym.Symbolize(At("direct", module)));
            Assert.Equal((null, path), (f.Function, f.Module));
            Assert.Contains(sym.Warnings, w => w.StartsWith(path + ":"));
        }

        // DWARF whose units are nonsense: the symbol table still names the function.
        string junk = Path.Combine(fx.Dir, "junk-info");
        File.WriteAllBytes(junk, [.. Enumerable.Repeat((byte)0x41, 64)]);
        string badDwarf = Path.Combine(fx.Dir, "symfixture-bad-dwarf");
        Fixture.Tool("objcopy", $"--update-section=.debug_info={junk}", fx.Binary, badDwarf);
        var bad = fx.Module with { Path = badDwarf, BuildId = Fixture.BuildIdOf(badDwarf) };
        SymbolFrame named = Assert.Single(sym.Symbolize(At("direct", bad)));
        Assert.Equal(("outer_function", (string?)null), (named.Function, named.File));
        Assert.Contains(sym.Warnings, w => w.StartsWith(badDwarf + ":") && w.Contains("DWARF"));
    }

    /// <summary>The perf-map name cleaner, written by hand (no Regex in libnativeheap), against the regex it replaced.</summary>
    [Theory]
    [InlineData("void* [App] App.Config::RememberSetting(int32)[QuickJitted]")]
    [InlineData("[App] App.Config::RememberSetting(int32)")]
    [InlineData("int32 [pmtest] P::CompiledBefore(int32)[OptimizedTier1]")]
    [InlineData("class System.Collections.Generic.List`1<!0> [System.Private.CoreLib] System.Collections.Generic.List`1[System.__Canon]::.ctor()[PreJIT]")]
    [InlineData("valuetype X [A] [B] C::M(a b)")]
    [InlineData("void [A B] C::M()")]
    [InlineData("void [] C::M()")]
    [InlineData("void [A]  C::M()")]
    [InlineData("void [A] C::M()[Tier 1]")]
    [InlineData("void [A] C::M()[]")]
    [InlineData("void [A] C::M()x")]
    [InlineData("void [A] ))[T]")]
    [InlineData("void [A] )")]
    [InlineData("void [A] M(a)[b](c)[T1]")]
    [InlineData(" [A] M()")]
    [InlineData("stub<1> AllocateTemporaryEntryPoints<PRECODE_STUB>")]
    [InlineData("stub<2> [A] x()")]
    [InlineData("")]
    [InlineData("[A] M()[T][U]")]
    public void ManagedName_MatchesTheRegexItReplaced(string perfMapName)
    {
        var regex = new System.Text.RegularExpressions.Regex(@"^(?:\S.*? )?\[[^\]\s]+\] (\S.*?\))(?:\[[A-Za-z0-9]+\])?$");
        var m = regex.Match(perfMapName);
        Assert.Equal(m.Success ? m.Groups[1].Value : perfMapName, Symbolizer.ManagedName(perfMapName));
    }

    [Fact]
    public void JitCode_IsNamedFromItsRange_AndAnAddressOutsideEverythingIsUnknown()
    {
        var sym = new Sym([new JitCode(0x7f00_0000_2000, 0x40, "Unloaded.Method()"), new JitCode(0x7f00_0000_1000, 0x80, "Program.Main()"), new JitCode(0x7f00_0000_2000, 0x40, "Program.Alloc(Int32)")]);
        Assert.Equal(new SymbolFrame("Program.Alloc(Int32)", null, 0, "[jit]", 0x7f00_0000_2010, false), Assert.Single(sym.Symbolize(new RecordedFrame(0x7f00_0000_2010, null))));
        // The runtime's own naming loses its return type, assembly and tier; a stub's stays.
        var perfMap = new Sym([new JitCode(0x7f00_0000_3000, 0x40, "void* [App] App.Config::RememberSetting(int32)[QuickJitted]"),
            new JitCode(0x7f00_0000_4000, 0x40, "stub<1> AllocateTemporaryEntryPoints<PRECODE_STUB>")]);
        Assert.Equal("App.Config::RememberSetting(int32)", Assert.Single(perfMap.Symbolize(new RecordedFrame(0x7f00_0000_3010, null))).Function);
        Assert.Equal("stub<1> AllocateTemporaryEntryPoints<PRECODE_STUB>", Assert.Single(perfMap.Symbolize(new RecordedFrame(0x7f00_0000_4010, null))).Function);
        Assert.Equal("Program.Main()", sym.Symbolize(new RecordedFrame(0x7f00_0000_1080, null))[0].Function); // return address just past its end: the call is inside
        Assert.Equal(new SymbolFrame(null, null, 0, "?", 0x7f00_0000_1081, false), Assert.Single(sym.Symbolize(new RecordedFrame(0x7f00_0000_1081, null))));
        Assert.Equal("?+0x7f0000001081", sym.Symbolize(new RecordedFrame(0x7f00_0000_1081, null))[0].ToString());
    }

    [Fact]
    public void CppNames_AreDemangledWhereCppfiltIsInstalled()
    {
        string source = Path.Combine(fx.Dir, "symfixture.cpp");
        File.Copy(Path.Combine(NativeTests.RepoRoot, "tests", "NativeHeap.Tests", "Tool", "fixtures", "symfixture.cpp"), source, overwrite: true);
        string binary = Path.Combine(fx.Dir, "symfixture-cpp");
        Fixture.Tool("g++", "-O2", "-g", "-o", binary, source);
        string[] f = Fixture.Tool(binary).Trim().Split(' ');
        ulong where = Convert.ToUInt64(f[1], 16), bias = Convert.ToUInt64(f[2], 16);
        var module = new TraceModule(bias, bias + (1UL << 24), bias, Fixture.BuildIdOf(binary), binary);
        using var demangling = new Sym();
        using var plain = new Sym(demangle: false);
        var frame = new RecordedFrame(where + 1, module);
        bool cppfilt = OnPath("c++filt");
        Assert.Equal(cppfilt ? "fixture::where(int)" : "_ZN7fixture5whereEi", demangling.Symbolize(frame)[^1].Function);
        Assert.Equal("_ZN7fixture5whereEi", plain.Symbolize(frame)[^1].Function);
    }

    [Fact]
    public void LibcMalloc_IsNamedMalloc_FromDynsymAndWithDebugFiles()
    {
        // Inside malloc, as a return address would be.
        var frame = new RecordedFrame(fx.LibcMalloc + 0x11, fx.Libc);
        SymbolFrame dynsym = Assert.Single(new Sym(systemDebug: false).Symbolize(frame));
        Assert.Equal(("malloc", (string?)null, fx.Libc.Path), (dynsym.Function, dynsym.File, dynsym.Module));
        Assert.Equal($"malloc ({Path.GetFileName(fx.Libc.Path)})", dynsym.ToString());
        // With /usr/lib/debug (libc6-dbg, where installed) the name stays malloc.
        Assert.Equal("malloc", new Sym().Symbolize(frame)[^1].Function);
    }
}
