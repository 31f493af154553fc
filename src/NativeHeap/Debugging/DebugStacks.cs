using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace NativeHeap.Debugging;

/// <summary>
/// The stacks the debug heap keeps: one captured at each allocation and free, kept once, named
/// by a 32-bit id in the block; its return addresses read back only when a report is made.
/// </summary>
/// <remarks>
/// Two capturers, one per kind of caller:
/// <list type="bullet">
/// <item>libnativeheap (C callers): the C layer's stack depot (src/NativeHeap/native/stackdepot.c,
/// on the DWARF unwinder <c>nativeheap record</c> uses), handed over at start by
/// <see cref="UseNative"/>.</item>
/// <item>A .NET process: the runtime's own stack walk (<see cref="StackTrace"/>), each frame's
/// native IP kept. A frame-pointer walk cannot be trusted there: optimized JIT code keeps no
/// frame pointer, and in a test every frame from the allocator's to the test's method was
/// skipped that way. The walk costs about 4-6 us (measured, 2-20 frames), paid by .NET
/// callers in debug mode only.</item>
/// </list>
/// </remarks>
internal static unsafe class DebugStacks
{
    /// <summary>Return addresses kept per stack (the caller's; the allocator's own frames are left out or dropped in reports).</summary>
    internal const uint Depth = 32;
    /// <summary>What libnativeheap's C layer captures (NHM_DEBUG_STACK_DEPTH in nativeheap-managed.h; NativeAbiLayoutTests compares them).</summary>
    internal const uint CDepth = 24;
    /// <summary>The most stacks a .NET process keeps; past it, captures return 0 (a report then says no stack was recorded).</summary>
    private const int MaxManagedStacks = 1 << 20;

    // Written once by UseNative, before the first capture (libnativeheap calls it right after
    // the runtime starts, before any NativeHeap call); read without a lock afterwards.
    private static delegate* unmanaged<uint, uint, uint> s_capture;
    private static delegate* unmanaged<uint, nuint*, int, int> s_frames;

    // A .NET process's stacks: s_managed[id - 1]; both under s_managedLock.
    private static readonly Lock s_managedLock = new();
    private static readonly List<ManagedFrame[]> s_managed = [];
    private static readonly Dictionary<StackKey, uint> s_managedIds = [];
    // Their report lines in native memory, made once per stack for the guard pages' fault handler
    // (DebugGuard), which cannot run .NET code; kept for the process's life.
    private static readonly Dictionary<uint, nint> s_managedTexts = [];

    /// <summary>libnativeheap's C layer hands over its stack depot (Exports' nhm_debug_stacks).</summary>
    internal static void UseNative(nint capture, nint frames)
    {
        s_frames = (delegate* unmanaged<uint, nuint*, int, int>)frames;
        s_capture = (delegate* unmanaged<uint, uint, uint>)capture;
    }

    /// <summary>The stack of the call in progress on <paramref name="ts"/>'s thread as an id; 0 when it could not be taken.</summary>
    internal static uint Capture(in Arenas.ThreadLocals ts) =>
        ts.DebugStack != 0 ? ts.DebugStack // libnativeheap's C layer took it on the way in
        : s_capture != null ? s_capture(0, CDepth)
        // Under NativeAOT (libnativeheap) the C depot is always there: this constant-false test
        // lets the trimmer drop the .NET capture, which would add to every C process's image.
        : RuntimeFeature.IsDynamicCodeSupported ? CaptureManaged() : 0;

    /// <summary>Stack <paramref name="id"/> as report lines, innermost first, from the caller's first frame (empty for 0 or an unknown id).</summary>
    internal static List<string> Describe(uint id)
    {
        if (id == 0) return [];
        if (s_frames != null)
        {
            nuint* buffer = stackalloc nuint[(int)Depth];
            int n = s_frames(id, buffer, (int)Depth);
            var frames = new ulong[Math.Max(n, 0)];
            for (int i = 0; i < frames.Length; i++) frames[i] = buffer[i];
            return StackText.Frames(frames);
        }
        if (!RuntimeFeature.IsDynamicCodeSupported) return [];
        ManagedFrame[] managed;
        lock (s_managedLock)
        {
            if (id > s_managed.Count) return [];
            managed = s_managed[(int)id - 1];
        }
        return managed.Select(f => f.ToString()).ToList();
    }

