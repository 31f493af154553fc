using System.Text;
using NativeHeap.Lab;
using ZstdSharp;

namespace NativeHeap.Tests;

/// <summary>
/// Trace format version 2 (docs/trace-format.md) as every reader reads it: a version-1 trace and
/// its version-2 twin (relative IDs, stacks, modules), plain and zstd-compressed, replay alike in
/// the C replayer and the nativeheap command, which decode IDs by the same rule; bad version-2
/// input is an error naming its line; TraceStacks gives the frames and modules.
/// </summary>
public class TraceV2Tests
{
    private const string AlignBreak = "1048576";

    /// <summary>
    /// The same run twice: as version 1, with IDs given as the decoding rule gives them (a new
    /// block takes the number freed longest ago, else the next unused one), and as version 2. Lines
    /// correspond one to one: version 2's v, s and M lines are comments in version 1.
    /// </summary>
    private static (string V1, string V2) Twins()
    {
        var v1 = new StringBuilder("# twins\n# v 2\n# M\n# M\n");
        var v2 = new StringBuilder("# twins\nv 2\n");
        v2.Append("M 400000 401000 0 0123abcd /usr/bin/prog\n");
        v2.Append("M 7f0000000000 7f0000100000 7f0000000000 - /usr/lib/lib with space.so\n");
        var random = new Random(27);
        var free = new Queue<int>();
        var live = new List<(long Block, int Id)>();
        int next = 1, nodes = 0, thread = 1;
        long n = 1; // the number the next new block gets
        for (int i = 0; i < 3000; i++)
        {
            if (i % 97 == 0)
            {
                // A stack node, its parent any node so far.
                nodes++;
                v1.Append("# s\n");
                v2.Append($"s {nodes} {random.Next(nodes)} {(random.Next(2) == 0 ? 0x400000 : 0x7f0000000000) + random.Next(0x1000):x}\n");
                continue;
            }
            if (i % 500 == 250)
            {
                thread = 3 - thread;
                v1.Append($"T {thread}\n");
                v2.Append($"T {thread}\n");
                continue;
            }
            if (i % 400 == 399)
            {
                v1.Append($"k step{i}\n");
                v2.Append($"k step{i}\n");
                continue;
            }
            string stack = nodes > 0 && random.Next(3) > 0 ? $" @{random.Next(1, nodes + 1)}" : "";
            int roll = random.Next(10);
            if (live.Count < 5 || roll < 4)
            {
                int id = free.Count > 0 ? free.Dequeue() : next++;
                live.Add((n++, id));
                int size = random.Next(50) == 0 ? 200_000 : random.Next(1, 2000);
                (string a, string b) = random.Next(6) switch
                {
                    0 => ($"c {id} 4 {size / 4}", $"c 0 4 {size / 4}"),
                    1 => ($"a {id} 64 {size}", $"a 0 64 {size}"),
                    2 => ($"r {id} {size}", $"r 0 {size}"), // realloc(NULL): the ID was free
                    _ => ($"m {id} {size}", $"m 0 {size}"),
                };
                v1.Append(a).Append('\n');
                v2.Append(b).Append(stack).Append('\n');
                continue;
            }
            int k = random.Next(live.Count);
            (long block, int which) = live[k];
            long d = n - block;
            if (roll < 7 || roll == 9 && random.Next(4) == 0)
            {
                bool realloc0 = roll == 9; // realloc(p, 0) that frees
                v1.Append(realloc0 ? $"r {which} 0\n" : $"f {which}\n");
                v2.Append(realloc0 ? $"r {d} 0{stack}\n" : $"f {d}\n");
                live.RemoveAt(k);
                free.Enqueue(which);
            }
            else if (roll == 7)
            {
                v1.Append($"w {which}\n");
                v2.Append($"w {d}\n");
            }
            else
            {
                int size = random.Next(1, 4000);
                v1.Append($"r {which} {size}\n");
                v2.Append($"r {d} {size}{stack}\n");
            }
        }
        v1.Append("k last\n");
        v2.Append("k last\n");
        return (v1.ToString(), v2.ToString());
    }

