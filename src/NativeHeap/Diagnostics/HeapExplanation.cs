using System.Globalization;
using System.Text;
using System.Text.Json;

namespace NativeHeap.Diagnostics;

/// <summary>A named share of resident memory.</summary>
/// <param name="Name">The share's name (snake_case, as in the JSON).</param>
/// <param name="Bytes">Resident bytes.</param>
public readonly record struct MemoryPart(string Name, long Bytes);

/// <summary>One arena's resident memory by where it sits, and what it no longer holds.</summary>
/// <param name="Arena">The arena's totals.</param>
/// <param name="Parts">in_use, tcache, fastbins, unsorted, small_bins, large_bins, top, metadata: resident bytes.</param>
/// <param name="FreeNotResidentBytes">Bytes of free chunks and top whose pages are not resident (released with MADV_DONTNEED, or never touched).</param>
/// <param name="TrimmedBytes">Bytes the arena once held from the kernel and gave back (its peak system memory less its current).</param>
public sealed record ArenaBreakdown(ArenaSummary Arena, IReadOnlyList<MemoryPart> Parts, ulong FreeNotResidentBytes, ulong TrimmedBytes);

/// <summary>
/// A chunk that keeps free memory below it from going back: until it is freed, the free
/// chunks between it and the next live chunk below cannot merge into top, so trimming cannot
/// return them. Listed from top downwards.
/// </summary>
/// <param name="Arena">The arena.</param>
/// <param name="Chunk">The chunk (in use, cached in a tcache, or the allocator's own tcache struct).</param>
/// <param name="Above">How many pinning chunks lie above it, between it and top (they must go first).</param>
/// <param name="FreesBytes">Resident free bytes between it and the next live chunk below: what freeing it adds.</param>
/// <param name="PinnedBytes">Resident free bytes from top down to the next live chunk below it: what trimming returns once it and every chunk above it are freed.</param>
public readonly record struct PinningChunk(int Arena, HeapChunk Chunk, int Above, ulong FreesBytes, ulong PinnedBytes);

/// <summary>
/// Why the process holds the memory it holds: the anonymous resident memory
/// (<c>/proc/self/statm</c>) broken down into what the heap's chunks hold, by where they sit,
/// and what lies outside the heap; then the chunks that pin free memory, and what
/// malloc_trim(0) would return. Made by <see cref="Heap.Explain"/>; residency is the kernel's
/// (mincore per page), not estimated.
/// </summary>
public sealed class HeapExplanation
{
    private static readonly string[] s_stateParts = ["in_use", "tcache", "fastbins", "unsorted", "small_bins", "large_bins", "top", "metadata", "mmapped"];

    /// <summary>Explain a snapshot against the process's memory read right after it.</summary>
    /// <param name="snapshot">The heap.</param>
    /// <param name="process">statm, read after the snapshot.</param>
    /// <param name="processAnonymousBytes">The process's anonymous resident bytes from smaps (the "Anonymous" total), read with <paramref name="process"/>.</param>
    public HeapExplanation(HeapSnapshot snapshot, Statm process, ulong processAnonymousBytes)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        Snapshot = snapshot;
        Process = process;

        var totals = new long[s_stateParts.Length];
        var arenas = new List<ArenaBreakdown>();
        foreach (ArenaSummary a in snapshot.Arenas)
        {
            var parts = new long[s_stateParts.Length];
            ulong notResident = 0;
            foreach (HeapChunk c in snapshot.Chunks)
            {
                if (c.Arena != a.Index) continue;
                parts[(int)c.State] += (long)c.ResidentBytes;
                if (c.IsFree) notResident += c.Size - c.ResidentBytes;
            }
            for (int i = 0; i < parts.Length; i++) totals[i] += parts[i];
            arenas.Add(new ArenaBreakdown(a, Parts(parts, s_stateParts.Length - 1), notResident,
                a.PeakSystemBytes > a.SystemBytes ? a.PeakSystemBytes - a.SystemBytes : 0));
            FreeNotResidentBytes += notResident;
        }
        foreach (HeapChunk c in snapshot.Chunks)
            if (c.Arena < 0) totals[(int)c.State] += (long)c.ResidentBytes;
        Arenas = arenas;

