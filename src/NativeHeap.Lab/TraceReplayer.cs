using System.Buffers.Text;
using NativeHeap.Diagnostics;
using NativeHeap.Os;

namespace NativeHeap.Lab;

/// <summary>A malformed trace line.</summary>
public sealed class TraceFormatException : FormatException
{
    /// <summary>Creates the exception.</summary>
    public TraceFormatException(int line, string what) : base($"line {line}: {what}")
    {
        Line = line;
        What = what;
    }

    /// <summary>The 1-based line number.</summary>
    public int Line { get; }

    /// <summary>What is wrong with it.</summary>
    public string What { get; }
}

/// <summary>What a replay saw besides its output.</summary>
/// <param name="Operations">Operations executed.</param>
/// <param name="ForeignBreaks">How often someone else moved the break under the heap during the replay.</param>
public readonly record struct ReplayResult(long Operations, long ForeignBreaks);

/// <summary>
/// Replays an allocation trace on an allocator and reports where each block landed, in the
/// format native-tests/src/replay.c prints for glibc, so the two compare line by line.
/// </summary>
/// <remarks>
/// <para>Trace, one operation per line, <c>#</c> comments:</para>
/// <code>
/// m ID SIZE          malloc
/// c ID COUNT SIZE    calloc
/// r ID SIZE          realloc; ID keeps naming the block (an unknown ID is realloc(NULL))
/// a ID ALIGN SIZE    memalign
/// f ID               free
/// w ID               write one byte in every page of the block
/// t PAD              malloc_trim(PAD)
/// k NAME             checkpoint: statm and mallinfo2
/// </code>
/// <para>Output: <c>LINE ID heap OFFSET USABLE</c> or <c>LINE ID mmap - USABLE</c> per allocation
/// (OFFSET from the first heap block), <c>LINE ID null</c> when memory ran out, <c>LINE k NAME
/// anon_kib resident_kib size_kib arena uordblks fordblks hblkhd</c> per checkpoint, <c>end</c> last.</para>
/// <para>The whole trace is checked before the first operation runs. While it runs, the
/// replayer allocates nothing on the GC heap: ids live in a native table, sized to the trace's
/// largest id, and lines are formatted into a buffer; both are touched before the first
/// operation, so a checkpoint's RSS holds none of the replayer's own growth.</para>
/// </remarks>
public static unsafe class TraceReplayer
{
    /// <summary>The largest id a trace may use.</summary>
    public const int MaxId = 10_000_000;

    private const int BufferSize = 1 << 16;

    private enum Op : byte { Malloc, Calloc, Realloc, Memalign, Free, Write, Trim, Checkpoint }

    /// <summary>Check every line of a trace; throws <see cref="TraceFormatException"/> on the first bad one.</summary>
    /// <returns>The number of operations.</returns>
    public static long Validate(ReadOnlySpan<byte> trace) => Scan(trace, out _);

    private static long Scan(ReadOnlySpan<byte> trace, out long maxId)
    {
        long count = 0;
        maxId = 0;
        Span<long> args = stackalloc long[3];
        int lineNo = 0;
        while (NextLine(ref trace, ref lineNo, out ReadOnlySpan<byte> line))
        {
            if (Parse(line, lineNo, args, out _) is not (Op.Trim or Op.Checkpoint)) maxId = Math.Max(maxId, args[0]);
            count++;
        }
        return count;
    }

