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

/// <summary>What a check of a whole trace found.</summary>
/// <param name="Operations">Lines that are operations (not comments).</param>
/// <param name="Threads">Recorded threads (1 for a trace without T lines).</param>
/// <param name="Checkpoints">The checkpoints in order: line and name.</param>
public sealed record TraceSummary(long Operations, int Threads, IReadOnlyList<(int Line, string Name)> Checkpoints);

/// <summary>What a replay saw besides its output.</summary>
/// <param name="Operations">Operations executed.</param>
/// <param name="ForeignBreaks">How often someone else moved the break under the heap during the replay.</param>
public readonly record struct ReplayResult(long Operations, long ForeignBreaks);

/// <summary>What a replay does besides replaying.</summary>
public sealed class ReplayOptions
{
    /// <summary>0, or a power of two: first move the break to a multiple of it, as replay.c does
    /// with REPLAY_ALIGN_BREAK, so blocks aligned beyond a page land as in glibc.</summary>
    public nuint AlignBreak { get; init; }

    /// <summary>False to print checkpoints only.</summary>
    public bool Placements { get; init; } = true;

    /// <summary>Called at each checkpoint, after its line is written, on the thread of its section.</summary>
    public Action<ReplayCheckpoint>? Checkpoint { get; init; }
}

/// <summary>A checkpoint reached by a replay (see <see cref="ReplayOptions.Checkpoint"/>).</summary>
public sealed unsafe class ReplayCheckpoint
{
    private readonly void** _ids;
    private readonly int* _lines;
    private readonly long _maxId;
    private Dictionary<nuint, (long Id, int Line)>? _owners;

    internal ReplayCheckpoint(int line, string name, IReadOnlyDictionary<string, long> recorded, void** ids, int* lines, long maxId)
    {
        Line = line;
        Name = name;
        Recorded = recorded;
        _ids = ids;
        _lines = lines;
        _maxId = maxId;
    }

    /// <summary>The checkpoint's line in the trace.</summary>
    public int Line { get; }

    /// <summary>Its name.</summary>
    public string Name { get; }

    /// <summary>The recorded process's own figures the line carries (<c>anon_kib</c>, <c>rss_kib</c>, ...); empty for a written trace.</summary>
    public IReadOnlyDictionary<string, long> Recorded { get; }

    /// <summary>
    /// The trace's id for the block at <paramref name="address"/> (as malloc returned it) and
    /// the line that allocated it: the live block there, else the last one freed there (a
    /// chunk cached in a tcache is one); null when no id ever held it. Valid during the callback.
    /// </summary>
    public (long Id, int Line)? Owner(nuint address)
    {
        if (_owners is null)
        {
            _owners = [];
            for (long id = 0; id <= _maxId; id++)
            {
                var p = (nuint)_ids[id];
                if (p == 0) continue;
                bool live = (p & TraceReplayer.Freed) == 0;
                p &= ~TraceReplayer.Freed;
                // A live block wins over freed ones at its address; among freed ones the last allocated.
                if (!_owners.TryGetValue(p, out var o) || live || (_ids[o.Id] != (void*)p && _lines[id] > o.Line))
                    _owners[p] = (id, _lines[id]);
            }
        }
        return _owners.TryGetValue(address, out var owner) ? owner : null;
    }
}

