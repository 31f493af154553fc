namespace NativeHeap.Symbols;

/// <summary>One source location of an address: a function (null if DWARF names none), its file and line.</summary>
internal readonly record struct DwarfFrame(string? Function, string? File, int Line);

/// <summary>
/// Line tables and inlined-subroutine trees of one ELF file's DWARF (versions 2 to 5, 32- and
/// 64-bit), read by hand: LibObjectFile 2.3.1 stops at DWARF 5 line programs, which gcc 11+
/// writes by default. Units are read when an address first falls in them.
/// </summary>
internal sealed class DwarfInfo
{
    private readonly byte[] _info, _abbrev;
    private readonly byte[]? _line, _str, _lineStr, _strOffsets, _addr, _rnglists, _ranges;
    private readonly List<Unit> _units = [];
    // Sorted code ranges of all units: start, end, unit index.
    private readonly (ulong Lo, ulong Hi, int Unit)[] _unitRanges;
    private readonly Dictionary<ulong, AbbrevSet> _abbrevTables = [];
    private readonly Dictionary<ulong, string?> _names = [];

    private readonly DwarfInfo? _alt;

    /// <param name="elf">The file with the DWARF.</param>
    /// <param name="alt">The DWARF of its dwz supplementary file (.gnu_debugaltlink), if found.</param>
    public DwarfInfo(ElfImage elf, DwarfInfo? alt = null)
    {
        _alt = alt;
        _info = elf.SectionBytes(".debug_info") ?? throw new InvalidDataException($"{elf.Path}: no .debug_info");
        _abbrev = elf.SectionBytes(".debug_abbrev") ?? throw new InvalidDataException($"{elf.Path}: no .debug_abbrev");
        _line = elf.SectionBytes(".debug_line");
        _str = elf.SectionBytes(".debug_str");
        _lineStr = elf.SectionBytes(".debug_line_str");
        _strOffsets = elf.SectionBytes(".debug_str_offsets");
        _addr = elf.SectionBytes(".debug_addr");
        _rnglists = elf.SectionBytes(".debug_rnglists");
        _ranges = elf.SectionBytes(".debug_ranges");

        var ranges = new List<(ulong, ulong, int)>();
        var c = new DwarfCursor(_info, 0);
        while (c.Position < _info.Length)
        {
            int start = c.Position;
            var (length, is64) = c.InitialLength();
            if (length > (ulong)(_info.Length - c.Position)) throw new InvalidDataException($"DWARF: the unit at 0x{start:x} claims {length} bytes, past the end of .debug_info");
            int end = c.Position + (int)length;
            ushort version = c.U16();
            if (version is < 2 or > 5) throw new InvalidDataException($"DWARF: the unit at 0x{start:x} has version {version}");
            byte unitType = 1; // DW_UT_compile
            byte addrSize;
            ulong abbrevOffset;
            if (version >= 5)
            {
                unitType = c.U8();
                addrSize = c.U8();
                abbrevOffset = is64 ? c.U64() : c.U32();
                if (unitType is 2 or 6) c.Skip(8 + (is64 ? 8UL : 4UL)); // type units: signature, type offset
                else if (unitType is 4 or 5) c.Skip(8); // skeleton, split: dwo_id
            }
            else
            {
                abbrevOffset = is64 ? c.U64() : c.U32();
                addrSize = c.U8();
            }
            if (addrSize is not (4 or 8)) throw new InvalidDataException($"DWARF: the unit at 0x{start:x} has {addrSize}-byte addresses");
            var unit = new Unit(start, c.Position, end, version, is64, addrSize, abbrevOffset, unitType);
            _units.Add(unit);
            if (unitType is 1 or 3) // compile, partial
            {
                ReadRoot(unit);
                foreach (var (lo, hi) in unit.Ranges) if (hi > lo) ranges.Add((lo, hi, _units.Count - 1));
            }
            c.Position = end;
        }
        _unitRanges = [.. ranges.OrderBy(r => r.Item1)];
    }

