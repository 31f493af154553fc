namespace NativeHeap.Os;

/// <summary>Human-readable byte counts for messages: "1 GiB", "132 KiB", "52722 bytes".</summary>
internal static class Sizes
{
    /// <summary>A count rounded for reading: "201.3 MiB", "29.0 KiB", "224 bytes" (negative too).</summary>
    internal static string Approximate(long bytes)
    {
        double b = Math.Abs((double)bytes);
        string sign = bytes < 0 ? "-" : "";
        return b switch
        {
            >= 1 << 30 => FormattableString.Invariant($"{sign}{b / (1 << 30):F2} GiB"),
            >= 1 << 20 => FormattableString.Invariant($"{sign}{b / (1 << 20):F1} MiB"),
            >= 1 << 10 => FormattableString.Invariant($"{sign}{b / (1 << 10):F1} KiB"),
            _ => FormattableString.Invariant($"{bytes} bytes"),
        };
    }

    internal static string Format(nuint bytes)
    {
        if (bytes >= (1UL << 30) && bytes % (1UL << 30) == 0) return $"{bytes >> 30} GiB";
        if (bytes >= (1UL << 20) && bytes % (1UL << 20) == 0) return $"{bytes >> 20} MiB";
        if (bytes >= (1UL << 10) && bytes % (1UL << 10) == 0) return $"{bytes >> 10} KiB";
        return $"{bytes} bytes";
    }
}
