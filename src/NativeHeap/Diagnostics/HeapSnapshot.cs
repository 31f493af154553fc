using System.Runtime.InteropServices;
using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Diagnostics;

/// <summary>Where a chunk's bytes are, as <see cref="HeapExplanation"/> and the maps report them.</summary>
public enum ChunkState : byte
{
    /// <summary>Allocated by the program.</summary>
    InUse,
    /// <summary>Free, cached in a thread's tcache (in use as far as its arena knows).</summary>
    Tcache,
    /// <summary>Free in a fastbin (in use as far as its neighbours know, until consolidated).</summary>
    Fastbin,
    /// <summary>Free in the unsorted bin.</summary>
    Unsorted,
    /// <summary>Free in a small bin (under 1024 bytes).</summary>
    SmallBin,
    /// <summary>Free in a large bin.</summary>
    LargeBin,
    /// <summary>The arena's top chunk: the free end of its newest memory.</summary>
    Top,
    /// <summary>The allocator's own: heap and arena headers, tcache structs, fenceposts, its bookkeeping mappings.</summary>
    Metadata,
    /// <summary>A block mapped on its own (mmapped chunk), in use.</summary>
    Mmapped,
}

/// <summary>What kind of memory a <see cref="HeapRegion"/> is.</summary>
public enum HeapRegionKind : byte
{
    /// <summary>A run of the program break the main arena took (glibc-2.36 profile).</summary>
    Break,
    /// <summary>A 64 MiB-aligned heap of an arena (its read-write part).</summary>
    Heap,
    /// <summary>One mmapped chunk's mapping.</summary>
    Mapped,
    /// <summary>The allocator's bookkeeping mappings (its context, ownership tables).</summary>
    Bookkeeping,
}

/// <summary>A range of address space the heap owns, with its resident bytes (mincore(2)).</summary>
/// <param name="Kind">What the range is.</param>
/// <param name="Arena">The arena (0: main, then in order of creation); -1 for mapped chunks and bookkeeping.</param>
/// <param name="Start">First byte.</param>
/// <param name="Length">Bytes.</param>
/// <param name="ResidentBytes">Bytes of the range on resident pages (a page the range shares with other memory counts only its part).</param>
public readonly record struct HeapRegion(HeapRegionKind Kind, int Arena, nuint Start, nuint Length, nuint ResidentBytes);

/// <summary>A chunk, or a run of the allocator's metadata, with its resident bytes.</summary>
/// <param name="Address">The chunk's header (for a mapped chunk, its mapping's start).</param>
/// <param name="Size">Bytes from <paramref name="Address"/> (the chunk's size; a mapped chunk's whole mapping).</param>
/// <param name="State">Where the chunk is.</param>
/// <param name="Arena">The arena, as in <see cref="HeapRegion.Arena"/>.</param>
/// <param name="Region">Index of its region in <see cref="HeapSnapshot.Regions"/>.</param>
/// <param name="ResidentBytes">Bytes of the chunk on resident pages.</param>
public readonly record struct HeapChunk(nuint Address, nuint Size, ChunkState State, int Arena, int Region, nuint ResidentBytes)
{
    /// <summary>Free from the program's view (cached, binned or top).</summary>
    public bool IsFree => State is ChunkState.Tcache or ChunkState.Fastbin or ChunkState.Unsorted
        or ChunkState.SmallBin or ChunkState.LargeBin or ChunkState.Top;

    /// <summary>The address malloc returned for it (the chunk's header plus 16).</summary>
    public nuint UserAddress => Address + Chunk.HeaderSize;
}

/// <summary>One arena's totals at the snapshot.</summary>
/// <param name="Index">0 for the main arena, then in order of creation.</param>
/// <param name="OnBreak">The arena grows on the program break (else on heaps).</param>
/// <param name="SystemBytes">system_mem: the memory it holds from the kernel now.</param>
/// <param name="PeakSystemBytes">max_system_mem: the most it ever held.</param>
/// <param name="Threads">Threads attached to it.</param>
public readonly record struct ArenaSummary(int Index, bool OnBreak, nuint SystemBytes, nuint PeakSystemBytes, nuint Threads);

