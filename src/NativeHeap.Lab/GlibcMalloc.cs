using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Interop;

// Every signature here is blittable; mallinfo2's struct is declared in another assembly (the
// library), which the source generator passes through as it is only with this.
[assembly: DisableRuntimeMarshalling]

namespace NativeHeap.Lab;

/// <summary>
/// glibc's own malloc (libc.so.6), the reference NativeHeap is compared with: the replay
/// target <see cref="GlibcTarget"/>, <see cref="GlibcRoom"/>, and the tests and benchmarks
/// that need a block or a setting of glibc's.
/// </summary>
internal static unsafe partial class GlibcMalloc
{
    private const string Lib = "libc.so.6";

    // No errno is read: these report failure as NULL, and the callers only replay or benchmark.
    [LibraryImport(Lib, EntryPoint = "malloc")]
    internal static partial void* Malloc(nuint size);

    [LibraryImport(Lib, EntryPoint = "calloc")]
    internal static partial void* Calloc(nuint count, nuint size);

    [LibraryImport(Lib, EntryPoint = "realloc")]
    internal static partial void* Realloc(void* block, nuint size);

    [LibraryImport(Lib, EntryPoint = "memalign")]
    internal static partial void* Memalign(nuint alignment, nuint size);

    [LibraryImport(Lib, EntryPoint = "free")]
    internal static partial void Free(void* block);

    [LibraryImport(Lib, EntryPoint = "malloc_usable_size")]
    internal static partial nuint MallocUsableSize(void* block);

    [LibraryImport(Lib, EntryPoint = "malloc_trim")]
    internal static partial int MallocTrim(nuint pad);

    [LibraryImport(Lib, EntryPoint = "mallopt")]
    internal static partial int Mallopt(int param, int value);

    // Its struct is the library's Libc.MallInfo2, which libnativeheap's nh_mallinfo2 returns too.
    [LibraryImport(Lib, EntryPoint = "mallinfo2")]
    internal static partial Libc.MallInfo2 Mallinfo2();
}
