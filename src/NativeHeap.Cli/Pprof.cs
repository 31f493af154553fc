using System.IO.Compression;
using System.Text;
using NativeHeap.Lab;
using NativeHeap.Symbols;

namespace NativeHeap.Cli;

/// <summary>
/// One recorded return address of a stack and what symbolization made of it: the functions
/// inlined at it innermost first, then the function they were inlined into (pprof's Location
/// with its Lines in the same order).
/// </summary>
/// <param name="Recorded">The address as recorded, with its module.</param>
/// <param name="Symbols">Its symbolized frames (at least one; an empty list is read as "nothing known").</param>
internal sealed record PprofFrame(RecordedFrame Recorded, IReadOnlyList<SymbolFrame> Symbols);

/// <summary>A label on a sample (pprof's <c>-tagfocus</c> selects by them): a string, or a number with an optional unit.</summary>
/// <param name="Key">The label's name.</param>
/// <param name="Text">Its text, or null for a numeric label.</param>
/// <param name="Number">Its number (numeric labels).</param>
/// <param name="Unit">The number's unit ("bytes", …), or null.</param>
internal sealed record PprofLabel(string Key, string? Text, long Number = 0, string? Unit = null);

/// <summary>
/// One allocation site's stack (innermost first) and its three values in bytes, in the order of
/// <see cref="Pprof.SampleTypes"/>.
/// </summary>
/// <param name="Stack">Its frames, innermost first (the code that called malloc first).</param>
/// <param name="InUseBytes">Bytes the site's live chunks hold.</param>
/// <param name="PinnedBytes">Free resident bytes its live chunks pin (nothing trims them while the chunks live).</param>
/// <param name="FreeResidentBytes">Free resident bytes attributed to the site.</param>
/// <param name="Labels">Labels, or null.</param>
internal sealed record PprofSample(IReadOnlyList<PprofFrame> Stack, long InUseBytes, long PinnedBytes, long FreeResidentBytes, IReadOnlyList<PprofLabel>? Labels = null)
{
    /// <summary>
    /// A sample from a stack's recorded addresses and its flat symbolized frames as a symbolizer
    /// gives them: for each address its inlined frames (<see cref="SymbolFrame.Inlined"/>) then
    /// one that is not, so the frames split into exactly one group per address.
    /// </summary>
    /// <exception cref="ArgumentException">The frames do not split into one group per address.</exception>
    internal static PprofSample FromFlat(IReadOnlyList<RecordedFrame> addresses, IReadOnlyList<SymbolFrame> frames,
        long inUseBytes, long pinnedBytes, long freeResidentBytes, IReadOnlyList<PprofLabel>? labels = null)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        ArgumentNullException.ThrowIfNull(frames);
        var stack = new List<PprofFrame>(addresses.Count);
        int next = 0;
        foreach (RecordedFrame address in addresses)
        {
            int first = next;
            while (next < frames.Count && frames[next].Inlined) next++;
            if (next == frames.Count)
                throw new ArgumentException($"{addresses.Count} addresses but the symbolized frames end at address {stack.Count + 1} (every address needs a frame that is not inlined, after its inlined ones).", nameof(frames));
            next++;
            stack.Add(new PprofFrame(address, [.. frames.Skip(first).Take(next - first)]));
        }
        if (next != frames.Count)
            throw new ArgumentException($"{addresses.Count} addresses but {frames.Count - next} symbolized frames are left over after them.", nameof(frames));
        return new PprofSample(stack, inUseBytes, pinnedBytes, freeResidentBytes, labels);
    }
}

