using System.IO.Compression;
using ELFSharp.ELF;
using ELFSharp.ELF.Sections;

namespace NativeHeap.Symbols;

/// <summary>
/// What the symbolizer needs from one ELF file (a binary or a separate debug file), read with
/// ELFSharp: its build-id, .gnu_debuglink, function symbols and DWARF sections (decompressed).
/// </summary>
internal sealed class ElfImage : IDisposable
{
    private const uint ShfCompressed = 0x800;

    public string Path { get; }
    public string? BuildId { get; }
    public string? DebugLink { get; }
    /// <summary>.gnu_debugaltlink: dwz's supplementary file (path, build-id) that DIEs and strings refer into.</summary>
    public (string Path, string BuildId)? AltLink { get; }
    /// <summary>Function symbols from .symtab, or from .dynsym if there is no .symtab with functions.</summary>
    public ElfSymbols Symbols { get; }
    public bool HasSymtab { get; }
    public bool HasDwarf => _sections.ContainsKey(".debug_info") && _sections.ContainsKey(".debug_abbrev");

    private readonly Dictionary<string, Section<ulong>> _sections = [];
    private readonly IELF _elf;

    private ElfImage(string path, IELF elf)
    {
        Path = path;
        _elf = elf;
        var symtab = new List<SymbolEntry<ulong>>();
        var dynsym = new List<SymbolEntry<ulong>>();
        foreach (var section in elf.Sections)
        {
            if (section is not Section<ulong> s) continue;
            _sections.TryAdd(s.Name, s);
            if (s is INoteSection note && s.Name == ".note.gnu.build-id" && note.Description.Length > 0)
                BuildId = Convert.ToHexStringLower(note.Description);
            if (s is SymbolTable<ulong> table)
                (s.Type == SectionType.DynamicSymbolTable ? dynsym : symtab).AddRange(table.Entries);
        }
        if (_sections.TryGetValue(".gnu_debuglink", out var link))
        {
            byte[] bytes = link.GetContents();
            int end = Array.IndexOf(bytes, (byte)0);
            if (end > 0) DebugLink = System.Text.Encoding.UTF8.GetString(bytes, 0, end);
        }
        if (_sections.TryGetValue(".gnu_debugaltlink", out var alt))
        {
            byte[] bytes = alt.GetContents();
            int end = Array.IndexOf(bytes, (byte)0);
            if (end > 0) AltLink = (System.Text.Encoding.UTF8.GetString(bytes, 0, end), Convert.ToHexStringLower(bytes, end + 1, bytes.Length - end - 1));
        }
        var fromSymtab = ElfSymbols.From(symtab);
        HasSymtab = fromSymtab.Count > 0;
        Symbols = HasSymtab ? fromSymtab : ElfSymbols.From(dynsym);
    }

    /// <summary>The file as a 64-bit ELF, or null (with the reason) if it is missing or not one.</summary>
    public static ElfImage? TryLoad(string path, out string? why)
    {
        why = null;
        if (!File.Exists(path)) { why = "missing"; return null; }
        try
        {
            if (!ELFReader.TryLoad(path, out IELF elf)) { why = "not an ELF file"; return null; }
            if (elf.Class != Class.Bit64) { elf.Dispose(); why = "not a 64-bit ELF file"; return null; }
            return new ElfImage(path, elf);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException or NotSupportedException)
        {
            why = e.Message;
            return null;
        }
    }

    /// <summary>Closes the file (ELFSharp reads sections from it on demand).</summary>
    public void Dispose() => _elf.Dispose();

    /// <summary>A section's bytes, decompressed if it is SHF_COMPRESSED (zlib); null if absent.</summary>
    public byte[]? SectionBytes(string name)
    {
        if (!_sections.TryGetValue(name, out var s) || s.Type == SectionType.NoBits) return null;
        byte[] raw = s.GetContents();
        if (((ulong)s.Flags & ShfCompressed) == 0) return raw;
        // Elf64_Chdr: ch_type (1 = zlib), ch_reserved, ch_size, ch_addralign; then the stream.
        if (raw.Length < 24) throw new InvalidDataException($"{Path}: {name} is compressed but has no header");
        uint type = BitConverter.ToUInt32(raw, 0);
        ulong size = BitConverter.ToUInt64(raw, 8);
        if (type != 1) throw new InvalidDataException($"{Path}: {name} is compressed with type {type} (only zlib is read)");
        var result = new byte[checked((int)size)];
        using var z = new ZLibStream(new MemoryStream(raw, 24, raw.Length - 24), CompressionMode.Decompress);
        z.ReadExactly(result);
        return result;
    }
}

/// <summary>Function symbols sorted by address, for "the nearest symbol at or below, whose size covers it".</summary>
internal sealed class ElfSymbols
{
    private readonly ulong[] _start;
    private readonly ulong[] _size;
    private readonly string[] _name;

    private ElfSymbols(ulong[] start, ulong[] size, string[] name) => (_start, _size, _name) = (start, size, name);

    public int Count => _start.Length;

    public static ElfSymbols From(IEnumerable<SymbolEntry<ulong>> entries)
    {
        // Aliases share an address: keep the most public and plainest name (malloc, not __libc_malloc).
        var best = new Dictionary<ulong, SymbolEntry<ulong>>();
        foreach (var e in entries)
        {
            if (e.Type is not (SymbolType.Function or (SymbolType)10 /* STT_GNU_IFUNC */) || e.Value == 0 || e.PointedSectionIndex == 0 || e.Name.Length == 0) continue;
            if (!best.TryGetValue(e.Value, out var old) || Rank(e).CompareTo(Rank(old)) < 0)
                best[e.Value] = e;
        }
        var sorted = best.Values.OrderBy(e => e.Value).ToArray();
        return new ElfSymbols(
            [.. sorted.Select(e => e.Value)],
            [.. sorted.Select(e => e.Size)],
            [.. sorted.Select(e => StripVersion(e.Name))]);
    }

    private static (int, int, int, int) Rank(SymbolEntry<ulong> e) =>
        (e.Size == 0 ? 1 : 0, e.Binding switch { SymbolBinding.Global => 0, SymbolBinding.Weak => 1, _ => 2 }, e.Name.TakeWhile(c => c == '_').Count(), e.Name.Length);

    private static string StripVersion(string name)
    {
        int at = name.IndexOf('@');
        return at > 0 ? name[..at] : name;
    }

    /// <summary>The function symbol whose [value, value+size) holds <paramref name="address"/>, or null.</summary>
    public string? Find(ulong address)
    {
        int i = Array.BinarySearch(_start, address);
        if (i < 0) i = ~i - 1;
        if (i < 0) return null;
        ulong size = _size[i];
        return address - _start[i] < Math.Max(size, 1) ? _name[i] : null;
    }
}
