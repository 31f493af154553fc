using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// libnativeheap (src/NativeHeap.Native, published to artifacts/native): C programs built
/// against it give glibc's results, and unmodified programs run under LD_PRELOAD of
/// libnativeheap-preload.so print what they print on glibc.
/// </summary>
public class NativeLibraryTests
{
    private const string AlignBreak = "1048576";

    private static (string, string) Preload => NativeTests.Preload;

    private static ProcessResult RunOk(string file, IEnumerable<string> args, (string, string)[] environment, string? cwd = null, int timeoutSeconds = 300)
    {
        ProcessResult r = Child.RunProgram(file, args, environment, cwd, timeoutSeconds);
        Assert.True(r.ExitCode == 0, $"{Path.GetFileName(file)} exited {r.ExitCode} ({string.Join(',', environment.Select(e => e.Item1))}): {r.Error}");
        return r;
    }

    /// <summary>glibc's malloc tests, ported to one C program: the same lines on glibc, linked against libnativeheap, and preloaded.</summary>
    [Fact]
    public void GlibcTests_PassAlikeLinkedAndPreloaded()
    {
        string glibc = RunOk(NativeTests.Program("glibc_tests"), [], []).Output;
        Assert.DoesNotContain("FAIL", glibc);
        Assert.Equal(15, glibc.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal(glibc, RunOk(NativeTests.Program("glibc_tests-nh"), [], []).Output);
        Assert.Equal(glibc, RunOk(NativeTests.Program("glibc_tests"), [], [Preload]).Output);
    }

    /// <summary>A bad NATIVEHEAP_TUNABLES entry stops a C program at its first allocation with a message that names it (the .NET API throws).</summary>
    [Fact]
    public void BadTunable_AbortsWithAMessage()
    {
        foreach (var (program, env) in new[]
        {
            (NativeTests.Program("glibc_tests-nh"), new[] { (Tunables.Variable, "tcache_count=0:bogus=1") }),
            (NativeTests.Program("glibc_tests"), new[] { (Tunables.Variable, "tcache_count=0:bogus=1"), Preload }),
        })
        {
            ProcessResult r = Child.RunProgram(program, [], env);
            Assert.Equal(134, r.ExitCode); // SIGABRT
            Assert.Contains($"{Tunables.Variable}: 'bogus=1': unknown tunable 'bogus'", r.Error);
        }
    }

    /// <summary>
    /// seeds/002 linked against libnativeheap: with the main arena on the break (glibc's
    /// place), every checkpoint as on glibc; on NativeHeap's default heaps, never more kept.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("tcache_count=0")]
    public void Seed002_LinkedAgainstLibnativeheap_KeepsWhatGlibcKeeps(string tunable)
    {
        Dictionary<string, long> Parse(string output) => output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .ToDictionary(l => l[..l.LastIndexOf(' ')], l => long.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture));
        var glibc = Parse(RunOk(NativeTests.Program("seed002"), [], [("GLIBC_TUNABLES", tunable.Length == 0 ? "" : "glibc.malloc." + tunable)]).Output);
        var onBreak = Parse(RunOk(NativeTests.Program("seed002-nh"), [], [(Tunables.Variable, "profile=glibc-2.36" + (tunable.Length == 0 ? "" : ":" + tunable))]).Output);
        var onHeaps = Parse(RunOk(NativeTests.Program("seed002-nh"), [], [(Tunables.Variable, tunable)]).Output);
        Assert.Equal(4, glibc.Count);
        foreach (var (checkpoint, kib) in glibc)
        {
            Assert.True(Math.Abs(onBreak[checkpoint] - kib) <= 0.02 * kib + 512, $"{checkpoint}: glibc +{kib} KiB, NativeHeap (glibc-2.36) +{onBreak[checkpoint]} KiB");
            Assert.True(onHeaps[checkpoint] <= kib + 512, $"{checkpoint}: glibc +{kib} KiB, NativeHeap (heaps) +{onHeaps[checkpoint]} KiB");
        }
    }

    public static TheoryData<string, string> Traces() => TraceFileFidelityTests.Traces();