    /// <summary>
    /// Stack <paramref name="id"/>'s report lines as NUL-terminated UTF-8 that lives as long as
    /// the process, for a fault handler to print; 0 for id 0, or where the C layer names its
    /// stacks itself (libnativeheap).
    /// </summary>
    internal static nint Text(uint id)
    {
        if (id == 0 || s_frames != null || !RuntimeFeature.IsDynamicCodeSupported) return 0; // constant false under NativeAOT: trimmed
        lock (s_managedLock)
            if (s_managedTexts.TryGetValue(id, out nint made)) return made;
        byte[] utf8 = Encoding.UTF8.GetBytes(string.Join('\n', Describe(id)) + "\0");
        var text = (byte*)NativeMemory.Alloc((nuint)utf8.Length);
        utf8.CopyTo(new Span<byte>(text, utf8.Length));
        lock (s_managedLock)
        {
            if (s_managedTexts.TryAdd(id, (nint)text)) return (nint)text;
            NativeMemory.Free(text);
            return s_managedTexts[id];
        }
    }

    // GetMethod is used for a frame's identity and its name only; where trimming removed a
    // method's metadata the frame is named "?" (libnativeheap, the AOT build, never comes here).
    [UnconditionalSuppressMessage("Trimming", "IL2026", Justification = "Names only; a trimmed method shows as '?'.")]
    private static uint CaptureManaged()
    {
        StackFrame[] all = new StackTrace(1, false).GetFrames();
        var frames = new List<ManagedFrame>((int)Depth);
        foreach (StackFrame f in all)
        {
            MethodBase? m = f.GetMethod();
            if (frames.Count == 0 && m?.DeclaringType?.Assembly == typeof(DebugStacks).Assembly) continue; // the allocator's own
            frames.Add(new ManagedFrame(m, f.GetNativeOffset(), f.GetILOffset()));
            if (frames.Count == Depth) break;
        }
        var key = new StackKey([.. frames]);
        lock (s_managedLock)
        {
            if (s_managedIds.TryGetValue(key, out uint id)) return id;
            if (s_managed.Count >= MaxManagedStacks) return 0;
            s_managed.Add(key.Frames);
            id = (uint)s_managed.Count;
            s_managedIds.Add(key, id);
            return id;
        }
    }

    /// <summary>A .NET frame: its method and where in it.</summary>
    private readonly record struct ManagedFrame(MethodBase? Method, int NativeOffset, int ILOffset)
    {
        public override string ToString() => Method is null
            ? "?"
            : $"{Method.DeclaringType?.FullName}.{Method.Name}({string.Join(", ", Method.GetParameters().Select(p => p.ParameterType.Name))}) +0x{NativeOffset:x}"
                + (ILOffset >= 0 ? $" (IL_{ILOffset:x4})" : "");
    }

    /// <summary>A stack's frames as a dictionary key, compared by value.</summary>
    private readonly struct StackKey(ManagedFrame[] frames) : IEquatable<StackKey>
    {
        public ManagedFrame[] Frames { get; } = frames;

        public bool Equals(StackKey other) => Frames.AsSpan().SequenceEqual(other.Frames);
        public override bool Equals(object? obj) => obj is StackKey k && Equals(k);
        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (ManagedFrame f in Frames)
            {
                h.Add(f.Method is null ? 0 : RuntimeHelpers.GetHashCode(f.Method));
                h.Add(f.NativeOffset);
            }
            return h.ToHashCode();
        }
    }
}
