namespace NativeHeap;

/// <summary>
/// NativeHeap found its heap corrupted or was handed a pointer it cannot have returned: a
/// double free, a foreign or misaligned pointer, an overwritten chunk header or list link.
/// The message is glibc's for the same finding (e.g. "free(): double free detected in
/// tcache 2") followed by the address it concerns, so that it reads the same as the abort
/// message a C programmer knows. It is raised by <see cref="MallocPrinterr"/>, which also
/// decides whether to throw it or end the process.
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
}
