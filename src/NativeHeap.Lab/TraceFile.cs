using System.Buffers.Text;
using NativeHeap.Os;
using ZstdSharp;

namespace NativeHeap.Lab;

/// <summary>
/// Reads a trace file of either version, zstd-compressed or not (docs/trace-format.md), as the
/// version-1 text <see cref="TraceReplayer"/> runs.
/// </summary>
/// <remarks>
/// <para>A version-2 trace's relative IDs become compact absolute ones: each new block takes the
/// number freed longest ago (first freed, first reused), or the next unused one when none is free
/// (1 first). So the largest number is the most blocks live at once, and a freed block's number,
/// by which explain names a chunk cached in a tcache, lives as long as it can. src/NativeHeap.Cli/native/replay.c decodes by the same
/// rule (a test compares the two), so both replayers print the same IDs.</para>
/// <para>Every line stays in its place: the <c>v 2</c> line becomes <c># v 2</c> (a <c>v 1</c>
/// line <c># v 1</c>), <c>s</c>, <c>M</c>, <c>J</c> lines and the <c> @S</c> suffix are kept,
/// so "line N" is line N of the decompressed text.</para>
/// </remarks>
public static class TraceFile
{
    /// <summary>zstd's frame magic, the first bytes of a compressed trace.</summary>
    public static ReadOnlySpan<byte> ZstdMagic => [0x28, 0xB5, 0x2F, 0xFD];

    /// <summary>The file's trace as version-1 text (see <see cref="Decode"/>).</summary>
    /// <exception cref="TraceFormatException">A malformed version-2 ID field, or a misplaced <c>v</c> line.</exception>
    /// <exception cref="InvalidDataException">Corrupt or truncated zstd data.</exception>
    public static byte[] Load(string path) => Decode(File.ReadAllBytes(path));

    /// <summary>
    /// The file's trace as version-1 text, also when its zstd data stops in the middle of a frame
    /// (the recorded process was killed, or called _exit or exec, before the recorder ended
    /// its frame): then every whole line before the cut, and <paramref name="cut"/> says so.
    /// </summary>
    /// <exception cref="TraceFormatException">A malformed version-2 ID field, or a misplaced <c>v</c> line.</exception>
    /// <exception cref="InvalidDataException">Corrupt zstd data.</exception>
    public static byte[] Load(string path, out string? cut)
    {
        byte[] raw = File.ReadAllBytes(path);
        cut = null;
        if (!raw.AsSpan().StartsWith(ZstdMagic)) return Decode(raw);
        return Decompress(raw, tolerateCut: true, out cut);
    }

    /// <summary>
    /// A trace's bytes as version-1 text: decompressed if they start with <see cref="ZstdMagic"/>
    /// (several concatenated frames decompress one after another), and a version-2 trace's IDs
    /// made absolute (see the remarks). Version-1 text comes back as it is (the same array).
    /// </summary>
    /// <exception cref="TraceFormatException">A malformed version-2 ID field, or a misplaced <c>v</c> line.</exception>
    /// <exception cref="InvalidDataException">Corrupt or truncated zstd data.</exception>
    public static byte[] Decode(byte[] raw)
    {
        ArgumentNullException.ThrowIfNull(raw);
        if (raw.AsSpan().StartsWith(ZstdMagic)) return Decompress(raw, tolerateCut: false, out _);
        if (!IsVersion2(raw)) return raw;
        using var decoder = new Decoder(raw.LongLength + raw.LongLength / 8 + 16);
        decoder.Feed(raw, final: true);
        return decoder.Result();
    }

