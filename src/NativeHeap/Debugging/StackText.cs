using NativeHeap.Symbols;

namespace NativeHeap.Debugging;

/// <summary>A captured stack as report lines: symbolized in this process now, the allocator's own frames left out.</summary>
internal static class StackText
{
    /// <summary>One line per frame (inlined frames each their own), innermost first, from the first frame that is not the allocator's.</summary>
    internal static List<string> Frames(ulong[] returnAddresses)
    {
        // A .NET process: the runtime writes its perf map from now on, the methods it has
        // compiled included, so that JIT frames get names (nothing under NativeAOT).
        ProcessSymbols.EnableManagedNames();
        IReadOnlyList<IReadOnlyList<SymbolFrame>> symbolized = ProcessSymbols.Symbolize(returnAddresses);
        var lines = new List<string>();
        bool inAllocator = true;
        foreach (IReadOnlyList<SymbolFrame> frames in symbolized)
        {
            if (inAllocator && frames.Count > 0 && frames.All(IsAllocator)) continue;
            inAllocator = false;
            lines.AddRange(frames.Select(ProcessSymbols.Format));
        }
        return lines;
    }

    /// <summary>libnativeheap (its C layer and the allocator compiled in), or the allocator's managed code.</summary>
    private static bool IsAllocator(SymbolFrame f) =>
        Path.GetFileName(f.Module).StartsWith("libnativeheap", StringComparison.Ordinal)
        || (f.Function?.StartsWith("NativeHeap.", StringComparison.Ordinal) ?? false);
}
