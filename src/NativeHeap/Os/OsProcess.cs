using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using NativeHeap.Interop;

namespace NativeHeap.Os;

/// <summary>
/// The kernel's calls that are not about memory, as the rest of the library needs them: a
/// /proc file read without a GC allocation, random bytes for the tcache key, and glibc's
/// report-and-abort for C callers.
/// </summary>
internal static unsafe class OsProcess
{
    /// <summary>Read up to <paramref name="capacity"/> bytes of a /proc file (a NUL-terminated path) with no GC allocation.</summary>
    /// <exception cref="OsCallException">The file could not be opened or read.</exception>
    internal static int ReadProcFile(ReadOnlySpan<byte> path, byte* buffer, int capacity)
    {
        int fd;
        fixed (byte* p = path) fd = Libc.Open(p, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            int openErrno = Marshal.GetLastPInvokeError(); // before the message is formatted
            throw new OsCallException($"open({Name(path)})", openErrno);
        }
        nint n = Libc.Pread(fd, buffer, (nuint)capacity, 0);
        int errno = Marshal.GetLastPInvokeError();
        Libc.Close(fd);
        if (n <= 0) throw new OsCallException($"pread({Name(path)})", errno);
        return (int)n;
    }

    private static string Name(ReadOnlySpan<byte> path) => System.Text.Encoding.ASCII.GetString(path[..^1]);

    /// <summary>getrandom(GRND_NONBLOCK): true when all <paramref name="length"/> bytes came.</summary>
    internal static bool TryGetRandom(void* buffer, nuint length) =>
        Libc.GetRandom(buffer, length, 1 /* GRND_NONBLOCK */) == (nint)length;

    /// <summary>What glibc's malloc_printerr does: the message on stderr, then abort().</summary>
    [DoesNotReturn]
    internal static void PrintAndAbort(string message) => Libc.PrintAndAbort(message);

    /// <summary>Writes <paramref name="message"/> to stderr (fd 2) with write(2): no buffering to lose if the process then crashes.</summary>
    internal static void WriteStderr(string message) => Libc.WriteAll(2, System.Text.Encoding.UTF8.GetBytes(message));
}