    /// <summary>zstd of the text as two frames, cut in the middle of a line.</summary>
    private static byte[] TwoFrames(string text)
    {
        byte[] all = Encoding.ASCII.GetBytes(text);
        int cut = all.Length / 2 + 3;
        using var compressor = new Compressor(3);
        return [.. compressor.Wrap(all.AsSpan(0, cut)), .. compressor.Wrap(all.AsSpan(cut))];
    }

    [Fact]
    public void Count_ReadingTheFileAsAStream_AgreesWithTheFullCheck()
    {
        (_, string v2) = Twins();
        string text = "# recorded by librecorder: /bin/prog\n# pid 4242\n" + v2;
        TraceSummary checkedOne = TraceReplayer.Validate(TraceFile.Decode(Encoding.ASCII.GetBytes(text)));
        using var temp = new TempDirectory("nh-count-");
        foreach (byte[] raw in new[] { Encoding.ASCII.GetBytes(text), TwoFrames(text) })
        {
            string path = Path.Combine(temp.Path, "t.trace");
            File.WriteAllBytes(path, raw);
            TraceCounts counts = TraceFile.Count(path);
            // Neither counts comments or v, s and M lines as operations.
            Assert.Equal(text.Split('\n').Count(l => l.Length > 0 && l[0] is not ('#' or 'v' or 's' or 'M' or 'J')), counts.Operations);
            Assert.Equal(checkedOne.Operations, counts.Operations);
            Assert.Equal(checkedOne.Threads, counts.Threads);
            Assert.Equal(checkedOne.Checkpoints.Count, counts.Checkpoints);
            Assert.Equal(4242, counts.Pid);
        }
    }

    [Fact]
    public void Decode_KeepsEveryLineInPlace_AndGivesTheIdsVersion1Has()
    {
        (string v1, string v2) = Twins();
        string[] a = v1.Split('\n'), b = v2.Split('\n');
        Assert.Equal(a.Length, b.Length);
        foreach (byte[] raw in new[] { Encoding.ASCII.GetBytes(v2), TwoFrames(v2) })
        {
            string[] decoded = Encoding.ASCII.GetString(TraceFile.Decode(raw)).Split('\n');
            Assert.Equal(b.Length, decoded.Length); // line N of the trace is line N of the text
            for (int i = 0; i < b.Length; i++)
            {
                if (b[i].StartsWith('v')) Assert.Equal("# v 2", decoded[i]);
                else if (b[i].StartsWith('s') || b[i].StartsWith('M')) Assert.Equal(b[i], decoded[i]);
                else Assert.True(a[i] == (b[i].Contains('@') ? decoded[i][..decoded[i].LastIndexOf(" @", StringComparison.Ordinal)] : decoded[i]),
                    $"line {i + 1}: version 1 '{a[i]}', version 2 '{b[i]}' decoded to '{decoded[i]}'");
            }
        }
        // Version 1, plain, comes back as it is; compressed, as it was.
        byte[] plain = Encoding.ASCII.GetBytes(v1);
        Assert.Same(plain, TraceFile.Decode(plain));
        Assert.Equal(plain, TraceFile.Decode(TwoFrames(v1)));
    }

    [Fact]
    public void Version2_PlainAndCompressed_ReplaysAsVersion1_InTheCReplayerAndTheCommand()
    {
        (string v1, string v2) = Twins();
        using var dir = new TempDirectory("nh-v2");
        string p1 = Path.Combine(dir.Path, "v1.trace"), p2 = Path.Combine(dir.Path, "v2.trace"), pz = Path.Combine(dir.Path, "v2.trace.zst");
        File.WriteAllText(p1, v1);
        File.WriteAllText(p2, v2);
        File.WriteAllBytes(pz, TwoFrames(v2));

        var c = new Dictionary<string, string>();
        var managed = new Dictionary<string, string>();
        foreach (string path in new[] { p1, p2, pz })
        {
            c[path] = NativeTests.Run("replay", [path], ("REPLAY_ALIGN_BREAK", AlignBreak));
            managed[path] = ManagedReplay(path);
        }
        Assert.Contains(" arena 1 ", c[p1]); // the T 2 sections ran on a thread of their own
        foreach (string path in new[] { p2, pz })
        {
            NativeTests.AssertSameReplay(c[p1], c[path], $"C replayer, v1 and {Path.GetFileName(path)}");
            NativeTests.AssertSameReplay(managed[p1], managed[path], $"nativeheap replay, v1 and {Path.GetFileName(path)}");
            // Same placements and IDs: both readers decode IDs by the same rule.
            NativeTests.AssertSameReplay(c[path], managed[path], $"{Path.GetFileName(path)}, C and nativeheap");
        }
    }

