using System.Globalization;

namespace NativeHeap;

/// <summary>
/// NATIVEHEAP_TUNABLES: <c>name=value:name=value</c> with glibc's malloc tunable names, bare
/// or with glibc's prefix (<c>tcache_count=0</c> and <c>glibc.malloc.tcache_count=0</c> mean
/// what <c>GLIBC_TUNABLES=glibc.malloc.tcache_count=0</c> means to glibc). Unlike glibc, which
/// ignores a bad tunable, NativeHeap refuses to start with one.
/// </summary>
internal static class Tunables
{
    internal const string Variable = "NATIVEHEAP_TUNABLES";
    private const string GlibcPrefix = "glibc.malloc.";

    /// <summary>OptionTable's names, in its order (which the "known:" list keeps).</summary>
    private static readonly Dictionary<string, HeapOption> Names =
        Arenas.OptionTable.Rows.ToDictionary(row => row.Name, row => row.Id, StringComparer.Ordinal);

    /// <summary>The profiles' names, as <c>profile=</c> takes them.</summary>
    internal static readonly Dictionary<string, HeapProfile> ProfileNames = new(StringComparer.Ordinal)
    {
        ["nativeheap"] = HeapProfile.NativeHeap,
        ["glibc-2.36"] = HeapProfile.Glibc236,
    };

    /// <summary>Parse a tunables string into settings, in order; throws on the first bad entry.</summary>
    internal static List<(HeapOption Option, long Value, string Text)> Parse(string text)
    {
        var result = new List<(HeapOption, long, string)>();
        foreach (string entry in text.Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = entry.IndexOf('=');
            if (eq <= 0)
                throw Bad(entry, "expected name=value");
            string name = entry[..eq];
            if (name.StartsWith(GlibcPrefix, StringComparison.Ordinal)) name = name[GlibcPrefix.Length..];
            if (!Names.TryGetValue(name, out HeapOption option))
                throw Bad(entry, $"unknown tunable '{name}' (known: {string.Join(", ", Names.Keys)})");
            string valueText = entry[(eq + 1)..];
            long value;
            if (option == HeapOption.Profile)
            {
                if (!ProfileNames.TryGetValue(valueText, out HeapProfile profile))
                    throw Bad(entry, $"unknown profile '{valueText}' (known: {string.Join(", ", ProfileNames.Keys)})");
                value = (long)profile;
            }
            else if (!TryParseNumber(valueText, out value))
                throw Bad(entry, $"'{valueText}' is not a number");
            result.Add((option, value, entry));
        }
        return result;
    }

    /// <summary>Decimal, or hexadecimal with 0x, as glibc's tunables accept.</summary>
    private static bool TryParseNumber(string text, out long value)
    {
        if (text.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            return long.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
        return long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value);
    }

    internal static InvalidOperationException Bad(string entry, string why) =>
        new($"{Variable}: '{entry}': {why}");
}
