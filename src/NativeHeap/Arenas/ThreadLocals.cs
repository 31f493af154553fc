using NativeHeap.Bins;

namespace NativeHeap.Arenas;

/// <summary>
/// What glibc keeps in thread-local variables: the thread's tcache and the arena it is
/// attached to (thread_arena). The process heap keeps one per thread in native memory (a
/// .NET thread's behind a thread static, a C thread's in libnativeheap's C thread-local);
/// a private heap made for a test keeps a single one in its context.
/// </summary>
internal unsafe struct ThreadLocals
{
    /// <summary>
    /// First, where libnativeheap's C fast paths read it (struct nhm_thread_locals in
    /// src/NativeHeap.Native/nativeheap-managed.h): null until the tcache is made and again once
    /// it is given back, which is what turns the C fast paths off for this thread.
    /// </summary>
    public Tcache* Tcache;
    /// <summary>
    /// Second, where libnativeheap's C layer writes it (<c>debug_stack</c>): with the debug heap
    /// on, the stack of the C call in progress, captured in C before it entered .NET (two of
    /// the allocator's frames to walk instead of about eight); 0 for a .NET thread's call.
    /// </summary>
    public uint DebugStack;
    public MallocState* Arena;
    /// <summary>tcache_shutting_down: the thread has given its tcache back; it gets no new one.</summary>
    public bool TcacheShutDown;
    /// <summary>Set while the tcache's own chunk is being allocated.</summary>
    public bool TcacheInitializing;
    /// <summary>The thread is a .NET thread: a slow call that schedules a purge arms the purge timer (Heap.Purge.cs).</summary>
    public bool ArmsPurgeTimer;
    /// <summary>The debug heap's quarantine of this thread's frees (Debugging/DebugQuarantine), made at its first free; null until then.</summary>
    public void* Quarantine;
}