    /// <summary>The C replayer linked against libnativeheap places every block of every trace where the same replayer on glibc does.</summary>
    [Theory]
    [MemberData(nameof(Traces))]
    public void Replay_LinkedAgainstLibnativeheap_PlacesAsGlibc(string trace, string tcache)
    {
        string path = Path.Combine(NativeTests.RepoRoot, trace);
        string glibc = NativeTests.Run("replay", [path],
            ("GLIBC_TUNABLES", tcache == "off" ? "glibc.malloc.tcache_count=0" : ""), ("REPLAY_ALIGN_BREAK", AlignBreak));
        string ours = NativeTests.Run("replay-nh", [path],
            (Tunables.Variable, "profile=glibc-2.36" + (tcache == "off" ? ":tcache_count=0" : "")), ("REPLAY_ALIGN_BREAK", AlignBreak));
        NativeTests.AssertSameReplay(glibc, ours, $"{trace} (tcache {tcache}, libnativeheap)");
    }

    /// <summary>gcc (driver, cc1, as) under the preload compiles a real C file to the same object file.</summary>
    [Fact]
    public void Gcc_UnderPreload_CompilesTheSameObject()
    {
        using var temp = new TempDirectory("nh-gcc");
        string dir = temp.Path;
        string source = Path.Combine(NativeTests.RepoRoot, "src", "NativeHeap.Cli", "native", "replay.c");
        foreach (var (name, env) in new[] { ("glibc.o", Array.Empty<(string, string)>()), ("nh.o", [Preload]) })
            RunOk("gcc", ["-O2", "-Wall", "-c", source, "-o", Path.Combine(dir, name)], env, dir);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "glibc.o")), File.ReadAllBytes(Path.Combine(dir, "nh.o")));
    }

    /// <summary>A perl script with hashes, sorting, regexes and string building prints the same under the preload.</summary>
    [Fact]
    public void Perl_UnderPreload_PrintsTheSame()
    {
        const string script = """
            my %h; my @words;
            for my $i (1 .. 300000) { my $k = join('', map { chr(97 + ($i * $_ * 7919) % 26) } 1 .. 8); $h{$k} .= $i; push @words, $k if $i % 7 == 0; }
            my $joined = join(' ', sort { $h{$a} cmp $h{$b} } keys %h);
            my @m = ($joined =~ /\b([aeiou]\w{3})\w*\b/g);
            delete $h{$_} for @words;
            print scalar(keys %h), ' ', length($joined), ' ', scalar(@m), ' ', substr($joined, 0, 80), "\n";
            """;
        string glibc = RunOk("perl", ["-e", script], []).Output;
        Assert.Equal(glibc, RunOk("perl", ["-e", script], [Preload]).Output);
        Assert.NotEmpty(glibc);
    }

    /// <summary>sort of a 64 MB file (with its temporary files under a small -S) gives the same bytes under the preload.</summary>
    [Fact]
    public void Sort_UnderPreload_SortsTheSame()
    {
        using var temp = new TempDirectory("nh-sort");
        string dir = temp.Path;
        string input = Path.Combine(dir, "input.txt");
        var rng = new Random(20261122);
        using (var w = new StreamWriter(input))
        {
            var line = new StringBuilder();
            for (long bytes = 0; bytes < 64L << 20; bytes += line.Length + 1)
            {
                line.Clear();
                int words = rng.Next(1, 12);
                for (int i = 0; i < words; i++) line.Append(' ').Append(rng.Next(0, 1 << 30).ToString("x", CultureInfo.InvariantCulture));
                w.Write(line);
                w.Write('\n');
            }
        }
        string Sorted(string name, (string, string)[] env)
        {
            string output = Path.Combine(dir, name);
            RunOk("sort", ["-S", "8M", "-T", dir, "-o", output, input], [("LC_ALL", "C"), .. env], dir);
            using var stream = File.OpenRead(output);
            return Convert.ToHexString(SHA256.HashData(stream));
        }
        Assert.Equal(Sorted("glibc.txt", []), Sorted("nh.txt", [Preload]));
    }

    /// <summary>python3 scripts (every allocation through malloc) print the same under the preload, threads included.</summary>
    [Fact]
    public void Python_UnderPreload_PrintsTheSame()
    {
        const string script = """
            import json, re, collections, hashlib, threading
            data = [{"id": i, "name": "item%d" % i, "tags": ["t%d" % (i % 17)] * (i % 5), "v": i * 0.5} for i in range(200000)]
            text = json.dumps(data, sort_keys=True)
            back = json.loads(text)
            words = re.findall(r"item(\d+)7", text)
            counts = collections.Counter(t for d in back for t in d["tags"])
            results = [None] * 4
            def work(k):
                results[k] = hashlib.sha256("".join(str(x) * 3 for x in range(k, 300000, 4)).encode()).hexdigest()
            threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(len(text), hashlib.sha256(text.encode()).hexdigest(), len(words), sorted(counts.items())[:3], results)
            """;
        (string, string) pymalloc = ("PYTHONMALLOC", "malloc");
        string glibc = RunOk("python3", ["-c", script], [pymalloc]).Output;
        Assert.Equal(glibc, RunOk("python3", ["-c", script], [pymalloc, Preload]).Output);
        Assert.NotEmpty(glibc);
    }

    /// <summary>The C benchmark workloads (benchmarks' c-workloads) run under the preload and make the allocations they make on glibc.</summary>
    [Theory]
    [InlineData("simple")]
    [InlineData("thread2")]
    [InlineData("larson")]
    [InlineData("xmalloc")]
    [InlineData("mstress")]
    [InlineData("large")]
    public void Workload_UnderPreload_Completes(string workload)
    {
        static string Allocations(string output) => output.Split(' ').Single(f => f.StartsWith("allocations=", StringComparison.Ordinal));
        string glibc = RunOk(NativeTests.Program("workloads"), [workload], []).Output;
        Assert.Equal(Allocations(glibc), Allocations(RunOk(NativeTests.Program("workloads"), [workload], [Preload]).Output));
    }

    /// <summary>
    /// Python's own regression tests for the modules that allocate hardest, every allocation
    /// going to malloc, pass on NativeHeap. README gives the command that runs more.
    /// </summary>
    [Fact]
    public void PythonRegressionTests_PassUnderPreload()
    {
        string[] modules =
        [
            "test_list", "test_dict", "test_set", "test_tuple", "test_deque", "test_json", "test_re", "test_unicode",
            "test_bytes", "test_string", "test_threading", "test_thread", "test_queue", "test_collections", "test_array",
            "test_pickle", "test_itertools", "test_sort", "test_heapq", "test_gc", "test_weakref", "test_fork1", "test_struct",
            "test_long", "test_float", "test_faulthandler",
        ];
        // Fails the same way without NativeHeap: this machine's site imports threading at start-up.
        string[] ignored = ["test_import_from_another_thread"];
        AssertPythonTestsPass(["-j2", .. modules, .. ignored.SelectMany(i => new[] { "-i", i })], [("PYTHONMALLOC", "malloc"), Preload]);
    }

    /// <summary>
    /// Runs Python's regression tests (regrtest) with <paramref name="args"/>; they must pass.
    /// SIGINT and SIGQUIT go back to their defaults first: by the time these run in CI the test
    /// host ignores both (its /proc status's SigIgn said so; what set it was not traced), an
    /// ignored signal stays ignored across exec, and a Python that starts with SIGINT ignored
    /// leaves it so, which fails test_threading's interrupt_main tests.
    /// </summary>
    private static void AssertPythonTestsPass(string[] args, (string, string)[] environment)
    {
        const string Regrtest = "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            + "signal.signal(signal.SIGQUIT, signal.SIG_DFL); sys.argv[0] = 'regrtest'; runpy.run_module('test', run_name='__main__', alter_sys=True)";
        ProcessResult r = Child.RunProgram("python3", ["-c", Regrtest, .. args], environment, timeoutSeconds: 900);
        Assert.True(r.ExitCode == 0 && r.Output.Contains("Tests result: SUCCESS"), $"exit {r.ExitCode}:\n{r.Output[Math.Max(0, r.Output.Length - 4000)..]}\n{r.Error}");
    }

    /// <summary>
    /// The same under the debug heap with every block on guard pages (guard_sample=1), for the
    /// module that meets its fault handler: test_faulthandler installs SIGSEGV handlers over it
    /// and raises SIGSEGV (the handler must pass on what is not a guard page's fault, and a sent
    /// signal must still end the process). All the modules of the test above pass this way too
    /// (README; 5 min 19 s for the 26), too slowly for every run.
    /// </summary>
    [Fact]
    public void PythonRegressionTests_PassUnderGuardPages()
    {
        AssertPythonTestsPass(["test_faulthandler"], [("PYTHONMALLOC", "malloc"), Preload, (Tunables.Variable, "guard_sample=1")]);
    }
}