    /// <summary>
    /// The frames at <paramref name="address"/> (an ELF virtual address): inlined functions innermost
    /// first, then the function holding them; empty if no unit covers it.
    /// </summary>
    public List<DwarfFrame> Lookup(ulong address)
    {
        var frames = new List<DwarfFrame>();
        foreach (int u in UnitsAt(address))
        {
            Unit unit = _units[u];
            if (unit.Functions is null) ReadUnit(unit);
            Function? f = unit.FunctionAt(address);
            var (file, line) = unit.LineAt(address, this);
            if (f is null)
            {
                if (file is not null) frames.Add(new DwarfFrame(null, file, line));
                if (frames.Count > 0) return frames;
                continue;
            }
            // Inlined scopes holding the address, outermost first (they come in DIE order, parents first).
            var chain = f.Inlines.Where(i => i.Contains(address)).ToList();
            for (int k = chain.Count - 1; k >= 0; k--)
            {
                frames.Add(new DwarfFrame(NameOf(chain[k].Origin), file, line));
                file = chain[k].CallFile is { } cf ? unit.FileName(cf, this) : null;
                line = chain[k].CallLine;
            }
            frames.Add(new DwarfFrame(NameOf(f.Origin), file, line));
            return frames;
        }
        return frames;
    }

    private IEnumerable<int> UnitsAt(ulong address)
    {
        int i = Array.BinarySearch(_unitRanges, (address, ulong.MaxValue, int.MaxValue), RangeComparer.Instance);
        if (i < 0) i = ~i;
        // Ranges may overlap (rarely): try every one that starts at or below and holds the address.
        for (int k = i - 1; k >= 0 && k >= i - 64; k--)
            if (_unitRanges[k].Lo <= address && address < _unitRanges[k].Hi) yield return _unitRanges[k].Unit;
    }

    private sealed class RangeComparer : IComparer<(ulong Lo, ulong Hi, int Unit)>
    {
        public static readonly RangeComparer Instance = new();
        public int Compare((ulong Lo, ulong Hi, int Unit) x, (ulong Lo, ulong Hi, int Unit) y) =>
            x.Lo != y.Lo ? x.Lo.CompareTo(y.Lo) : x.Hi != y.Hi ? x.Hi.CompareTo(y.Hi) : x.Unit.CompareTo(y.Unit);
    }

    // ---- DIEs ----

    private sealed record Abbrev(ulong Tag, bool HasChildren, (ulong Attr, ulong Form, long Implicit)[] Specs);

    /// <summary>One unit's abbreviations by code: codes are mostly 1, 2, 3..., so an array with a dictionary for the rest.</summary>
    private sealed class AbbrevSet
    {
        public readonly List<Abbrev?> Dense = [null];
        public readonly Dictionary<ulong, Abbrev> Sparse = [];

        public Abbrev? Get(ulong code) => code < (ulong)Dense.Count ? Dense[(int)code] : Sparse.GetValueOrDefault(code);
    }

    private AbbrevSet AbbrevTable(ulong offset)
    {
        if (_abbrevTables.TryGetValue(offset, out var table)) return table;
        table = new AbbrevSet();
        var c = new DwarfCursor(_abbrev, checked((int)offset));
        var specs = new List<(ulong, ulong, long)>();
        while (true)
        {
            ulong code = c.Uleb();
            if (code == 0) break;
            ulong tag = c.Uleb();
            bool children = c.U8() != 0;
            specs.Clear();
            while (true)
            {
                ulong attr = c.Uleb(), form = c.Uleb();
                long implicitValue = form == 0x21 ? c.Sleb() : 0;
                if (attr == 0 && form == 0) break;
                specs.Add((attr, form, implicitValue));
            }
            var abbrev = new Abbrev(tag, children, [.. specs]);
            if (code == (ulong)table.Dense.Count) table.Dense.Add(abbrev);
            else table.Sparse[code] = abbrev;
        }
        _abbrevTables[offset] = table;
        return table;
    }

