using System.Runtime.InteropServices;
using System.Security.Cryptography;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

/// <summary>
/// Everything glibc keeps in globals for one malloc: the parameters (mp_), the main arena,
/// the tcache and its key, plus the list of address ranges the main arena owns (which the
/// heap walk needs). It lives in an mmap'd block of its own. <see cref="Heap"/> uses one
/// context for the process; tests make private ones to watch decisions from a known state.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MallocContext
{
    public MallocParams Mp;
    public MallocState Main;
    /// <summary>The tcache; the seam that moves to thread-local storage once there are threads.</summary>
    public Tcache* Tcache;
    public ulong TcacheKey;
    /// <summary>Nonzero while the tcache is being created (its own allocation must not recurse).</summary>
    public int TcacheInitializing;
    /// <summary>How often growth found the break moved by someone else since the heap last grew.</summary>
    public long ForeignBreaks;
    public Segments Segments;

    /// <summary>Create a context with glibc's defaults in its own mapping.</summary>
    internal static MallocContext* Create()
    {
        nuint size = OsMemory.AlignUp((nuint)sizeof(MallocContext), OsMemory.PageSize);
        var ctx = (MallocContext*)OsMemory.Map(size);
        if (ctx == null)
            throw new OutOfMemoryException(OsMemory.LastFailure);
        ctx->Mp.SetDefaults();
        MallocState.Init(&ctx->Main, contiguous: true);
        Span<byte> key = stackalloc byte[sizeof(ulong)];
        RandomNumberGenerator.Fill(key);
        ctx->TcacheKey = MemoryMarshal.Read<ulong>(key);
        return ctx;
    }

    /// <summary>
    /// Discard a context made for a test or a replay, with every block in it. Its break memory
    /// goes back when it is still the last thing on the break; mmapped chunks still live are
    /// not tracked and stay mapped.
    /// </summary>
    internal static void Destroy(MallocContext* ctx)
    {
        MallocState* av = &ctx->Main;
        if (ctx->Segments.Count == 1 && av->Top != MallocState.InitialTop(av))
        {
            byte* topEnd = (byte*)av->Top + Chunk.SizeOf(av->Top);
            using (OsMemory.BreakLock.EnterScope())
            {
                if (OsMemory.Sbrk(0) == topEnd)
                    OsMemory.Sbrk(-(nint)(topEnd - ctx->Mp.SbrkBase));
            }
        }
        OsMemory.Unmap(ctx, OsMemory.AlignUp((nuint)sizeof(MallocContext), OsMemory.PageSize));
    }
}

/// <summary>
/// The start of each separate run of memory the main arena has taken (the first sbrk, each
/// growth after a foreign sbrk, each mmap fallback). Each run ends at top or at a fencepost
/// pair, so a heap walk can visit every chunk. Past <see cref="Capacity"/> runs the walk
/// covers the first ones only and says so.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Segments
{
    internal const int Capacity = 256;
    public int Count;
    public int Overflowed;
    public fixed ulong Starts[Capacity];

    internal static void Add(Segments* s, Chunk* start)
    {
        if (s->Count < Capacity) s->Starts[s->Count++] = (ulong)start;
        else s->Overflowed = 1;
    }
}