/// <summary>
/// Every chunk of every arena, every mapped chunk and the allocator's bookkeeping, each with
/// the bytes of it the kernel holds resident (mincore(2), per page), at one moment: the data
/// <see cref="HeapExplanation"/> and the maps are made from. Take one with <see cref="Heap.Snapshot"/>.
/// </summary>
/// <remarks>
/// Each arena is walked under its lock. Chunks cached in a thread's tcache are found for .NET
/// threads; C threads' tcaches (libnativeheap) are not visible here and their chunks show as
/// in use. A page shared by two chunks counts for each the bytes it holds of it, so resident
/// bytes add up across chunks to the regions' and the regions' to what mincore says.
/// </remarks>
public sealed class HeapSnapshot
{
    private readonly List<(nuint PageStart, byte[] Vector)> _pages;

    internal HeapSnapshot(List<HeapRegion> regions, List<HeapChunk> chunks, List<ArenaSummary> arenas, List<(nuint, byte[])> pages,
        in MallocParams mp, ulong trimEstimate)
    {
        _pages = pages;
        TrimEstimateBytes = trimEstimate;
        Regions = regions;
        Chunks = chunks;
        Arenas = arenas;
        TopPad = mp.TopPad;
        TrimThreshold = mp.TrimThreshold;
        TrimTcache = mp.TrimTcache != 0;
    }

    /// <summary>The regions: each arena's break runs or heaps (oldest first), then mapped chunks, then bookkeeping.</summary>
    public IReadOnlyList<HeapRegion> Regions { get; }

    /// <summary>The chunks, region by region, in address order within each region; they tile each region exactly.</summary>
    public IReadOnlyList<HeapChunk> Chunks { get; }

    /// <summary>The arenas: the main one first, then in order of creation.</summary>
    public IReadOnlyList<ArenaSummary> Arenas { get; }

    /// <summary>The page size residency is counted in.</summary>
    public static nuint PageSize => OsMemory.PageSize;

    /// <summary>M_TOP_PAD at the snapshot: what trimming leaves of top.</summary>
    public nuint TopPad { get; }

    /// <summary>M_TRIM_THRESHOLD at the snapshot (the dynamic threshold included).</summary>
    public nuint TrimThreshold { get; }

    /// <summary>Whether malloc_trim empties the caller's tcache first (the nativeheap profile).</summary>
    public bool TrimTcache { get; }

    /// <summary>
    /// What malloc_trim(0) would give back now, estimated as glibc 2.36's mtrim works: the
    /// fastbins merged with their free neighbours, the whole resident pages inside every free
    /// chunk past its first 48 bytes, and the main arena's top beyond <see cref="TopPad"/>
    /// (other arenas' tops stay). With <see cref="TrimTcache"/> the tcaches' chunks count as
    /// freed first: all threads', though malloc_trim empties only the caller's.
    /// </summary>
    public ulong TrimEstimateBytes { get; }

    /// <summary>Bytes of [<paramref name="start"/>, <paramref name="end"/>) on resident pages, within region <paramref name="region"/>.</summary>
    public ulong ResidentBytesIn(int region, nuint start, nuint end)
    {
        HeapRegion r = Regions[region];
        start = Math.Max(start, r.Start);
        end = Math.Min(end, r.Start + r.Length);
        var (pageStart, vector) = _pages[region];
        return start < end ? HeapWalk.Count(vector, pageStart, start, end - start) : 0;
    }

    /// <summary>Resident bytes of the heap's whole memory: the sum of the regions'.</summary>
    public ulong ResidentBytes
    {
        get
        {
            ulong sum = 0;
            foreach (HeapRegion r in Regions) sum += r.ResidentBytes;
            return sum;
        }
    }
}

/// <summary>
/// Takes a <see cref="HeapSnapshot"/>: walks each arena's memory chunk by chunk (as the heap
/// check does, but without judging it), names each chunk's state from the bins, fastbins and
/// the given tcaches, and asks mincore which pages are resident.
/// </summary>
internal static unsafe class HeapWalk
{
    internal static HeapSnapshot Take(MallocContext* ctx, List<nint> tcaches) => Take(ctx, tcaches, [], [], [], []);

