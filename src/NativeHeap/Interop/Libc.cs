using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;

namespace NativeHeap.Interop;

/// <summary>
/// The libc entry points NativeHeap declares itself. Blittable signatures only; every call that
/// can fail sets errno, which callers read with <see cref="Marshal.GetLastPInvokeError"/> at
/// once, except the memory calls of the allocator's own paths (sbrk, mmap, munmap, mremap,
/// madvise, mprotect) and futex: their callers read errno itself
/// (<see cref="Marshal.GetLastSystemError"/>) right after a failure, as a SetLastError stub
/// would. None is marked SuppressGCTransition: each may block in the kernel.
/// </summary>
/// <remarks>
/// Why these are not Tmds.LibC's (which the OS layer uses for the page size and mincore):
/// every Tmds.LibC function is a DllImport with SetLastError, whose stub clears errno before
/// the call and keeps the error in a managed thread static. C threads reach the memory calls
/// and futex through libnativeheap, and under NativeAOT that thread static costs each C
/// thread a GC allocation, which a C caller must not pay (figures in docs/decisions.md).
/// </remarks>
internal static unsafe partial class Libc
{
    private const string Lib = "libc.so.6";

    internal const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2;
    internal const int MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
    internal const int MREMAP_MAYMOVE = 1;
    internal const int MADV_DONTNEED = 4;
    internal const int O_RDONLY = 0, O_CLOEXEC = 0x80000;
    internal static readonly nint MAP_FAILED = -1;

    [LibraryImport(Lib, EntryPoint = "sbrk")]
    internal static partial nint Sbrk(nint increment);

    [LibraryImport(Lib, EntryPoint = "mmap")]
    internal static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(Lib, EntryPoint = "munmap")]
    internal static partial int Munmap(nint addr, nuint length);

    // mremap is variadic in C, but glibc implements it as a plain syscall stub that reads
    // the fifth argument only with MREMAP_FIXED, which NativeHeap never passes.
    [LibraryImport(Lib, EntryPoint = "mremap")]
    internal static partial nint Mremap(nint oldAddress, nuint oldSize, nuint newSize, int flags);

    [LibraryImport(Lib, EntryPoint = "madvise")]
    internal static partial int Madvise(nint addr, nuint length, int advice);

    [LibraryImport(Lib, EntryPoint = "mprotect")]
    internal static partial int Mprotect(nint addr, nuint length, int prot);

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true)]
    internal static partial int Open(byte* path, int flags);

    [LibraryImport(Lib, EntryPoint = "pread", SetLastError = true)]
    internal static partial nint Pread(int fd, byte* buffer, nuint count, long offset);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    internal static partial nint Write(int fd, byte* buffer, nuint count);

    [LibraryImport(Lib, EntryPoint = "abort")]
    internal static partial void Abort();

    /// <summary>What glibc's malloc_printerr does: "<paramref name="message"/>\n" on stderr, then abort() (SIGABRT, a core).</summary>
    [DoesNotReturn]
    internal static void PrintAndAbort(string message)
    {
        // No allocation: the heap may be what is broken. Non-ASCII is replaced, glibc's words are
        // ASCII. A debug report's stacks run longer than one buffer: written a buffer at a time.
        Span<byte> text = stackalloc byte[1024];
        for (int start = 0; start <= message.Length; start += text.Length)
        {
            int n = Math.Min(message.Length - start, text.Length);
            for (int i = 0; i < n; i++) text[i] = message[start + i] < 128 ? (byte)message[start + i] : (byte)'?';
            WriteAll(2, text[..n]);
            if (n < text.Length) break;
        }
        WriteAll(2, "\n"u8);
        Abort();
        throw new UnreachableException();
    }

    /// <summary>write(2) until all is written or it fails.</summary>
    internal static void WriteAll(int fd, ReadOnlySpan<byte> bytes)
    {
        fixed (byte* p = bytes)
        {
            for (nuint done = 0; done < (nuint)bytes.Length;)
            {
                nint n = Write(fd, p + done, (nuint)bytes.Length - done);
                if (n <= 0) break;
                done += (nuint)n;
            }
        }
    }

    [LibraryImport(Lib, EntryPoint = "fputs", SetLastError = true)]
    internal static partial int Fputs(byte* text, nint stream);

    internal const long SYS_futex = 202;
    internal const int FUTEX_WAIT_PRIVATE = 128, FUTEX_WAKE_PRIVATE = 129;

    // syscall is variadic in C; on x86-64 integer arguments travel in the same registers
    // either way, and the kernel reads only those futex(2) needs. No SetLastError: its result
    // is not needed (see FutexLock), and the stub's thread static would cost a C thread a GC object.
    [LibraryImport(Lib, EntryPoint = "syscall")]
    internal static partial long Futex(long number, int* address, int operation, int value, void* timeout);

    [LibraryImport(Lib, EntryPoint = "getrandom", SetLastError = true)]
    internal static partial nint GetRandom(void* buffer, nuint length, uint flags);

    /// <summary>
    /// glibc's struct mallinfo2: what libnativeheap's nh_mallinfo2 returns, and what the lab
    /// reads from glibc's own mallinfo2 (NativeHeap.Lab.GlibcMalloc).
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }
}
