
namespace NativeHeap.Symbols;

/// <summary>Where the symbolizer looks for separate debug files, and whether it demangles.</summary>
internal sealed record SymbolizerOptions
{
    /// <summary>Directories searched first, each as /usr/lib/debug is: DIR/.build-id/xx/rest.debug, and DIR/&lt;binary's dir&gt;/&lt;debuglink&gt;.</summary>
    public IReadOnlyList<string> DebugDirectories { get; init; } = [];

    /// <summary>The system's debug directory, searched after <see cref="DebugDirectories"/>; null: none.</summary>
    public string? SystemDebugDirectory { get; init; } = "/usr/lib/debug";

    /// <summary>Demangle C++ names with c++filt when it is installed.</summary>
    public bool Demangle { get; init; } = true;
}

/// <summary>
/// Turns recorded return addresses into function names, source lines and inlined frames, offline:
/// ELF symbol tables (.symtab, else .dynsym) name functions; DWARF (in the binary or a separate
/// debug file found by build-id or .gnu_debuglink) gives file:line and inlined frames; JIT code
/// is named from the trace's J lines. Modules and addresses are cached. Not thread-safe; dispose
/// it to end the c++filt it may have started.
/// </summary>
/// <remarks>
/// A module's file is used only if its build-id is the one recorded (a file recorded without one
/// is used only if it still has none); otherwise only a debug file carrying the recorded build-id
/// names it, and without one its frames stay module+offset.
/// </remarks>
internal sealed class Symbolizer : IDisposable
{
    private readonly SymbolizerOptions _options;
    private ulong[] _jitStart;
    private JitCode[] _jit;
    private readonly Dictionary<(string Path, string? BuildId), ModuleSymbols> _modules = [];
    private readonly Dictionary<(ModuleSymbols? Module, ulong Offset), SymbolFrame[]> _cache = [];
    private readonly Demangler _demangler;
    private readonly List<string> _warnings = [];

    public Symbolizer(IEnumerable<JitCode> jit, SymbolizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(jit);
        _options = options ?? new SymbolizerOptions();
        (_jit, _jitStart) = SortJit(jit);
        _demangler = _options.Demangle ? Demangler.FromPath() : new Demangler(null);
    }

    private static (JitCode[], ulong[]) SortJit(IEnumerable<JitCode> jit)
    {
        // Code memory can be reused: of two J lines at one start, the later one is in force.
        JitCode[] sorted = [.. jit.Select((j, i) => (j, i)).GroupBy(x => x.j.Start).Select(g => g.MaxBy(x => x.i).j).OrderBy(j => j.Start)];
        return (sorted, [.. sorted.Select(j => j.Start)]);
    }

    /// <summary>
    /// Replaces the JIT code table (a running process's perf map grows) and forgets what was
    /// resolved outside modules; modules keep their caches.
    /// </summary>
    internal void ReplaceJit(IEnumerable<JitCode> jit)
    {
        ArgumentNullException.ThrowIfNull(jit);
        (_jit, _jitStart) = SortJit(jit);
        foreach (var key in _cache.Keys.Where(k => k.Module is null).ToList()) _cache.Remove(key);
    }

    /// <summary>Whether <paramref name="address"/> − 1 lies in a JIT code range (as <see cref="Symbolize"/> looks it up).</summary>
    internal bool InJit(ulong address)
    {
        ulong pc = address == 0 ? 0 : address - 1;
        int i = Array.BinarySearch(_jitStart, pc);
        if (i < 0) i = ~i - 1;
        return i >= 0 && pc - _jit[i].Start < _jit[i].Size;
    }

    /// <summary>Ends the c++filt process, if one was started.</summary>
    public void Dispose()
    {
        _demangler.Dispose();
        foreach (var module in _modules.Values) module.Dispose();
        _modules.Clear();
    }

    /// <summary>Why some modules give fewer names than they could (missing, changed since recording, unreadable DWARF).</summary>
    public IReadOnlyList<string> Warnings => _warnings;

    /// <summary>The frames of one return address: inlined functions innermost first, then the function holding them.</summary>
    public IReadOnlyList<SymbolFrame> Symbolize(RecordedFrame frame) => SymbolizeAll([frame])[0];

    /// <summary>Every frame's symbols, in order, with one demangling pass for the lot.</summary>
    public IReadOnlyList<IReadOnlyList<SymbolFrame>> SymbolizeAll(IEnumerable<RecordedFrame> frames)
    {
        var input = frames as IReadOnlyList<RecordedFrame> ?? [.. frames];
        var keys = new (ModuleSymbols?, ulong)[input.Count];
        var fresh = new Dictionary<(ModuleSymbols?, ulong), SymbolFrame[]>();
        for (int i = 0; i < input.Count; i++)
        {
            RecordedFrame f = input[i];
            ModuleSymbols? module = f.Module is { } m ? Module(m) : null;
            // By offset in the module: one file may be loaded at two places over a trace (dlclose, dlopen).
            keys[i] = (module, module is null ? f.Address : f.Address - f.Module!.Bias);
            if (!_cache.ContainsKey(keys[i]) && !fresh.ContainsKey(keys[i]))
                fresh[keys[i]] = Resolve(f, module);
        }
        if (fresh.Count > 0)
        {
            _demangler.Prepare(fresh.Values.SelectMany(fs => fs).Select(s => s.Function!).Where(Demangler.IsMangled));
            foreach (var (key, raw) in fresh)
                _cache[key] = [.. raw.Select(s => Demangler.IsMangled(s.Function) ? s with { Function = _demangler.Get(s.Function!) } : s)];
        }
        var result = new IReadOnlyList<SymbolFrame>[input.Count];
        for (int i = 0; i < input.Count; i++) result[i] = _cache[keys[i]];
        return result;
    }

