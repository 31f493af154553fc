using System.Runtime.InteropServices;
using NativeHeap.Lab;

namespace NativeHeap.Benchmarks;

/// <summary>
/// One allocator interface, as static abstract members so that each benchmark is compiled
/// for its allocator: no virtual or indirect call beyond what the allocator itself costs.
/// </summary>
public unsafe interface IAllocator
{
    static abstract string Name { get; }
    /// <summary>Null when the allocator can be used; else why not (its library is missing).</summary>
    static abstract string? Missing { get; }
    static abstract void* Alloc(nuint size);
    static abstract void* AllocZeroed(nuint size);
    static abstract void Free(void* p);
    static abstract void* Realloc(void* p, nuint size);
    /// <summary>A block at a multiple of <paramref name="alignment"/> (a power of two), freed with <see cref="AlignedFree"/>.</summary>
    static abstract void* AlignedAlloc(nuint size, nuint alignment);
    static abstract void AlignedFree(void* p);
}

/// <summary>NativeHeap.</summary>
public readonly unsafe struct NativeHeapAllocator : IAllocator
{
    public static string Name => "NativeHeap";
    public static string? Missing => null;
    public static void* Alloc(nuint size) => Heap.Alloc(size);
    public static void* AllocZeroed(nuint size) => Heap.AllocZeroed(1, size);
    public static void Free(void* p) => Heap.Free(p);
    public static void* Realloc(void* p, nuint size) => Heap.Realloc(p, size);
    public static void* AlignedAlloc(nuint size, nuint alignment) => Heap.AlignedAlloc(size, alignment);
    public static void AlignedFree(void* p) => Heap.Free(p);
}

/// <summary>glibc through NativeMemory: what .NET programs call today (the baseline).</summary>
public readonly unsafe struct NativeMemoryAllocator : IAllocator
{
    public static string Name => "NativeMemory";
    public static string? Missing => null;
    public static void* Alloc(nuint size) => NativeMemory.Alloc(size);
    public static void* AllocZeroed(nuint size) => NativeMemory.AllocZeroed(size);
    public static void Free(void* p) => NativeMemory.Free(p);
    public static void* Realloc(void* p, nuint size) => NativeMemory.Realloc(p, size);
    public static void* AlignedAlloc(nuint size, nuint alignment) => NativeMemory.AlignedAlloc(size, alignment);
    public static void AlignedFree(void* p) => NativeMemory.AlignedFree(p);
}

/// <summary>glibc's malloc and free by direct LibraryImport.</summary>
public readonly unsafe struct GlibcAllocator : IAllocator
{
    public static string Name => "glibc";
    public static string? Missing => null;
    public static void* Alloc(nuint size) => GlibcMalloc.Malloc(size);
    public static void* AllocZeroed(nuint size) => GlibcMalloc.Calloc(1, size);
    public static void Free(void* p) => GlibcMalloc.Free(p);
    public static void* Realloc(void* p, nuint size) => GlibcMalloc.Realloc(p, size);
    public static void* AlignedAlloc(nuint size, nuint alignment) => GlibcMalloc.Memalign(alignment, size);
    public static void AlignedFree(void* p) => GlibcMalloc.Free(p);
}

/// <summary>mimalloc (mi_malloc / mi_free) from Debian's libmimalloc2.0.</summary>
public readonly unsafe struct MimallocAllocator : IAllocator
{
    private static readonly NativeAllocator Lib = new("libmimalloc.so.2", "mi_malloc", "mi_zalloc", "mi_free", null, "mi_realloc", "mi_malloc_aligned");
    public static string Name => "mimalloc";
    public static string? Missing => Lib.Missing;
    public static void* Alloc(nuint size) => Lib.Malloc(size);
    public static void* AllocZeroed(nuint size) => Lib.Zalloc(size);
    public static void Free(void* p) => Lib.Free(p);
    public static void* Realloc(void* p, nuint size) => Lib.Realloc(p, size);
    public static void* AlignedAlloc(nuint size, nuint alignment) => Lib.MallocAligned(size, alignment);
    public static void AlignedFree(void* p) => Lib.Free(p);
}

/// <summary>
/// jemalloc (mallocx / dallocx) from Debian's libjemalloc2. Its TLS is static: it loads only
/// with GLIBC_TUNABLES=glibc.rtld.optional_static_tls=65536 set when the process starts.
/// </summary>
public readonly unsafe struct JemallocAllocator : IAllocator
{
    private const int MALLOCX_ZERO = 0x40;
    private static readonly NativeAllocator Lib = new("libjemalloc.so.2", "mallocx", null, null, "dallocx", "rallocx", null);
    public static string Name => "jemalloc";
    public static string? Missing => Lib.Missing;
    public static void* Alloc(nuint size) => Lib.Mallocx(size, 0);
    public static void* AllocZeroed(nuint size) => Lib.Mallocx(size, MALLOCX_ZERO);
    public static void Free(void* p) => Lib.Dallocx(p, 0);
    public static void* Realloc(void* p, nuint size) => Lib.Rallocx(p, size, 0);
    /// <summary>MALLOCX_LG_ALIGN: the alignment's log2 in the flags' low bits.</summary>
    public static void* AlignedAlloc(nuint size, nuint alignment) => Lib.Mallocx(size, System.Numerics.BitOperations.TrailingZeroCount(alignment));
    public static void AlignedFree(void* p) => Lib.Dallocx(p, 0);
}

/// <summary>A native allocator's entry points, looked up once; <see cref="Missing"/> says why not.</summary>
internal sealed unsafe class NativeAllocator
{
    public readonly delegate* unmanaged<nuint, void*> Malloc;
    public readonly delegate* unmanaged<nuint, void*> Zalloc;
    public readonly delegate* unmanaged<void*, void> Free;
    public readonly delegate* unmanaged<nuint, int, void*> Mallocx;
    public readonly delegate* unmanaged<void*, int, void> Dallocx;
    public readonly delegate* unmanaged<void*, nuint, void*> Realloc;
    public readonly delegate* unmanaged<void*, nuint, int, void*> Rallocx;
    public readonly delegate* unmanaged<nuint, nuint, void*> MallocAligned;
    public readonly string? Missing;

    public NativeAllocator(string library, string alloc, string? zalloc, string? free, string? dallocx, string realloc, string? mallocAligned)
    {
        if (!NativeLibrary.TryLoad(library, out nint handle))
        {
            Missing = $"{library} is missing or will not load (run benchmarks/setup.sh; jemalloc also needs " +
                "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=65536)";
            return;
        }
        nint a = NativeLibrary.GetExport(handle, alloc);
        if (dallocx is null)
        {
            Malloc = (delegate* unmanaged<nuint, void*>)a;
            Zalloc = (delegate* unmanaged<nuint, void*>)NativeLibrary.GetExport(handle, zalloc!);
            Free = (delegate* unmanaged<void*, void>)NativeLibrary.GetExport(handle, free!);
            Realloc = (delegate* unmanaged<void*, nuint, void*>)NativeLibrary.GetExport(handle, realloc);
            MallocAligned = (delegate* unmanaged<nuint, nuint, void*>)NativeLibrary.GetExport(handle, mallocAligned!);
        }
        else
        {
            Mallocx = (delegate* unmanaged<nuint, int, void*>)a;
            Dallocx = (delegate* unmanaged<void*, int, void>)NativeLibrary.GetExport(handle, dallocx);
            Rallocx = (delegate* unmanaged<void*, nuint, int, void*>)NativeLibrary.GetExport(handle, realloc);
        }
    }
}