    /// <summary>
    /// A quick look at a trace file, read as a stream (decompressed, but not decoded or checked:
    /// a trace of 57 million lines takes about a second, where <see cref="Load(string)"/> and a check take
    /// ten): its operations (lines that are not comments, <c>v</c>, <c>s</c>, <c>M</c> or <c>J</c>),
    /// recorded threads, checkpoints, and the recorder's <c># pid</c> line.
    /// </summary>
    /// <exception cref="InvalidDataException">Corrupt or truncated zstd data.</exception>
    public static TraceCounts Count(string path)
    {
        using FileStream file = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        int got = file.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
        file.Position = 0;
        using Stream input = got == 4 && magic.SequenceEqual(ZstdMagic) ? new DecompressionStream(file) : file;
        long operations = 0;
        int checkpoints = 0;
        int? pid = null;
        var threads = new HashSet<long> { 1 };
        byte[] buffer = new byte[1 << 20];
        int held = 0;
        for (;;)
        {
            if (held == buffer.Length) Array.Resize(ref buffer, buffer.Length * 2);
            int n;
            try
            {
                n = input.Read(buffer, held, buffer.Length - held);
            }
            catch (EndOfStreamException)
            {
                // Cut inside a frame (see Load): count the whole lines, not the one it cut.
                return new TraceCounts(operations, threads.Count, checkpoints, pid, Cut: true);
            }
            catch (ZstdException e)
            {
                throw new InvalidDataException($"corrupt zstd data: {e.Message}", e);
            }
            ReadOnlySpan<byte> text = buffer.AsSpan(0, held + n);
            int used = 0;
            for (;;)
            {
                int nl = text[used..].IndexOf((byte)'\n');
                if (nl < 0 && n > 0) break; // an unfinished line: wait for the rest
                ReadOnlySpan<byte> line = nl < 0 ? text[used..] : text[used..(used + nl)];
                used = nl < 0 ? text.Length : used + nl + 1;
                if (!line.IsEmpty) Tally(line);
                if (used == text.Length) break;
            }
            if (n == 0) return new TraceCounts(operations, threads.Count, checkpoints, pid);
            text[used..].CopyTo(buffer);
            held = text.Length - used;
        }

        void Tally(ReadOnlySpan<byte> line)
        {
            switch (line[0])
            {
                case (byte)'#':
                    if (pid is null && line.StartsWith("# pid "u8) && Utf8Parser.TryParse(line[6..], out int p, out _)) pid = p;
                    return;
                case (byte)'v' or (byte)'s' or (byte)'M' or (byte)'J' or (byte)' ' or (byte)'\t' or (byte)'\r':
                    return;
                case (byte)'k':
                    checkpoints++;
                    break;
                case (byte)'T' when line.Length > 2 && Utf8Parser.TryParse(line[2..], out long tid, out _):
                    threads.Add(tid);
                    break;
            }
            operations++;
        }
    }

    /// <summary>Whether <see cref="Decode"/> would change these bytes: compressed, or a <c>v</c> line before any operation.</summary>
    public static bool NeedsDecoding(ReadOnlySpan<byte> raw) => raw.StartsWith(ZstdMagic) || IsVersion2(raw);

    /// <summary>Whether the first line that is not blank or a comment is a <c>v</c> line.</summary>
    private static bool IsVersion2(ReadOnlySpan<byte> text)
    {
        while (!text.IsEmpty)
        {
            int nl = text.IndexOf((byte)'\n');
            ReadOnlySpan<byte> line = (nl < 0 ? text : text[..nl]).Trim(" \t\r"u8);
            if (!line.IsEmpty && line[0] != (byte)'#') return line[0] == (byte)'v' && (line.Length == 1 || line[1] is (byte)' ' or (byte)'\t');
            text = nl < 0 ? default : text[(nl + 1)..];
        }
        return false;
    }

    private static byte[] Decompress(byte[] raw, bool tolerateCut, out string? cut)
    {
        cut = null;
        using var input = new MemoryStream(raw, writable: false);
        using var zstd = new DecompressionStream(input);
        using var decoder = new Decoder(raw.LongLength * 16);
        byte[] buffer = new byte[1 << 20];
        int held = 0; // bytes of an unfinished line at the buffer's start
        for (;;)
        {
            if (held == buffer.Length) Array.Resize(ref buffer, buffer.Length * 2); // a line longer than the buffer
            int n;
            try
            {
                n = zstd.Read(buffer, held, buffer.Length - held);
            }
            catch (EndOfStreamException) when (tolerateCut)
            {
                // The data stops inside a frame: keep the whole lines, drop the one it cut.
                cut = $"the zstd data stops in the middle of a frame (the recorded process did not end normally: killed, _exit or exec?); read up to line {decoder.Lines}, the last whole one";
                decoder.Feed([], final: true);
                return decoder.Result();
            }
            catch (Exception e) when (e is ZstdException or InvalidDataException or EndOfStreamException)
            {
                throw new InvalidDataException($"corrupt zstd data: {e.Message}", e);
            }
            if (n == 0)
            {
                decoder.Feed(buffer.AsSpan(0, held), final: true);
                return decoder.Result();
            }
            held += n;
            int used = decoder.Feed(buffer.AsSpan(0, held), final: false);
            buffer.AsSpan(used, held - used).CopyTo(buffer);
            held -= used;
        }
    }

    /// <summary>
    /// Turns text into version-1 text line by line, fed in pieces. The line numbers, the version
    /// and the blocks carry over from one piece to the next.
    /// </summary>
    private sealed class Decoder(long capacity) : IDisposable
    {
        private readonly Output _out = new(capacity);

        public void Dispose() => _out.Dispose();

