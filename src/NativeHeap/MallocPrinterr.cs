using System.Diagnostics.CodeAnalysis;

namespace NativeHeap;

/// <summary>
/// glibc's malloc_printerr: the one place where a detected corruption is reported, and the
/// one policy that decides how. Every integrity check of the allocator calls
/// <see cref="Raise"/>; nothing else throws <see cref="HeapCorruptionException"/>.
/// </summary>
/// <remarks>
/// Three ways, the first that applies: a C caller (libnativeheap) gets glibc's message on
/// stderr and abort(), because no exception may cross into C; with
/// <see cref="HeapOption.FailFast"/> a .NET process ends with
/// <see cref="Environment.FailFast(string)"/>; otherwise the exception is thrown. The policy
/// is process-wide, like glibc's: it is read at every report and may change at any time.
/// </remarks>
internal static class MallocPrinterr
{
    private static volatile bool s_abortLikeGlibc;
    private static volatile bool s_failFast;

    /// <summary>Set once by libnativeheap when its runtime starts: report as glibc does, for C callers.</summary>
    internal static void AbortLikeGlibc() => s_abortLikeGlibc = true;

    /// <summary>The <see cref="HeapOption.FailFast"/> option: true ends the process, false throws.</summary>
    internal static bool FailFast
    {
        get => s_failFast;
        set => s_failFast = value;
    }

    /// <summary>Report a corruption at <paramref name="address"/> in glibc's words, with the debug heap's <paramref name="details"/> if any.</summary>
    [DoesNotReturn]
    internal static unsafe void Raise(string glibcMessage, void* address, string? details = null)
    {
        if (s_abortLikeGlibc) Os.OsProcess.PrintAndAbort(details is null ? glibcMessage : $"{glibcMessage}: 0x{(nuint)address:x}\n{details}");
        var e = new HeapCorruptionException(glibcMessage, (nuint)address, details);
        if (s_failFast) Environment.FailFast("NativeHeap: " + e.Message);
        throw e;
    }
}
