using System.Buffers.Text;
using System.Text;
using NativeHeap.Symbols;

namespace NativeHeap.Lab;

/// <summary>
/// A decoded trace's call stacks (docs/trace-format.md, version 2): its <c>s</c> nodes, <c>M</c>
/// modules and <c>J</c> code, and which allocation line carries which stack (<c> @S</c>).
/// </summary>
/// <remarks>
/// Read from the text <see cref="TraceFile.Decode"/> returns (or any version-1 text, which has
/// none of them). A node costs 20 bytes and a line with a stack 8, so tens of thousands of nodes
/// and millions of lines are cheap; a node's frames are built when asked for.
/// </remarks>
public sealed class TraceStacks
{
    private readonly List<ulong> _address = [0];   // by node; [0] unused
    private readonly List<int> _parent = [0];
    private readonly List<int> _module = [-1];     // index into Modules, -1: none
    private readonly List<int> _lines = [];        // allocation lines with a stack, ascending
    private readonly List<int> _stackOfLine = [];
    private bool[] _used = [];
    private readonly List<TraceModule> _modules = [];
    private readonly List<JitCode> _jit = [];

    private TraceStacks() { }

    /// <summary>The modules in the order their <c>M</c> lines came.</summary>
    public IReadOnlyList<TraceModule> Modules => _modules;

    /// <summary>The run-time compiled code, in the order its <c>J</c> lines came.</summary>
    public IReadOnlyList<JitCode> JitCode => _jit;

    /// <summary>How many nodes the trace defines (they are numbered 1 to this).</summary>
    public int NodeCount => _address.Count - 1;

    /// <summary>Reads the stacks of a decoded trace.</summary>
    /// <exception cref="TraceFormatException">A malformed <c>s</c>, <c>M</c> or <c>J</c> line, a node out of order or with an undefined parent, or an undefined <c>@S</c>.</exception>
    public static TraceStacks Parse(ReadOnlySpan<byte> trace)
    {
        var stacks = new TraceStacks();
        int lineNo = 0;
        while (!trace.IsEmpty)
        {
            int nl = trace.IndexOf((byte)'\n');
            ReadOnlySpan<byte> line = (nl < 0 ? trace : trace[..nl]).Trim(" \t\r"u8);
            trace = nl < 0 ? default : trace[(nl + 1)..];
            lineNo++;
            if (line.Length < 2 || line[1] is not ((byte)' ' or (byte)'\t')) continue;
            ReadOnlySpan<byte> fields = line[2..];
            switch (line[0])
            {
                case (byte)'s':
                {
                    ParseNode(fields, lineNo, stacks.NodeCount, out int parent, out ulong address);
                    stacks._address.Add(address);
                    stacks._parent.Add(parent);
                    stacks._module.Add(stacks.ModuleIndexOf(address));
                    break;
                }
                case (byte)'M':
                    stacks._modules.Add(ParseModule(fields, lineNo));
                    break;
                case (byte)'J':
                    stacks._jit.Add(ParseJit(fields, lineNo));
                    break;
                case (byte)'m' or (byte)'c' or (byte)'r' or (byte)'a':
                    int stack = StackSuffix(line, lineNo, stacks.NodeCount);
                    if (stack == 0) break;
                    stacks._lines.Add(lineNo);
                    stacks._stackOfLine.Add(stack);
                    break;
            }
        }
        stacks._used = new bool[stacks._address.Count];
        foreach (int s in stacks._stackOfLine) stacks._used[s] = true;
        return stacks;
    }

    /// <summary>The node's frames, innermost (the code that called malloc) first, each with the module in force when its <c>s</c> line was read.</summary>
    public IReadOnlyList<RecordedFrame> Frames(int node)
    {
        CheckNode(node);
        var frames = new List<RecordedFrame>();
        for (int n = node; n != 0; n = _parent[n])
            frames.Add(new RecordedFrame(_address[n], _module[n] < 0 ? null : _modules[_module[n]]));
        return frames;
    }