    private static HeapSnapshot Take(MallocContext* ctx, List<nint> tcaches, List<HeapRegion> regions, List<HeapChunk> chunks,
        List<ArenaSummary> arenas, List<(nuint, byte[])> pages)
    {
        // glibc links a new arena right after the main one: the list is newest first.
        var order = new List<nint> { (nint)(&ctx->Main) };
        for (MallocState* a = ctx->Main.Next; a != &ctx->Main; a = a->Next) order.Insert(1, (nint)a);

        for (int index = 0; index < order.Count; index++)
        {
            var av = (MallocState*)order[index];
            FutexLock.Enter(&av->Mutex);
            try
            {
                bool onHeaps = Ptmalloc.OnHeaps(ctx, av);
                arenas.Add(new ArenaSummary(index, !onHeaps, av->SystemMem, av->MaxSystemMem, av->AttachedThreads));
                if (av->Top == MallocState.InitialTop(av)) continue;
                HashSet<nuint> fast = FastbinChunks(av), unsorted = UnsortedChunks(av);
                var own = new List<ArenaRegion>();
                foreach (ArenaRegion r in ArenaRegions.Of(ctx, av)) own.Add(r);
                if (onHeaps) own.Reverse(); // oldest first, as the break's runs
                foreach (ArenaRegion r in own) AddRegion(regions, chunks, pages, index, r, av, fast, unsorted);
            }
            finally
            {
                FutexLock.Exit(&av->Mutex);
            }
        }

        MarkTcaches(chunks, tcaches);
        ulong trim = TrimEstimate(chunks, pages, ctx->Mp.TopPad, ctx->Mp.TrimTcache != 0);
        AddMapped(ctx, regions, chunks, pages);
        AddBookkeeping(regions, chunks, pages, (nuint)ctx, OsMemory.AlignUp((nuint)sizeof(MallocContext), OsMemory.PageSize));
        AddBookkeeping(regions, chunks, pages, (nuint)ctx->Owned.HeapSlots, Ownership.Slots / 8);
        FutexLock.Enter(&ctx->Owned.MappedLock);
        try
        {
            if (ctx->Owned.Mapped != null)
                AddBookkeeping(regions, chunks, pages, (nuint)ctx->Owned.Mapped, ctx->Owned.MappedCapacity * (nuint)sizeof(nuint));
        }
        finally
        {
            FutexLock.Exit(&ctx->Owned.MappedLock);
        }
        return new HeapSnapshot(regions, chunks, arenas, pages, ctx->Mp, trim);
    }

    /// <summary>
    /// See <see cref="HeapSnapshot.TrimEstimateBytes"/>. Runs of neighbouring free chunks
    /// stand for the chunks consolidation would make; a run that reaches top joins it.
    /// </summary>
    private static ulong TrimEstimate(List<HeapChunk> chunks, List<(nuint, byte[])> pages, nuint topPad, bool trimTcache)
    {
        ulong total = 0;
        nuint ps = OsMemory.PageSize;
        int i = 0;
        while (i < chunks.Count)
        {
            HeapChunk c = chunks[i];
            bool free = c.State is ChunkState.Fastbin or ChunkState.Unsorted or ChunkState.SmallBin or ChunkState.LargeBin
                || (trimTcache && c.State == ChunkState.Tcache);
            if (!free && c.State != ChunkState.Top)
            {
                i++;
                continue;
            }
            // A run of free chunks in one region, perhaps ending in top.
            nuint start = c.Address, end = start;
            bool reachesTop = false;
            int j = i;
            for (; j < chunks.Count && chunks[j].Region == c.Region; j++)
            {
                HeapChunk d = chunks[j];
                if (d.State == ChunkState.Top)
                {
                    end = d.Address + d.Size;
                    reachesTop = true;
                    j++;
                    break;
                }
                if (!(d.State is ChunkState.Fastbin or ChunkState.Unsorted or ChunkState.SmallBin or ChunkState.LargeBin
                    || (trimTcache && d.State == ChunkState.Tcache))) break;
                end = d.Address + d.Size;
            }
            i = Math.Max(j, i + 1);
            if (!reachesTop)
            {
                // mtrim: the pages inside the chunk past its header and links.
                total += ResidentIn(pages, c.Region, OsMemory.AlignUp(start + Chunk.StructSize, ps), OsMemory.AlignDown(end, ps));
            }
            else if (c.Arena == 0)
            {
                // systrim / heap_trim: top shrinks to the pad (and MINSIZE), in whole pages.
                nuint keep = OsMemory.AlignUp(start + topPad + Chunk.MinSize, ps);
                if (end > keep) total += ResidentIn(pages, c.Region, keep, end);
            }
        }
        return total;
    }

