using System.IO.Compression;
using System.Reflection;
using System.Text;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// The pprof writer (src/NativeHeap.Cli/Pprof.cs): a profile it wrote, gunzipped and decoded
/// field by field by a protobuf wire reader of this file's own, written from google/pprof's
/// proto/profile.proto, says back the samples, values, stacks, inlined lines, mappings and
/// string table it was given.
/// </summary>
public class PprofTests
{
    // The tests do not reference the command's project (they run it as a process), so the
    // writer's internal API is reached through its built assembly.
    private static readonly Lazy<Assembly> Tool = new(() => Assembly.LoadFrom(Cli.Dll));
    private static Type PprofType => ToolType("Pprof");
    private static Type SampleType => ToolType("PprofSample");
    private static Type FrameType => ToolType("PprofFrame");
    private static Type LabelType => ToolType("PprofLabel");
    private static Type InfoType => ToolType("PprofInfo");

    private static Type ToolType(string name) => Tool.Value.GetType("NativeHeap.Cli." + name, throwOnError: true)!;

    private static object Invoke(Type type, string method, params object?[] args)
    {
        try
        {
            return type.GetMethod(method, BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public)!.Invoke(null, args)!;
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw e.InnerException;
        }
    }

    private static object Flat(RecordedFrame[] addresses, SymbolFrame[] frames, long inUse, long pinned, long free, params (string Key, string Text)[] labels)
    {
        Array list = Array.CreateInstance(LabelType, labels.Length);
        for (int i = 0; i < labels.Length; i++) list.SetValue(Activator.CreateInstance(LabelType, labels[i].Key, labels[i].Text, 0L, null), i);
        return Invoke(SampleType, "FromFlat", addresses, frames, inUse, pinned, free, labels.Length == 0 ? null : list);
    }

    private static object Sample(IReadOnlyList<(RecordedFrame Address, SymbolFrame[] Symbols)> stack, long inUse, long pinned, long free)
    {
        Array frames = Array.CreateInstance(FrameType, stack.Count);
        for (int i = 0; i < stack.Count; i++) frames.SetValue(Activator.CreateInstance(FrameType, stack[i].Address, stack[i].Symbols), i);
        return Activator.CreateInstance(SampleType, frames, inUse, pinned, free, null)!;
    }

    private static Array Samples(params object[] samples)
    {
        Array list = Array.CreateInstance(SampleType, samples.Length);
        for (int i = 0; i < samples.Length; i++) list.SetValue(samples[i], i);
        return list;
    }

    private static object Info(string[]? comments = null, DateTimeOffset? time = null, TimeSpan? duration = null, string? main = null, string defaultType = "pinned_space") =>
        Activator.CreateInstance(InfoType, comments, time, duration, main, defaultType)!;

    /// <summary>Write the profile to a file as explain will, and decode it back.</summary>
    private static Profile WriteAndRead(Array samples, object info)
    {
        using var temp = new TempDirectory("nh-pprof");
        string file = Path.Combine(temp.Path, "heap.pb.gz");
        Invoke(PprofType, "WriteFile", file, samples, info);
        byte[] gz = File.ReadAllBytes(file);
        Assert.True(gz[0] == 0x1f && gz[1] == 0x8b, "not gzip");
        using var gunzip = new GZipStream(new MemoryStream(gz), CompressionMode.Decompress);
        var raw = new MemoryStream();
        gunzip.CopyTo(raw);
        return new Profile(raw.ToArray());
    }

    // Two modules: the program (mapped at 0x555500000000, bias the same) and libc.
    private static readonly TraceModule App = new(0x5555_0000_0000, 0x5555_0001_0000, 0x5555_0000_0000, "ab12cd", "/usr/bin/app");
    private static readonly TraceModule Libc = new(0x7f00_0000_0000, 0x7f00_0020_0000, 0x7f00_0000_0000, null, "/lib/x86_64-linux-gnu/libc.so.6");

    private static RecordedFrame At(TraceModule m, ulong offset) => new(m.Low + offset, m);

