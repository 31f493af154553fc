using System.Runtime.InteropServices;

namespace NativeHeap.Debugging;

/// <summary>
/// The debug heap's face of the native stack depot (src/NativeHeap/native/stackdepot.c): a
/// stack captured as a small id at each allocation and free, its return addresses read back
/// only when a report is made. One unwinder for the recorder, libnativeheap and .NET processes:
/// libnativeheap hands its copy's entry points over at start (<see cref="UseNative"/>); a .NET
/// process loads libnativeheap-debug.so, which ships beside NativeHeap.dll, on first use.
/// </summary>
internal static unsafe class DebugStacks
{
    /// <summary>Return addresses kept per stack: the allocator's own frames (up to about 8) and the caller's.</summary>
    internal const uint Depth = 32;

    // Written once, before the first capture that may use them (UseNative at libnativeheap's
    // start, or Load under s_loadState's compare-exchange); read without a lock afterwards.
    private static delegate* unmanaged<uint, uint, uint> s_capture;
    private static delegate* unmanaged<uint, nuint*, int, int> s_frames;
    /// <summary>0: not tried; 1: loaded or handed over; -1: no depot here (stacks are then left out of reports).</summary>
    private static int s_loadState;
    private static string? s_loadFailure;

    /// <summary>libnativeheap's C layer hands over its own depot (Exports' nhm_debug_stacks).</summary>
    internal static void UseNative(nint capture, nint frames)
    {
        s_frames = (delegate* unmanaged<uint, nuint*, int, int>)frames;
        s_capture = (delegate* unmanaged<uint, uint, uint>)capture;
        Volatile.Write(ref s_loadState, 1);
    }

    /// <summary>Why stacks are not available (for a report to say), or null.</summary>
    internal static string? Unavailable => Volatile.Read(ref s_loadState) < 0 ? s_loadFailure : null;

    /// <summary>The calling thread's stack as an id; 0 when it could not be taken.</summary>
    internal static uint Capture()
    {
        if (Volatile.Read(ref s_loadState) == 0) Load();
        return s_capture == null ? 0 : s_capture(0, Depth);
    }

    /// <summary>The return addresses of stack <paramref name="id"/>, innermost first (empty for 0 or an unknown id).</summary>
    internal static ulong[] Frames(uint id)
    {
        if (id == 0 || s_frames == null) return [];
        nuint* buffer = stackalloc nuint[(int)Depth];
        int n = s_frames(id, buffer, (int)Depth);
        var frames = new ulong[Math.Max(n, 0)];
        for (int i = 0; i < frames.Length; i++) frames[i] = buffer[i];
        return frames;
    }

    private static void Load()
    {
        if (Interlocked.CompareExchange(ref s_loadState, 2, 0) != 0)
        {
            SpinWait spin = default;
            while (Volatile.Read(ref s_loadState) == 2) spin.SpinOnce(); // another thread is loading it
            return;
        }
        // The .NET host resolves it as it does a DllImport: the app's directory or the package's
        // runtimes/linux-x64/native/ through deps.json.
        if (NativeLibrary.TryLoad("libnativeheap-debug.so", typeof(DebugStacks).Assembly, DllImportSearchPath.AssemblyDirectory, out nint lib)
            && NativeLibrary.TryGetExport(lib, "nhd_stack_capture", out nint capture)
            && NativeLibrary.TryGetExport(lib, "nhd_stack_frames", out nint frames))
        {
            UseNative(capture, frames);
            return;
        }
        s_loadFailure = "libnativeheap-debug.so was not found beside NativeHeap.dll: reports name no stacks";
        Volatile.Write(ref s_loadState, -1);
    }
}