/// <summary>
/// Replays an allocation trace on an allocator and reports where each block landed, in the
/// format src/NativeHeap.Cli/native/replay.c prints for glibc, so the two compare line by line.
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
/// k NAME [KEY=N ...] checkpoint: statm and mallinfo2 (KEY=N: the recorded process's own figures)
/// T TID              the following lines are recorded thread TID's (1..1000000; before any T line, 1's)
/// x TID              thread TID ended (its tcache and arena go back)
/// </code>
/// <para>Version 2's <c>s</c>, <c>M</c>, <c>J</c> lines and an allocation's trailing <c>@S</c>
/// (docs/trace-format.md) are checked and skipped: they count as lines, not operations. Its
/// relative IDs and compression are <see cref="TraceFile.Decode"/>'s, which Replay and Validate
/// apply to bytes that need it.</para>
/// <para>Output: <c>LINE ID heap OFFSET USABLE</c> (OFFSET from the first heap block), <c>LINE ID
/// arena K OFFSET USABLE</c> for a block of another arena (K numbers them as they first appear,
/// OFFSET from its 64 MiB-aligned heap), <c>LINE ID mmap - USABLE</c>, or <c>LINE ID null</c>
/// when memory ran out, per allocation; <c>LINE k NAME anon_kib resident_kib size_kib arena
/// uordblks fordblks hblkhd</c> per checkpoint; <c>end</c> last.</para>
/// <para>Threads, as replay.c runs them: thread 1 on the calling thread, every other recorded
/// thread on a thread of its own started at its first T line, so the allocator gives it an arena
/// at its first call as glibc did in the recorded process; one operation at a time, in trace
/// order (each section, up to the next T or x line, runs on its thread while the others wait).
/// <c>x TID</c> ends that thread (the allocator takes its tcache and arena back) before the
/// next line runs; <c>x 1</c> only marks thread 1 ended (the calling thread goes on), and a
/// later <c>T 1</c> gets a thread of its own.</para>
/// <para>The whole trace is checked before the first operation runs. While it runs, the
/// replayer allocates nothing on the GC heap (but in checkpoint callbacks and when a thread
/// starts): ids live in a native table, sized to the trace's largest id, and lines are
/// formatted into a buffer; both are touched before the first operation, so a checkpoint's
/// RSS holds none of the replayer's own growth.</para>
/// </remarks>
public static unsafe class TraceReplayer
{
    /// <summary>The largest id a trace may use.</summary>
    public const int MaxId = 10_000_000;

    /// <summary>The largest thread id.</summary>
    public const int MaxTid = 1_000_000;

    /// <summary>The id table's tag for a freed block: its address is kept to name a cached chunk's owner.</summary>
    internal const nuint Freed = 1;

    private const int BufferSize = 1 << 16;

    // Node and after: version 2's lines that a replay skips (counted as lines, not operations).
    private enum Op : byte { Malloc, Calloc, Realloc, Memalign, Free, Write, Trim, Checkpoint, Thread, Exit, Node, Module, Jit, Version }

    /// <summary>What a check of the whole trace found.</summary>
    private readonly record struct Scanned(TraceSummary Summary, long MaxId, bool Threads);

    /// <summary>Check every line of a trace; throws <see cref="TraceFormatException"/> on the first bad one.</summary>
    /// <remarks>Compressed or version-2 bytes are decoded first (<see cref="TraceFile.Decode"/>).</remarks>
    public static TraceSummary Validate(ReadOnlySpan<byte> trace) =>
        Scan(TraceFile.NeedsDecoding(trace) ? TraceFile.Decode(trace.ToArray()) : trace).Summary;

    /// <summary>
    /// The trace up to line <paramref name="line"/> (a checkpoint), with malloc_trim(0) just
    /// before it and nothing after it: the what-if "trim here".
    /// </summary>
    public static byte[] TrimBefore(ReadOnlySpan<byte> trace, int line)
    {
        int at = 0;
        for (int n = 1; n < line; n++)
        {
            int nl = trace[at..].IndexOf((byte)'\n');
            if (nl < 0) throw new ArgumentOutOfRangeException(nameof(line), line, "past the trace's end");
            at += nl + 1;
        }
        int end = trace[at..].IndexOf((byte)'\n');
        ReadOnlySpan<byte> checkpoint = end < 0 ? trace[at..] : trace[at..(at + end)];
        return [.. trace[..at], .. "t 0\n"u8, .. checkpoint, (byte)'\n'];
    }