        private int _lineNo;

        /// <summary>Lines read so far.</summary>
        internal int Lines => _lineNo;
        private int _version; // 0 until the first line that is not blank or a comment
        private readonly CompactIds _ids = new();

        /// <summary>Decodes the complete lines of <paramref name="text"/> (all of it when final); returns the bytes used.</summary>
        internal int Feed(ReadOnlySpan<byte> text, bool final)
        {
            int at = 0;
            while (at < text.Length)
            {
                int nl = text[at..].IndexOf((byte)'\n');
                if (nl < 0 && !final) break;
                if (_version == 1)
                {
                    // Version 1 is copied as it is, every complete line of the piece in one go
                    // (there is one: nl >= 0 or final).
                    int last = final ? text.Length : at + text[at..].LastIndexOf((byte)'\n') + 1;
                    _out.Write(text[at..last]);
                    at = last;
                    continue;
                }
                int end = nl < 0 ? text.Length : at + nl;
                _lineNo++;
                if (!Fast(text[at..end], nl >= 0)) // the recorder's lines; the rest, and errors:
                {
                    Line(text[at..end]);
                    if (nl >= 0) _out.Byte((byte)'\n');
                }
                at = nl < 0 ? text.Length : end + 1;
            }
            return at;
        }

        internal byte[] Result() => _out.ToArray();

        /// <summary>
        /// An ID line as the recorder writes it ("m 0 8", "f 3", one blank, a plain number
        /// followed by a blank or the end), decoded as <see cref="Line"/> does it; false for any
        /// other line, which Line then decodes or reports.
        /// </summary>
        private bool Fast(ReadOnlySpan<byte> line, bool newline)
        {
            if (line.Length < 3 || line[1] != (byte)' ' || _version != 2) return false;
            byte op = line[0];
            if (op is not ((byte)'m' or (byte)'c' or (byte)'a' or (byte)'r' or (byte)'f' or (byte)'w')) return false;
            int i = 2;
            ulong d = 0;
            for (; i < line.Length && i < 20; i++)
            {
                uint digit = (uint)(line[i] - '0');
                if (digit > 9) break;
                d = d * 10 + digit;
            }
            if (i == 2 || i == 20 || (i < line.Length && line[i] is not ((byte)' ' or (byte)'\t' or (byte)'\r'))) return false;
            int id;
            if (d == 0)
            {
                if (op is (byte)'f' or (byte)'w') return false;
                id = _ids.New(_lineNo);
            }
            else
            {
                if (op is not ((byte)'r' or (byte)'f' or (byte)'w') || d >= (ulong)_ids.Next) return false;
                bool frees = op == (byte)'f' || (op == (byte)'r' && IsZero(line[i..]));
                id = _ids.Of(_ids.Next - (long)d, _lineNo, frees);
            }
            _out.IdLine(op, id, line[i..], newline);
            return true;
        }

        private void Line(ReadOnlySpan<byte> line)
        {
            ReadOnlySpan<byte> t = line.TrimStart(" \t"u8);
            byte op = t.IsEmpty ? (byte)'#' : t[0];
            bool oneLetter = t.Length == 1 || (t.Length > 1 && t[1] is (byte)' ' or (byte)'\t');
            if (op == (byte)'v' && oneLetter)
            {
                if (_version != 0) throw new TraceFormatException(_lineNo, "a v line comes before every other line but comments");
                ReadOnlySpan<byte> v = t[1..].Trim(" \t\r"u8);
                if (!v.SequenceEqual("2"u8) && !v.SequenceEqual("1"u8))
                    throw new TraceFormatException(_lineNo, $"trace format version '{System.Text.Encoding.ASCII.GetString(v)}' is not one this reader knows (1 or 2)");
                _version = v[0] - '0';
                _out.Write("# "u8);
                _out.Write(line);
                return;
            }
            if (op == (byte)'#' || t.Trim("\r"u8).IsEmpty)
            {
                _out.Write(line);
                return;
            }
            if (_version == 0)
            {
                _version = 1; // the rest is copied as it is (see Feed)
                _out.Write(line);
                return;
            }
            if (!oneLetter || op is not ((byte)'m' or (byte)'c' or (byte)'a' or (byte)'r' or (byte)'f' or (byte)'w'))
            {
                _out.Write(line); // the replayer checks these
                return;
            }
            // The ID field.
            ReadOnlySpan<byte> rest = t[1..];
            int blanks = rest.Length - rest.TrimStart(" \t"u8).Length;
            rest = rest[blanks..];
            int tokenEnd = rest.IndexOfAny(" \t\r"u8);
            ReadOnlySpan<byte> token = tokenEnd < 0 ? rest : rest[..tokenEnd];
            if (token.IsEmpty) throw new TraceFormatException(_lineNo, $"'{(char)op}' needs an ID field");
            if (!Utf8Parser.TryParse(token, out ulong d, out int used) || used != token.Length)
                throw new TraceFormatException(_lineNo, $"'{System.Text.Encoding.ASCII.GetString(token)}' is not a non-negative number");
            ReadOnlySpan<byte> after = rest[token.Length..];
            int id;
            if (d == 0)
            {
                if (op is (byte)'f' or (byte)'w') throw new TraceFormatException(_lineNo, $"'{(char)op} 0' names no block (version 2: D >= 1)");
                id = _ids.New(_lineNo);
            }
            else
            {
                if (op is not ((byte)'r' or (byte)'f' or (byte)'w'))
                    throw new TraceFormatException(_lineNo, $"a new block's ID field is 0 in version 2, not {d}");
                long block = _ids.Next - (long)Math.Min(d, (ulong)long.MaxValue);
                if (block < 1) throw new TraceFormatException(_lineNo, $"D = {d} names block {_ids.Next} - {d}, before the first (1)");
                // realloc(p, 0) that freed p: "r D 0".
                bool frees = op == (byte)'f' || (op == (byte)'r' && IsZero(after));
                id = _ids.Of(block, _lineNo, frees);
            }
            _out.Write(line[..(line.Length - t.Length + 1 + blanks)]);
            _out.Number(id);
            _out.Write(after);
        }

