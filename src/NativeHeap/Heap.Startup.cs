using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Arenas;

namespace NativeHeap;

/// <summary>
/// Start-up: the process's one <see cref="MallocContext"/>, made on the first call from
/// NATIVEHEAP_TUNABLES. <c>s_context</c> is written once, under <c>s_initLock</c>, after the
/// context is complete, and read without a lock everywhere (null: not started);
/// <c>s_envSettings</c> is written with it and read by a later profile change.
/// </summary>
public static unsafe partial class Heap
{
    private static MallocContext* s_context;
    private static readonly Lock s_initLock = new();
    /// <summary>NATIVEHEAP_TUNABLES as parsed at start-up: a profile set later is applied under them again.</summary>
    private static List<(HeapOption Option, long Value, string Text)> s_envSettings = [];

    private static MallocContext* Context
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            MallocContext* ctx = s_context;
            return ctx != null ? ctx : Initialize();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static MallocContext* Initialize()
    {
        lock (s_initLock)
        {
            if (s_context != null) return s_context;
            int callerErrno = Marshal.GetLastSystemError(); // C callers' errno survives the first call
            string? text = Environment.GetEnvironmentVariable(Tunables.Variable);
            var settings = text is null ? [] : Tunables.Parse(text);
            // The profile sets every option, so it comes first wherever it stands; single
            // tunables then override it.
            HeapProfile profile = DefaultProfile;
            foreach (var (option, value, _) in settings)
                if (option == HeapOption.Profile) profile = (HeapProfile)value;
            MallocContext* ctx = MallocContext.Create(profile);
            s_envSettings = settings;
            ThreadLocals none = default;
            if (ApplyEnvTunables(ctx, &none) is (string entry, string refused))
            {
                MallocContext.Destroy(ctx);
                throw Tunables.Bad(entry, refused);
            }
            s_tcacheKey = ctx->TcacheKey;
            s_heapSlots = ctx->Owned.HeapSlots;
            RefreshFastPath(ctx);
            Interlocked.MemoryBarrier(); // the context is complete before other threads can see it
            s_context = ctx;
            Marshal.SetLastSystemError(callerErrno);
            return ctx;
        }
    }

    /// <summary>
    /// The profile unless NATIVEHEAP_TUNABLES names one. Its main arena lives on mmap'd heaps,
    /// glibc-2.36's on the break: see README, "The program break is shared".
    /// </summary>
    internal const HeapProfile DefaultProfile = HeapProfile.NativeHeap;

    /// <summary>
    /// NATIVEHEAP_TUNABLES' single tunables (the profile is set before them), at start-up and
    /// after a profile the program sets: null, or the first one refused and why.
    /// </summary>
    private static (string Entry, string Refused)? ApplyEnvTunables(MallocContext* ctx, ThreadLocals* ts)
    {
        (string, string)? first = null;
        foreach (var (option, value, entry) in s_envSettings)
        {
            if (option == HeapOption.Profile) continue;
            if (Ptmalloc.SetOption(ctx, ref *ts, option, value) is string refused) first ??= (entry, refused);
        }
        return first;
    }
}
