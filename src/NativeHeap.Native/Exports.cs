using System.Runtime.InteropServices;
using System.Text;
using NativeHeap.Arenas;
using NativeHeap.Interop;

namespace NativeHeap.Native;

/// <summary>
/// The allocator's entry points for libnativeheap's C layer (nativeheap.c, which guards
/// them and exports nh_*): the process's <see cref="Heap"/> with C's semantics. Failures
/// return NULL with errno ENOMEM (EINVAL for a bad alignment); free and every call that
/// succeeds leave errno alone; a corrupted heap prints glibc's message and aborts; no
/// exception leaves this class. Each call that needs the thread's state (its tcache and arena)
/// is given it by the C layer, which keeps it in a C thread-local: nothing here touches a
/// thread static or allocates on a C thread's behalf (see Heap.Calls.cs).
/// </summary>
public static unsafe class Exports
{
    private const int ENOMEM = 12, EINVAL = 22;

    /// <summary>
    /// The C layer's first call, whose purpose is to start the runtime; from then on a
    /// corruption aborts as glibc does, and <paramref name="fast"/> (the C layer's copy of the
    /// fast paths' values) is kept current. Returns the size of the thread state the C layer keeps per thread.
    /// </summary>
    [UnmanagedCallersOnly(EntryPoint = "nhm_start")]
    private static nuint Start(Heap.FastPath* fast)
    {
        MallocPrinterr.AbortLikeGlibc();
        Heap.PublishFastPath(fast);
        return (nuint)sizeof(ThreadLocals);
    }