        var breakdown = new List<MemoryPart>(Parts(totals, s_stateParts.Length));
        breakdown.Add(new MemoryPart("outside_heap", (long)processAnonymousBytes - (long)snapshot.ResidentBytes));
        Breakdown = breakdown;
        PinnedBy = FindPinning(snapshot);
    }

    /// <summary>The heap at the moment explained.</summary>
    public HeapSnapshot Snapshot { get; }

    /// <summary>The process's statm, read right after the snapshot.</summary>
    public Statm Process { get; }

    /// <summary>The anonymous resident memory explained: statm's resident less shared.</summary>
    public ulong ResidentAnonymousBytes => Process.AnonymousBytes;

    /// <summary>
    /// The resident memory by where it is: the heap's chunks by state (all arenas), the
    /// allocator's metadata, the mapped chunks, and outside_heap (the rest of the process: the
    /// runtime, glibc's own malloc, stacks; smaps' Anonymous total less the heap's resident
    /// bytes). They add up to <see cref="ResidentAnonymousBytes"/> within the kernel's
    /// counting lag (smaps and statm are two readings).
    /// </summary>
    public IReadOnlyList<MemoryPart> Breakdown { get; }

    /// <summary>The sum of <see cref="Breakdown"/>.</summary>
    public long BreakdownTotal => Breakdown.Sum(p => p.Bytes);

    /// <summary>Per arena.</summary>
    public IReadOnlyList<ArenaBreakdown> Arenas { get; }

    /// <summary>Free bytes (chunks and tops) whose pages are not resident: already given back, or never touched.</summary>
    public ulong FreeNotResidentBytes { get; }

    /// <summary>The pinning chunks of every arena, each arena's from top downwards, down to the last that pins a page or more.</summary>
    public IReadOnlyList<PinningChunk> PinnedBy { get; }

    /// <summary>Estimated bytes malloc_trim(0) would return now (<see cref="HeapSnapshot.TrimEstimateBytes"/>).</summary>
    public ulong TrimEstimateBytes => Snapshot.TrimEstimateBytes;

    /// <summary>A byte count of <see cref="Breakdown"/> by name (0 when absent).</summary>
    public long this[string part] => Breakdown.FirstOrDefault(p => p.Name == part).Bytes;

    private static List<MemoryPart> Parts(long[] bytes, int count)
    {
        var list = new List<MemoryPart>(count);
        for (int i = 0; i < count; i++) list.Add(new MemoryPart(s_stateParts[i], bytes[i]));
        return list;
    }

    /// <summary>
    /// From each arena's top downwards (the break run that holds top; the heaps newest first),
    /// the live chunks and the free memory between them. Free memory can go back only once
    /// every live chunk between it and top is freed; fastbin chunks count as free (a
    /// consolidation merges them).
    /// </summary>
    private static List<PinningChunk> FindPinning(HeapSnapshot snapshot)
    {
        var result = new List<PinningChunk>();
        IReadOnlyList<HeapChunk> chunks = snapshot.Chunks;
        // Chunks come region by region: each region's first and last chunk.
        var first = new int[snapshot.Regions.Count];
        var last = new int[snapshot.Regions.Count];
        for (int i = chunks.Count - 1; i >= 0; i--) first[chunks[i].Region] = i;
        for (int i = 0; i < chunks.Count; i++) last[chunks[i].Region] = i;
        foreach (ArenaSummary arena in snapshot.Arenas)
        {
            // The arena's regions that trimming can shrink, newest first: on the break only the
            // run that holds top; on heaps every heap (a heap goes once all above it is top).
            var regions = new List<int>();
            for (int r = snapshot.Regions.Count - 1; r >= 0; r--)
            {
                HeapRegion region = snapshot.Regions[r];
                if (region.Arena != arena.Index) continue;
                if (region.Kind == HeapRegionKind.Break && chunks[last[r]].State != ChunkState.Top) continue;
                regions.Add(r);
                if (region.Kind == HeapRegionKind.Break) break;
            }
            var pinners = new List<(HeapChunk Chunk, ulong Below)>();
            ulong running = 0;
            foreach (int r in regions)
            {
                for (int i = last[r]; i >= first[r]; i--)
                {
                    HeapChunk c = chunks[i];
                    switch (c.State)
                    {
                        case ChunkState.Top:
                            continue;
                        case ChunkState.Fastbin or ChunkState.Unsorted or ChunkState.SmallBin or ChunkState.LargeBin:
                            running += c.ResidentBytes;
                            continue;
                        case ChunkState.Metadata when i == first[r] || i == last[r]:
                            continue; // a heap's header or a fencepost: not a chunk
                        default:
                            pinners.Add((c, running));
                            continue;
                    }
                }
            }
            // Pinner k holds what lies between it and pinner k+1 (or the bottom).
            int keep = -1;
            for (int k = 0; k < pinners.Count; k++)
            {
                ulong pinned = k + 1 < pinners.Count ? pinners[k + 1].Below : running;
                ulong frees = pinned - pinners[k].Below;
                if (frees >= HeapSnapshot.PageSize) keep = k;
                pinners[k] = (pinners[k].Chunk, pinned);
            }
            for (int k = 0; k <= keep; k++)
            {
                ulong before = k == 0 ? 0 : pinners[k - 1].Below;
                result.Add(new PinningChunk(arena.Index, pinners[k].Chunk, k, pinners[k].Below - before, pinners[k].Below));
            }
        }
        return result;
    }

    /// <summary>The explanation in words: the breakdown, per arena, what pins memory and what trimming would return.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        CultureInfo c = CultureInfo.InvariantCulture;
        sb.Append(c, $"anonymous resident memory: {Size(ResidentAnonymousBytes)} (statm); explained: {Size(BreakdownTotal)}\n");
        foreach (MemoryPart p in Breakdown)
            if (p.Bytes != 0) sb.Append(c, $"  {p.Name,-14} {Size(p.Bytes),12}\n");
        sb.Append(c, $"free but not resident (released or never touched): {Size(FreeNotResidentBytes)}\n");
        foreach (ArenaBreakdown a in Arenas)
        {
            sb.Append(c, $"arena {a.Arena.Index} ({(a.Arena.OnBreak ? "on the break" : "on heaps")}, {Size(a.Arena.SystemBytes)} from the kernel");
            if (a.TrimmedBytes > 0) sb.Append(c, $", {Size(a.TrimmedBytes)} trimmed since its peak");
            sb.Append("):");
            foreach (MemoryPart p in a.Parts)
                if (p.Bytes != 0) sb.Append(c, $" {p.Name} {Size(p.Bytes)};");
            sb.Append('\n');
        }
        foreach (string line in PinningSummary()) sb.Append(line).Append('\n');
        sb.Append(c, $"malloc_trim(0) would return about {Size(TrimEstimateBytes)} now\n");
        return sb.ToString();
    }

    /// <summary>One sentence per arena whose live chunks pin a page or more of free memory.</summary>
    public IEnumerable<string> PinningSummary()
    {
        foreach (IGrouping<int, PinningChunk> arena in PinnedBy.GroupBy(p => p.Arena))
        {
            List<PinningChunk> list = arena.ToList();
            PinningChunk deepest = list[^1];
            var groups = list.GroupBy(p => (p.Chunk.State, p.Chunk.Size)).OrderByDescending(g => g.Count()).ToList();
            var kinds = groups.Take(4).Select(g => $"{g.Count()} x {g.Key.Size} B {Describe(g.Key.State)}").ToList();
            if (groups.Count > 4) kinds.Add($"{groups.Count - 4} more size{(groups.Count == 5 ? "" : "s")}");
            HeapChunk highest = list[0].Chunk;
            bool belowTop = Snapshot.Chunks.Any(c => c.State == ChunkState.Top && c.Address == highest.Address + highest.Size);
            string where = belowTop ? "right below top" : $"at 0x{highest.UserAddress:x}";
            yield return string.Create(CultureInfo.InvariantCulture,
                $"arena {arena.Key}: {list.Count} live chunk{(list.Count == 1 ? "" : "s")} ({string.Join(", ", kinds)}), the highest {where}, "
                + $"pin {Size(deepest.PinnedBytes)} of free resident memory below them: freed, it would merge into top and trimming could return it");
        }
    }

    internal static string Describe(ChunkState state) => state switch
    {
        ChunkState.InUse => "in use",
        ChunkState.Tcache => "cached in a tcache",
        ChunkState.Metadata => "tcache struct",
        _ => state.ToString(),
    };

    private static string Size(long bytes) => Os.Sizes.Approximate(bytes);

    private static string Size(ulong bytes) => Os.Sizes.Approximate((long)bytes);

    /// <summary>Write the explanation as one JSON object (names as in <see cref="Breakdown"/>).</summary>
    /// <param name="json">Where.</param>
    /// <param name="describe">Writes more properties of a pinning chunk (e.g. the trace line that allocated it), or null.</param>
    public void WriteJson(Utf8JsonWriter json, Action<Utf8JsonWriter, HeapChunk>? describe = null)
    {
        ArgumentNullException.ThrowIfNull(json);
        json.WriteStartObject();
        json.WriteNumber("resident_anon_bytes", ResidentAnonymousBytes);
        json.WriteStartObject("breakdown");
        foreach (MemoryPart p in Breakdown) json.WriteNumber(p.Name, p.Bytes);
        json.WriteEndObject();
        json.WriteNumber("free_not_resident_bytes", FreeNotResidentBytes);
        json.WriteNumber("trim_estimate_bytes", TrimEstimateBytes);
        json.WriteStartArray("arenas");
        foreach (ArenaBreakdown a in Arenas)
        {
            json.WriteStartObject();
            json.WriteNumber("arena", a.Arena.Index);
            json.WriteBoolean("on_break", a.Arena.OnBreak);
            json.WriteNumber("system_bytes", a.Arena.SystemBytes);
            json.WriteNumber("trimmed_bytes", a.TrimmedBytes);
            json.WriteNumber("free_not_resident_bytes", a.FreeNotResidentBytes);
            foreach (MemoryPart p in a.Parts) json.WriteNumber(p.Name, p.Bytes);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteStartArray("pinned_by");
        foreach (PinningChunk p in PinnedBy)
        {
            json.WriteStartObject();
            json.WriteNumber("arena", p.Arena);
            json.WriteString("address", $"0x{p.Chunk.UserAddress:x}");
            json.WriteNumber("chunk_size", p.Chunk.Size);
            json.WriteString("state", Describe(p.Chunk.State));
            json.WriteNumber("above", p.Above);
            json.WriteNumber("frees_bytes", p.FreesBytes);
            json.WriteNumber("pinned_bytes", p.PinnedBytes);
            describe?.Invoke(json, p.Chunk);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }
}