    private static ulong ResidentIn(List<(nuint PageStart, byte[] Vector)> pages, int region, nuint a, nuint end) =>
        a < end ? Count(pages[region].Vector, pages[region].PageStart, a, end - a) : 0;

    /// <summary>One region of an arena: a heap's headers, then chunks to top or a fencepost.</summary>
    private static void AddRegion(List<HeapRegion> regions, List<HeapChunk> chunks, List<(nuint, byte[])> pages, int arena,
        ArenaRegion r, MallocState* av, HashSet<nuint> fast, HashSet<nuint> unsorted)
    {
        int region = regions.Count;
        int first = chunks.Count;
        nuint start = (nuint)r.Start, end = (nuint)r.End;
        if ((byte*)r.FirstChunk > r.Start) chunks.Add(new HeapChunk(start, (nuint)r.FirstChunk - start, ChunkState.Metadata, arena, region, 0));
        for (var c = new RegionChunks(r.FirstChunk, av->Top, r.End); c.MoveNext();)
        {
            Chunk* p = c.Current;
            nuint size = c.Size;
            if (c.Kind == RegionChunk.PastEnd) break;
            if (c.Kind == RegionChunk.Top)
            {
                chunks.Add(new HeapChunk((nuint)p, end - (nuint)p, ChunkState.Top, arena, region, 0));
                break;
            }
            if (c.Kind == RegionChunk.Fencepost)
            {
                // A fencepost (a header-sized chunk, or the 0-size end of a heap): the rest is the allocator's.
                chunks.Add(new HeapChunk((nuint)p, end - (nuint)p, ChunkState.Metadata, arena, region, 0));
                break;
            }
            if (size < Chunk.MinSize || Chunk.Misaligned(Chunk.ToMem(p)) || size > end - (nuint)p)
                MallocPrinterr.Raise("heap walk: invalid chunk size", p);
            ChunkState state = !Chunk.InUse(p)
                ? unsorted.Contains((nuint)p) ? ChunkState.Unsorted
                    : BinIndex.InSmallbinRange(size) ? ChunkState.SmallBin : ChunkState.LargeBin
                : fast.Contains((nuint)p) ? ChunkState.Fastbin : ChunkState.InUse;
            chunks.Add(new HeapChunk((nuint)p, size, state, arena, region, 0));
        }
        nuint resident = Resident(chunks, pages, first, start, end - start);
        regions.Add(new HeapRegion(r.Heap != null ? HeapRegionKind.Heap : HeapRegionKind.Break, arena, start, end - start, resident));
    }

    /// <summary>
    /// Fill in the resident bytes of chunks[first..] from one mincore of [start, start+length),
    /// and return the range's own resident bytes (which the chunks must add up to).
    /// </summary>
    private static nuint Resident(List<HeapChunk> chunks, List<(nuint, byte[])> pages, int first, nuint start, nuint length)
    {
        nuint ps = OsMemory.PageSize;
        nuint pageStart = OsMemory.AlignDown(start, ps);
        var vector = new byte[(OsMemory.AlignUp(start + length, ps) - pageStart) / ps];
        fixed (byte* vec = vector) OsMemory.Residency(pageStart, (nuint)vector.Length, vec);
        pages.Add((pageStart, vector));
        Span<HeapChunk> span = CollectionsMarshal.AsSpan(chunks)[first..];
        foreach (ref HeapChunk c in span) c = c with { ResidentBytes = Count(vector, pageStart, c.Address, c.Size) };
        return Count(vector, pageStart, start, length);
    }

    /// <summary>Bytes of [a, a+size) on resident pages, the vector starting at <paramref name="pageStart"/>.</summary>
    internal static nuint Count(byte[] vector, nuint pageStart, nuint a, nuint size)
    {
        nuint ps = OsMemory.PageSize;
        nuint end = a + size, resident = 0;
        while (a < end)
        {
            nuint page = OsMemory.AlignDown(a, ps);
            nuint next = Math.Min(page + ps, end);
            if ((vector[(page - pageStart) / ps] & 1) != 0) resident += next - a;
            a = next;
        }
        return resident;
    }

