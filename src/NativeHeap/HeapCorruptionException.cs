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
        : this(glibcMessage, address, null)
    {
    }

    /// <summary>Creates the exception with the debug heap's account of the block.</summary>
    /// <param name="glibcMessage">glibc's words (or words in glibc's style) for the finding.</param>
    /// <param name="address">The block or pointer concerned.</param>
    /// <param name="details">The block, what is wrong with it and the stacks that allocated and freed it; null for none.</param>
    public HeapCorruptionException(string glibcMessage, nuint address, string? details)
        : base(details is null ? $"{glibcMessage}: 0x{address:x}" : $"{glibcMessage}: 0x{address:x}\n{details}")
    {
        GlibcMessage = glibcMessage;
        Address = address;
        Details = details;
    }

    /// <summary>glibc's words for the finding, without the address.</summary>
    public string GlibcMessage { get; }

    /// <summary>The chunk or pointer concerned.</summary>
    public nuint Address { get; }

    /// <summary>
    /// With <see cref="HeapOption.Debug"/>: the block (address, size asked, chunk), what is
    /// wrong (the first byte overwritten and what it holds) and the stacks that allocated and
    /// freed it, one frame a line; null otherwise.
    /// </summary>
    public string? Details { get; }
}