    /// <summary>`nativeheap replay`, again if glibc's malloc moved the break under it (as TraceFileFidelityTests does).</summary>
    private static string ManagedReplay(string path)
    {
        ProcessResult r = default!;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            r = Cli.Run(["replay", path, "--align-break", AlignBreak]);
            Assert.True(r.ExitCode == 0, r.Error);
            if (!r.Error.Contains("moved the program break")) return r.Output;
        }
        Assert.Fail($"every attempt was disturbed: {r.Error}");
        return "";
    }

    public static TheoryData<string, int, string, bool> BadTraces() => new()
    {
        // trace, line, what the managed message holds, whether the C replayer checks it (IDs, v)
        { "v 2\nm 0 8\nf 2\n", 3, "before the first", true },
        { "v 2\nm 0 8\nm 0 8\nf 2\nw 2\n", 5, "block 1 is not live", true },
        { "v 2\nm 3 8\n", 2, "new block's ID field is 0", true },
        { "v 2\nf 0\n", 2, "names no block", true },
        { "v 2\nf x\n", 2, "'x' is not a non-negative number", true },
        { "m 1 8\nv 2\n", 2, "a v line comes before", true },
        { "# c\nv 3\n", 2, "version '3'", true },
        { "v 2\ns 1 0 xyz\n", 2, "'xyz' is not lower-case hex", false },
        { "v 2\ns 1 0\n", 2, "ADDR missing", false },
        { "v 2\ns 2 0 10\n", 2, "out of order: the next is 1", false },
        { "v 2\ns 1 0 10\ns 2 5 20\n", 3, "parent 5 is not defined yet", false },
        { "v 2\ns 1 0 10\nm 0 8 @2\n", 3, "stack node 2 is not defined yet", false },
        { "v 2\nm 0 8 @x\n", 2, "not a stack node", true },
        { "v 2\nM 1000 zz 0 - /bin/x\n", 2, "'zz' is not lower-case hex", false },
        { "v 2\nM 1000 2000 0 -\n", 2, "PATH missing", false },
        { "v 2\nJ 10\n", 2, "SIZE missing", false },
    };

    [Theory]
    [MemberData(nameof(BadTraces))]
    public void BadVersion2Input_IsAnErrorNamingItsLine(string trace, int line, string what, bool cChecks)
    {
        foreach (byte[] raw in new[] { Encoding.ASCII.GetBytes(trace), TwoFrames(trace) })
        {
            var e = Assert.Throws<TraceFormatException>(() => TraceReplayer.Validate(raw));
            Assert.Equal(line, e.Line);
            Assert.Contains(what, e.Message);
        }
        using var dir = new TempDirectory("nh-v2-bad");
        string file = Path.Combine(dir.Path, "bad.trace.zst");
        File.WriteAllBytes(file, TwoFrames(trace));
        var r = Cli.Run(["replay", file]);
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith($"error: {file}: line {line}: ", r.Error);
        Assert.Equal("", r.Output);
        if (!cChecks) return;
        ProcessResult c = Child.RunProgram(NativeTests.Program("replay"), [file], []);
        Assert.Equal(2, c.ExitCode);
        Assert.StartsWith($"error: line {line}: ", c.Error);
    }

    [Fact]
    public void AVersion1Line_LeavesTheIdsAsTheyAre()
    {
        const string trace = "# old\nv 1\nm 7 100\nf 7\n";
        Assert.Equal("# old\n# v 1\nm 7 100\nf 7\n", Encoding.ASCII.GetString(TraceFile.Decode(Encoding.ASCII.GetBytes(trace))));
        using var dir = new TempDirectory("nh-v1");
        string file = Path.Combine(dir.Path, "v1.trace");
        File.WriteAllText(file, trace);
        Assert.Equal("3 7 heap 0 104\nend\n", NativeTests.Run("replay", [file]));
    }

    [Fact]
    public void TruncatedZstd_IsReadUpToTheCutWithAWarning_CorruptZstd_IsAnError()
    {
        // Cut: what a killed process leaves. The strict reader and the C replayer refuse it;
        // the command replays the whole lines before the cut and says so.
        byte[] whole = TwoFrames("v 2\nm 0 8\nf 1\n");
        byte[] cut = whole[..(whole.Length - 5)];
        Assert.Throws<InvalidDataException>(() => TraceFile.Decode(cut));
        using var dir = new TempDirectory("nh-v2-cut");
        string file = Path.Combine(dir.Path, "cut.trace.zst");
        File.WriteAllBytes(file, cut);
        var r = Cli.Run(["replay", file]);
        Assert.True(r.ExitCode == 0, $"replay exited {r.ExitCode}:\n{r.Output}\n{r.Error}");
        Assert.Contains("stops in the middle of a frame", r.Error);
        ProcessResult c = Child.RunProgram(NativeTests.Program("replay"), [file], []);
        Assert.Equal(2, c.ExitCode);
        Assert.Contains("zstd", c.Error);

        // Corrupt: a second frame that is not one.
        using var compressor = new Compressor(3);
        byte[] second = compressor.Wrap("m 0 16\n"u8).ToArray();
        second[0] ^= 0xFF;
        string bad = Path.Combine(dir.Path, "bad.trace.zst");
        File.WriteAllBytes(bad, [.. compressor.Wrap("v 2\nm 0 8\n"u8), .. second]);
        r = Cli.Run(["replay", bad]);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("zstd", r.Error);
    }

    [Fact]
    public void TraceStacks_GivesFramesInnermostFirst_WithTheModuleInForceAtTheirLine()
    {
        const string trace = """
            # a program that dlopens
            v 2
            M 400000 402000 0 00ff /usr/bin/prog
            M 7f0000000000 7f0000010000 7effff000000 - /usr/lib/libfirst.so
            s 1 0 400100
            s 2 1 7f0000000200
            s 3 2 12345
            m 0 100 @3
            m 0 50
            M 7f0000000000 7f0000020000 7f0000000000 abcd /usr/lib/libsecond.so
            s 4 1 7f0000000300
            c 0 2 8 @4
            r 1 300 @2
            J 12340 100 [OptimizedTier1]Program::Main()
            """;
        byte[] text = TraceFile.Decode(Encoding.ASCII.GetBytes(trace.Replace("\r", "")));
        TraceStacks stacks = TraceStacks.Parse(text);

        Assert.Equal(4, stacks.NodeCount);
        Assert.Equal(3, stacks.Modules.Count);
        TraceModule prog = stacks.Modules[0], first = stacks.Modules[1], second = stacks.Modules[2];
        Assert.Equal(new TraceModule(0x400000, 0x402000, 0, "00ff", "/usr/bin/prog"), prog);
        Assert.Null(first.BuildId);
        Assert.Equal(0x7effff000000ul, first.Bias);
        Assert.Equal("/usr/lib/libsecond.so", second.Path);
        Assert.Equal(new[] { new JitCode(0x12340, 0x100, "[OptimizedTier1]Program::Main()") }, stacks.JitCode);

        Assert.Equal(new[] { new RecordedFrame(0x12345, null), new RecordedFrame(0x7f0000000200, first), new RecordedFrame(0x400100, prog) }, stacks.Frames(3));
        // Node 4 came after libsecond's M line: its address is libsecond's.
        Assert.Equal(new[] { new RecordedFrame(0x7f0000000300, second), new RecordedFrame(0x400100, prog) }, stacks.Frames(4));
        Assert.Equal(1, stacks.Parent(2));
        Assert.Equal(0x7f0000000200ul, stacks.Address(2));

        Assert.Equal(3, stacks.StackOfLine(8));
        Assert.Equal(0, stacks.StackOfLine(9)); // no stack
        Assert.Equal(4, stacks.StackOfLine(12));
        Assert.Equal(2, stacks.StackOfLine(13));
        Assert.Equal(0, stacks.StackOfLine(5)); // an s line
        Assert.Equal(new[] { 2, 3, 4 }, stacks.UsedNodes());
        Assert.False(stacks.IsUsed(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => stacks.Frames(5));

        // A version-1 trace has none.
        TraceStacks none = TraceStacks.Parse("m 1 8\nf 1\n"u8);
        Assert.Equal(0, none.NodeCount);
        Assert.Empty(none.Modules);
        Assert.Equal(0, none.StackOfLine(1));
    }
}