    private static HashSet<nuint> FastbinChunks(MallocState* av)
    {
        var set = new HashSet<nuint>();
        for (int i = 0; i < BinIndex.NFastBins; i++)
        {
            const string unaligned = "heap walk: unaligned fastbin chunk detected";
            Chunk** fb = MallocState.Fastbin(av, i);
            for (Chunk* p = Ptmalloc.FastbinWalked(fb, *fb, unaligned); p != null; p = Ptmalloc.FastbinWalked(fb, Chunk.Reveal(&p->Fd), unaligned))
                if (!set.Add((nuint)p)) MallocPrinterr.Raise("heap walk: a fastbin's links form a cycle", p);
        }
        return set;
    }

    private static HashSet<nuint> UnsortedChunks(MallocState* av)
    {
        var set = new HashSet<nuint>();
        Chunk* bin = MallocState.Unsorted(av);
        for (Chunk* p = bin->Bk; p != bin; p = p->Bk)
            if (!set.Add((nuint)p)) MallocPrinterr.Raise("heap walk: the unsorted bin's links form a cycle", p);
        return set;
    }

    /// <summary>
    /// Mark the chunks the tcaches hold (and each tcache's own chunk as metadata). Every link
    /// is followed only once it names a chunk the walk found in use, so a tcache another
    /// thread is changing can make the marks stale but never makes this read wild memory.
    /// </summary>
    private static void MarkTcaches(List<HeapChunk> chunks, List<nint> tcaches)
    {
        if (tcaches.Count == 0) return;
        var inUse = new Dictionary<nuint, int>();
        for (int i = 0; i < chunks.Count; i++)
            if (chunks[i].State == ChunkState.InUse) inUse[chunks[i].Address] = i;

        bool Mark(void* mem, ChunkState state)
        {
            if (mem == null || !inUse.Remove((nuint)Chunk.FromMem(mem), out int i)) return false;
            chunks[i] = chunks[i] with { State = state };
            return true;
        }

        foreach (nint t in tcaches)
        {
            var tc = (Tcache*)t;
            if (!Mark(tc, ChunkState.Metadata)) continue; // not a chunk of this heap's: nothing to trust
            for (int i = 0; i < BinIndex.TcacheMaxBins; i++)
            {
                var e = (TcacheEntry*)tc->Entries[i];
                for (int n = 0; n < tc->Counts[i] && Mark(e, ChunkState.Tcache); n++) e = Chunk.Reveal(&e->Next);
            }
            for (int k = 0; k < BinIndex.TcacheLargeBins; k++)
            {
                var e = (TcacheEntry*)tc->LargeEntries[k];
                for (int n = 0; n < tc->LargeCounts[k] && Mark(e, ChunkState.Tcache); n++) e = Chunk.Reveal(&e->Next);
            }
        }
    }

    /// <summary>
    /// Each mmapped chunk as a region. Under the set's lock throughout: free and realloc take a
    /// chunk out of the set before they unmap or move it, so every chunk read here is mapped.
    /// </summary>
    private static void AddMapped(MallocContext* ctx, List<HeapRegion> regions, List<HeapChunk> chunks, List<(nuint, byte[])> pages)
    {
        FutexLock.Enter(&ctx->Owned.MappedLock);
        try
        {
            var mapped = new List<nuint>();
            for (nuint i = 0; i < ctx->Owned.MappedCapacity; i++)
                if (ctx->Owned.Mapped[i] > 1) mapped.Add(ctx->Owned.Mapped[i]);
            mapped.Sort();
            foreach (nuint v in mapped)
            {
                var p = (Chunk*)v;
                // An mmapped chunk's mapping starts prev_size bytes before it (memalign's offset).
                nuint start = (nuint)p - p->PrevSize, length = p->PrevSize + Chunk.SizeOf(p);
                int first = chunks.Count;
                chunks.Add(new HeapChunk(start, length, ChunkState.Mmapped, -1, regions.Count, 0));
                regions.Add(new HeapRegion(HeapRegionKind.Mapped, -1, start, length, Resident(chunks, pages, first, start, length)));
            }
        }
        finally
        {
            FutexLock.Exit(&ctx->Owned.MappedLock);
        }
    }

    private static void AddBookkeeping(List<HeapRegion> regions, List<HeapChunk> chunks, List<(nuint, byte[])> pages, nuint start, nuint length)
    {
        if (start == 0 || length == 0) return;
        int first = chunks.Count;
        chunks.Add(new HeapChunk(start, length, ChunkState.Metadata, -1, regions.Count, 0));
        regions.Add(new HeapRegion(HeapRegionKind.Bookkeeping, -1, start, length, Resident(chunks, pages, first, start, length)));
    }
}