    /// <summary>The attributes of one DIE the symbolizer uses, as raw (form, value) pairs.</summary>
    private struct Die
    {
        public ulong Tag;
        public bool HasChildren;
        public ulong Offset;
        public (ulong Form, ulong Value) Name, LinkageName, LowPc, HighPc, Ranges, Origin, Specification, CallFile, CallLine, StmtList, CompDir;
        public ulong StrOffsetsBase, AddrBase, RnglistsBase, RangesBase;
        public bool HasLowPc, HasHighPc, HasRanges, HasOrigin, HasSpecification, HasCallFile, HasCallLine, HasStmtList, HasCompDir, HasName, HasLinkageName;
    }

    /// <summary>Reads the DIE at the cursor; false for a null entry (end of siblings).</summary>
    private bool ReadDie(ref DwarfCursor c, Unit unit, AbbrevSet abbrevs, out Die die)
    {
        die = default;
        die.Offset = (ulong)c.Position;
        ulong code = c.Uleb();
        if (code == 0) return false;
        if (abbrevs.Get(code) is not { } abbrev) throw new InvalidDataException($"DWARF: DIE at 0x{die.Offset:x} uses unknown abbreviation {code}");
        die.Tag = abbrev.Tag;
        die.HasChildren = abbrev.HasChildren;
        foreach (var (attr, form0, implicitValue) in abbrev.Specs)
        {
            ulong form = form0;
            if (form == 0x16) form = c.Uleb(); // indirect
            ulong value = ReadForm(ref c, unit, form, implicitValue);
            var v = (form, value);
            switch (attr)
            {
                case 0x03: die.Name = v; die.HasName = true; break;
                case 0x6e or 0x2007: die.LinkageName = v; die.HasLinkageName = true; break;
                case 0x11: die.LowPc = v; die.HasLowPc = true; break;
                case 0x12: die.HighPc = v; die.HasHighPc = true; break;
                case 0x55: die.Ranges = v; die.HasRanges = true; break;
                case 0x31: die.Origin = v; die.HasOrigin = true; break;
                case 0x47: die.Specification = v; die.HasSpecification = true; break;
                case 0x58: die.CallFile = v; die.HasCallFile = true; break;
                case 0x59: die.CallLine = v; die.HasCallLine = true; break;
                case 0x10: die.StmtList = v; die.HasStmtList = true; break;
                case 0x1b: die.CompDir = v; die.HasCompDir = true; break;
                case 0x72: die.StrOffsetsBase = value; break;
                case 0x73 or 0x2133: die.AddrBase = value; break;
                case 0x74: die.RnglistsBase = value; break;
                case 0x2132: die.RangesBase = value; break;
            }
        }
        return true;
    }

    /// <summary>A form's value: the number, offset or index it holds (blocks and inline strings: their start).</summary>
    private static ulong ReadForm(ref DwarfCursor c, Unit unit, ulong form, long implicitValue)
    {
        int offsetSize = unit.Is64 ? 8 : 4;
        switch (form)
        {
            case 0x01: return c.Unsigned(unit.AddressSize); // addr
            case 0x03: { ulong n = c.U16(); ulong p = (ulong)c.Position; c.Skip(n); return p; }
            case 0x04: { ulong n = c.U32(); ulong p = (ulong)c.Position; c.Skip(n); return p; }
            case 0x05: return c.U16();
            case 0x06: return c.U32();
            case 0x07: return c.U64();
            case 0x08: { ulong p = (ulong)c.Position; c.CString(); return p; } // string: its offset in .debug_info
            case 0x09 or 0x18: { ulong n = c.Uleb(); ulong p = (ulong)c.Position; c.Skip(n); return p; }
            case 0x0a: { ulong n = c.U8(); ulong p = (ulong)c.Position; c.Skip(n); return p; }
            case 0x0b: return c.U8();
            case 0x0c: return c.U8();
            case 0x0d: return (ulong)c.Sleb();
            case 0x0e or 0x17 or 0x1d or 0x1f or 0x1f20 or 0x1f21: return c.Unsigned(offsetSize);
            case 0x0f or 0x15 or 0x1a or 0x1b or 0x22 or 0x23 or 0x1f01 or 0x1f02: return c.Uleb();
            case 0x10: return c.Unsigned(unit.Version <= 2 ? unit.AddressSize : offsetSize); // ref_addr
            case 0x11 or 0x25 or 0x29: return c.U8();
            case 0x12 or 0x26 or 0x2a: return c.U16();
            case 0x27 or 0x2b: return c.U24();
            case 0x13 or 0x1c or 0x28 or 0x2c: return c.U32();
            case 0x14 or 0x20 or 0x24: return c.U64();
            case 0x19: return 1; // flag_present
            case 0x1e: c.Skip(16); return 0;
            case 0x21: return (ulong)implicitValue;
            default: throw new InvalidDataException($"DWARF: unknown attribute form 0x{form:x}");
        }
    }