    private static Scanned Scan(ReadOnlySpan<byte> trace)
    {
        long count = 0, maxId = 0;
        var checkpoints = new List<(int, string)>();
        Span<long> args = stackalloc long[3];
        int lineNo = 0;
        // The threads' view, as replay.c checks it: which have a thread, and whose section this is.
        HashSet<long>? running = null;
        var seen = new HashSet<long> { 1 };
        long current = 1;
        int nodes = 0; // version 2's stack nodes defined so far
        while (NextLine(ref trace, ref lineNo, out ReadOnlySpan<byte> line))
        {
            Op op = Parse(line, lineNo, args, out ReadOnlySpan<byte> name);
            switch (op)
            {
                case Op.Node:
                    TraceStacks.ParseNode(line[2..], lineNo, nodes, out _, out _);
                    nodes++;
                    continue;
                case Op.Module:
                    TraceStacks.CheckModule(line[2..], lineNo, out _, out _, out _, out _, out _);
                    continue;
                case Op.Jit:
                    TraceStacks.CheckJit(line[2..], lineNo, out _, out _, out _);
                    continue;
                case Op.Version:
                    throw new TraceFormatException(lineNo, "a v line comes before every other line but comments");
                case Op.Malloc or Op.Calloc or Op.Realloc or Op.Memalign:
                    TraceStacks.StackSuffix(line, lineNo, nodes);
                    break;
            }
            count++;
            switch (op)
            {
                case Op.Thread:
                    (running ??= [1]).Add(args[0]);
                    seen.Add(args[0]);
                    current = args[0];
                    continue;
                case Op.Exit:
                    running ??= [1];
                    if (!running.Remove(args[0])) throw new TraceFormatException(lineNo, "x of a thread that is not running");
                    continue;
            }
            if (running is not null && !running.Contains(current))
                throw new TraceFormatException(lineNo, "operation of a thread after its x line (needs a T line)");
            if (op == Op.Checkpoint) checkpoints.Add((lineNo, System.Text.Encoding.ASCII.GetString(FirstToken(name))));
            else if (op != Op.Trim) maxId = Math.Max(maxId, args[0]);
        }
        return new Scanned(new TraceSummary(count, seen.Count, checkpoints), maxId, running is not null);
    }

    /// <summary>Replay <paramref name="trace"/> on <paramref name="target"/>, writing the report to <paramref name="output"/>.</summary>
    /// <param name="trace">The trace text (ASCII).</param>
    /// <param name="target">The allocator.</param>
    /// <param name="output">Where the report goes.</param>
    /// <param name="alignBreak">See <see cref="ReplayOptions.AlignBreak"/>.</param>
    /// <param name="placements">False to print checkpoints only.</param>
    /// <exception cref="TraceFormatException">A malformed line; nothing was replayed.</exception>
    public static ReplayResult Replay(ReadOnlySpan<byte> trace, ReplayTarget target, Stream output,
        nuint alignBreak = 0, bool placements = true) =>
        Replay(trace.ToArray(), target, output, new ReplayOptions { AlignBreak = alignBreak, Placements = placements });