/// <summary>What a profile says besides its samples: pprof prints the comments, the time and the duration in its header.</summary>
/// <param name="Comments">Free text lines, e.g. the trace and the checkpoint ("nativeheap explain TRACE, checkpoint NAME (line N)").</param>
/// <param name="Time">When the profile was taken (the checkpoint), or null.</param>
/// <param name="Duration">How long the program had run at the checkpoint, or null.</param>
/// <param name="MainModule">The program's own module path: its mapping goes first, which pprof names the profile's file. Null: the first module seen.</param>
/// <param name="DefaultSampleType">The value pprof shows unless told otherwise: one of <see cref="Pprof.SampleTypes"/>' names.</param>
internal sealed record PprofInfo(IReadOnlyList<string>? Comments = null, DateTimeOffset? Time = null, TimeSpan? Duration = null,
    string? MainModule = null, string DefaultSampleType = Pprof.PinnedSpace);

/// <summary>
/// Writes a pprof profile (google/pprof's proto/profile.proto, package perftools.profiles,
/// gzip-compressed as pprof writes them), encoded here by hand: `go tool pprof`, Pyroscope
/// and speedscope open it. Sample types, all in bytes: <c>inuse_space</c> (as Go's heap
/// profiles name it), <c>pinned_space</c>, <c>free_resident_space</c>.
/// </summary>
internal static class Pprof
{
    /// <summary>Bytes live chunks hold: the name Go's heap profiles give it, so `-sample_index=inuse_space` means what pprof users expect.</summary>
    internal const string InUseSpace = "inuse_space";
    /// <summary>Free resident bytes a live chunk pins.</summary>
    internal const string PinnedSpace = "pinned_space";
    /// <summary>Free resident bytes.</summary>
    internal const string FreeResidentSpace = "free_resident_space";

    /// <summary>The sample types in the order of each sample's values, with their unit.</summary>
    internal static readonly IReadOnlyList<(string Type, string Unit)> SampleTypes =
        [(InUseSpace, "bytes"), (PinnedSpace, "bytes"), (FreeResidentSpace, "bytes")];

    // profile.proto's field numbers (google/pprof proto/profile.proto, commit b9395ee).
    private const int ProfileSampleType = 1, ProfileSample = 2, ProfileMapping = 3, ProfileLocation = 4, ProfileFunction = 5,
        ProfileStringTable = 6, ProfileTimeNanos = 9, ProfileDurationNanos = 10, ProfilePeriodType = 11, ProfilePeriod = 12,
        ProfileComment = 13, ProfileDefaultSampleType = 14;
    private const int ValueTypeType = 1, ValueTypeUnit = 2;
    private const int SampleLocationId = 1, SampleValue = 2, SampleLabel = 3;
    private const int LabelKey = 1, LabelStr = 2, LabelNum = 3, LabelNumUnit = 4;
    private const int MappingId = 1, MappingMemoryStart = 2, MappingMemoryLimit = 3, MappingFileOffset = 4, MappingFilename = 5,
        MappingBuildId = 6, MappingHasFunctions = 7, MappingHasFilenames = 8, MappingHasLineNumbers = 9, MappingHasInlineFrames = 10;
    private const int LocationId = 1, LocationMappingId = 2, LocationAddress = 3, LocationLine = 4;
    private const int LineFunctionId = 1, LineLine = 2;
    private const int FunctionId = 1, FunctionName = 2, FunctionSystemName = 3, FunctionFilename = 4;

