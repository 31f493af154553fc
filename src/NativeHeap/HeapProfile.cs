namespace NativeHeap;

/// <summary>
/// What the heap is for, chosen once before its first allocation (<c>profile</c> in
/// NATIVEHEAP_TUNABLES, or <see cref="HeapOption.Profile"/>): every option takes the profile's
/// value, and a single option set after it overrides that one value.
/// </summary>
public enum HeapProfile
{
    /// <summary>
    /// <c>nativeheap</c>, the default: glibc's chunks, bins, arenas and integrity checks, the
    /// main arena on mmap'd heaps, and what glibc changed after 2.36 for speed and memory or
    /// still lacks (a deeper tcache bounded in bytes, calloc from the tcache). README lists
    /// each difference from glibc 2.36 with its figures.
    /// </summary>
    NativeHeap = 0,

    /// <summary>
    /// <c>glibc-2.36</c>: glibc 2.36's decisions exactly, the main arena on the program break,
    /// so that the same calls put every block where glibc puts it. The RSS lab runs on it.
    /// </summary>
    Glibc236 = 1,
}
