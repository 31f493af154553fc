using System.Runtime.InteropServices;
using System.Text;

namespace NativeHeap.Symbols.Native;

/// <summary>
/// libnativeheap-symbols.so's one call, for the debug heap inside libnativeheap
/// (src/NativeHeap/Debugging/StackText.cs loads it): a stack of this process's return
/// addresses as report lines.
/// </summary>
public static unsafe class Exports
{
    /// <summary>
    /// Writes stack <paramref name="returnAddresses"/> (<paramref name="count"/> of them,
    /// innermost first) to <paramref name="output"/> as UTF-8 lines, one per frame (inlined
    /// frames each their own), from the first frame that is not libnativeheap's: "function
    /// (file:line) [module+0xOFFSET]". Returns the bytes written (cut at <paramref name="capacity"/>), or -1 on an error.
    /// </summary>
    [UnmanagedCallersOnly(EntryPoint = "nhs_format_stack")]
    private static int FormatStack(ulong* returnAddresses, int count, byte* output, int capacity)
    {
        try
        {
            var text = new StringBuilder();
            bool inAllocator = true;
            foreach (IReadOnlyList<SymbolFrame> frames in ProcessSymbols.Symbolize(new ReadOnlySpan<ulong>(returnAddresses, count)))
            {
                // libnativeheap's own frames (its C layer, the preload's wrapper, the allocator compiled in).
                if (inAllocator && frames.Count > 0 && frames.All(f => Path.GetFileName(f.Module).StartsWith("libnativeheap", StringComparison.Ordinal)))
                    continue;
                inAllocator = false;
                foreach (SymbolFrame f in frames) text.Append(ProcessSymbols.Format(f)).Append('\n');
            }
            byte[] bytes = Encoding.UTF8.GetBytes(text.ToString());
            int n = Math.Min(bytes.Length, capacity);
            Marshal.Copy(bytes, 0, (nint)output, n);
            return n;
        }
        catch (Exception)
        {
            return -1;
        }
    }
}