    /// <summary>The node's own frame address.</summary>
    public ulong Address(int node) => _address[CheckNode(node)];

    /// <summary>The node its frame was called from (0: the outermost recorded).</summary>
    public int Parent(int node) => _parent[CheckNode(node)];

    /// <summary>The stack node of the allocation on line <paramref name="line"/> (1-based), or 0 if it has none.</summary>
    public int StackOfLine(int line)
    {
        int i = _lines.BinarySearch(line);
        return i < 0 ? 0 : _stackOfLine[i];
    }

    /// <summary>Whether some allocation line names the node with <c>@</c> (not counting nodes that are only parents).</summary>
    public bool IsUsed(int node) => _used[CheckNode(node)];

    /// <summary>The nodes some allocation line names, ascending.</summary>
    public IEnumerable<int> UsedNodes()
    {
        for (int n = 1; n < _used.Length; n++)
            if (_used[n]) yield return n;
    }

    /// <summary>The allocation lines that carry a stack, ascending, with their nodes.</summary>
    public IEnumerable<(int Line, int Node)> StackedLines()
    {
        for (int i = 0; i < _lines.Count; i++) yield return (_lines[i], _stackOfLine[i]);
    }

    private int CheckNode(int node)
    {
        if (node < 1 || node > NodeCount) throw new ArgumentOutOfRangeException(nameof(node), node, $"nodes are 1..{NodeCount}");
        return node;
    }

    /// <summary>The last module read so far whose span holds the address, or -1.</summary>
    private int ModuleIndexOf(ulong address)
    {
        for (int i = _modules.Count - 1; i >= 0; i--)
            if (_modules[i].Contains(address)) return i;
        return -1;
    }

    // The line parsers, shared with TraceReplayer's check; they allocate only for an error
    // (and ParseModule/ParseJit for the strings they return).

    /// <summary>An <c>s</c> line's fields <c>S P ADDR</c>: S must be <paramref name="defined"/> + 1 and P at most <paramref name="defined"/>.</summary>
    internal static void ParseNode(ReadOnlySpan<byte> fields, int lineNo, int defined, out int parent, out ulong address)
    {
        ulong s = Decimal(ref fields, lineNo, "s", "S");
        ulong p = Decimal(ref fields, lineNo, "s", "P");
        address = Hex(ref fields, lineNo, "s", "ADDR");
        if (!fields.Trim(" \t"u8).IsEmpty) throw new TraceFormatException(lineNo, "'s' takes S P ADDR, found more");
        if (s != (ulong)defined + 1) throw new TraceFormatException(lineNo, $"stack node {s} out of order: the next is {defined + 1}");
        if (p > (ulong)defined) throw new TraceFormatException(lineNo, $"stack node {s}'s parent {p} is not defined yet");
        parent = (int)p;
    }

    /// <summary>An <c>M</c> line's fields <c>LO HI BIAS BUILDID PATH</c>.</summary>
    internal static TraceModule ParseModule(ReadOnlySpan<byte> fields, int lineNo)
    {
        CheckModule(fields, lineNo, out ulong lo, out ulong hi, out ulong bias, out ReadOnlySpan<byte> buildId, out ReadOnlySpan<byte> path);
        return new TraceModule(lo, hi, bias, buildId.SequenceEqual("-"u8) ? null : Encoding.ASCII.GetString(buildId), Encoding.UTF8.GetString(path));
    }

