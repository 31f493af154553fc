using System.Globalization;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// librecorder's trace format version 2 (docs/trace-format.md) on native-tests' stacks_fixture,
/// a program built without frame pointers, so only the recorder's own DWARF CFI unwinder can
/// walk it: each allocation's stack names the functions that made it, innermost first, up to
/// _start (or a thread's start), in the parent, a thread and a forked child; the stack depth
/// setting; relative IDs; and the zstd-compressed file is the same text.
/// </summary>
public class RecorderStackTests
{
    private static string RecorderLibrary
    {
        get
        {
            string path = Path.Combine(NativeTests.RepoRoot, "src", "NativeHeap.Cli", "native", "build", "librecorder.so");
            Assert.True(File.Exists(path), $"{path} is missing: run `make -C src/NativeHeap.Cli/native` (building NativeHeap.Cli does).");
            return path;
        }
    }

    private static string Tool(string name)
    {
        string path = Path.Combine("/usr/bin", name);
        Assert.True(File.Exists(path), $"{path} is missing: the test needs it ({name} is in Debian's " +
            (name == "nm" ? "binutils" : name == "setarch" ? "util-linux" : name) + " package).");
        return path;
    }

    /// <summary>The fixture's functions from <c>nm -S</c>: name, start and size (ELF virtual addresses).</summary>
    private static readonly Lazy<List<(string Name, ulong Start, ulong Size)>> Functions = new(() =>
    {
        ProcessResult r = Child.RunProgram(Tool("nm"), ["-S", "--defined-only", NativeTests.Program("stacks_fixture")], []);
        Assert.True(r.ExitCode == 0, $"nm exited {r.ExitCode}: {r.Error}");
        var list = new List<(string, ulong, ulong)>();
        foreach (string line in r.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length == 4 && (f[2] == "T" || f[2] == "t"))
                list.Add((f[3], ulong.Parse(f[0], NumberStyles.HexNumber), ulong.Parse(f[1], NumberStyles.HexNumber)));
        }
        return list;
    });

    /// <summary>One process's trace, parsed far enough for these tests; checks the version 2 rules it relies on.</summary>
    private sealed class Trace
    {
        public string[] Lines { get; }
        public List<TraceModule> Modules { get; } = [];
        private readonly List<(int Parent, ulong Address)> nodes = [(0, 0)];

        public Trace(string text, string name)
        {
            Lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            string first = Lines.First(l => !l.StartsWith('#'));
            Assert.True(first == "v 2", $"{name}: the first line after the comments is '{first}', not 'v 2'");
            foreach (string line in Lines)
            {
                string[] f = line.Split(' ');
                if (f[0] == "M")
                {
                    Modules.Add(new TraceModule(Hex(f[1]), Hex(f[2]), Hex(f[3]), f[4] == "-" ? null : f[4], string.Join(' ', f[5..])));
                }
                else if (f[0] == "s")
                {
                    Assert.True(Modules.Count > 0, $"{name}: '{line}' comes before any M line");
                    int id = int.Parse(f[1], CultureInfo.InvariantCulture), parent = int.Parse(f[2], CultureInfo.InvariantCulture);
                    Assert.True(id == nodes.Count, $"{name}: '{line}' is not node {nodes.Count}, the next one");
                    Assert.True(parent < id, $"{name}: '{line}' names a parent not defined before it");
                    nodes.Add((parent, Hex(f[3])));
                }
                else if (line.Contains(" @"))
                {
                    int s = int.Parse(line[(line.LastIndexOf('@') + 1)..], CultureInfo.InvariantCulture);
                    Assert.True(s >= 1 && s < nodes.Count, $"{name}: '{line}' uses a node not defined before it");
                }
            }
        }

        private static ulong Hex(string s) => ulong.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);

        /// <summary>The line (without its <c>@S</c>) that starts with prefix, and its stack's frames, innermost first.</summary>
        public (string Line, List<ulong> Frames) Allocation(string prefix)
        {
            string line = Lines.Single(l => l.StartsWith(prefix + " @", StringComparison.Ordinal) || l == prefix);
            var frames = new List<ulong>();
            int at = line.LastIndexOf(" @", StringComparison.Ordinal);
            if (at < 0) return (line, frames);
            for (int s = int.Parse(line[(at + 2)..], CultureInfo.InvariantCulture); s != 0; s = nodes[s].Parent)
                frames.Add(nodes[s].Address);
            return (line[..at], frames);
        }

        /// <summary>The fixture's function holding a return address, else the file name of its module.</summary>
        public string Function(ulong address)
        {
            TraceModule? m = Modules.LastOrDefault(x => x.Contains(address));
            if (m is null) return "?";
            if (!m.Path.EndsWith("/stacks_fixture", StringComparison.Ordinal)) return Path.GetFileName(m.Path);
            ulong offset = address - 1 - m.Bias;
            foreach (var f in Functions.Value)
                if (offset >= f.Start && offset < f.Start + f.Size)
                    return f.Name;
            return $"stacks_fixture+0x{offset:x}";
        }

        public List<string> Names(List<ulong> frames) => frames.Select(Function).ToList();
    }

    /// <summary>Runs the fixture under the recorder (through setarch -R if asked, so that two runs load at the same addresses); returns each process's file.</summary>
    private static List<(string Path, byte[] Bytes)> Record(TempDirectory dir, bool sameAddresses, params (string, string)[] environment)
    {
        string fixture = NativeTests.Program("stacks_fixture");
        (string, string)[] env = [("LD_PRELOAD", RecorderLibrary), ("NH_TRACE", Path.Combine(dir.Path, "%n.%p.trace")), .. environment];
        ProcessResult r = sameAddresses
            ? Child.RunProgram(Tool("setarch"), ["x86_64", "-R", fixture], env, timeoutSeconds: 60)
            : Child.RunProgram(fixture, [], env, timeoutSeconds: 60);
        Assert.True(r.ExitCode == 0, $"stacks_fixture exited {r.ExitCode}: {r.Error}");
        // %n is the program's name: one file for the parent, one for the forked child.
        var files = Directory.GetFiles(dir.Path).Order(StringComparer.Ordinal).ToList();
        Assert.True(files.Count == 2 && files.All(f => Path.GetFileName(f).StartsWith("stacks_fixture.", StringComparison.Ordinal)),
            "expected stacks_fixture.PID.trace for the parent and its child, found: " + string.Join(", ", files.Select(Path.GetFileName)));
        return files.Select(f => (f, File.ReadAllBytes(f))).ToList();
    }

    /// <summary>Parent first (the child's file says it is a forked child).</summary>
    private static (Trace Parent, Trace Child) Parse(List<(string Path, string Text)> files)
    {
        var traces = files.Select(f => (Child: f.Text.Contains("# forked child"), Trace: new Trace(f.Text, f.Path))).ToList();
        return (traces.Single(t => !t.Child).Trace, traces.Single(t => t.Child).Trace);
    }

    private static List<(string, string)> Plain(List<(string Path, byte[] Bytes)> files) =>
        files.Select(f => (f.Path, System.Text.Encoding.UTF8.GetString(f.Bytes))).ToList();

    [Fact]
    public void Stacks_NameTheCallers_InnermostFirst_ThroughCodeWithoutFramePointers()
    {
        using var dir = new TempDirectory("nh-rec-stacks");
        var (parent, child) = Parse(Plain(Record(dir, false, ("NH_TRACE_COMPRESS", "0"))));

        var (line, frames) = parent.Allocation("m 0 80");
        List<string> names = parent.Names(frames);
        Assert.True(names.Count >= 4 && names[..3].SequenceEqual(["remember_setting", "load_config", "main"]),
            $"'{line}': stack {string.Join(" < ", names)}");
        // Then libc's start-up, and the unwind ends at the outermost frame: _start says its return address is undefined.
        Assert.Equal("_start", names[^1]);
        Assert.All(names[3..^1], n => Assert.Equal("libc.so.6", n));

        // realloc keeps the block's ID (D = 1: it is the newest block), and has a stack of its own.
        var (_, reallocFrames) = parent.Allocation("r 1 800");
        Assert.Equal("main", parent.Function(reallocFrames[0]));
        int at = Array.FindIndex(parent.Lines, l => l.StartsWith("r 1 800 @", StringComparison.Ordinal));
        Assert.Equal("f 1", parent.Lines[at + 1]);

        // The thread's calloc: its own thread's lines, its stack up to the thread's start in libc.
        var (calloc, threadFrames) = parent.Allocation("c 0 3 48");
        int callocAt = Array.FindIndex(parent.Lines, l => l.StartsWith(calloc + " @", StringComparison.Ordinal));
        Assert.Equal("T 2", parent.Lines[callocAt - 1]);
        List<string> threadNames = parent.Names(threadFrames);
        Assert.True(threadNames.Count >= 3 && threadNames[..2].SequenceEqual(["worker_alloc", "worker_main"]) && threadNames[2] == "libc.so.6",
            $"thread: {string.Join(" < ", threadNames)}");
        Assert.Contains("x 2", parent.Lines);

        // The forked child: its own file, with its own M and s lines.
        List<string> childNames = child.Names(child.Allocation("m 0 96").Frames);
        Assert.True(childNames.Count >= 3 && childNames[..2].SequenceEqual(["child_work", "main"]) && childNames[^1] == "_start",
            $"child: {string.Join(" < ", childNames)}");
        Assert.Contains(child.Modules, m => m.Path.EndsWith("/stacks_fixture", StringComparison.Ordinal) && m.BuildId is { Length: 40 });
    }

    [Fact]
    public void StackDepth_ZeroWritesNoStacks_ThreeKeepsTheInnermostFrames()
    {
        using (var dir = new TempDirectory("nh-rec-depth0"))
        {
            var (parent, child) = Parse(Plain(Record(dir, false, ("NH_TRACE_COMPRESS", "0"), ("NH_TRACE_STACK_DEPTH", "0"))));
            foreach (Trace t in new[] { parent, child })
            {
                Assert.DoesNotContain(t.Lines, l => l.StartsWith("s ", StringComparison.Ordinal) || l.StartsWith("M ", StringComparison.Ordinal) || l.Contains(" @"));
            }
            Assert.Empty(parent.Allocation("m 0 80").Frames);
            Assert.Empty(child.Allocation("m 0 96").Frames);
        }
        using (var dir = new TempDirectory("nh-rec-depth3"))
        {
            var (parent, _) = Parse(Plain(Record(dir, false, ("NH_TRACE_COMPRESS", "0"), ("NH_TRACE_STACK_DEPTH", "3"))));
            Assert.Equal(["remember_setting", "load_config", "main"], parent.Names(parent.Allocation("m 0 80").Frames));
            Assert.All(parent.Lines.Where(l => l.Contains(" @")), l => Assert.True(StackLength(parent, l) <= 3, l));
        }
    }

    private static int StackLength(Trace t, string line) =>
        t.Allocation(line[..line.LastIndexOf(" @", StringComparison.Ordinal)]).Frames.Count;

    [Fact]
    public void Compressed_IsZstd_AndDecompressesToThePlainTextLines()
    {
        using var plainDir = new TempDirectory("nh-rec-plain");
        using var zstdDir = new TempDirectory("nh-rec-zstd");
        var plain = Plain(Record(plainDir, true, ("NH_TRACE_COMPRESS", "0")));
        var compressed = Record(zstdDir, true);
        var decompressed = new List<(string, string)>();
        foreach (var (path, bytes) in compressed)
        {
            Assert.True(bytes.Length > 4 && bytes[0] == 0x28 && bytes[1] == 0xB5 && bytes[2] == 0x2F && bytes[3] == 0xFD,
                $"{path} does not start with zstd's magic bytes");
            ProcessResult r = Child.RunProgram(Tool("zstd"), ["-d", "-c", path], []);
            Assert.True(r.ExitCode == 0, $"zstd -d {path} exited {r.ExitCode}: {r.Error}");
            decompressed.Add((path, r.Output));
        }
        var (p1, c1) = Parse(plain);
        var (p2, c2) = Parse(decompressed);
        // Comments (pids) and checkpoints (memory figures) differ from run to run, and only the
        // compressing recorder loads libzstd (an M line of its own); nothing else may differ.
        static string[] Steady(Trace t) => t.Lines.Where(l => !l.StartsWith('#') && !l.StartsWith("k ", StringComparison.Ordinal)
            && !(l.StartsWith("M ", StringComparison.Ordinal) && l.Contains("/libzstd.so"))).ToArray();
        Assert.Equal(Steady(p1), Steady(p2));
        Assert.Equal(Steady(c1), Steady(c2));
        // The exit comment comes last in each: the frame ended at exit holds everything.
        Assert.StartsWith("# exit: ", p2.Lines[^1]);
        Assert.StartsWith("# exit: ", c2.Lines[^1]);
    }

    /// <summary>
    /// The recorder's locks against glibc's loader lock: native-tests' recorder_dl_deadlock runs, for 2 s, a thread whose
    /// dl_iterate_phdr callback mallocs, one that allocates (unwinder cache misses) and one that dlopens and dlcloses
    /// a library (frees under the loader lock), with a k line at every call (NH_TRACE_EVERY=1, which measures the
    /// unwinder's memory). When the unwinder took its mutex before the loader lock, this deadlocked within a second or
    /// two (the program's watchdog then exits 3). It must end, and its trace with its exit checkpoint.
    /// </summary>
    [Fact]
    public void LoaderLock_DlcloseAndDlIteratePhdrUnderTheRecorder_DoNotDeadlock()
    {
        using var dir = new TempDirectory("nh-rec-dl-deadlock");
        string program = NativeTests.Program("recorder_dl_deadlock");
        string library = NativeTests.Program("librecorder_dl_churn.so");
        (string, string)[] env = [("LD_PRELOAD", RecorderLibrary), ("NH_TRACE", Path.Combine(dir.Path, "%n.%p.trace")),
            ("NH_TRACE_EVERY", "1"), ("NH_TRACE_COMPRESS", "0")];
        ProcessResult r = Child.RunProgram(program, [library, "2"], env, timeoutSeconds: 30);
        Assert.True(r.ExitCode == 0, $"recorder_dl_deadlock exited {r.ExitCode} (3: a deadlock): {r.Error}");
        string file = Assert.Single(Directory.GetFiles(dir.Path));
        string[] lines = File.ReadAllText(file).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("# exit: ", lines[^1]);
        Assert.Contains(lines[^4..], l => l.StartsWith("k exit ", StringComparison.Ordinal));
    }
}
