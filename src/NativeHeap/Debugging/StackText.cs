using System.Runtime.InteropServices;
using System.Text;

namespace NativeHeap.Debugging;

/// <summary>
/// A stack of return addresses captured in a C process (libnativeheap) as report lines,
/// symbolized in the process by libnativeheap-symbols.so (NativeHeap.Symbols compiled
/// ahead of time), loaded from beside libnativeheap.so only when a report is made: it is
/// not compiled into libnativeheap.so, whose every process would then carry it (1.3 MiB of
/// peak RSS, measured).
/// </summary>
internal static unsafe class StackText
{
    private static delegate* unmanaged<ulong*, int, byte*, int, int> s_format;
    private static string? s_unavailable;

    /// <summary>One line per frame, innermost first, from the first frame that is not libnativeheap's.</summary>
    internal static List<string> Frames(ulong[] returnAddresses)
    {
        if (s_format == null && s_unavailable == null) Load();
        if (s_format == null) return [.. returnAddresses.Select(a => $"[0x{a:x}]"), $"(not symbolized: {s_unavailable})"];
        const int Capacity = 64 * 1024;
        byte[] buffer = new byte[Capacity];
        int n;
        fixed (ulong* ips = returnAddresses)
        fixed (byte* output = buffer)
            n = s_format(ips, returnAddresses.Length, output, Capacity);
        if (n < 0) return [.. returnAddresses.Select(a => $"[0x{a:x}]")];
        return [.. Encoding.UTF8.GetString(buffer, 0, n).Split('\n', StringSplitOptions.RemoveEmptyEntries)];
    }

    private static void Load()
    {
        // Beside libnativeheap.so, wherever the program found it (LD_PRELOAD, rpath, ...).
        string? self = File.ReadLines("/proc/self/maps").Select(l => l[(l.IndexOf('/') is int i and >= 0 ? i : l.Length)..])
            .FirstOrDefault(p => p.EndsWith("/libnativeheap.so", StringComparison.Ordinal));
        string path = Path.Combine(Path.GetDirectoryName(self) ?? AppContext.BaseDirectory, "libnativeheap-symbols.so");
        if (NativeLibrary.TryLoad(path, out nint lib) && NativeLibrary.TryGetExport(lib, "nhs_format_stack", out nint format))
            s_format = (delegate* unmanaged<ulong*, int, byte*, int, int>)format;
        else
            s_unavailable = $"{path} could not be loaded";
    }
}
