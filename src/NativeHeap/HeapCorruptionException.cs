using System.Diagnostics.CodeAnalysis;

namespace NativeHeap;

/// <summary>
/// NativeHeap found its heap corrupted or was handed a pointer it cannot have returned: a
/// double free, a foreign or misaligned pointer, an overwritten chunk header or list link.
/// The message is glibc's for the same finding (e.g. "free(): double free detected in
/// tcache 2") followed by the address it concerns, so that it reads the same as the abort
/// message a C programmer knows.
/// </summary>
public sealed class HeapCorruptionException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="glibcMessage">glibc's words for the finding.</param>
    /// <param name="address">The chunk or pointer concerned.</param>
    public HeapCorruptionException(string glibcMessage, nuint address)
        : base($"{glibcMessage}: 0x{address:x}")
    {
        GlibcMessage = glibcMessage;
        Address = address;
    }

    /// <summary>glibc's words for the finding, without the address.</summary>
    public string GlibcMessage { get; }

    /// <summary>The chunk or pointer concerned.</summary>
    public nuint Address { get; }

    /// <summary>
    /// The failure policy (<see cref="HeapOption.FailFast"/>): false throws this exception (the
    /// .NET way), true ends the process with <see cref="Environment.FailFast(string)"/> as
    /// glibc's malloc_printerr aborts.
    /// </summary>
    internal static volatile bool FailFast;

    /// <summary>
    /// Set by the native library (C callers): report as glibc's malloc_printerr does, the
    /// message alone on stderr and abort(), so that no exception crosses into C.
    /// </summary>
    internal static bool AbortLikeGlibc;

    /// <summary>malloc_printerr: report a corruption at <paramref name="address"/>.</summary>
    [DoesNotReturn]
    internal static unsafe void Raise(string glibcMessage, void* address)
    {
        if (AbortLikeGlibc) Interop.Libc.PrintAndAbort(glibcMessage);
        var e = new HeapCorruptionException(glibcMessage, (nuint)address);
        if (FailFast) Environment.FailFast("NativeHeap: " + e.Message);
        throw e;
    }
}