    [Fact]
    public void Profile_DecodesToTheSamplesStacksInlinedLinesAndTablesItWasGiven()
    {
        // Site 1: remember_setting (inlined into load_config at 0x1234) called from main.
        RecordedFrame a1 = At(App, 0x1234), a2 = At(App, 0x2000), a3 = At(Libc, 0x29d90), jit = new(0x7e00_0000_1000, null);
        SymbolFrame remember = new("remember_setting", "config.c", 41, App.Path, 0x1233, Inlined: true);
        SymbolFrame load = new("load_config", "config.c", 88, App.Path, 0x1233, Inlined: false);
        SymbolFrame main = new("main", "main.c", 12, App.Path, 0x1fff, Inlined: false);
        SymbolFrame libcStart = new(null, null, 0, Libc.Path, 0x29d8f, Inlined: false); // no symbol: module+0xOFFSET
        // Site 2: JIT code calling main's frame at a different address of the same function.
        RecordedFrame a4 = At(App, 0x2040);
        SymbolFrame main2 = new("main", "main.c", 15, App.Path, 0x203f, Inlined: false);
        SymbolFrame managed = new("Program.Remember(System.String)", null, 0, "[jit]", jit.Address - 1, Inlined: false);

        object s1 = Flat([a1, a2, a3], [remember, load, main, libcStart], 80, 200L << 20, 300L << 20, ("state", "cached in a tcache"));
        object s2 = Sample([(jit, [managed]), (a4, [main2]), (a3, [libcStart])], 4096, 0, 7);
        var time = new DateTimeOffset(2026, 12, 7, 19, 0, 0, TimeSpan.Zero);
        Profile p = WriteAndRead(Samples(s1, s2),
            Info(["nativeheap explain app.trace", "checkpoint after-frees (line 24009)"], time, TimeSpan.FromSeconds(1.5), main: App.Path));

        Assert.Equal("", p.Strings[0]);
        Assert.Equal(p.Strings.Count, p.Strings.Distinct().Count());
        Assert.Equal([("inuse_space", "bytes"), ("pinned_space", "bytes"), ("free_resident_space", "bytes")], p.SampleTypes);
        Assert.Equal("pinned_space", p.Strings[(int)p.Top.Int(14)]); // default_sample_type
        Assert.Equal(("space", "bytes"), p.ValueType(p.Top.Sub(11))); // period_type
        Assert.Equal(1, p.Top.Int(12));
        Assert.Equal(time.ToUnixTimeMilliseconds() * 1_000_000, p.Top.Int(9));
        Assert.Equal(1_500_000_000, p.Top.Int(10));
        Assert.Equal(["nativeheap explain app.trace", "checkpoint after-frees (line 24009)"], p.Top.Packed(13).Select(i => p.Strings[(int)i]));

        Assert.Equal(2, p.Samples.Count);
        Assert.Equal([80L, 200L << 20, 300L << 20], p.Samples[0].Values);
        Assert.Equal([4096L, 0, 7], p.Samples[1].Values);
        Assert.Equal([("state", "cached in a tcache")], p.Samples[0].Labels);
        Assert.Empty(p.Samples[1].Labels);

        // Innermost first; one location per address, shared where two stacks share one.
        Assert.Equal([a1.Address, a2.Address, a3.Address], p.Samples[0].Locations.Select(id => p.Locations[id].Address));
        Assert.Equal([jit.Address, a4.Address, a3.Address], p.Samples[1].Locations.Select(id => p.Locations[id].Address));
        Assert.Equal(p.Samples[0].Locations[2], p.Samples[1].Locations[2]);
        Assert.Equal(5, p.Locations.Count);

        // The inlined function first, then the one it was inlined into, as profile.proto says.
        Assert.Equal([("remember_setting", "config.c", 41L), ("load_config", "config.c", 88L)], p.Lines(p.Samples[0].Locations[0]));
        Assert.Equal([("main", "main.c", 12L)], p.Lines(p.Samples[0].Locations[1]));
        Assert.Equal([("libc.so.6+0x29d8f", "", 0L)], p.Lines(p.Samples[0].Locations[2]));
        Assert.Equal([("Program.Remember(System.String)", "", 0L)], p.Lines(p.Samples[1].Locations[0]));
        Assert.Equal([("main", "main.c", 15L)], p.Lines(p.Samples[1].Locations[1]));
        // One function per name and file: main's two addresses share it.
        Assert.Equal(5, p.Functions.Count);
        Assert.Equal(p.Locations[p.Samples[0].Locations[1]].Lines[0].Function, p.Locations[p.Samples[1].Locations[1]].Lines[0].Function);

        // One mapping per module, the program's first; JIT code in none.
        Assert.Equal(2, p.Mappings.Count);
        Mapping app = p.Mappings[0], libc = p.Mappings[1];
        Assert.Equal((1UL, App.Low, App.High, App.Path, "ab12cd"), (app.Id, app.Start, app.Limit, app.File, app.BuildId));
        Assert.Equal((2UL, Libc.Low, Libc.High, Libc.Path, ""), (libc.Id, libc.Start, libc.Limit, libc.File, libc.BuildId));
        Assert.Equal((true, true, true, true), app.Flags);
        Assert.Equal((false, false, false, false), libc.Flags); // nothing symbolized: pprof may try itself
        Assert.Equal(app.Id, p.Locations[p.Samples[0].Locations[0]].Mapping);
        Assert.Equal(libc.Id, p.Locations[p.Samples[0].Locations[2]].Mapping);
        Assert.Equal(0UL, p.Locations[p.Samples[1].Locations[0]].Mapping);
    }

