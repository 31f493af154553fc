using System.Text;

namespace NativeHeap.Debugging;

/// <summary>
/// A stack of return addresses captured in a C process (libnativeheap) as report lines,
/// symbolized in the process by libnativeheap-symbols.so (NativeHeap.Symbols compiled ahead
/// of time), which libnativeheap's C layer loads from beside itself at the first report
/// (src/NativeHeap.Native/symbols.c). Neither the symbolizer nor the finding and loading of
/// it is in libnativeheap.so's image: every C process would carry them (1.3 MiB and 0.4 MiB
/// of peak RSS, measured).
/// </summary>
internal static unsafe class StackText
{
    // Set once by libnativeheap's start (Exports' nhm_debug_stacks), before any report.
    private static delegate* unmanaged<ulong*, int, byte*, int, int> s_format;

    /// <summary>libnativeheap's C layer hands over its symbolizer's entry (symbols.c).</summary>
    internal static void UseNative(nint format) => s_format = (delegate* unmanaged<ulong*, int, byte*, int, int>)format;

    /// <summary>One line per frame, innermost first, from the first frame that is not libnativeheap's.</summary>
    internal static List<string> Frames(ulong[] returnAddresses)
    {
        const int Capacity = 64 * 1024;
        byte[] buffer = new byte[Capacity];
        int n = -1;
        if (s_format != null)
            fixed (ulong* ips = returnAddresses)
            fixed (byte* output = buffer)
                n = s_format(ips, returnAddresses.Length, output, Capacity);
        if (n >= 0) return [.. Encoding.UTF8.GetString(buffer, 0, n).Split('\n', StringSplitOptions.RemoveEmptyEntries)];
        var raw = new List<string>(returnAddresses.Length + 1);
        foreach (ulong a in returnAddresses) raw.Add($"[0x{a:x}]");
        raw.Add(n == -2 ? "(not symbolized: libnativeheap-symbols.so is not beside libnativeheap.so)" : "(not symbolized)");
        return raw;
    }
}
