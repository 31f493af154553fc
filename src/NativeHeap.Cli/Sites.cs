using NativeHeap.Symbols;
using NativeHeap.Lab;

namespace NativeHeap.Cli;

/// <summary>
/// Allocation sites: a recorded stack symbolized, and its site, the first frame that is neither
/// the allocator nor a malloc wrapper (the code a person would change).
/// </summary>
internal sealed class AllocationSites(TraceStacks stacks, Symbolizer symbolizer, IReadOnlyList<string> wrappers)
{
    /// <summary>A stack symbolized (innermost first, inlined frames expanded) and the index of its site frame.</summary>
    internal sealed record Site(IReadOnlyList<SymbolFrame> Frames, int SiteIndex)
    {
        /// <summary>The site frame, as people read it ("function file:line").</summary>
        public string Name => Frames.Count == 0 ? "(no stack)" : Frames[SiteIndex].ToString();
    }

    /// <summary>Blocks whose allocation line has no stack (a version-1 trace, or a stack depth of 0).</summary>
    internal static readonly Site None = new([], 0);

    // Whole modules that allocate on the program's behalf: libc's own functions (strdup, fopen,
    // getline ...), the C++ runtime (operator new, std::string), .NET's libSystem.Native
    // (NativeMemory's malloc), the loader, and our own libraries.
    private static readonly string[] s_allocatorModules =
        ["libc.so", "libstdc++.so", "libSystem.Native.so", "ld-linux-x86-64.so", "librecorder.so", "libnativeheap"];

    // Functions of the programs themselves that only wrap malloc. A trailing * matches any
    // ending; names are matched against the symbolized function (for JIT code, inside the
    // perf map's name, e.g. "[OptimizedTier1] System.Runtime.InteropServices.NativeMemory::Alloc(nuint)").
    private static readonly string[] s_wrappers =
    [
        "xmalloc", "xcalloc", "xrealloc", "xstrdup", "xmemdup", "xzalloc",
        "g_malloc*", "g_realloc*", "g_try_malloc*", "g_try_realloc*", "g_strdup*", "g_slice_alloc*",
        "PyMem_*", "_PyMem_*", "PyObject_Malloc", "PyObject_Calloc", "PyObject_Realloc",
        "_PyObject_Malloc", "_PyObject_Calloc", "_PyObject_Realloc", "pymalloc_*", "_PyObject_GC_Alloc*",
        "Perl_safesys*", "Perl_malloc", "Perl_calloc", "Perl_realloc",
    ];

    // Managed wrappers, matched inside the perf map's names.
    private static readonly string[] s_managedWrappers =
    [
        "System.Runtime.InteropServices.NativeMemory::", "System.Runtime.InteropServices.Marshal::AllocHGlobal",
        "System.Runtime.InteropServices.Marshal::ReAllocHGlobal", "System.Runtime.InteropServices.Marshal::AllocCoTaskMem",
        "Interop+Sys::", "Interop/Sys::", "IL_STUB_PInvoke",
    ];

    private readonly Dictionary<int, Site> _cache = [];

    /// <summary>The site of stack node <paramref name="node"/> (0: <see cref="None"/>).</summary>
    internal Site Of(int node)
    {
        if (node <= 0) return None;
        if (_cache.TryGetValue(node, out Site? site)) return site;
        var frames = new List<SymbolFrame>();
        foreach (RecordedFrame f in stacks.Frames(node)) frames.AddRange(symbolizer.Symbolize(f));
        // Code in no module and no perf map entry (.NET's precompiled ReadyToRun code, e.g.
        // NativeMemory.Alloc in CoreLib) is passed over too: the site is the first frame a name says is the program's.
        int index = frames.FindIndex(f => !IsAllocator(f) && !(f.Function is null && f.Module == "?"));
        if (index < 0) index = frames.FindIndex(f => !IsAllocator(f));
        return _cache[node] = new Site(frames, index < 0 ? Math.Max(0, frames.Count - 1) : index);
    }

    /// <summary>Whether a frame belongs to the allocator or a malloc wrapper.</summary>
    internal bool IsAllocator(SymbolFrame f)
    {
        string module = Path.GetFileName(f.Module);
        foreach (string m in s_allocatorModules)
            if (module.StartsWith(m, StringComparison.Ordinal)) return true;
        if (f.Function is not { } name) return false;
        if (f.Module == "[jit]")
        {
            foreach (string w in s_managedWrappers)
                if (name.Contains(w, StringComparison.Ordinal)) return true;
        }
        foreach (string w in s_wrappers) if (Matches(name, w)) return true;
        foreach (string w in wrappers) if (Matches(name, w)) return true;
        return false;
    }

    private static bool Matches(string name, string pattern) =>
        pattern.EndsWith('*') ? name.StartsWith(pattern.AsSpan(0, pattern.Length - 1), StringComparison.Ordinal) : name == pattern;
}
