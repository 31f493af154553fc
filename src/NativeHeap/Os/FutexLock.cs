using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Interop;

namespace NativeHeap.Os;

/// <summary>
/// A lock that is one int in native memory (glibc's lll_lock, as the arena's <c>mutex</c>
/// field): 0 free, 1 held, 2 held with a waiter asleep. Uncontended it is one compare-exchange
/// to enter and one exchange to leave; contended it spins briefly, then sleeps on a futex.
/// </summary>
/// <remarks>
/// It must not allocate a managed object, ever: under libnativeheap a fork may come at any
/// moment of a call that did not pass the fork gate (the C layer's gate.c), and a .NET allocation in
/// progress then leaves the runtime's locks held in the child for ever; hence no SpinWait, whose
/// Thread.Sleep creates the thread's Thread object (docs/decisions.md). Nor may it change the
/// caller's errno.
/// </remarks>
internal static unsafe class FutexLock
{
    private const int Free = 0, Held = 1, Contended = 2;
    private const int SpinTries = 64;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Enter(int* word)
    {
        if (Interlocked.CompareExchange(ref *word, Held, Free) != Free) EnterContended(word);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void EnterContended(int* word)
    {
        for (int i = 0; i < SpinTries; i++)
        {
            Thread.SpinWait(16);
            if (Volatile.Read(ref *word) == Free && Interlocked.CompareExchange(ref *word, Held, Free) == Free) return;
        }
        // Mark it contended; whoever held it wakes one sleeper when it leaves.
        while (Interlocked.Exchange(ref *word, Contended) != Free)
            Wait(word, Contended);
    }

    /// <summary>__libc_lock_trylock: true when the lock was free and is now held.</summary>
    internal static bool TryEnter(int* word) =>
        Volatile.Read(ref *word) == Free && Interlocked.CompareExchange(ref *word, Held, Free) == Free;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Exit(int* word)
    {
        if (Interlocked.Exchange(ref *word, Free) == Contended) Wake(word);
    }

    /// <summary>Holds the lock until disposed: <c>using (FutexLock.Hold(word)) { ... }</c>.</summary>
    internal static Scope Hold(int* word)
    {
        Enter(word);
        return new Scope(word);
    }

    internal readonly ref struct Scope(int* word)
    {
        public void Dispose() => Exit(word);
    }

    // FUTEX_WAIT returns at once (EAGAIN) if the word is no longer `expected`, and may wake
    // spuriously (EINTR): the callers loop, so the result is not needed, and errno is put back.
    private static void Wait(int* word, int expected)
    {
        int callerErrno = Marshal.GetLastSystemError();
        Libc.Futex(Libc.SYS_futex, word, Libc.FUTEX_WAIT_PRIVATE, expected, null);
        Marshal.SetLastSystemError(callerErrno);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Wake(int* word)
    {
        int callerErrno = Marshal.GetLastSystemError();
        Libc.Futex(Libc.SYS_futex, word, Libc.FUTEX_WAKE_PRIVATE, 1, null);
        Marshal.SetLastSystemError(callerErrno);
    }
}