    /// <summary>
    /// Called by the C layer right after <c>nhm_start</c>: the stack depot compiled into this
    /// library (src/NativeHeap/native/stackdepot.h), <c>uint32_t nhd_stack_capture(uint32_t skip, uint32_t depth)</c>
    /// and <c>int32_t nhd_stack_frames(uint32_t id, uintptr_t *out, int32_t max)</c>, for the debug heap's stacks,
    /// symbols.c's <c>format_stack</c>, which names them (libnativeheap-symbols.so, loaded at the first report),
    /// and the guard pages' fault handler (src/NativeHeap/native/guard.h): <c>nhg_install</c> and symbols.c's <c>guard_stack_text</c>.
    /// </summary>
    [UnmanagedCallersOnly(EntryPoint = "nhm_debug_stacks")]
    private static void DebugStacks(nint capture, nint frames, nint format, nint guardInstall, nint guardStackText)
    {
        try
        {
            global::NativeHeap.Debugging.DebugStacks.UseNative(capture, frames);
            global::NativeHeap.Debugging.StackText.UseNative(format);
            global::NativeHeap.Debugging.DebugGuard.UseNative(guardInstall, guardStackText);
        }
        catch (Exception e) { Fatal("start", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_thread_exit")]
    private static void ThreadExit(ThreadLocals* ts)
    {
        try { Heap.ShutdownThread(ts); }
        catch (Exception e) { Fatal("thread exit", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_fork_prepare")]
    private static void ForkPrepare()
    {
        try { Heap.ForkPrepare(); }
        catch (Exception e) { Fatal("fork", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_fork_parent")]
    private static void ForkParent()
    {
        try { Heap.ForkParent(); }
        catch (Exception e) { Fatal("fork", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_fork_child")]
    private static void ForkChild(ThreadLocals* ts)
    {
        try { Heap.ForkChild(ts); }
        catch (Exception e) { Fatal("fork", e); }
    }

    /// <summary>Something no C caller can be handed: a bad NATIVEHEAP_TUNABLES, an OS call that must not fail, a bug.</summary>
    private static void Fatal(string call, Exception e) => Libc.PrintAndAbort($"nativeheap: {call}: {e.GetType().Name}: {e.Message}");

    private static void* NoMemory(int errno = ENOMEM)
    {
        Marshal.SetLastSystemError(errno);
        return null;
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_malloc")]
    private static void* Malloc(ThreadLocals* ts, nuint size)
    {
        try
        {
            void* p = Heap.Malloc(ts, size);
            return p != null ? p : NoMemory();
        }
        catch (Exception e) { Fatal("malloc", e); return null; }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_free")]
    private static void Free(ThreadLocals* ts, void* ptr)
    {
        try { Heap.Free(ts, ptr); }
        catch (Exception e) { Fatal("free", e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_calloc")]
    private static void* Calloc(ThreadLocals* ts, nuint count, nuint size)
    {
        try
        {
            void* p = Heap.Calloc(ts, count, size);
            return p != null ? p : NoMemory();
        }
        catch (Exception e) { Fatal("calloc", e); return null; }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_realloc")]
    private static void* Realloc(ThreadLocals* ts, void* ptr, nuint size)
    {
        try
        {
            void* p = Heap.Realloc(ts, ptr, size, out bool failed);
            return failed ? NoMemory() : p;
        }
        catch (Exception e) { Fatal("realloc", e); return null; }
    }

    /// <summary>memalign as glibc 2.36's: an alignment that is not a power of two is raised to one.</summary>
    [UnmanagedCallersOnly(EntryPoint = "nhm_memalign")]
    private static void* Memalign(ThreadLocals* ts, nuint alignment, nuint size)
    {
        try { return AlignedOrError(ts, alignment, size); }
        catch (Exception e) { Fatal("memalign", e); return null; }
    }

    private static void* AlignedOrError(ThreadLocals* ts, nuint alignment, nuint size)
    {
        if (alignment > nuint.MaxValue / 2 + 1) return NoMemory(EINVAL);
        void* p = Heap.Memalign(ts, alignment, size);
        return p != null ? p : NoMemory();
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_posix_memalign")]
    private static int PosixMemalign(ThreadLocals* ts, void** result, nuint alignment, nuint size)
    {
        try
        {
            nuint words = alignment / (nuint)sizeof(void*);
            if (alignment % (nuint)sizeof(void*) != 0 || words == 0 || (words & (words - 1)) != 0) return EINVAL;
            // On failure glibc 2.36 also leaves errno ENOMEM (its _mid_memalign sets it); so does NativeHeap.
            void* p = Heap.Memalign(ts, alignment, size);
            if (p == null)
            {
                Marshal.SetLastSystemError(ENOMEM);
                return ENOMEM;
            }
            *result = p;
            return 0;
        }
        catch (Exception e) { Fatal("posix_memalign", e); return ENOMEM; }
    }

    /// <summary>aligned_alloc is glibc 2.36's memalign (2.38 and C17 refuse an alignment that is not a power of two).</summary>
    [UnmanagedCallersOnly(EntryPoint = "nhm_aligned_alloc")]
    private static void* AlignedAlloc(ThreadLocals* ts, nuint alignment, nuint size)
    {
        try { return AlignedOrError(ts, alignment, size); }
        catch (Exception e) { Fatal("aligned_alloc", e); return null; }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_valloc")]
    private static void* Valloc(ThreadLocals* ts, nuint size)
    {
        try { return AlignedOrError(ts, Os.OsMemory.PageSize, size); }
        catch (Exception e) { Fatal("valloc", e); return null; }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_pvalloc")]
    private static void* Pvalloc(ThreadLocals* ts, nuint size)
    {
        try
        {
            nuint page = Os.OsMemory.PageSize;
            if (size > nuint.MaxValue - (page - 1)) return NoMemory();
            return AlignedOrError(ts, page, Os.OsMemory.AlignUp(size, page));
        }
        catch (Exception e) { Fatal("pvalloc", e); return null; }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_malloc_usable_size")]
    private static nuint UsableSize(void* ptr)
    {
        try { return Heap.UsableSize(ptr); }
        catch (Exception e) { Fatal("malloc_usable_size", e); return 0; }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_malloc_trim")]
    private static int Trim(ThreadLocals* ts, nuint pad)
    {
        try { return Heap.Trim(ts, pad) ? 1 : 0; }
        catch (Exception e) { Fatal("malloc_trim", e); return 0; }
    }

    /// <summary>mallopt: 1 when set, 0 when the value is refused. As glibc 2.36, a parameter it does not know, and a non-positive arena count, are ignored with 1.</summary>
    [UnmanagedCallersOnly(EntryPoint = "nhm_mallopt")]
    private static int Mallopt(ThreadLocals* ts, int parameter, int value)
    {
        try
        {
            if (!Enum.IsDefined((HeapOption)parameter)) return 1;
            // glibc ignores a non-positive arena count and still returns 1.
            if (parameter is (int)HeapOption.ArenaTest or (int)HeapOption.ArenaMax && value <= 0) return 1;
            return Heap.TrySetOption(ts, (HeapOption)parameter, value) is null ? 1 : 0;
        }
        catch (Exception e) { Fatal("mallopt", e); return 0; }
    }

    [UnmanagedCallersOnly(EntryPoint = "nhm_mallinfo2")]
    private static Libc.MallInfo2 Mallinfo2()
    {
        try
        {
            HeapInfo i = Heap.GetInfo();
            return new Libc.MallInfo2
            {
                Arena = (nuint)i.Arena, Ordblks = (nuint)i.Ordblks, Smblks = (nuint)i.Smblks, Hblks = (nuint)i.Hblks,
                Hblkhd = (nuint)i.Hblkhd, Usmblks = (nuint)i.Usmblks, Fsmblks = (nuint)i.Fsmblks,
                Uordblks = (nuint)i.Uordblks, Fordblks = (nuint)i.Fordblks, Keepcost = (nuint)i.Keepcost,
            };
        }
        catch (Exception e) { Fatal("mallinfo2", e); return default; }
    }

    /// <summary>malloc_stats: glibc's text on stderr.</summary>
    [UnmanagedCallersOnly(EntryPoint = "nhm_malloc_stats")]
    private static void MallocStats()
    {
        try
        {
            var text = new StringWriter();
            Heap.WriteStats(text);
            Libc.WriteAll(2, Encoding.ASCII.GetBytes(text.ToString()));
        }
        catch (Exception e) { Fatal("malloc_stats", e); }
    }

    /// <summary>malloc_info: glibc's XML on a FILE*; options must be 0 (glibc returns EINVAL otherwise).</summary>
    [UnmanagedCallersOnly(EntryPoint = "nhm_malloc_info")]
    private static int MallocInfo(int options, nint stream)
    {
        try
        {
            if (options != 0) return EINVAL; // glibc's answer, returned rather than set in errno
            var text = new StringWriter();
            Heap.WriteInfoXml(text);
            byte[] bytes = Encoding.ASCII.GetBytes(text.ToString() + "\0");
            fixed (byte* p = bytes) return Libc.Fputs(p, stream) < 0 ? -1 : 0;
        }
        catch (Exception e) { Fatal("malloc_info", e); return -1; }
    }
}
