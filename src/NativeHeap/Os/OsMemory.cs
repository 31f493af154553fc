using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Interop;
using TmdsLibC = Tmds.Linux.LibC;

namespace NativeHeap.Os;

/// <summary>
/// The kernel's memory calls as the allocator needs them. Calls whose failure glibc's
/// malloc tolerates (sbrk, mmap, mremap: it falls back or reports no memory) return a
/// failure value and remember why in <see cref="LastFailure"/>; calls that must not fail
/// (munmap, madvise, mprotect) throw <see cref="OsCallException"/>. A call that succeeds
/// leaves errno as the caller had it (a libc call may change it even when it succeeds), as C's malloc and
/// free do.
/// </summary>
/// <remarks>
/// The only folder that sees the bindings. The page size and mincore come from Tmds.LibC; the
/// allocator's own paths (sbrk, mmap, munmap, mremap, madvise, mprotect, and the futex in
/// FutexLock) use our declarations in Interop/Libc.cs, which say why (docs/decisions.md).
/// </remarks>
internal static unsafe class OsMemory
{
    /// <summary>The page size, from sysconf(_SC_PAGESIZE).</summary>
    internal static readonly nuint PageSize = ReadPageSize();

    /// <summary>sbrk's failure value, glibc's MORECORE_FAILURE.</summary>
    internal static readonly byte* SbrkFailure = (byte*)-1;

    private static readonly int[] s_breakLockWord = GC.AllocateArray<int>(1, pinned: true);

    /// <summary>
    /// Serialises every NativeHeap sequence that reads or moves the program break: glibc's
    /// sbrk is not safe against a concurrent caller, and each such sequence (grow, then
    /// correct alignment; read, then shrink) must see the break it left.
    /// </summary>
    /// <remarks>
    /// A <see cref="FutexLock"/> word in a pinned array: it never moves, and entering it
    /// allocates nothing. <see cref="s_breakLockWord"/> keeps the array alive: a pinned array
    /// nothing references is still collected, and its memory given to the next pinned one.
    /// </remarks>
    internal static readonly int* BreakLock = (int*)Unsafe.AsPointer(ref s_breakLockWord[0]);

    [ThreadStatic] private static string? t_lastFailure;

    /// <summary>The last tolerated failure on this thread, e.g. "mmap(NULL, 1 GiB) failed: ENOMEM (...)".</summary>
    internal static string? LastFailure
    {
        get => t_lastFailure;
        set => t_lastFailure = value;
    }

    private static nuint ReadPageSize()
    {
        const int SC_PAGESIZE = 30; // Tmds.LibC has sysconf but none of the _SC_ names
        int callerErrno = Marshal.GetLastSystemError(); // a C caller's first valloc must not see errno change (Tmds.LibC's stub clears it)
        long size = TmdsLibC.sysconf(SC_PAGESIZE);
        if (size <= 0)
            throw new OsCallException("sysconf(_SC_PAGESIZE)", Marshal.GetLastPInvokeError());
        Marshal.SetLastSystemError(callerErrno);
        return (nuint)size;
    }

    private static long s_sbrkMoves;

    /// <summary>How many sbrk calls NativeHeap made that asked to move the break.</summary>
    internal static long SbrkMoves => Interlocked.Read(ref s_sbrkMoves);

    /// <summary>sbrk(increment); <see cref="SbrkFailure"/> on failure. Caller holds <see cref="BreakLock"/>.</summary>
    internal static byte* Sbrk(nint increment)
    {
        if (increment != 0) Interlocked.Increment(ref s_sbrkMoves);
        int callerErrno = Marshal.GetLastSystemError();
        nint result = Libc.Sbrk(increment);
        if (result == -1)
        {
            int errno = Marshal.GetLastSystemError();
            t_lastFailure = OsCallException.Describe($"sbrk({increment})", errno);
        }
        else Marshal.SetLastSystemError(callerErrno);
        return (byte*)result;
    }

    /// <summary>An anonymous private read-write mapping; null on failure.</summary>
    internal static byte* Map(nuint size) => Map(size, Libc.PROT_READ | Libc.PROT_WRITE, 0);

    /// <summary>A read-write mapping with no swap reserved (MAP_NORESERVE): a table whose pages are touched sparsely; null on failure.</summary>
    internal static byte* MapSparse(nuint size) => Map(size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_NORESERVE);

    /// <summary>Address space only (PROT_NONE, MAP_NORESERVE), at <paramref name="hint"/> if free: a heap's 64 MiB, committed by <see cref="TryCommit"/>; null on failure.</summary>
    internal static byte* Reserve(nuint size, void* hint = null) => Map(size, Libc.PROT_NONE, Libc.MAP_NORESERVE, hint);

    /// <summary>An anonymous private mapping with the given protection and extra flags, at <paramref name="hint"/> if free; null on failure.</summary>
    private static byte* Map(nuint size, int prot, int extraFlags, void* hint = null)
    {
        int callerErrno = Marshal.GetLastSystemError();
        nint result = Libc.Mmap((nint)hint, size, prot, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | extraFlags, -1, 0);
        if (result == Libc.MAP_FAILED)
        {
            int errno = Marshal.GetLastSystemError();
            t_lastFailure = OsCallException.Describe($"mmap(NULL, {Sizes.Format(size)})", errno);
            return null;
        }
        Marshal.SetLastSystemError(callerErrno);
        return (byte*)result;
    }