    private string? Str(Unit unit, (ulong Form, ulong Value) v) => v.Form switch
    {
        0x08 => DwarfCursor.CStringAt(_info, v.Value),
        0x0e => _str is null ? null : DwarfCursor.CStringAt(_str, v.Value),
        0x1f => _lineStr is null ? null : DwarfCursor.CStringAt(_lineStr, v.Value),
        0x1a or 0x25 or 0x26 or 0x27 or 0x28 or 0x1f02 => StrIndex(unit, v.Value),
        0x1d or 0x1f21 => _alt?._str is { } altStr ? DwarfCursor.CStringAt(altStr, v.Value) : null, // in dwz's supplementary file
        _ => null,
    };

    private string? StrIndex(Unit unit, ulong index)
    {
        if (_strOffsets is null || _str is null) return null;
        int size = unit.Is64 ? 8 : 4;
        var c = new DwarfCursor(_strOffsets, checked((int)(unit.StrOffsetsBase + index * (ulong)size)));
        return DwarfCursor.CStringAt(_str, c.Unsigned(size));
    }

    private ulong Addr(Unit unit, (ulong Form, ulong Value) v)
    {
        if (v.Form is 0x01) return v.Value;
        if (_addr is null) throw new InvalidDataException("DWARF: an indexed address without .debug_addr");
        var c = new DwarfCursor(_addr, checked((int)(unit.AddrBase + v.Value * unit.AddressSize)));
        return c.Unsigned(unit.AddressSize);
    }

    private static bool IsAddressForm(ulong form) => form is 0x01 or 0x1b or 0x29 or 0x2a or 0x2b or 0x2c or 0x1f01;

    /// <summary>A DIE's code ranges: low/high pc, or its range list.</summary>
    private List<(ulong Lo, ulong Hi)> RangesOf(Unit unit, in Die d)
    {
        var result = new List<(ulong, ulong)>();
        if (d.HasRanges)
        {
            ReadRangeList(unit, d.Ranges, result);
        }
        else if (d.HasLowPc && d.HasHighPc)
        {
            ulong lo = Addr(unit, d.LowPc);
            ulong hi = IsAddressForm(d.HighPc.Form) ? Addr(unit, d.HighPc) : lo + d.HighPc.Value;
            result.Add((lo, hi));
        }
        return result;
    }

