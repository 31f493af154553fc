namespace NativeHeap.Os;

/// <summary>Human-readable byte counts for messages: "1 GiB", "132 KiB", "52722 bytes".</summary>
internal static class Sizes
{
    internal static string Format(nuint bytes)
    {
        if (bytes >= (1UL << 30) && bytes % (1UL << 30) == 0) return $"{bytes >> 30} GiB";
        if (bytes >= (1UL << 20) && bytes % (1UL << 20) == 0) return $"{bytes >> 20} MiB";
        if (bytes >= (1UL << 10) && bytes % (1UL << 10) == 0) return $"{bytes >> 10} KiB";
        return $"{bytes} bytes";
    }
}