    /// <summary>munmap; throws on failure, which means the allocator's own records are wrong.</summary>
    internal static void Unmap(void* address, nuint size)
    {
        int callerErrno = Marshal.GetLastSystemError();
        if (Libc.Munmap((nint)address, size) != 0)
        {
            int errno = Marshal.GetLastSystemError();
            throw new OsCallException($"munmap(0x{(nuint)address:x}, {Sizes.Format(size)})", errno);
        }
        Marshal.SetLastSystemError(callerErrno);
    }

    /// <summary>mremap with MREMAP_MAYMOVE; null on failure.</summary>
    internal static byte* Remap(void* address, nuint oldSize, nuint newSize)
    {
        int callerErrno = Marshal.GetLastSystemError();
        nint result = Libc.Mremap((nint)address, oldSize, newSize, Libc.MREMAP_MAYMOVE);
        if (result == Libc.MAP_FAILED)
        {
            int errno = Marshal.GetLastSystemError();
            t_lastFailure = OsCallException.Describe(
                $"mremap(0x{(nuint)address:x}, {Sizes.Format(oldSize)}, {Sizes.Format(newSize)})", errno);
            return null;
        }
        Marshal.SetLastSystemError(callerErrno);
        return (byte*)result;
    }

    /// <summary>madvise(MADV_DONTNEED): the pages stay mapped and read back as zeros; RSS falls.</summary>
    internal static void DontNeed(void* address, nuint size)
    {
        int callerErrno = Marshal.GetLastSystemError();
        if (Libc.Madvise((nint)address, size, Libc.MADV_DONTNEED) != 0)
        {
            int errno = Marshal.GetLastSystemError();
            throw new OsCallException($"madvise(0x{(nuint)address:x}, {Sizes.Format(size)}, MADV_DONTNEED)", errno);
        }
        Marshal.SetLastSystemError(callerErrno);
    }

    /// <summary>
    /// How many of the pages of [<paramref name="address"/>, +<paramref name="size"/>) are
    /// resident (mincore(2)); the range is widened to whole pages. Diagnostics, not the allocator's paths.
    /// </summary>
    internal static nuint ResidentPages(void* address, nuint size)
    {
        nuint start = AlignDown((nuint)address, PageSize);
        nuint pages = (AlignUp((nuint)address + size, PageSize) - start) / PageSize;
        byte[] vec = new byte[pages];
        fixed (byte* v = vec) Residency(start, pages, v);
        nuint resident = 0;
        foreach (byte b in vec) resident += (nuint)(b & 1);
        return resident;
    }

    /// <summary>
    /// mincore(2): bit 0 of <paramref name="vec"/>[i] says whether page i from the page-aligned
    /// <paramref name="pageStart"/> is resident. Diagnostics, not the allocator's paths.
    /// </summary>
    /// <exception cref="OsCallException">A page in the range is not mapped.</exception>
    internal static void Residency(nuint pageStart, nuint pages, byte* vec)
    {
        if (pages == 0) return;
        if (TmdsLibC.mincore((void*)pageStart, (Tmds.Linux.size_t)(pages * PageSize), vec) != 0)
        {
            // Tmds.LibC's stub keeps errno as the call left it; read it before anything else runs
            // (formatting the message may JIT and enter the runtime, which changes errno).
            int errno = Marshal.GetLastPInvokeError();
            throw new OsCallException($"mincore(0x{pageStart:x}, {Sizes.Format(pages * PageSize)})", errno);
        }
    }

    /// <summary>Makes reserved pages read-write (mprotect); false on failure (a heap that cannot grow), the reason in <see cref="LastFailure"/>.</summary>
    internal static bool TryCommit(void* address, nuint size) => TryProtect(address, size, Libc.PROT_READ | Libc.PROT_WRITE);

    /// <summary>Makes pages inaccessible (mprotect PROT_NONE: the debug heap's guard pages); false on failure, the reason in <see cref="LastFailure"/>.</summary>
    internal static bool TryProtectNone(void* address, nuint size) => TryProtect(address, size, Libc.PROT_NONE);

    private static bool TryProtect(void* address, nuint size, int prot)
    {
        int callerErrno = Marshal.GetLastSystemError();
        if (Libc.Mprotect((nint)address, size, prot) == 0)
        {
            Marshal.SetLastSystemError(callerErrno);
            return true;
        }
        int errno = Marshal.GetLastSystemError();
        t_lastFailure = OsCallException.Describe($"mprotect(0x{(nuint)address:x}, {Sizes.Format(size)}, {prot})", errno);
        return false;
    }

    internal static nuint AlignUp(nuint value, nuint alignment) => (value + alignment - 1) & ~(alignment - 1);

    /// <summary>
    /// a + b, or nuint.MaxValue where that wraps: a size no call can satisfy, so that a huge
    /// pad makes the request fail instead of turning it into a small one.
    /// </summary>
    internal static nuint AddSaturating(nuint a, nuint b) => a > nuint.MaxValue - b ? nuint.MaxValue : a + b;

    internal static nuint AlignDown(nuint value, nuint alignment) => value & ~(alignment - 1);
}