    private void ReadRangeList(Unit unit, (ulong Form, ulong Value) v, List<(ulong, ulong)> result)
    {
        ulong baseAddress = unit.LowPc;
        if (unit.Version >= 5)
        {
            if (_rnglists is null) return;
            ulong offset = v.Value;
            if (v.Form == 0x23) // rnglistx: an index into the offsets after the unit's rnglists header
            {
                int size = unit.Is64 ? 8 : 4;
                var oc = new DwarfCursor(_rnglists, checked((int)(unit.RnglistsBase + v.Value * (ulong)size)));
                offset = unit.RnglistsBase + oc.Unsigned(size);
            }
            var c = new DwarfCursor(_rnglists, checked((int)offset));
            while (true)
            {
                byte kind = c.U8();
                switch (kind)
                {
                    case 0: return; // end_of_list
                    case 1: baseAddress = Addr(unit, (0x1b, c.Uleb())); break;
                    case 2: { ulong s = Addr(unit, (0x1b, c.Uleb())); ulong e = Addr(unit, (0x1b, c.Uleb())); result.Add((s, e)); break; }
                    case 3: { ulong s = Addr(unit, (0x1b, c.Uleb())); result.Add((s, s + c.Uleb())); break; }
                    case 4: { ulong s = c.Uleb(), e = c.Uleb(); result.Add((baseAddress + s, baseAddress + e)); break; }
                    case 5: baseAddress = c.Unsigned(unit.AddressSize); break;
                    case 6: { ulong s = c.Unsigned(unit.AddressSize), e = c.Unsigned(unit.AddressSize); result.Add((s, e)); break; }
                    case 7: { ulong s = c.Unsigned(unit.AddressSize); result.Add((s, s + c.Uleb())); break; }
                    default: throw new InvalidDataException($"DWARF: range list entry kind {kind}");
                }
            }
        }
        if (_ranges is null) return;
        var rc = new DwarfCursor(_ranges, checked((int)(v.Value + unit.RangesBase)));
        ulong max = unit.AddressSize == 8 ? ulong.MaxValue : uint.MaxValue;
        while (true)
        {
            ulong s = rc.Unsigned(unit.AddressSize), e = rc.Unsigned(unit.AddressSize);
            if (s == 0 && e == 0) return;
            if (s == max) { baseAddress = e; continue; }
            result.Add((baseAddress + s, baseAddress + e));
        }
    }

    private void ReadRoot(Unit unit)
    {
        var c = new DwarfCursor(_info, unit.DieStart);
        if (!ReadDie(ref c, unit, AbbrevTable(unit.AbbrevOffset), out Die root)) return;
        unit.StrOffsetsBase = root.StrOffsetsBase != 0 ? root.StrOffsetsBase : unit.Version >= 5 ? (unit.Is64 ? 16UL : 8UL) : 0;
        unit.AddrBase = root.AddrBase;
        unit.RnglistsBase = root.RnglistsBase;
        unit.RangesBase = root.RangesBase;
        unit.LowPc = root.HasLowPc ? Addr(unit, root.LowPc) : 0;
        unit.CompDir = root.HasCompDir ? Str(unit, root.CompDir) : null;
        unit.StmtList = root.HasStmtList ? (long)root.StmtList.Value : -1;
        unit.Ranges = RangesOf(unit, root);
    }

    /// <summary>Reads every subprogram with code in the unit, and the inlined subroutines inside each.</summary>
    private void ReadUnit(Unit unit)
    {
        var abbrevs = AbbrevTable(unit.AbbrevOffset);
        var functions = new List<Function>();
        // The DIE nesting: for each open parent, the function it is in (or null).
        var stack = new Stack<(Function? Fn, int Depth)>();
        Function? current = null;
        int depth = 0;
        var c = new DwarfCursor(_info, unit.DieStart);
        while (c.Position < unit.End)
        {
            if (!ReadDie(ref c, unit, abbrevs, out Die d))
            {
                if (stack.Count == 0) break;
                (current, depth) = stack.Pop();
                continue;
            }
            Function? inner = current;
            if (d.Tag == 0x2e && (d.HasLowPc || d.HasRanges)) // subprogram with code
            {
                var ranges = RangesOf(unit, d);
                inner = new Function(OriginOf(unit, d), ranges);
                functions.Add(inner);
            }
            else if (d.Tag == 0x1d && current is not null) // inlined_subroutine
            {
                current.Inlines.Add(new Inline(
                    OriginOf(unit, d), RangesOf(unit, d), depth,
                    d.HasCallFile ? (long)d.CallFile.Value : null,
                    d.HasCallLine ? (int)d.CallLine.Value : 0));
            }
            if (d.HasChildren)
            {
                stack.Push((current, depth));
                current = inner;
                depth++;
            }
        }
        unit.SetFunctions(functions);
    }