    /// <summary>
    /// A perf map's method name as people write it: "void* [Asm] Ns.Type::Method(args)[QuickJitted]"
    /// loses its return type, assembly and tier; other entries (stubs) stay as they are.
    /// </summary>
    internal static string ManagedName(string perfMapName)
    {
        ArgumentNullException.ThrowIfNull(perfMapName);
        // By hand rather than a Regex (which adds 0.2 MB to libnativeheap): the pattern
        // ^(?:\S.*? )?\[[^\]\s]+\] (\S.*?\))(?:\[[A-Za-z0-9]+\])?$ , tried as a regex engine
        // would: a return type ending at the earliest space that lets the rest match, else none
        // (perf map names are single lines: newlines are not handled as the regex would).
        ReadOnlySpan<char> name = perfMapName;
        if (name.Length > 0 && !char.IsWhiteSpace(name[0]))
            for (int space = name.IndexOf(' '); space > 0; space = IndexOf(name, ' ', space + 1))
                if (AfterReturnType(name[(space + 1)..]) is { } method) return method;
        return AfterReturnType(name) ?? perfMapName;
    }

    private static int IndexOf(ReadOnlySpan<char> s, char c, int from)
    {
        int i = s[from..].IndexOf(c);
        return i < 0 ? -1 : from + i;
    }

    /// <summary>"[Asm] Method(args)" with an optional "[Tier]": the method, or null if <paramref name="s"/> is not that.</summary>
    private static string? AfterReturnType(ReadOnlySpan<char> s)
    {
        if (s.Length == 0 || s[0] != '[') return null;
        int close = s.IndexOf(']');
        if (close < 2 || HasWhiteSpace(s[1..close]) || close + 1 >= s.Length || s[close + 1] != ' ') return null;
        ReadOnlySpan<char> method = s[(close + 2)..];
        if (method.Length < 2 || char.IsWhiteSpace(method[0])) return null;
        // The shortest method that fits: without a final [Tier] if there is one, else the whole.
        int tier = method.LastIndexOf('[');
        if (method[^1] == ']' && tier >= 2 && tier < method.Length - 2 && method[(tier + 1)..^1].ContainsAnyExcept(AlphaNumeric) is false
            && method[tier - 1] == ')')
            return method[..tier].ToString();
        return method[^1] == ')' ? method.ToString() : null;
    }

    private static bool HasWhiteSpace(ReadOnlySpan<char> s)
    {
        foreach (char c in s)
            if (char.IsWhiteSpace(c)) return true;
        return false;
    }

    private static readonly System.Buffers.SearchValues<char> AlphaNumeric =
        System.Buffers.SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");

    private SymbolFrame[] Resolve(RecordedFrame frame, ModuleSymbols? module)
    {
        // A return address is just past its call: the call itself is at address − 1.
        ulong pc = frame.Address == 0 ? 0 : frame.Address - 1;
        if (module is null)
        {
            int i = Array.BinarySearch(_jitStart, pc);
            if (i < 0) i = ~i - 1;
            if (i >= 0 && pc - _jit[i].Start < _jit[i].Size)
                return [new SymbolFrame(ManagedName(_jit[i].Name), null, 0, "[jit]", frame.Address, false)];
            return [new SymbolFrame(null, null, 0, "?", frame.Address, false)];
        }
        ulong offset = frame.Address - frame.Module!.Bias;
        return module.Lookup(offset, offset - 1);
    }

    private ModuleSymbols Module(TraceModule m)
    {
        var key = (m.Path, m.BuildId);
        if (!_modules.TryGetValue(key, out var module))
        {
            module = new ModuleSymbols(m.Path, m.BuildId, _options, _warnings);
            _modules[key] = module;
        }
        return module;
    }

    /// <summary>One module's symbol sources, opened at its first address.</summary>
    private sealed class ModuleSymbols : IDisposable
    {
        private readonly ElfImage? _binary, _debug;
        private readonly List<string> _roots;
        private ElfImage? _alt;
        private readonly string _path;
        private readonly ElfSymbols? _symbols;
        private readonly ElfImage? _dwarfSource;
        private DwarfInfo? _dwarf;
        private bool _dwarfFailed;
        private readonly List<string> _warnings;