        /// <summary>Whether the next field is the number 0.</summary>
        private static bool IsZero(ReadOnlySpan<byte> fields)
        {
            fields = fields.TrimStart(" \t"u8);
            int end = fields.IndexOfAny(" \t\r"u8);
            ReadOnlySpan<byte> token = end < 0 ? fields : fields[..end];
            return Utf8Parser.TryParse(token, out ulong v, out int used) && used == token.Length && v == 0;
        }
    }

    /// <summary>
    /// Version 2's blocks and their compact numbers: a new block takes the number freed longest
    /// ago, or the next unused one. The same rule as replay.c's (see <see cref="TraceFile"/>).
    /// </summary>
    private sealed class CompactIds
    {
        private long[] _keys = new long[1024]; // open addressing, linear probing; 0: empty
        private int[] _values = new int[1024];
        private int _count;
        private int[] _free = new int[256]; // freed numbers [_freeHead, _freeTail), oldest first
        private int _freeHead, _freeTail;
        private int _next = 1;

        /// <summary>N: the number the next new block gets.</summary>
        internal long Next { get; private set; } = 1;

        internal int New(int lineNo)
        {
            int id = _freeHead < _freeTail ? _free[_freeHead++] : _next++;
            if (id > TraceReplayer.MaxId)
                throw new TraceFormatException(lineNo, $"more than {TraceReplayer.MaxId} blocks live at once");
            if (_count * 2 >= _keys.Length) Grow();
            long block = Next++;
            int i = Slot(block);
            _keys[i] = block;
            _values[i] = id;
            _count++;
            return id;
        }

        /// <summary>Block <paramref name="block"/>'s number; <paramref name="free"/>: the line frees it.</summary>
        internal int Of(long block, int lineNo, bool free)
        {
            int i = Slot(block);
            if (_keys[i] == 0) throw new TraceFormatException(lineNo, $"block {block} is not live");
            int id = _values[i];
            if (!free) return id;
            Remove(i);
            if (_freeTail == _free.Length)
            {
                // Move the queue to the front when half of the array is behind it, else grow.
                if (_freeHead * 2 >= _free.Length)
                {
                    Array.Copy(_free, _freeHead, _free, 0, _freeTail - _freeHead);
                    _freeTail -= _freeHead;
                    _freeHead = 0;
                }
                else Array.Resize(ref _free, _free.Length * 2);
            }
            _free[_freeTail++] = id;
            return id;
        }

        private int Slot(long block)
        {
            int mask = _keys.Length - 1;
            int i = Hash(block) & mask;
            while (_keys[i] != 0 && _keys[i] != block) i = (i + 1) & mask;
            return i;
        }

        private static int Hash(long block) => (int)((ulong)block * 0x9E3779B97F4A7C15UL >> 32);