    [Fact]
    public void FirstModuleSeenIsTheMainMapping_WithoutMainModule_AndAnEmptyStackSampleIsKept()
    {
        object s1 = Sample([(At(Libc, 0x10), [new SymbolFrame("malloc_wrapper", null, 0, Libc.Path, 0xf, false)]), (At(App, 0x20), [])], 1, 2, 3);
        object s2 = Sample([], 5, 6, 7);
        Profile p = WriteAndRead(Samples(s1, s2), Info());
        Assert.Equal([Libc.Path, App.Path], p.Mappings.Select(m => m.File));
        Assert.Equal([("app+0x20", "", 0L)], p.Lines(p.Samples[0].Locations[1])); // no symbols given: module+offset
        Assert.Empty(p.Samples[1].Locations);
        Assert.Equal([5L, 6, 7], p.Samples[1].Values);
        Assert.Empty(p.Top.Packed(13)); // no comments
        Assert.Equal(0, p.Top.Int(9));
    }

    [Fact]
    public void BadInput_ClearErrors()
    {
        RecordedFrame a = At(App, 0x10), b = At(App, 0x20);
        SymbolFrame inl = new("f", null, 0, App.Path, 0xf, Inlined: true), top = new("g", null, 0, App.Path, 0xf, Inlined: false);
        var e = Assert.Throws<ArgumentException>(() => Flat([a, b], [inl, top], 1, 1, 1));
        Assert.Contains("2 addresses but the symbolized frames end at address 2", e.Message);
        e = Assert.Throws<ArgumentException>(() => Flat([a], [top, top], 1, 1, 1));
        Assert.Contains("1 symbolized frames are left over", e.Message);
        e = Assert.Throws<ArgumentException>(() => Invoke(PprofType, "Encode", Samples(Sample([], 1, -1, 0)), Info()));
        Assert.Contains("negative value", e.Message);
        e = Assert.Throws<ArgumentException>(() => Invoke(PprofType, "Encode", Samples(), Info(defaultType: "alloc_space")));
        Assert.Contains("'alloc_space' is none of inuse_space, pinned_space, free_resident_space", e.Message);
    }

    [Fact]
    public void PathFor_OneFilePerCheckpoint()
    {
        Assert.Equal("out/heap.pb.gz", Invoke(PprofType, "PathFor", "out/heap.pb.gz", "after-frees", false));
        Assert.Equal("out/heap.after-frees.pb.gz", Invoke(PprofType, "PathFor", "out/heap.pb.gz", "after-frees", true));
        Assert.Equal("heap.a_b.pprof", Invoke(PprofType, "PathFor", "heap.pprof", "a/b", true));
        Assert.Equal("heap.end", Invoke(PprofType, "PathFor", "heap", "end", true));
    }

    /// <summary>A protobuf message's fields by number: varints as numbers, length-delimited ones as bytes.</summary>
    private sealed class Message
    {
        private readonly List<(int Field, ulong Number, byte[]? Bytes)> fields = [];

        public Message(ReadOnlySpan<byte> data)
        {
            int at = 0;
            while (at < data.Length)
            {
                ulong tag = Varint(data, ref at);
                int field = (int)(tag >> 3);
                switch ((int)(tag & 7))
                {
                    case 0: fields.Add((field, Varint(data, ref at), null)); break;
                    case 2:
                        int length = (int)Varint(data, ref at);
                        fields.Add((field, 0, data.Slice(at, length).ToArray()));
                        at += length;
                        break;
                    default: throw new InvalidDataException($"wire type {tag & 7} of field {field}: profile.proto uses only varints and length-delimited fields");
                }
            }
        }

        internal static ulong Varint(ReadOnlySpan<byte> data, ref int at)
        {
            ulong value = 0;
            for (int shift = 0; ; shift += 7)
            {
                byte b = data[at++];
                value |= (ulong)(b & 0x7f) << shift;
                if (b < 0x80) return value;
            }
        }

