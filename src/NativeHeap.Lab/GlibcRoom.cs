namespace NativeHeap.Lab;

/// <summary>
/// Keeps glibc's own malloc off the program break during a measurement. In a .NET process the
/// runtime mallocs from glibc's main arena at moments nobody chooses (finalizer registration,
/// the JIT, dlopen); when glibc's top is short that moves the break, right above a NativeHeap
/// heap on the break, which then has to start a new region. Seen in child processes: a
/// 31,568-byte runtime malloc landed exactly at NativeHeap's top end on most runs.
/// </summary>
internal static unsafe class GlibcRoom
{
    private const int M_TOP_PAD = -2;
    private static int s_done;

    /// <summary>
    /// Give glibc's main arena <paramref name="pad"/> bytes of top to spare (M_TOP_PAD, then one
    /// growth): untouched, so no resident memory, and the break stays where it is.
    /// </summary>
    internal static void Make(int pad = 64 << 20)
    {
        if (Interlocked.Exchange(ref s_done, 1) != 0) return;
        GlibcMalloc.Mallopt(M_TOP_PAD, pad);
        GlibcMalloc.Free(GlibcMalloc.Malloc(100_000));
    }
}