    internal static void CheckModule(ReadOnlySpan<byte> fields, int lineNo, out ulong lo, out ulong hi, out ulong bias,
        out ReadOnlySpan<byte> buildId, out ReadOnlySpan<byte> path)
    {
        lo = Hex(ref fields, lineNo, "M", "LO");
        hi = Hex(ref fields, lineNo, "M", "HI");
        bias = Hex(ref fields, lineNo, "M", "BIAS");
        buildId = Token(ref fields);
        if (buildId.IsEmpty) throw new TraceFormatException(lineNo, "'M' takes LO HI BIAS BUILDID PATH: BUILDID missing");
        if (!buildId.SequenceEqual("-"u8) && buildId.ContainsAnyExcept("0123456789abcdef"u8))
            throw new TraceFormatException(lineNo, $"'M': build-id '{Encoding.ASCII.GetString(buildId)}' is not lower-case hex or -");
        path = fields.Trim(" \t"u8);
        if (path.IsEmpty) throw new TraceFormatException(lineNo, "'M' takes LO HI BIAS BUILDID PATH: PATH missing");
        if (hi < lo) throw new TraceFormatException(lineNo, "'M': HI below LO");
    }

    /// <summary>A <c>J</c> line's fields <c>START SIZE NAME</c>.</summary>
    internal static JitCode ParseJit(ReadOnlySpan<byte> fields, int lineNo)
    {
        CheckJit(fields, lineNo, out ulong start, out ulong size, out ReadOnlySpan<byte> name);
        return new JitCode(start, size, Encoding.UTF8.GetString(name));
    }

    internal static void CheckJit(ReadOnlySpan<byte> fields, int lineNo, out ulong start, out ulong size, out ReadOnlySpan<byte> name)
    {
        start = Hex(ref fields, lineNo, "J", "START");
        size = Hex(ref fields, lineNo, "J", "SIZE");
        name = fields.Trim(" \t"u8);
        if (name.IsEmpty) throw new TraceFormatException(lineNo, "'J' takes START SIZE NAME: NAME missing");
    }

    /// <summary>
    /// An allocation line's trailing <c>@S</c> (0 if it has none), checked against the nodes
    /// defined so far. Only looks at the last field: the line's numbers are the replayer's to check.
    /// </summary>
    internal static int StackSuffix(ReadOnlySpan<byte> line, int lineNo, int defined)
    {
        int blank = line.LastIndexOfAny(" \t"u8);
        ReadOnlySpan<byte> last = line[(blank + 1)..];
        if (last.IsEmpty || last[0] != (byte)'@') return 0;
        if (!Utf8Parser.TryParse(last[1..], out ulong s, out int used) || used != last.Length - 1 || s == 0)
            throw new TraceFormatException(lineNo, $"'{Encoding.ASCII.GetString(last)}' is not a stack node (@S, S >= 1)");
        if (s > (ulong)defined) throw new TraceFormatException(lineNo, $"stack node {s} is not defined yet");
        return (int)s;
    }

    private static ReadOnlySpan<byte> Token(scoped ref ReadOnlySpan<byte> fields)
    {
        fields = fields.TrimStart(" \t"u8);
        int end = fields.IndexOfAny(" \t"u8);
        ReadOnlySpan<byte> token = end < 0 ? fields : fields[..end];
        fields = fields[token.Length..];
        return token;
    }

    private static ulong Decimal(scoped ref ReadOnlySpan<byte> fields, int lineNo, string op, string what)
    {
        ReadOnlySpan<byte> token = Token(ref fields);
        if (token.IsEmpty) throw new TraceFormatException(lineNo, $"'{op}': {what} missing");
        if (!Utf8Parser.TryParse(token, out ulong v, out int used) || used != token.Length || v > int.MaxValue)
            throw new TraceFormatException(lineNo, $"'{op}': {what} '{Encoding.ASCII.GetString(token)}' is not a number");
        return v;
    }

    private static ulong Hex(scoped ref ReadOnlySpan<byte> fields, int lineNo, string op, string what)
    {
        ReadOnlySpan<byte> token = Token(ref fields);
        if (token.IsEmpty) throw new TraceFormatException(lineNo, $"'{op}': {what} missing");
        if (token.Length > 16 || token.ContainsAnyExcept("0123456789abcdef"u8)
            || !Utf8Parser.TryParse(token, out ulong v, out int used, 'x') || used != token.Length)
            throw new TraceFormatException(lineNo, $"'{op}': {what} '{Encoding.ASCII.GetString(token)}' is not lower-case hex");
        return v;
    }
}
