using System.Text;
using NativeHeap.Arenas;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Diagnostics;

/// <summary>
/// Replays an allocation trace on a heap and reports where each block landed, in the format
/// native-tests/src/replay.c prints for glibc, so that the two can be compared line by line.
/// <code>
/// m ID SIZE | c ID COUNT SIZE | r ID SIZE | a ID ALIGN SIZE | f ID | w ID | t PAD | k NAME
/// </code>
/// Output: <c>LINE ID heap OFFSET USABLE</c> or <c>LINE ID mmap - USABLE</c> per allocation,
/// OFFSET relative to the first heap block; <c>LINE ID null</c> when memory ran out;
/// <c>LINE k NAME anon_kib resident_kib size_kib arena uordblks fordblks hblkhd</c> per checkpoint;
/// <c>end</c> last. IDs live in a native table, so the replay itself allocates no heap blocks.
/// </summary>
internal static unsafe class TraceReplay
{
    /// <summary>Thrown for a malformed trace line.</summary>
    internal sealed class FormatError(int line, string what) : Exception($"line {line}: {what}")
    {
        public int Line { get; } = line;
    }

    /// <param name="ctx">A heap that has not grown yet when <paramref name="alignBreak"/> is used.</param>
    /// <param name="trace">The trace text.</param>
    /// <param name="output">Where the lines go.</param>
    /// <param name="alignBreak">
    /// 0, or a power of two: first move the break up to a multiple of it (as replay.c does with
    /// REPLAY_ALIGN_BREAK), so that blocks aligned to more than a page land as in glibc's heap.
    /// </param>
    internal static void Run(MallocContext* ctx, ReadOnlySpan<byte> trace, StringBuilder output, nuint alignBreak = 0)
    {
        if (alignBreak != 0)
        {
            using (OsMemory.BreakLock.EnterScope())
            {
                var current = (nuint)OsMemory.Sbrk(0);
                nuint wanted = OsMemory.AlignUp(current, alignBreak);
                if (wanted != current) OsMemory.Sbrk((nint)(wanted - current));
            }
        }
        nuint maxIds = 10_000_001;
        nuint tableBytes = OsMemory.AlignUp(maxIds * (nuint)sizeof(void*), OsMemory.PageSize);
        var ids = (void**)OsMemory.Map(tableBytes, Interop.Libc.PROT_READ | Interop.Libc.PROT_WRITE, Interop.Libc.MAP_NORESERVE);
        if (ids == null) throw new OutOfMemoryException(OsMemory.LastFailure);
        try
        {
            Replay(ctx, trace, output, ids, maxIds);
        }
        finally
        {
            OsMemory.Unmap(ids, tableBytes);
        }
    }

    private static void Replay(MallocContext* ctx, ReadOnlySpan<byte> trace, StringBuilder output, void** ids, nuint maxIds)
    {
        byte* firstHeap = null;
        int lineNo = 0;
        Span<long> args = stackalloc long[3];
        while (!trace.IsEmpty)
        {
            int nl = trace.IndexOf((byte)'\n');
            ReadOnlySpan<byte> line = nl < 0 ? trace : trace[..nl];
            trace = nl < 0 ? default : trace[(nl + 1)..];
            lineNo++;
            line = line.Trim((byte)' ').TrimEnd((byte)'\r');
            if (line.IsEmpty || line[0] == (byte)'#') continue;

            byte op = line[0];
            ReadOnlySpan<byte> rest = line[1..];
            if (op == (byte)'k')
            {
                Checkpoint(ctx, output, lineNo, rest.Trim((byte)' '));
                continue;
            }
            int expected = op switch
            {
                (byte)'m' or (byte)'r' => 2,
                (byte)'c' or (byte)'a' => 3,
                (byte)'f' or (byte)'w' or (byte)'t' => 1,
                _ => throw new FormatError(lineNo, $"unknown operation '{(char)op}'"),
            };
            ParseNumbers(rest, args[..expected], lineNo);
            if (op == (byte)'t')
            {
                Ptmalloc.MallocTrim(ctx, (nuint)args[0]);
                continue;
            }
            if (args[0] < 0 || (ulong)args[0] >= maxIds) throw new FormatError(lineNo, $"id {args[0]} out of range");
            void** slot = &ids[args[0]];
            void* result;
            switch (op)
            {
                case (byte)'m':
                    result = Ptmalloc.Malloc(ctx, (nuint)args[1]);
                    break;
                case (byte)'c':
                    result = Ptmalloc.Calloc(ctx, (nuint)args[1], (nuint)args[2]);
                    break;
                case (byte)'a':
                    result = Ptmalloc.Memalign(ctx, (nuint)args[1], (nuint)args[2]);
                    break;
                case (byte)'r':
                    bool frees = args[1] == 0 && *slot != null;
                    result = Ptmalloc.Realloc(ctx, *slot, (nuint)args[1], out _);
                    if (frees)
                    {
                        *slot = null;
                        continue;
                    }
                    break;
                case (byte)'f':
                    Ptmalloc.Free(ctx, *slot);
                    *slot = null;
                    continue;
                default: // 'w'
                    Touch(*slot);
                    continue;
            }
            if (result != null || op != (byte)'r') *slot = result;
            output.Append(lineNo).Append(' ').Append(args[0]);
            if (result == null)
            {
                output.Append(" null\n");
                continue;
            }
            nuint usable = Ptmalloc.UsableSize(result);
            if (Chunk.IsMapped(Chunk.FromMem(result)))
            {
                output.Append(" mmap - ").Append((ulong)usable).Append('\n');
            }
            else
            {
                if (firstHeap == null) firstHeap = (byte*)result;
                output.Append(" heap ").Append((long)((byte*)result - firstHeap)).Append(' ').Append((ulong)usable).Append('\n');
            }
        }
        output.Append("end\n");
    }

    private static void Touch(void* block)
    {
        if (block == null) return;
        nuint usable = Ptmalloc.UsableSize(block);
        if (usable == 0) return;
        var b = (byte*)block;
        for (nuint i = 0; i < usable; i += 4096) b[i] = 1;
        b[usable - 1] = 1;
    }

    private static void Checkpoint(MallocContext* ctx, StringBuilder output, int lineNo, ReadOnlySpan<byte> name)
    {
        Statm s = Statm.Read();
        HeapInfo info = MallInfo.Compute(ctx);
        output.Append(lineNo).Append(" k ").Append(Encoding.ASCII.GetString(name))
            .Append(' ').Append(s.AnonymousBytes / 1024).Append(' ').Append(s.ResidentBytes / 1024)
            .Append(' ').Append(s.SizeBytes / 1024).Append(' ').Append(info.Arena).Append(' ').Append(info.Uordblks)
            .Append(' ').Append(info.Fordblks).Append(' ').Append(info.Hblkhd).Append('\n');
    }

    private static void ParseNumbers(ReadOnlySpan<byte> text, Span<long> values, int lineNo)
    {
        for (int i = 0; i < values.Length; i++)
        {
            text = text.TrimStart((byte)' ');
            int end = text.IndexOf((byte)' ');
            ReadOnlySpan<byte> token = end < 0 ? text : text[..end];
            if (token.IsEmpty || !System.Buffers.Text.Utf8Parser.TryParse(token, out long v, out int consumed) || consumed != token.Length || v < 0)
                throw new FormatError(lineNo, $"expected {values.Length} non-negative numbers");
            values[i] = v;
            text = end < 0 ? default : text[end..];
        }
        if (!text.Trim((byte)' ').IsEmpty) throw new FormatError(lineNo, $"expected {values.Length} numbers, found more");
    }
}
