using NativeHeap.Os;

namespace NativeHeap.Diagnostics;

/// <summary>
/// One reading of <c>/proc/self/statm</c>: the process's memory in pages, as the kernel
/// counts it. <see cref="AnonymousBytes"/> (resident less shared) is what a heap owns and
/// repeats between identical runs to within a page; total resident varies by up to ~1 MiB
/// (file pages faulted in lazily), so compare anonymous memory and show both.
/// </summary>
public readonly record struct Statm(
    ulong SizePages, ulong ResidentPages, ulong SharedPages, ulong TextPages,
    ulong LibPages, ulong DataPages, ulong DirtyPages)
{

    /// <summary>The page size the fields count in (from sysconf).</summary>
    public static ulong PageSize => OsMemory.PageSize;

    /// <summary>Total address space (VmSize).</summary>
    public ulong SizeBytes => SizePages * PageSize;
    /// <summary>Resident memory (VmRSS).</summary>
    public ulong ResidentBytes => ResidentPages * PageSize;
    /// <summary>Resident pages backed by files or shared mappings.</summary>
    public ulong SharedBytes => SharedPages * PageSize;
    /// <summary>Program text.</summary>
    public ulong TextBytes => TextPages * PageSize;
    /// <summary>Always 0 since Linux 2.6.</summary>
    public ulong LibBytes => LibPages * PageSize;
    /// <summary>Data plus stack (VmData + VmStk).</summary>
    public ulong DataBytes => DataPages * PageSize;
    /// <summary>Always 0 since Linux 2.6.</summary>
    public ulong DirtyBytes => DirtyPages * PageSize;
    /// <summary>Resident less shared: the anonymous pages, which is what a heap owns.</summary>
    public ulong AnonymousBytes => (ResidentPages - SharedPages) * PageSize;

    /// <summary>Read /proc/self/statm now, without allocating on the GC heap.</summary>
    /// <exception cref="OsCallException">The file could not be read.</exception>
    public static unsafe Statm Read()
    {
        byte* buffer = stackalloc byte[256];
        int n = OsProcess.ReadProcFile("/proc/self/statm\0"u8, buffer, 255);
        Span<ulong> fields = stackalloc ulong[7];
        int field = 0;
        bool inNumber = false;
        for (int i = 0; i < n && field < 7; i++)
        {
            byte c = buffer[i];
            if (c >= (byte)'0' && c <= (byte)'9')
            {
                fields[field] = fields[field] * 10 + (ulong)(c - '0');
                inNumber = true;
            }
            else if (inNumber)
            {
                field++;
                inNumber = false;
            }
        }
        if (inNumber) field++;
        if (field < 7) throw new FormatException($"/proc/self/statm held {field} numbers, not 7.");
        return new Statm(fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6]);
    }

    /// <summary>
    /// The process's anonymous resident bytes as /proc/self/smaps_rollup adds them up from the
    /// page tables ("Anonymous:"): a second reading of what <see cref="AnonymousBytes"/> counts,
    /// taken a different way (statm's counters are the kernel's running totals).
    /// </summary>
    /// <exception cref="OsCallException">The file could not be read.</exception>
    public static unsafe ulong ReadSmapsAnonymousBytes()
    {
        const int size = 4096;
        byte* buffer = stackalloc byte[size];
        int n = OsProcess.ReadProcFile("/proc/self/smaps_rollup\0"u8, buffer, size);
        var text = new ReadOnlySpan<byte>(buffer, n);
        int at = text.IndexOf("\nAnonymous:"u8);
        if (at < 0) throw new FormatException("/proc/self/smaps_rollup has no Anonymous line.");
        ulong kib = 0;
        foreach (byte c in text[(at + 11)..])
        {
            if (c == (byte)'\n') break;
            if (c >= (byte)'0' && c <= (byte)'9') kib = kib * 10 + (ulong)(c - '0');
        }
        return kib * 1024;
    }
}
