using System.Runtime.InteropServices;

namespace NativeHeap;

/// <summary>
/// A system call that NativeHeap made failed. The message names the call, its arguments
/// and the errno, e.g. <c>munmap(0x7f0000000000, 1 GiB) failed: EINVAL (Invalid argument)</c>.
/// </summary>
public sealed class OsCallException : Exception
{
    /// <summary>Creates the exception for a failed call.</summary>
    /// <param name="call">The call and its arguments, as text.</param>
    /// <param name="errno">The errno the call left.</param>
    public OsCallException(string call, int errno)
        : base(Describe(call, errno))
    {
        Call = call;
        Errno = errno;
    }

    /// <summary>The call and its arguments, as text.</summary>
    public string Call { get; }

    /// <summary>The errno the call left.</summary>
    public int Errno { get; }

    internal static string Describe(string call, int errno) =>
        $"{call} failed: {ErrnoName(errno)} ({Marshal.GetPInvokeErrorMessage(errno)})";

    /// <summary>The symbolic name of an errno value (ENOMEM, EINVAL, ...).</summary>
    internal static string ErrnoName(int errno) => errno switch
    {
        1 => "EPERM",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        22 => "EINVAL",
        24 => "EMFILE",
        _ => $"errno {errno}",
    };
}
