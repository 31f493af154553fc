using System.Buffers.Binary;
using System.Globalization;
using Microsoft.Win32.SafeHandles;

namespace NativeHeap.Symbols;

/// <summary>
/// The files this process has mapped, from /proc/self/maps, as <see cref="TraceModule"/>s: the
/// span of each file's mappings, its load bias (from the ELF program headers) and its build-id
/// (from the ELF notes). A mapped file that is not ELF (a .NET assembly) gets the start of its
/// mapping at file offset 0 as bias, so its frames read as file+offset.
/// </summary>
internal static class ProcessModules
{
    /// <summary>Every file-backed module of this process, by address.</summary>
    public static List<TraceModule> Read(string mapsPath = "/proc/self/maps")
    {
        var mappings = new List<(ulong Start, ulong End, ulong Offset, string Inode, string Path)>();
        foreach (string line in File.ReadLines(mapsPath))
        {
            // start-end perms offset dev inode   path (the path may hold spaces)
            string[] f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 6) continue;
            string path = f[5].Trim();
            // Anonymous memory, [heap], [stack], [vdso], the runtime's double-mapped JIT memory
            // (/memfd:doublemapper) and files deleted since: nothing on disk to read.
            if (!path.StartsWith('/') || path.StartsWith("/memfd:", StringComparison.Ordinal) || path.EndsWith(" (deleted)", StringComparison.Ordinal)) continue;
            int dash = f[0].IndexOf('-');
            if (dash < 0) continue;
            mappings.Add((Hex(f[0][..dash]), Hex(f[0][(dash + 1)..]), Hex(f[2]), f[4], path));
        }
        var modules = new List<TraceModule>();
        // One module per run of mappings of one file (the same file mapped twice, as after
        // dlclose and dlopen, is two runs).
        for (int i = 0; i < mappings.Count;)
        {
            int j = i + 1;
            while (j < mappings.Count && mappings[j].Path == mappings[i].Path && mappings[j].Inode == mappings[i].Inode) j++;
            var run = mappings.GetRange(i, j - i);
            modules.Add(Module(run.Min(m => m.Start), run.Max(m => m.End), run.MinBy(m => m.Offset), mappings[i].Path));
            i = j;
        }
        return modules;
    }

    private static TraceModule Module(ulong low, ulong high, (ulong Start, ulong End, ulong Offset, string Inode, string Path) first, string path)
    {
        ulong fallbackBias = first.Start - first.Offset;
        if (!ElfHeaders.TryRead(path, out var loads, out string? buildId) || loads.Count == 0)
            return new TraceModule(low, high, fallbackBias, null, path);
        // The PT_LOAD the lowest mapping comes from: its page-rounded file offset is the mapping's.
        ulong page = (ulong)Environment.SystemPageSize;
        foreach (var (vaddr, offset) in loads)
            if ((offset & ~(page - 1)) == first.Offset)
                return new TraceModule(low, high, first.Start - (vaddr & ~(page - 1)), buildId, path);
        return new TraceModule(low, high, fallbackBias, buildId, path);
    }

    private static ulong Hex(string s) => ulong.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
}

/// <summary>
/// An ELF file's PT_LOAD segments and GNU build-id, read from its program headers and PT_NOTE
/// segments: a few small reads, without the section and symbol tables <see cref="ElfImage"/> reads.
/// </summary>
internal static class ElfHeaders
{
    private const uint PtLoad = 1, PtNote = 4, NtGnuBuildId = 3;

    /// <summary>False when the file is missing, unreadable, or not a little-endian 64-bit ELF file.</summary>
    public static bool TryRead(string path, out List<(ulong Vaddr, ulong Offset)> loads, out string? buildId)
    {
        loads = [];
        buildId = null;
        try
        {
            using SafeFileHandle file = File.OpenHandle(path);
            long length = RandomAccess.GetLength(file);
            Span<byte> header = stackalloc byte[64];
            if (length < 64 || RandomAccess.Read(file, header, 0) < 64) return false;
            // \x7fELF, ELFCLASS64, ELFDATA2LSB
            if (!header[..4].SequenceEqual("\u007fELF"u8) || header[4] != 2 || header[5] != 1) return false;
            ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(header[32..]);
            int phentsize = BinaryPrimitives.ReadUInt16LittleEndian(header[54..]);
            int phnum = BinaryPrimitives.ReadUInt16LittleEndian(header[56..]);
            if (phentsize < 56 || phnum == 0 || phoff + (ulong)(phentsize * phnum) > (ulong)length) return false;
            byte[] table = new byte[phentsize * phnum];
            if (RandomAccess.Read(file, table, (long)phoff) < table.Length) return false;
            for (int i = 0; i < phnum; i++)
            {
                ReadOnlySpan<byte> ph = table.AsSpan(i * phentsize, phentsize);
                uint type = BinaryPrimitives.ReadUInt32LittleEndian(ph);
                ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]);
                ulong vaddr = BinaryPrimitives.ReadUInt64LittleEndian(ph[16..]);
                ulong filesz = BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]);
                if (type == PtLoad) loads.Add((vaddr, offset));
                else if (type == PtNote && buildId is null && filesz is > 0 and < 1 << 20 && offset + filesz <= (ulong)length)
                {
                    byte[] notes = new byte[filesz];
                    if (RandomAccess.Read(file, notes, (long)offset) == notes.Length) buildId = BuildId(notes);
                }
            }
            loads.Sort((a, b) => a.Offset.CompareTo(b.Offset));
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static string? BuildId(ReadOnlySpan<byte> notes)
    {
        // Elf64_Nhdr: namesz, descsz, type; the name and the descriptor each padded to 4 bytes.
        while (notes.Length >= 12)
        {
            uint namesz = BinaryPrimitives.ReadUInt32LittleEndian(notes);
            uint descsz = BinaryPrimitives.ReadUInt32LittleEndian(notes[4..]);
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(notes[8..]);
            long nameEnd = 12 + ((namesz + 3L) & ~3L), descEnd = nameEnd + ((descsz + 3L) & ~3L);
            if (nameEnd + descsz > notes.Length) return null;
            if (type == NtGnuBuildId && namesz == 4 && notes.Slice(12, 4).SequenceEqual("GNU\0"u8) && descsz > 0)
                return Convert.ToHexStringLower(notes.Slice((int)nameEnd, (int)descsz));
            if (descEnd >= notes.Length) return null;
            notes = notes[(int)descEnd..];
        }
        return null;
    }
}