    /// <summary>
    /// The file a checkpoint's profile goes to: <paramref name="output"/> itself when there is one
    /// checkpoint, else the checkpoint's name before its extension (heap.pb.gz → heap.NAME.pb.gz).
    /// </summary>
    internal static string PathFor(string output, string checkpoint, bool several)
    {
        if (!several) return output;
        var safe = new StringBuilder(checkpoint.Length);
        foreach (char c in checkpoint) safe.Append(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_');
        string directory = Path.GetDirectoryName(output) ?? "";
        string name = Path.GetFileName(output);
        int dot = name.EndsWith(".pb.gz", StringComparison.Ordinal) ? name.Length - ".pb.gz".Length : name.LastIndexOf('.');
        if (dot <= 0) dot = name.Length;
        return Path.Combine(directory, $"{name[..dot]}.{safe}{name[dot..]}");
    }

    /// <summary>Write the profile, gzip-compressed, to <paramref name="path"/>.</summary>
    internal static void WriteFile(string path, IReadOnlyList<PprofSample> samples, PprofInfo? info = null)
    {
        using var file = File.Create(path);
        Write(file, samples, info);
    }

    /// <summary>Write the profile, gzip-compressed, to <paramref name="output"/> (left open).</summary>
    internal static void Write(Stream output, IReadOnlyList<PprofSample> samples, PprofInfo? info = null)
    {
        byte[] profile = Encode(samples, info);
        using var gzip = new GZipStream(output, CompressionLevel.Optimal, leaveOpen: true);
        gzip.Write(profile);
    }

    /// <summary>The profile's protobuf encoding, uncompressed (a Profile message).</summary>
    /// <exception cref="ArgumentException">A sample has a negative value, or the default sample type is not one of ours.</exception>
    internal static byte[] Encode(IReadOnlyList<PprofSample> samples, PprofInfo? info = null)
    {
        ArgumentNullException.ThrowIfNull(samples);
        info ??= new PprofInfo();
        if (!SampleTypes.Any(t => t.Type == info.DefaultSampleType))
            throw new ArgumentException($"default sample type '{info.DefaultSampleType}' is none of {string.Join(", ", SampleTypes.Select(t => t.Type))}.", nameof(info));
        return new Builder(info).Build(samples);
    }

    /// <summary>Tables built as the samples come (each id is its index + 1: pprof reserves 0), then written in one go.</summary>
    private sealed class Builder(PprofInfo info)
    {
        private readonly List<string> strings = [""]; // string_table[0] must be "".
        private readonly Dictionary<string, long> stringIds = new(StringComparer.Ordinal) { [""] = 0 };
        private readonly List<Mapping> mappings = [];
        private readonly Dictionary<TraceModule, Mapping> mappingOf = [];
        private readonly List<Location> locations = [];
        private readonly Dictionary<ulong, Location> locationOf = [];
        private readonly List<(long Name, long File)> functions = [];
        private readonly Dictionary<(long Name, long File), ulong> functionOf = [];

        private sealed class Mapping(ulong id, TraceModule module)
        {
            public ulong Id { get; set; } = id;
            public TraceModule Module { get; } = module;
            public bool HasFunctions { get; set; }
            public bool HasFilenames { get; set; }
            public bool HasLineNumbers { get; set; }
            public bool HasInlineFrames { get; set; }
        }

        private sealed record Location(ulong Id, Mapping? Mapping, ulong Address, (ulong Function, long Line)[] Lines);

        private long String(string s)
        {
            if (stringIds.TryGetValue(s, out long id)) return id;
            id = strings.Count;
            strings.Add(s);
            stringIds[s] = id;
            return id;
        }

        private ulong Function(string name, string? file)
        {
            var key = (String(name), file is null ? 0 : String(file));
            if (functionOf.TryGetValue(key, out ulong id)) return id;
            functions.Add(key);
            return functionOf[key] = (ulong)functions.Count;
        }

        private ulong LocationFor(PprofFrame frame)
        {
            ArgumentNullException.ThrowIfNull(frame);
            ulong address = frame.Recorded.Address;
            if (locationOf.TryGetValue(address, out Location? known)) return known.Id;
            Mapping? mapping = null;
            if (frame.Recorded.Module is { } module && !mappingOf.TryGetValue(module, out mapping))
            {
                mapping = new Mapping(0, module);
                mappingOf[module] = mapping;
                mappings.Add(mapping);
            }
            IReadOnlyList<SymbolFrame> symbols = frame.Symbols ?? [];
            var lines = new (ulong, long)[Math.Max(1, symbols.Count)];
            if (symbols.Count == 0)
                lines[0] = (Function(Unknown(frame.Recorded), null), 0);
            for (int i = 0; i < symbols.Count; i++)
            {
                SymbolFrame s = symbols[i];
                // Without a symbol, the name explain prints (module+0xOFFSET), so flame graphs show
                // something; the mapping's flags stay false so pprof may still symbolize it itself.
                lines[i] = (Function(s.Function ?? s.ToString(), s.File), s.Line);
                if (mapping is null) continue;
                mapping.HasFunctions |= s.Function is not null;
                mapping.HasFilenames |= s.File is not null;
                mapping.HasLineNumbers |= s.Line > 0;
                mapping.HasInlineFrames |= s.Inlined;
            }
            var location = new Location((ulong)locations.Count + 1, mapping, address, lines);
            locations.Add(location);
            locationOf[address] = location;
            return location.Id;
        }

        private static string Unknown(RecordedFrame f) =>
            f.Module is { } m ? $"{Path.GetFileName(m.Path)}+0x{f.Address - m.Bias:x}" : $"0x{f.Address:x}";

        public byte[] Build(IReadOnlyList<PprofSample> samples)
        {
            var sampleLocations = new List<ulong[]>(samples.Count);
            foreach (PprofSample sample in samples)
            {
                ArgumentNullException.ThrowIfNull(sample);
                ArgumentNullException.ThrowIfNull(sample.Stack);
                if (sample.InUseBytes < 0 || sample.PinnedBytes < 0 || sample.FreeResidentBytes < 0)
                    throw new ArgumentException($"a sample has a negative value ({sample.InUseBytes}, {sample.PinnedBytes}, {sample.FreeResidentBytes} bytes).", nameof(samples));
                sampleLocations.Add([.. sample.Stack.Select(LocationFor)]);
            }
            // pprof takes mapping[0] for the main binary: the program's own module first.
            if (info.MainModule is { } main && mappings.FindIndex(m => m.Module.Path == main) is > 0 and int at)
            {
                Mapping first = mappings[at];
                mappings.RemoveAt(at);
                mappings.Insert(0, first);
            }
            for (int i = 0; i < mappings.Count; i++) mappings[i].Id = (ulong)i + 1;

            var w = new ProtoWriter();
            foreach (var (type, unit) in SampleTypes)
                w.Message(ProfileSampleType, v => { v.Int64(ValueTypeType, String(type)); v.Int64(ValueTypeUnit, String(unit)); });
            for (int i = 0; i < samples.Count; i++)
            {
                PprofSample sample = samples[i];
                ulong[] ids = sampleLocations[i];
                w.Message(ProfileSample, s =>
                {
                    s.PackedUInt64(SampleLocationId, ids);
                    s.PackedInt64(SampleValue, [sample.InUseBytes, sample.PinnedBytes, sample.FreeResidentBytes]);
                    foreach (PprofLabel label in sample.Labels ?? [])
                        s.Message(SampleLabel, l =>
                        {
                            l.Int64(LabelKey, String(label.Key));
                            if (label.Text is not null) l.Int64(LabelStr, String(label.Text));
                            else
                            {
                                l.Int64(LabelNum, label.Number);
                                if (label.Unit is not null) l.Int64(LabelNumUnit, String(label.Unit));
                            }
                        });
                });
            }
            foreach (Mapping m in mappings)
                w.Message(ProfileMapping, v =>
                {
                    v.UInt64(MappingId, m.Id);
                    v.UInt64(MappingMemoryStart, m.Module.Low);
                    v.UInt64(MappingMemoryLimit, m.Module.High);
                    // Low is the first loaded segment's start, which an ELF file almost always
                    // maps from its offset 0 (as /proc/PID/maps would say).
                    v.UInt64(MappingFileOffset, 0);
                    v.Int64(MappingFilename, String(m.Module.Path));
                    if (m.Module.BuildId is { } buildId) v.Int64(MappingBuildId, String(buildId));
                    v.Bool(MappingHasFunctions, m.HasFunctions);
                    v.Bool(MappingHasFilenames, m.HasFilenames);
                    v.Bool(MappingHasLineNumbers, m.HasLineNumbers);
                    v.Bool(MappingHasInlineFrames, m.HasInlineFrames || m.HasLineNumbers); // DWARF lines come with their inlined frames
                });
            foreach (Location l in locations)
            {
                w.Message(ProfileLocation, v =>
                {
                    v.UInt64(LocationId, l.Id);
                    v.UInt64(LocationMappingId, l.Mapping?.Id ?? 0); // none for JIT code and unknown addresses
                    v.UInt64(LocationAddress, l.Address);
                    foreach (var (function, line) in l.Lines)
                        v.Message(LocationLine, n => { n.UInt64(LineFunctionId, function); n.Int64(LineLine, line); });
                });
            }
            for (int i = 0; i < functions.Count; i++)
            {
                var (name, file) = functions[i];
                w.Message(ProfileFunction, v =>
                {
                    v.UInt64(FunctionId, (ulong)i + 1);
                    v.Int64(FunctionName, name);
                    v.Int64(FunctionSystemName, name); // demangled only: the symbolizer keeps no mangled name
                    v.Int64(FunctionFilename, file);
                });
            }
            if (info.Time is { } time) w.Int64(ProfileTimeNanos, (time.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) * 100);
            if (info.Duration is { } duration) w.Int64(ProfileDurationNanos, duration.Ticks * 100);
            long space = String("space"), bytes = String("bytes");
            w.Message(ProfilePeriodType, v => { v.Int64(ValueTypeType, space); v.Int64(ValueTypeUnit, bytes); });
            w.Int64(ProfilePeriod, 1); // every call recorded: no sampling to scale by
            if (info.Comments is { Count: > 0 } comments) w.PackedInt64(ProfileComment, [.. comments.Select(String)]);
            w.Int64(ProfileDefaultSampleType, String(info.DefaultSampleType));
            // Last: every string above is in the table by now.
            foreach (string s in strings) w.String(ProfileStringTable, s);
            return w.ToArray();
        }
    }

    /// <summary>
    /// The protobuf wire format, as much as profile.proto needs: varints (wire type 0) and
    /// length-delimited fields (wire type 2: strings, messages, packed repeated numbers). proto3
    /// leaves fields at their default (0, false) out; repeated ones are always written.
    /// </summary>
    private sealed class ProtoWriter
    {
        private const int Varint = 0, LengthDelimited = 2;
        private readonly MemoryStream buffer = new();

        public byte[] ToArray() => buffer.ToArray();

        private void Raw(ulong value)
        {
            while (value >= 0x80)
            {
                buffer.WriteByte((byte)(value | 0x80));
                value >>= 7;
            }
            buffer.WriteByte((byte)value);
        }

        private void Tag(int field, int wireType) => Raw(((ulong)field << 3) | (uint)wireType);

        public void UInt64(int field, ulong value)
        {
            if (value == 0) return;
            Tag(field, Varint);
            Raw(value);
        }

        // int64 is a plain varint of the two's complement: a negative one takes ten bytes.
        public void Int64(int field, long value) => UInt64(field, (ulong)value);

        public void Bool(int field, bool value) => UInt64(field, value ? 1UL : 0);

        private void Bytes(int field, ReadOnlySpan<byte> bytes)
        {
            Tag(field, LengthDelimited);
            Raw((ulong)bytes.Length);
            buffer.Write(bytes);
        }

        public void String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

        public void Message(int field, Action<ProtoWriter> body)
        {
            var inner = new ProtoWriter();
            body(inner);
            Bytes(field, inner.buffer.GetBuffer().AsSpan(0, (int)inner.buffer.Length));
        }

        public void PackedUInt64(int field, IReadOnlyList<ulong> values)
        {
            if (values.Count == 0) return;
            var inner = new ProtoWriter();
            foreach (ulong v in values) inner.Raw(v);
            Bytes(field, inner.buffer.GetBuffer().AsSpan(0, (int)inner.buffer.Length));
        }

        public void PackedInt64(int field, IReadOnlyList<long> values) => PackedUInt64(field, [.. values.Select(v => (ulong)v)]);
    }
}