    /// <summary>Replay <paramref name="trace"/> on <paramref name="target"/>, writing the report to <paramref name="output"/>.</summary>
    /// <remarks>Compressed or version-2 bytes are decoded first (<see cref="TraceFile.Decode"/>).</remarks>
    /// <exception cref="TraceFormatException">A malformed line; nothing was replayed.</exception>
    public static ReplayResult Replay(ReadOnlyMemory<byte> trace, ReplayTarget target, Stream output, ReplayOptions options)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(options);
        if (TraceFile.NeedsDecoding(trace.Span)) trace = TraceFile.Decode(trace.ToArray());
        Scanned scanned = Scan(trace.Span);
        nuint tableBytes = OsMemory.AlignUp((nuint)(scanned.MaxId + 1) * (nuint)(sizeof(void*) + sizeof(int)), OsMemory.PageSize);
        var ids = (void**)OsMemory.Map(tableBytes);
        if (ids == null) throw new OutOfMemoryException(OsMemory.LastFailure);
        // Fault in the tables and the buffer now: touched as the trace went, they grew into
        // the checkpoints (2.7 MiB of a perl trace's "heap" was the table).
        for (nuint i = 0; i < tableBytes; i += OsMemory.PageSize) ((byte*)ids)[i] = 0;
        byte[] buffer = new byte[BufferSize];
        buffer.AsSpan().Fill(0);
        var session = new Session(trace, target, ids, (int*)(ids + scanned.MaxId + 1), scanned.MaxId,
            new LineWriter(output, buffer), options);
        try
        {
            target.Prepare();
            WarmUp(target, session.Writer);
            if (options.AlignBreak != 0) target.AlignBreak(options.AlignBreak);
            long foreign0 = target.ForeignBreaks;
            if (scanned.Threads) new Threads(session).Run();
            else session.RunSection();
            session.Writer.Ascii("end\n");
            session.Writer.Flush();
            return new ReplayResult(session.Operations, target.ForeignBreaks - foreign0);
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

    /// <summary>
    /// One replay's state. Exactly one thread runs a section at a time, handed over through
    /// <see cref="Threads"/>'s semaphores, which order every field's writes before the next reader.
    /// </summary>
    private sealed class Session(ReadOnlyMemory<byte> trace, ReplayTarget target, void** ids, int* lines, long maxId, LineWriter writer, ReplayOptions options)
    {
        private int _pos, _lineNo;
        private byte* _firstHeap;
        private readonly List<nint> _arenas = [];
        internal readonly LineWriter Writer = writer;
        internal readonly ReplayTarget Target = target;
        internal long Operations;

        /// <summary>Run lines up to the next T or x line (returned, with its thread) or the end (null).</summary>
        internal (bool Exit, int Tid)? RunSection()
        {
            Span<long> args = stackalloc long[3];
            ReadOnlySpan<byte> rest = trace.Span[_pos..];
            while (NextLine(ref rest, ref _lineNo, out ReadOnlySpan<byte> line))
            {
                _pos = trace.Length - rest.Length;
                Op op = Parse(line, _lineNo, args, out ReadOnlySpan<byte> name);
                if (op >= Op.Node) continue;
                Operations++;
                if (op is Op.Thread or Op.Exit) return (op == Op.Exit, (int)args[0]);
                Execute(op, args, name);
            }
            _pos = trace.Length;
            return null;
        }

        private static void* Live(void* p) => ((nuint)p & Freed) != 0 ? null : p;

        private void Execute(Op op, Span<long> args, ReadOnlySpan<byte> name)
        {
            LineWriter w = Writer;
            void** slot = op is Op.Trim or Op.Checkpoint ? null : &ids[args[0]];
            void* result;
            switch (op)
            {
                case Op.Checkpoint:
                    Checkpoint(name);
                    return;
                case Op.Trim:
                    Target.Trim((nuint)args[0]);
                    return;
                case Op.Free:
                {
                    void* p = Live(*slot);
                    Target.Free(p);
                    if (p != null) *slot = (void*)((nuint)p | Freed);
                    return;
                }
                case Op.Write:
                    Touch(Target, Live(*slot));
                    return;
                case Op.Malloc:
                    result = Target.Malloc((nuint)args[1]);
                    break;
                case Op.Calloc:
                    result = Target.Calloc((nuint)args[1], (nuint)args[2]);
                    break;
                case Op.Memalign:
                    result = Target.Memalign((nuint)args[1], (nuint)args[2]);
                    break;
                default: // realloc
                    void* old = Live(*slot);
                    result = Target.Realloc(old, (nuint)args[1]);
                    if (args[1] == 0 && old != null)
                    {
                        *slot = (void*)((nuint)old | Freed);
                        return;
                    }
                    break;
            }
            if (result != null || op != Op.Realloc)
            {
                *slot = result;
                lines[args[0]] = _lineNo;
            }
            if (!options.Placements) return;
            w.Number(_lineNo).Ascii(" ").Number(args[0]);
            if (result == null)
            {
                w.Ascii(" null\n");
                return;
            }
            nuint usable = Target.UsableSize(result);
            nint arena;
            if (Target.IsMapped(result))
            {
                w.Ascii(" mmap - ").Number((long)usable).Ascii("\n");
            }
            else if ((arena = Target.ArenaOf(result)) != 0)
            {
                int k = _arenas.IndexOf(arena);
                if (k < 0)
                {
                    _arenas.Add(arena);
                    k = _arenas.Count - 1;
                }
                nuint heap = (nuint)result & ~(Arenas.HeapHeader.MaxSize - 1);
                w.Ascii(" arena ").Number(k + 1).Ascii(" ").Number((long)((nuint)result - heap)).Ascii(" ").Number((long)usable).Ascii("\n");
            }
            else
            {
                if (_firstHeap == null) _firstHeap = (byte*)result;
                w.Ascii(" heap ").Number((byte*)result - _firstHeap).Ascii(" ").Number((long)usable).Ascii("\n");
            }
        }

        private void Checkpoint(ReadOnlySpan<byte> name)
        {
            Statm s = Statm.Read();
            HeapInfo info = Target.GetInfo();
            ReadOnlySpan<byte> first = FirstToken(name);
            Writer.Number(_lineNo).Ascii(" k ").Bytes(first)
                .Ascii(" ").Number((long)(s.AnonymousBytes / 1024)).Ascii(" ").Number((long)(s.ResidentBytes / 1024))
                .Ascii(" ").Number((long)(s.SizeBytes / 1024)).Ascii(" ").Number((long)info.Arena).Ascii(" ").Number((long)info.Uordblks)
                .Ascii(" ").Number((long)info.Fordblks).Ascii(" ").Number((long)info.Hblkhd).Ascii("\n");
            if (options.Checkpoint is not { } callback) return;
            Writer.Flush();
            var recorded = new Dictionary<string, long>();
            foreach (var (key, value) in Keys(name, _lineNo)) recorded[key] = value;
            callback(new ReplayCheckpoint(_lineNo, System.Text.Encoding.ASCII.GetString(first), recorded, ids, lines, maxId));
        }
    }

    /// <summary>Runs each recorded thread's sections on a thread of its own, one at a time (see the remarks above).</summary>
    private sealed class Threads(Session session)
    {
        private readonly SemaphoreSlim _done = new(0);
        private readonly Dictionary<int, Worker> _workers = [];
        private Exception? _failure;

        private sealed class Worker
        {
            internal readonly SemaphoreSlim Go = new(0);
            internal bool Quit, End;
            internal (bool Exit, int Tid)? Result;
            internal Thread? Thread;
        }

        internal void Run()
        {
            const int OnMain = 0, Ended = -1;
            int current = OnMain; // the section's runner: the calling thread, a worker's tid, or none
            bool mainHas1 = true;
            try
            {
                for (;;)
                {
                    (bool Exit, int Tid)? control;
                    if (current == OnMain || current == Ended)
                    {
                        control = session.RunSection(); // Ended: only the T line that must follow
                    }
                    else
                    {
                        Worker w = _workers[current];
                        w.Go.Release();
                        _done.Wait();
                        if (_failure is { } f) throw new AggregateException("a replay thread failed", f);
                        control = w.Result;
                    }
                    if (control is not { } c) return;
                    if (!c.Exit)
                    {
                        if (c.Tid == 1 && mainHas1) current = OnMain;
                        else
                        {
                            if (!_workers.ContainsKey(c.Tid)) _workers[c.Tid] = Start();
                            current = c.Tid;
                        }
                        continue;
                    }
                    if (c.Tid == 1 && mainHas1)
                    {
                        mainHas1 = false; // the calling thread cannot end; it goes on coordinating
                        if (current == OnMain) current = Ended;
                        continue;
                    }
                    Stop(c.Tid, end: false);
                    if (current == c.Tid) current = Ended;
                }
            }
            finally
            {
                foreach (int tid in _workers.Keys.ToList()) Stop(tid, end: true);
            }
        }

        private Worker Start()
        {
            var w = new Worker();
            w.Thread = new Thread(() =>
            {
                for (;;)
                {
                    w.Go.Wait();
                    if (w.Quit)
                    {
                        if (!w.End) session.Target.EndThread();
                        return;
                    }
                    try
                    {
                        w.Result = session.RunSection();
                    }
                    catch (Exception e)
                    {
                        _failure = e;
                    }
                    _done.Release();
                }
            }) { IsBackground = true, Name = "replay" };
            w.Thread.Start();
            return w;
        }

        /// <summary>End a worker's thread and wait for it (<paramref name="end"/>: the replay is over, nothing given back).</summary>
        private void Stop(int tid, bool end)
        {
            Worker w = _workers[tid];
            _workers.Remove(tid);
            w.Quit = true;
            w.End = end;
            w.Go.Release();
            w.Thread!.Join();
        }
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
            case (byte)'T': op = Op.Thread; count = 1; break;
            case (byte)'x': op = Op.Exit; count = 1; break;
            // Version 2's lines: Scan checks them (TraceStacks' parsers), a replay skips them.
            case (byte)'s': return line.Length > 1 ? Op.Node : throw new TraceFormatException(lineNo, "'s' takes S P ADDR");
            case (byte)'M': return line.Length > 1 ? Op.Module : throw new TraceFormatException(lineNo, "'M' takes LO HI BIAS BUILDID PATH");
            case (byte)'J': return line.Length > 1 ? Op.Jit : throw new TraceFormatException(lineNo, "'J' takes START SIZE NAME");
            case (byte)'v': return Op.Version;
            case (byte)'k':
                name = rest.Trim(" \t"u8);
                if (name.IsEmpty) throw new TraceFormatException(lineNo, "a checkpoint needs a name");
                foreach (var _ in Keys(name, lineNo)) { } // each KEY=N well formed
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
        rest = rest.Trim(" \t"u8);
        // An allocation's call stack, " @S" (version 2): Scan checks S.
        if (!rest.IsEmpty && !(op <= Op.Memalign && rest[0] == (byte)'@' && rest.IndexOfAny(" \t"u8) < 0))
            throw new TraceFormatException(lineNo, $"'{(char)line[0]}' takes {count} numbers, found more");
        if (op is Op.Thread or Op.Exit)
        {
            if (args[0] < 1 || args[0] > MaxTid) throw new TraceFormatException(lineNo, $"TID not in 1..{MaxTid}");
        }
        else if (op != Op.Trim && args[0] > MaxId)
        {
            throw new TraceFormatException(lineNo, $"id {args[0]} is above {MaxId}");
        }
        return op;
    }

    /// <summary>A checkpoint's name: the first token of what follows <c>k</c>.</summary>
    private static ReadOnlySpan<byte> FirstToken(ReadOnlySpan<byte> text)
    {
        int end = text.IndexOfAny(" \t"u8);
        return end < 0 ? text : text[..end];
    }

    /// <summary>A checkpoint's KEY=N fields after its name (KEY of [A-Za-z0-9_], N decimal, as replay.c checks them).</summary>
    private static List<(string Key, long Value)> Keys(ReadOnlySpan<byte> text, int lineNo = 0)
    {
        var keys = new List<(string, long)>();
        ReadOnlySpan<byte> rest = text[FirstToken(text).Length..];
        for (;;)
        {
            rest = rest.TrimStart(" \t"u8);
            if (rest.IsEmpty) return keys;
            ReadOnlySpan<byte> token = FirstToken(rest);
            rest = rest[token.Length..];
            int eq = token.IndexOf((byte)'=');
            bool ok = eq > 0 && !token[..eq].ContainsAnyExcept("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"u8)
                && Utf8Parser.TryParse(token[(eq + 1)..], out ulong v, out int used) && used == token.Length - eq - 1 && v <= long.MaxValue;
            if (!ok) throw new TraceFormatException(lineNo, $"malformed KEY=N: '{System.Text.Encoding.ASCII.GetString(token)}'");
            Utf8Parser.TryParse(token[(eq + 1)..], out ulong value, out _);
            keys.Add((System.Text.Encoding.ASCII.GetString(token[..eq]), (long)value));
        }
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