        public ModuleSymbols(string path, string? buildId, SymbolizerOptions options, List<string> warnings)
        {
            _path = path;
            _warnings = warnings;
            _roots = DebugRoots(options);
            ElfImage? binary = ElfImage.TryLoad(path, out string? why);
            if (binary is not null && !string.Equals(binary.BuildId, buildId, StringComparison.OrdinalIgnoreCase))
            {
                why = $"its build-id is {binary.BuildId ?? "none"}, the trace recorded {buildId ?? "none"}: the file changed since";
                binary.Dispose();
                binary = null;
            }
            ElfImage? debug = FindDebugFile(path, buildId, binary, options);
            if (binary is null)
                warnings.Add(debug is null ? $"{path}: {why}; its frames stay module+offset" : $"{path}: {why}; named from {debug.Path}");
            // Names: a .symtab (the debug file's first), else the binary's .dynsym.
            _symbols = debug is { HasSymtab: true } ? debug.Symbols
                : binary is not null && (binary.HasSymtab || debug is null) ? binary.Symbols
                : debug?.Symbols ?? binary?.Symbols;
            _dwarfSource = debug is { HasDwarf: true } ? debug : binary is { HasDwarf: true } ? binary : null;
            (_binary, _debug) = (binary, debug);
        }

        public void Dispose()
        {
            _binary?.Dispose();
            _debug?.Dispose();
            _alt?.Dispose();
        }

        private static List<string> DebugRoots(SymbolizerOptions options) =>
            [.. options.DebugDirectories, .. options.SystemDebugDirectory is { } s ? [s] : Array.Empty<string>()];

        private static ElfImage? FindDebugFile(string path, string? buildId, ElfImage? binary, SymbolizerOptions options)
        {
            var roots = DebugRoots(options);
            buildId = buildId?.ToLowerInvariant();
            if (buildId is { Length: > 2 })
                foreach (string root in roots)
                {
                    var candidate = ElfImage.TryLoad(Path.Combine(root, ".build-id", buildId[..2], buildId[2..] + ".debug"), out _);
                    if (candidate?.BuildId == buildId) return candidate;
                    candidate?.Dispose();
                }
            if (binary?.DebugLink is { } link)
            {
                string dir = Path.GetDirectoryName(Path.GetFullPath(path)) ?? "/";
                var places = new List<string> { Path.Combine(dir, link), Path.Combine(dir, ".debug", link) };
                foreach (string root in roots) places.Add(Path.Join(root, dir, link));
                foreach (string root in roots) places.Add(Path.Combine(root, link));
                foreach (string place in places)
                {
                    if (Path.GetFullPath(place) == Path.GetFullPath(path)) continue;
                    var candidate = ElfImage.TryLoad(place, out _);
                    // A debug file for another build would name the wrong functions.
                    if (candidate is not null && candidate.BuildId == binary.BuildId) return candidate;
                    candidate?.Dispose();
                }
            }
            return null;
        }

        public SymbolFrame[] Lookup(ulong offset, ulong pc)
        {
            string? function = _symbols?.Find(pc);
            List<DwarfFrame> dwarf = Dwarf(pc);
            if (dwarf.Count == 0) return [new SymbolFrame(function, null, 0, _path, offset, false)];
            var frames = new SymbolFrame[dwarf.Count];
            for (int i = 0; i < dwarf.Count - 1; i++)
                frames[i] = new SymbolFrame(dwarf[i].Function, dwarf[i].File, dwarf[i].Line, _path, offset, true);
            DwarfFrame last = dwarf[^1];
            frames[^1] = new SymbolFrame(function ?? last.Function, last.File, last.Line, _path, offset, false);
            return frames;
        }

        /// <summary>dwz's supplementary file: by its path (relative to the debug file's folder), else by its build-id.</summary>
        private DwarfInfo? AltDwarf()
        {
            if (_dwarfSource?.AltLink is not var (altPath, altId)) return null;
            string dir = Path.GetDirectoryName(Path.GetFullPath(_dwarfSource.Path)) ?? "/";
            var places = new List<string> { Path.Combine(dir, altPath) };
            if (altId.Length > 2)
                foreach (string root in _roots) places.Add(Path.Combine(root, ".build-id", altId[..2], altId[2..] + ".debug"));
            foreach (string place in places)
            {
                var candidate = ElfImage.TryLoad(place, out _);
                if (candidate is { HasDwarf: true } && candidate.BuildId == altId)
                {
                    _alt = candidate;
                    return new DwarfInfo(candidate);
                }
                candidate?.Dispose();
            }
            _warnings.Add($"{_dwarfSource.Path}: its dwz file {altPath} is missing; inlined functions it names stay unnamed");
            return null;
        }

        private List<DwarfFrame> Dwarf(ulong pc)
        {
            if (_dwarfSource is null || _dwarfFailed) return [];
            try
            {
                _dwarf ??= new DwarfInfo(_dwarfSource, AltDwarf());
                return _dwarf.Lookup(pc);
            }
            catch (Exception e) when (e is InvalidDataException or OverflowException or ArgumentException or IndexOutOfRangeException)
            {
                // Bad DWARF costs source lines, never names: the symbol tables still answer.
                _dwarfFailed = true;
                _warnings.Add($"{_dwarfSource.Path}: DWARF unreadable ({e.Message}); names only");
                return [];
            }
        }
    }
}
