namespace NativeHeap.Arenas;

/// <summary>
/// An arena's mutex: an int in the arena's native memory (glibc's <c>mutex</c> field), so that
/// the arena state holds no managed object. Uncontended, it is one compare-exchange.
/// </summary>
internal static unsafe class ArenaLock
{
    internal static void Enter(int* mutex)
    {
        if (Interlocked.CompareExchange(ref *mutex, 1, 0) != 0) EnterContended(mutex);
    }

    private static void EnterContended(int* mutex)
    {
        var spinner = new SpinWait();
        do
        {
            spinner.SpinOnce();
        }
        while (Volatile.Read(ref *mutex) != 0 || Interlocked.CompareExchange(ref *mutex, 1, 0) != 0);
    }

    /// <summary>__libc_lock_trylock: true when the lock was free and is now held.</summary>
    internal static bool TryEnter(int* mutex) => Volatile.Read(ref *mutex) == 0 && Interlocked.CompareExchange(ref *mutex, 1, 0) == 0;

    internal static void Exit(int* mutex) => Volatile.Write(ref *mutex, 0);
}