    /// <summary>Where a DIE's name is found: its own offset if it names itself, else its abstract origin or specification.</summary>
    private ulong OriginOf(Unit unit, in Die d)
    {
        if (d.HasName || d.HasLinkageName) return d.Offset;
        if (d.HasOrigin) return RefOffset(unit, d.Origin);
        if (d.HasSpecification) return RefOffset(unit, d.Specification);
        return d.Offset;
    }

    /// <summary>Stands for a DIE no file here holds (a type unit's signature): not named.</summary>
    private const ulong Elsewhere = ulong.MaxValue;

    /// <summary>Marks an offset into the supplementary file's .debug_info.</summary>
    private const ulong InAlt = 1UL << 62;

    private static ulong RefOffset(Unit unit, (ulong Form, ulong Value) v) => v.Form switch
    {
        0x10 => v.Value, // ref_addr: from the start of .debug_info
        0x11 or 0x12 or 0x13 or 0x14 or 0x15 => (ulong)unit.Start + v.Value,
        0x1f20 or 0x1c or 0x24 => InAlt | v.Value, // GNU_ref_alt, ref_sup4/8: in dwz's supplementary file
        _ => Elsewhere,
    };

    /// <summary>The name of the DIE at an offset of .debug_info, following abstract origins and specifications.</summary>
    private string? NameOf(ulong offset)
    {
        if (offset == Elsewhere) return null;
        if ((offset & InAlt) != 0) return _alt?.NameOf(offset & ~InAlt);
        if (_names.TryGetValue(offset, out var name)) return name;
        ulong key = offset;
        for (int hop = 0; hop < 8; hop++)
        {
            Unit? unit = UnitHolding(offset);
            if (unit is null) break;
            var c = new DwarfCursor(_info, checked((int)offset));
            if (!ReadDie(ref c, unit, AbbrevTable(unit.AbbrevOffset), out Die d)) break;
            if (d.HasLinkageName && Str(unit, d.LinkageName) is { } linkage) { name = linkage; break; }
            if (d.HasName && Str(unit, d.Name) is { } plain) { name = plain; break; }
            if (d.HasOrigin) offset = RefOffset(unit, d.Origin);
            else if (d.HasSpecification) offset = RefOffset(unit, d.Specification);
            else break;
            if (offset == Elsewhere) break;
            if ((offset & InAlt) != 0) { name = _alt?.NameOf(offset & ~InAlt); break; }
        }
        _names[key] = name;
        return name;
    }