    /// <summary>Replay <paramref name="trace"/> on <paramref name="target"/>, writing the report to <paramref name="output"/>.</summary>
    /// <param name="trace">The trace text (ASCII).</param>
    /// <param name="target">The allocator.</param>
    /// <param name="output">Where the report goes.</param>
    /// <param name="alignBreak">0, or a power of two: first move the break to a multiple of it, as
    /// replay.c does with REPLAY_ALIGN_BREAK, so blocks aligned beyond a page land as in glibc.</param>
    /// <param name="placements">False to print checkpoints only.</param>
    /// <exception cref="TraceFormatException">A malformed line; nothing was replayed.</exception>
    public static ReplayResult Replay(ReadOnlySpan<byte> trace, ReplayTarget target, Stream output,
        nuint alignBreak = 0, bool placements = true)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(output);
        Scan(trace, out long maxId);
        nuint tableBytes = OsMemory.AlignUp((nuint)(maxId + 1) * (nuint)sizeof(void*), OsMemory.PageSize);
        var ids = (void**)OsMemory.Map(tableBytes);
        if (ids == null) throw new OutOfMemoryException(OsMemory.LastFailure);
        // Fault in the table and the buffer now: touched as the trace went, they grew into
        // the checkpoints (2.7 MiB of a perl trace's "heap" was the table).
        for (nuint i = 0; i < tableBytes; i += OsMemory.PageSize) ((byte*)ids)[i] = 0;
        byte[] buffer = new byte[BufferSize];
        buffer.AsSpan().Fill(0);
        var writer = new LineWriter(output, buffer);
        try
        {
            target.Prepare();
            WarmUp(target, writer);
            if (alignBreak != 0) target.AlignBreak(alignBreak);
            long foreign0 = target.ForeignBreaks;
            long operations = Run(trace, target, ids, writer, placements);
            writer.Ascii("end\n");
            writer.Flush();
            return new ReplayResult(operations, target.ForeignBreaks - foreign0);
        }
        finally
        {
            OsMemory.Unmap(ids, tableBytes);
        }
    }

    /// <summary>
    /// Compile, before the first operation, everything the replay will run (see
    /// <see cref="Precompile"/>). Calls here change no heap.
    /// </summary>
    private static void WarmUp(ReplayTarget target, LineWriter writer)
    {
        Precompile.Assembly();
        Precompile.Type(target.GetType());
        target.Free(null);
        target.UsableSize(null);
        target.GetInfo();
        Statm.Read();
        writer.Flush();
    }

    private static long Run(ReadOnlySpan<byte> trace, ReplayTarget target, void** ids, LineWriter w, bool placements)
    {
        byte* firstHeap = null;
        long operations = 0;
        int lineNo = 0;
        Span<long> args = stackalloc long[3];
        while (NextLine(ref trace, ref lineNo, out ReadOnlySpan<byte> line))
        {
            Op op = Parse(line, lineNo, args, out ReadOnlySpan<byte> name);
            operations++;
            void** slot = op is Op.Trim or Op.Checkpoint ? null : &ids[args[0]];
            void* result;
            switch (op)
            {
                case Op.Checkpoint:
                    Checkpoint(target, w, lineNo, name);
                    continue;
                case Op.Trim:
                    target.Trim((nuint)args[0]);
                    continue;
                case Op.Free:
                    target.Free(*slot);
                    *slot = null;
                    continue;
                case Op.Write:
                    Touch(target, *slot);
                    continue;
                case Op.Malloc:
                    result = target.Malloc((nuint)args[1]);
                    break;
                case Op.Calloc:
                    result = target.Calloc((nuint)args[1], (nuint)args[2]);
                    break;
                case Op.Memalign:
                    result = target.Memalign((nuint)args[1], (nuint)args[2]);
                    break;
                default: // realloc
                    bool frees = args[1] == 0 && *slot != null;
                    result = target.Realloc(*slot, (nuint)args[1]);
                    if (frees)
                    {
                        *slot = null;
                        continue;
                    }
                    break;
            }
            if (result != null || op != Op.Realloc) *slot = result;
            if (!placements) continue;
            w.Number(lineNo).Ascii(" ").Number(args[0]);
            if (result == null)
            {
                w.Ascii(" null\n");
                continue;
            }
            nuint usable = target.UsableSize(result);
            if (target.IsMapped(result))
            {
                w.Ascii(" mmap - ").Number((long)usable).Ascii("\n");
            }
            else
            {
                if (firstHeap == null) firstHeap = (byte*)result;
                w.Ascii(" heap ").Number((byte*)result - firstHeap).Ascii(" ").Number((long)usable).Ascii("\n");
            }
        }
        return operations;
    }

    private static bool NextLine(ref ReadOnlySpan<byte> trace, ref int lineNo, out ReadOnlySpan<byte> line)
    {
        while (!trace.IsEmpty)
        {
            int nl = trace.IndexOf((byte)'\n');
            line = nl < 0 ? trace : trace[..nl];
            trace = nl < 0 ? default : trace[(nl + 1)..];
            lineNo++;
            line = line.Trim(" \t\r"u8);
            if (!line.IsEmpty && line[0] != (byte)'#') return true;
        }
        line = default;
        return false;
    }

    private static Op Parse(ReadOnlySpan<byte> line, int lineNo, Span<long> args, out ReadOnlySpan<byte> name)
    {
        name = default;
        if (line.Length > 1 && line[1] != (byte)' ' && line[1] != (byte)'\t')
            throw new TraceFormatException(lineNo, "an operation is one letter followed by a space");
        ReadOnlySpan<byte> rest = line[1..];
        Op op;
        int count;
        switch (line[0])
        {
            case (byte)'m': op = Op.Malloc; count = 2; break;
            case (byte)'c': op = Op.Calloc; count = 3; break;
            case (byte)'r': op = Op.Realloc; count = 2; break;
            case (byte)'a': op = Op.Memalign; count = 3; break;
            case (byte)'f': op = Op.Free; count = 1; break;
            case (byte)'w': op = Op.Write; count = 1; break;
            case (byte)'t': op = Op.Trim; count = 1; break;
            case (byte)'k':
                name = rest.Trim(" \t"u8);
                if (name.IsEmpty) throw new TraceFormatException(lineNo, "a checkpoint needs a name");
                return Op.Checkpoint;
            default:
                throw new TraceFormatException(lineNo, $"unknown operation '{(char)line[0]}'");
        }
        for (int i = 0; i < count; i++)
        {
            rest = rest.TrimStart(" \t"u8);
            int end = rest.IndexOfAny(" \t"u8);
            ReadOnlySpan<byte> token = end < 0 ? rest : rest[..end];
            if (token.IsEmpty)
                throw new TraceFormatException(lineNo, $"'{(char)line[0]}' takes {count} numbers, found {i}");
            if (!Utf8Parser.TryParse(token, out ulong v, out int used) || used != token.Length || v > long.MaxValue)
                throw new TraceFormatException(lineNo, $"'{System.Text.Encoding.ASCII.GetString(token)}' is not a non-negative number");
            args[i] = (long)v;
            rest = end < 0 ? default : rest[end..];
        }
        if (!rest.Trim(" \t"u8).IsEmpty)
            throw new TraceFormatException(lineNo, $"'{(char)line[0]}' takes {count} numbers, found more");
        if (op != Op.Trim && args[0] > MaxId)
            throw new TraceFormatException(lineNo, $"id {args[0]} is above {MaxId}");
        return op;
    }

    private static void Touch(ReplayTarget target, void* block)
    {
        if (block == null) return;
        nuint usable = target.UsableSize(block);
        if (usable == 0) return;
        var b = (byte*)block;
        for (nuint i = 0; i < usable; i += 4096) b[i] = 1;
        b[usable - 1] = 1;
    }

    private static void Checkpoint(ReplayTarget target, LineWriter w, int lineNo, ReadOnlySpan<byte> name)
    {
        Statm s = Statm.Read();
        HeapInfo info = target.GetInfo();
        w.Number(lineNo).Ascii(" k ").Bytes(name)
            .Ascii(" ").Number((long)(s.AnonymousBytes / 1024)).Ascii(" ").Number((long)(s.ResidentBytes / 1024))
            .Ascii(" ").Number((long)(s.SizeBytes / 1024)).Ascii(" ").Number((long)info.Arena).Ascii(" ").Number((long)info.Uordblks)
            .Ascii(" ").Number((long)info.Fordblks).Ascii(" ").Number((long)info.Hblkhd).Ascii("\n");
    }

    /// <summary>Formats into a fixed buffer, made once per replay, and writes it out when full.</summary>
    private sealed class LineWriter(Stream output, byte[] buffer)
    {
        private int _used;

        public LineWriter Ascii(string text)
        {
            Reserve(text.Length);
            for (int i = 0; i < text.Length; i++) buffer[_used++] = (byte)text[i];
            return this;
        }

        public LineWriter Bytes(ReadOnlySpan<byte> bytes)
        {
            Reserve(bytes.Length);
            bytes.CopyTo(buffer.AsSpan(_used));
            _used += bytes.Length;
            return this;
        }

        public LineWriter Number(long value)
        {
            Reserve(24);
            Utf8Formatter.TryFormat(value, buffer.AsSpan(_used), out int written);
            _used += written;
            return this;
        }

        private void Reserve(int n)
        {
            if (_used + n > buffer.Length) Flush();
            if (n > buffer.Length) throw new ArgumentException("checkpoint name too long");
        }

        public void Flush()
        {
            output.Write(buffer, 0, _used);
            _used = 0;
        }
    }
}