        public long Int(int field) => (long)fields.LastOrDefault(f => f.Field == field && f.Bytes is null).Number;

        public bool Bool(int field) => Int(field) != 0;

        public IEnumerable<byte[]> All(int field) => fields.Where(f => f.Field == field && f.Bytes is not null).Select(f => f.Bytes!);

        public Message Sub(int field) => new(All(field).Single());

        /// <summary>A repeated number field, packed (one length-delimited run) or not: readers must take both.</summary>
        public List<long> Packed(int field)
        {
            var values = new List<long>();
            foreach (var f in fields.Where(f => f.Field == field))
            {
                if (f.Bytes is null) { values.Add((long)f.Number); continue; }
                for (int at = 0; at < f.Bytes.Length;) values.Add((long)Varint(f.Bytes, ref at));
            }
            return values;
        }
    }

    private sealed record Decoded(List<ulong> Locations, List<long> Values, List<(string, string)> Labels);
    private sealed record Location(ulong Mapping, ulong Address, List<(ulong Function, long Line)> Lines);
    private sealed record Mapping(ulong Id, ulong Start, ulong Limit, string File, string BuildId, (bool, bool, bool, bool) Flags);

    /// <summary>A Profile message read with profile.proto's field numbers.</summary>
    private sealed class Profile
    {
        public Message Top { get; }
        public List<string> Strings { get; }
        public List<(string, string)> SampleTypes { get; }
        public List<Decoded> Samples { get; }
        public Dictionary<ulong, Location> Locations { get; } = [];
        public Dictionary<ulong, (string Name, string File)> Functions { get; } = [];
        public List<Mapping> Mappings { get; }

        public Profile(byte[] data)
        {
            Top = new Message(data);
            Strings = [.. Top.All(6).Select(b => Encoding.UTF8.GetString(b))];
            SampleTypes = [.. Top.All(1).Select(b => ValueType(new Message(b)))];
            Samples = [.. Top.All(2).Select(b => new Message(b)).Select(s => new Decoded(
                [.. s.Packed(1).Select(v => (ulong)v)], s.Packed(2),
                [.. s.All(3).Select(l => new Message(l)).Select(l => (Strings[(int)l.Int(1)], Strings[(int)l.Int(2)]))]))];
            foreach (Message l in Top.All(4).Select(b => new Message(b)))
                Locations.Add((ulong)l.Int(1), new Location((ulong)l.Int(2), (ulong)l.Int(3),
                    [.. l.All(4).Select(n => new Message(n)).Select(n => ((ulong)n.Int(1), n.Int(2)))]));
            foreach (Message f in Top.All(5).Select(b => new Message(b)))
            {
                Assert.Equal(f.Int(2), f.Int(3)); // system_name: the same name
                Functions.Add((ulong)f.Int(1), (Strings[(int)f.Int(2)], Strings[(int)f.Int(4)]));
            }
            Mappings = [.. Top.All(3).Select(b => new Message(b)).Select(m => new Mapping((ulong)m.Int(1), (ulong)m.Int(2), (ulong)m.Int(3),
                Strings[(int)m.Int(5)], Strings[(int)m.Int(6)], (m.Bool(7), m.Bool(8), m.Bool(9), m.Bool(10))))];
            // What pprof's CheckValid demands: nonzero ids, known references, one value per sample type.
            Assert.All(Samples, s => Assert.Equal(SampleTypes.Count, s.Values.Count));
            Assert.All(Samples.SelectMany(s => s.Locations), id => Assert.True(Locations.ContainsKey(id), $"location {id}"));
            Assert.All(Locations.Values, l => Assert.True(l.Mapping == 0 || Mappings.Any(m => m.Id == l.Mapping)));
            Assert.All(Locations.Values.SelectMany(l => l.Lines), n => Assert.True(Functions.ContainsKey(n.Function), $"function {n.Function}"));
            Assert.DoesNotContain(0UL, Locations.Keys);
            Assert.DoesNotContain(0UL, Functions.Keys);
        }

        public (string, string) ValueType(Message m) => (Strings[(int)m.Int(1)], Strings[(int)m.Int(2)]);

        public List<(string Function, string File, long Line)> Lines(ulong location) =>
            [.. Locations[location].Lines.Select(n => (Functions[n.Function].Name, Functions[n.Function].File, n.Line))];
    }
}
