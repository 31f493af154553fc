using NativeHeap.Arenas;
using NativeHeap.Chunks;
using NativeHeap.Diagnostics;

namespace NativeHeap.Tests;

/// <summary>
/// A heap of its own for one test: glibc's defaults, a fresh arena on the break, no other
/// caller. Decisions (which chunk, which address) are then those of a fresh glibc process.
/// </summary>
internal sealed unsafe class PrivateHeap : IDisposable
{
    internal readonly MallocContext* Ctx;

    internal PrivateHeap(int tcacheCount = 7, bool useBrk = true)
    {
        Ctx = MallocContext.Create(useBrk: useBrk);
        if (tcacheCount != 7) Set(HeapOption.TcacheCount, tcacheCount);
    }

    /// <summary>A private heap with <paramref name="profile"/>'s defaults (on mmap'd heaps for nativeheap, as the process heap).</summary>
    internal PrivateHeap(HeapProfile profile)
    {
        Ctx = MallocContext.Create(profile);
    }

    internal MallocState* Arena => &Ctx->Main;

    internal void Set(HeapOption option, long value) => Assert.Null(Ptmalloc.SetOption(Ctx, ref Ctx->Solo, option, value));

    internal byte* Malloc(nuint n)
    {
        var p = (byte*)Ptmalloc.Malloc(Ctx, ref Ctx->Solo, n);
        Assert.True(p != null, $"malloc({n}) returned null");
        return p;
    }

    /// <summary><paramref name="n"/> blocks of <paramref name="size"/> bytes, then a small one that keeps them off top.</summary>
    internal byte*[] MallocKeptOffTop(int n, nuint size)
    {
        var blocks = new byte*[n];
        for (int i = 0; i < n; i++) blocks[i] = Malloc(size);
        Malloc(16);
        return blocks;
    }

    internal byte* Calloc(nuint n, nuint size) => (byte*)Ptmalloc.Calloc(Ctx, ref Ctx->Solo, n, size);

    internal byte* Realloc(void* p, nuint n) => (byte*)Ptmalloc.Realloc(Ctx, ref Ctx->Solo, p, n, out _);

    internal byte* Memalign(nuint alignment, nuint n) => (byte*)Ptmalloc.Memalign(Ctx, ref Ctx->Solo, alignment, n);

    internal void Free(void* p) => Ptmalloc.Free(Ctx, ref Ctx->Solo, p);

    internal bool Trim(nuint pad) => Ptmalloc.MallocTrim(Ctx, ref Ctx->Solo, pad);

    internal HeapInfo Info => MallInfo.Compute(Ctx);

    internal void Check() => HeapCheck.Run(Ctx, Ctx->Solo.Tcache);

    internal Bins.Tcache* Tcache => Ctx->Solo.Tcache;

    internal static nuint ChunkSize(void* mem) => Chunk.SizeOf(Chunk.FromMem(mem));

    internal static bool IsMapped(void* mem) => Chunk.IsMapped(Chunk.FromMem(mem));

    internal nuint TopSize => Chunk.SizeOf(Ctx->Main.Top);

    /// <summary>
    /// Two 40-byte chunks freed into their fastbin (the tcache must be off), then a write after
    /// free into the second one's safe-linked link, so that it no longer reveals an aligned
    /// pointer: the way a buggy program breaks a fastbin. Returns the second chunk's memory.
    /// </summary>
    internal byte* FastbinWithAnOverwrittenLink()
    {
        byte* a = Malloc(40), b = Malloc(40);
        Malloc(40); // keeps them away from top
        Free(a);
        Free(b);
        var cb = (Chunk*)(b - 16);
        cb->Fd = (Chunk*)((nuint)cb->Fd ^ 8);
        return b;
    }

    internal byte* Top => (byte*)Ctx->Main.Top;

    public void Dispose() => MallocContext.Destroy(Ctx);
}