    private Unit? UnitHolding(ulong offset)
    {
        int lo = 0, hi = _units.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            Unit u = _units[mid];
            if (offset < (ulong)u.Start) hi = mid - 1;
            else if (offset >= (ulong)u.End) lo = mid + 1;
            else return u;
        }
        return null;
    }

    // ---- line tables ----

    private sealed class LineTable
    {
        public ulong[] Address = [];
        public int[] File = [];
        public int[] Line = []; // -1: end of a sequence
        public string?[] Files = [];
    }

    private LineTable ReadLineTable(Unit unit)
    {
        var table = new LineTable();
        if (_line is null || unit.StmtList < 0) return table;
        var c = new DwarfCursor(_line, checked((int)unit.StmtList));
        var (length, is64) = c.InitialLength();
        if (length > (ulong)(_line.Length - c.Position)) throw new InvalidDataException($"DWARF: the line table at 0x{unit.StmtList:x} claims {length} bytes, past the end of .debug_line");
        int end = c.Position + (int)length;
        ushort version = c.U16();
        if (version is < 2 or > 5) throw new InvalidDataException($"DWARF: the line table at 0x{unit.StmtList:x} has version {version}");
        int addressSize = unit.AddressSize;
        if (version >= 5) { addressSize = c.U8(); c.U8(); }
        ulong headerLength = is64 ? c.U64() : c.U32();
        int programStart = checked(c.Position + (int)headerLength);
        byte minInst = c.U8();
        if (version >= 4) c.U8(); // maximum_operations_per_instruction: 1 on the targets this reads
        c.U8(); // default_is_stmt: every row counts here
        sbyte lineBase = (sbyte)c.U8();
        byte lineRange = c.U8();
        byte opcodeBase = c.U8();
        var stdLengths = new byte[Math.Max(0, opcodeBase - 1)];
        for (int i = 0; i < stdLengths.Length; i++) stdLengths[i] = c.U8();
        if (lineRange == 0) throw new InvalidDataException("DWARF: line table with line_range 0");

        var dirs = new List<string?>();
        var files = new List<string?>();
        var lineUnit = unit with { Is64 = is64 };
        if (version >= 5)
        {
            foreach (var (path, dir) in ReadEntries(ref c, lineUnit))
                dirs.Add(path);
            foreach (var (path, dir) in ReadEntries(ref c, lineUnit))
                files.Add(JoinPath(unit.CompDir, dir < (ulong)dirs.Count ? dirs[(int)dir] : null, path));
        }
        else
        {
            dirs.Add(unit.CompDir);
            while (true) { string s = c.CString(); if (s.Length == 0) break; dirs.Add(s); }
            files.Add(null); // file numbers start at 1 before DWARF 5
            while (true)
            {
                string s = c.CString();
                if (s.Length == 0) break;
                ulong dir = c.Uleb(); c.Uleb(); c.Uleb();
                files.Add(JoinPath(unit.CompDir, dir < (ulong)dirs.Count ? dirs[(int)dir] : null, s));
            }
        }
        table.Files = [.. files];

        var addresses = new List<ulong>();
        var fileIndex = new List<int>();
        var lines = new List<int>();
        c.Position = programStart;
        ulong address = 0; long file = 1, line = 1;
        void Row(bool endSequence)
        {
            addresses.Add(address);
            fileIndex.Add((int)file);
            lines.Add(endSequence ? -1 : (int)line);
        }
        void Reset() { address = 0; file = 1; line = 1; }
        while (c.Position < end)
        {
            byte op = c.U8();
            if (op >= opcodeBase)
            {
                int adj = op - opcodeBase;
                address += (ulong)(adj / lineRange * minInst);
                line += lineBase + adj % lineRange;
                Row(false);
                continue;
            }
            switch (op)
            {
                case 0:
                    {
                        ulong len = c.Uleb();
                        int next = checked(c.Position + (int)len);
                        byte sub = len > 0 ? c.U8() : (byte)0;
                        if (sub == 1) { Row(true); Reset(); }
                        else if (sub == 2) address = c.Unsigned(addressSize);
                        c.Position = next;
                        break;
                    }
                case 1: Row(false); break;
                case 2: address += c.Uleb() * minInst; break;
                case 3: line += c.Sleb(); break;
                case 4: file = (long)c.Uleb(); break;
                case 8: address += (ulong)((255 - opcodeBase) / lineRange * minInst); break;
                case 9: address += c.U16(); break;
                default:
                    for (int i = 0; i < stdLengths[op - 1]; i++) c.Uleb();
                    break;
            }
        }
        // Sorted by address; at one address, a sequence's end before the rows of the next, and later rows win.
        var order = new int[addresses.Count];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        Array.Sort(order, (a, b) =>
        {
            int byAddress = addresses[a].CompareTo(addresses[b]);
            if (byAddress != 0) return byAddress;
            int byEnd = (lines[a] == -1 ? 0 : 1) - (lines[b] == -1 ? 0 : 1);
            return byEnd != 0 ? byEnd : a - b;
        });
        table.Address = [.. order.Select(i => addresses[i])];
        table.File = [.. order.Select(i => fileIndex[i])];
        table.Line = [.. order.Select(i => lines[i])];
        return table;
    }

    /// <summary>DWARF 5 directory or file entries: each one's path and directory index.</summary>
    private List<(string? Path, ulong Dir)> ReadEntries(ref DwarfCursor c, Unit unit)
    {
        int formatCount = c.U8();
        var format = new (ulong Type, ulong Form)[formatCount];
        for (int i = 0; i < formatCount; i++) format[i] = (c.Uleb(), c.Uleb());
        ulong count = c.Uleb();
        var result = new List<(string?, ulong)>();
        for (ulong n = 0; n < count; n++)
        {
            string? path = null; ulong dir = 0;
            foreach (var (type, form) in format)
            {
                ulong value = ReadForm(ref c, unit, form, 0);
                if (type == 1) path = form == 0x08 ? DwarfCursor.CStringAt(c.Data, value) : Str(unit, (form, value));
                else if (type == 2) dir = value;
            }
            result.Add((path, dir));
        }
        return result;
    }

    private static string? JoinPath(string? compDir, string? dir, string? name)
    {
        if (name is null) return null;
        if (name.StartsWith('/')) return name;
        if (!string.IsNullOrEmpty(dir)) name = dir.EndsWith('/') ? dir + name : dir + "/" + name;
        if (name.StartsWith('/') || string.IsNullOrEmpty(compDir)) return name;
        return compDir.EndsWith('/') ? compDir + name : compDir + "/" + name;
    }

    // ---- units ----

    private sealed record Unit(int Start, int DieStart, int End, ushort Version, bool Is64, byte AddressSize, ulong AbbrevOffset, byte UnitType)
    {
        public ulong StrOffsetsBase, AddrBase, RnglistsBase, RangesBase, LowPc;
        public string? CompDir;
        public long StmtList = -1;
        public List<(ulong Lo, ulong Hi)> Ranges = [];
        public List<Function>? Functions;
        private (ulong Lo, ulong Hi, Function F)[] _byAddress = [];
        private LineTable? _lines;

        public void SetFunctions(List<Function> functions)
        {
            Functions = functions;
            _byAddress = [.. functions.SelectMany(f => f.Ranges.Where(r => r.Hi > r.Lo).Select(r => (r.Lo, r.Hi, f))).OrderBy(r => r.Lo)];
        }

        public Function? FunctionAt(ulong address)
        {
            int lo = 0, hi = _byAddress.Length - 1, found = -1;
            while (lo <= hi)
            {
                int mid = (lo + hi) / 2;
                if (_byAddress[mid].Lo <= address) { found = mid; lo = mid + 1; }
                else hi = mid - 1;
            }
            // Nested functions: the innermost (latest-starting) range that holds the address.
            for (int k = found; k >= 0 && k > found - 16; k--)
                if (address < _byAddress[k].Hi) return _byAddress[k].F;
            return null;
        }

        public (string? File, int Line) LineAt(ulong address, DwarfInfo owner)
        {
            _lines ??= owner.ReadLineTable(this);
            int i = Array.BinarySearch(_lines.Address, address);
            if (i < 0) i = ~i - 1;
            else while (i + 1 < _lines.Address.Length && _lines.Address[i + 1] == address) i++;
            if (i < 0 || _lines.Line[i] < 0) return (null, 0);
            return (FileName(_lines.File[i], owner), _lines.Line[i]);
        }

        public string? FileName(long index, DwarfInfo owner)
        {
            _lines ??= owner.ReadLineTable(this);
            return index >= 0 && index < _lines.Files.Length ? _lines.Files[index] : null;
        }
    }

    private sealed record Function(ulong Origin, List<(ulong Lo, ulong Hi)> Ranges)
    {
        public List<Inline> Inlines { get; } = [];
    }

    private sealed record Inline(ulong Origin, List<(ulong Lo, ulong Hi)> Ranges, int Depth, long? CallFile, int CallLine)
    {
        public bool Contains(ulong address)
        {
            foreach (var (lo, hi) in Ranges) if (address >= lo && address < hi) return true;
            return false;
        }
    }
}
