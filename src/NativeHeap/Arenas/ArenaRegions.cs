using NativeHeap.Chunks;

namespace NativeHeap.Arenas;

/// <summary>One region of an arena's memory: a run of the program break, or a heap.</summary>
internal readonly unsafe struct ArenaRegion(byte* start, Chunk* firstChunk, byte* end, HeapHeader* heap)
{
    /// <summary>Its first byte: a heap's header, or a break run's first chunk.</summary>
    public readonly byte* Start = start;
    /// <summary>Where its chunks begin: after a heap's header (and, in an arena's first heap, the arena).</summary>
    public readonly Chunk* FirstChunk = firstChunk;
    /// <summary>One past its last byte: a heap's read-write end; where the next break run began, or top's end for the newest.</summary>
    public readonly byte* End = end;
    /// <summary>The heap's header; null for a break run.</summary>
    public readonly HeapHeader* Heap = heap;
}

/// <summary>
/// The regions of one arena, which every walk of its chunks and the ownership test go through:
/// a main arena on the break has its runs, oldest first (<see cref="Segments"/>); an arena on
/// heaps its heaps, newest first (the chain from top's heap), none before its first growth.
/// Read under the arena's lock for a consistent view. A heap's predecessor is read before the
/// heap is handed out, so that the caller may unmap it.
/// </summary>
internal unsafe ref struct ArenaRegions
{
    private readonly MallocContext* _ctx;
    private readonly MallocState* _av;
    private readonly bool _onHeaps;
    private HeapHeader* _nextHeap;
    private int _nextRun;

    private ArenaRegions(MallocContext* ctx, MallocState* av)
    {
        _ctx = ctx;
        _av = av;
        _onHeaps = Ptmalloc.OnHeaps(ctx, av);
        // Before its first growth an arena's top is its bins' initial one, in no heap.
        if (_onHeaps && av->Top != MallocState.InitialTop(av)) _nextHeap = HeapHeader.For(av->Top);
    }

    internal static ArenaRegions Of(MallocContext* ctx, MallocState* av) => new(ctx, av);

    public readonly ArenaRegions GetEnumerator() => this;

    public ArenaRegion Current { get; private set; }

    public bool MoveNext()
    {
        if (_onHeaps)
        {
            HeapHeader* h = _nextHeap;
            if (h == null) return false;
            _nextHeap = h->Prev;
            Current = new ArenaRegion((byte*)h, HeapHeader.FirstChunk(h), (byte*)h + h->Size, h);
            return true;
        }
        // Count and top are read at each step: the ownership test reads them without the lock.
        Segments* runs = &_ctx->Segments;
        if (_nextRun >= runs->Count) return false;
        int s = _nextRun++;
        var start = (byte*)runs->Starts[s];
        byte* end = s == runs->Count - 1 ? (byte*)_av->Top + Chunk.SizeOf(_av->Top) : (byte*)runs->Ends[s];
        Current = new ArenaRegion(start, (Chunk*)start, end, null);
        return true;
    }
}

/// <summary>What a step of <see cref="RegionChunks"/> found.</summary>
internal enum RegionChunk : byte
{
    /// <summary>A chunk; the walk goes on past it.</summary>
    Chunk,
    /// <summary>The arena's top: the walk ends.</summary>
    Top,
    /// <summary>A chunk of at most a header's size: a fencepost (16 bytes), a heap's end (0), or a broken size. The walk ends.</summary>
    Fencepost,
    /// <summary>At or past the region's end without meeting top or a fencepost: the walk ends.</summary>
    PastEnd,
}

/// <summary>
/// The chunks of one region, in address order, for the walks that judge them (the heap check)
/// and those that report them (the snapshot): each step names what it found, and the walk ends
/// at top, at a fencepost or past the end. A step reads nothing past what the step before
/// judged: the next chunk is found from the size the caller has seen.
/// </summary>
internal unsafe ref struct RegionChunks
{
    private readonly Chunk* _top;
    private readonly byte* _end;
    private Chunk* _next;

    /// <param name="first">The region's first chunk.</param>
    /// <param name="top">The arena's top.</param>
    /// <param name="end">Where the region ends; null: no bound (the walk ends at top or a fencepost).</param>
    internal RegionChunks(Chunk* first, Chunk* top, byte* end)
    {
        _next = first;
        _top = top;
        _end = end;
    }

    public readonly RegionChunks GetEnumerator() => this;

    /// <summary>The chunk of this step.</summary>
    public Chunk* Current { get; private set; }

    /// <summary>Its size (0 for top and past the end).</summary>
    public nuint Size { get; private set; }

    /// <summary>What it is.</summary>
    public RegionChunk Kind { get; private set; }

    public bool MoveNext()
    {
        Chunk* p = _next;
        if (p == null) return false;
        Current = p;
        _next = null;
        Size = 0;
        if (_end != null && (byte*)p >= _end) Kind = RegionChunk.PastEnd;
        else if (p == _top) Kind = RegionChunk.Top;
        else if ((Size = Chunk.SizeOf(p)) <= Chunk.HeaderSize) Kind = RegionChunk.Fencepost;
        else
        {
            Kind = RegionChunk.Chunk;
            _next = Chunk.At(p, Size);
        }
        return true;
    }
}
