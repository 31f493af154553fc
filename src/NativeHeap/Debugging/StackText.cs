namespace NativeHeap.Debugging;

/// <summary>A captured stack as report lines: symbolized, the allocator's own frames left out.</summary>
internal static class StackText
{
    /// <summary>One line per frame, innermost first, from the first frame that is not the allocator's.</summary>
    internal static IEnumerable<string> Frames(ulong[] returnAddresses)
    {
        List<(ulong Low, ulong High, ulong Offset, string Path)> maps = ReadMaps();
        bool inAllocator = true;
        foreach (ulong ip in returnAddresses)
        {
            string? path = null;
            ulong offset = 0;
            foreach (var m in maps)
                if (ip >= m.Low && ip < m.High)
                {
                    path = m.Path;
                    offset = ip - m.Low + m.Offset;
                    break;
                }
            string module = path is null ? "" : Path.GetFileName(path);
            if (inAllocator && module.StartsWith("libnativeheap", StringComparison.Ordinal)) continue;
            inAllocator = false;
            yield return path is null ? $"0x{ip:x}" : $"{module}+0x{offset:x} (0x{ip:x})";
        }
    }

    private static List<(ulong, ulong, ulong, string)> ReadMaps()
    {
        var maps = new List<(ulong, ulong, ulong, string)>();
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            string[] f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 6 || !f[1].Contains('x') || !f[5].StartsWith('/')) continue;
            int dash = f[0].IndexOf('-');
            maps.Add((Convert.ToUInt64(f[0][..dash], 16), Convert.ToUInt64(f[0][(dash + 1)..], 16), Convert.ToUInt64(f[2], 16), f[5]));
        }
        return maps;
    }
}