        /// <summary>Empty slot <paramref name="i"/>, moving back the entries that probed past it.</summary>
        private void Remove(int i)
        {
            int mask = _keys.Length - 1;
            _count--;
            for (int j = (i + 1) & mask; _keys[j] != 0; j = (j + 1) & mask)
            {
                int home = Hash(_keys[j]) & mask;
                // Entry j may move to i when i lies cyclically in [home, j).
                if (((j - home) & mask) >= ((j - i) & mask))
                {
                    _keys[i] = _keys[j];
                    _values[i] = _values[j];
                    i = j;
                }
            }
            _keys[i] = 0;
        }

        private void Grow()
        {
            long[] keys = _keys;
            int[] values = _values;
            _keys = new long[keys.Length * 2];
            _values = new int[keys.Length * 2];
            for (int k = 0; k < keys.Length; k++)
            {
                if (keys[k] == 0) continue;
                int i = Slot(keys[k]);
                _keys[i] = keys[k];
                _values[i] = values[k];
            }
        }
    }

    /// <summary>
    /// The decoded text, in a mapping that grows with mremap (no copy), copied once into the
    /// result: each copied stretch is given back at once, so the peak is the text and one stretch.
    /// </summary>
    private sealed unsafe class Output : IDisposable
    {
        private const int Stretch = 4 << 20;
        private byte* _buffer;
        private nuint _capacity, _used;

        internal Output(long capacity)
        {
            _capacity = OsMemory.AlignUp((nuint)Math.Max(capacity, 1 << 16), OsMemory.PageSize);
            _buffer = OsMemory.Map(_capacity);
            if (_buffer == null) throw new OutOfMemoryException(OsMemory.LastFailure);
        }

        internal void Write(ReadOnlySpan<byte> bytes)
        {
            Reserve(bytes.Length);
            bytes.CopyTo(new Span<byte>(_buffer + _used, bytes.Length));
            _used += (nuint)bytes.Length;
        }

        internal void Byte(byte b)
        {
            Reserve(1);
            _buffer[_used++] = b;
        }

        internal void Number(int value)
        {
            Reserve(11);
            Utf8Formatter.TryFormat(value, new Span<byte>(_buffer + _used, 11), out int written);
            _used += (nuint)written;
        }

        /// <summary>"OP ID" then <paramref name="rest"/>, and a newline if asked.</summary>
        internal void IdLine(byte op, int id, ReadOnlySpan<byte> rest, bool newline)
        {
            Reserve(rest.Length + 14);
            byte* p = _buffer + _used;
            p[0] = op;
            p[1] = (byte)' ';
            Utf8Formatter.TryFormat(id, new Span<byte>(p + 2, 11), out int written);
            p += 2 + written;
            rest.CopyTo(new Span<byte>(p, rest.Length));
            p += rest.Length;
            if (newline) *p++ = (byte)'\n';
            _used = (nuint)(p - _buffer);
        }

        private void Reserve(int n)
        {
            if (_capacity - _used >= (nuint)n) return;
            nuint capacity = Math.Max(_capacity * 2, OsMemory.AlignUp(_used + (nuint)n, OsMemory.PageSize));
            byte* moved = OsMemory.Remap(_buffer, _capacity, capacity);
            if (moved == null) throw new OutOfMemoryException(OsMemory.LastFailure);
            _buffer = moved;
            _capacity = capacity;
        }

        internal byte[] ToArray()
        {
            if (_used > (nuint)Array.MaxLength) throw new InvalidDataException($"the decoded trace is {_used} bytes, more than one array holds");
            byte[] all = GC.AllocateUninitializedArray<byte>((int)_used);
            for (nuint at = 0; at < _used; at += Stretch)
            {
                int n = (int)Math.Min(Stretch, _used - at);
                new ReadOnlySpan<byte>(_buffer + at, n).CopyTo(all.AsSpan((int)at));
                OsMemory.DontNeed(_buffer + at, OsMemory.AlignUp((nuint)n, OsMemory.PageSize));
            }
            return all;
        }

        public void Dispose()
        {
            if (_buffer == null) return;
            OsMemory.Unmap(_buffer, _capacity);
            _buffer = null;
        }
    }
}

/// <summary>What <see cref="TraceFile.Count"/> found.</summary>
/// <param name="Operations">Lines that are operations (not comments, and not <c>v</c>, <c>s</c>, <c>M</c> or <c>J</c> lines).</param>
/// <param name="Threads">Recorded threads (1 for a trace without T lines).</param>
/// <param name="Checkpoints">Checkpoint (<c>k</c>) lines.</param>
/// <param name="Pid">The recorder's <c># pid</c> line, if it has one.</param>
/// <param name="Cut">The zstd data stops inside a frame (the process did not end normally); the counts are of the whole lines before.</param>
public readonly record struct TraceCounts(long Operations, int Threads, int Checkpoints, int? Pid, bool Cut = false);
