using NativeHeap.Os;

namespace NativeHeap.Arenas;

internal static unsafe partial class Ptmalloc
{
    /// <summary>
    /// __libc_mallopt and the tcache tunables: consolidate (the fastbin size may change), then
    /// set, the main arena's lock held throughout as glibc's mallopt holds it (a free that
    /// pushes to a fastbin must not see M_MXFAST change between consolidation and the switch).
    /// Returns why <paramref name="value"/> is refused, or null when it was set. glibc
    /// returns 0 for a refused value; NativeHeap's callers turn the reason into an exception.
    /// </summary>
    internal static string? SetOption(MallocContext* ctx, ref ThreadLocals ts, HeapOption option, long value)
    {
        Option? row = OptionTable.Find(option);
        // A change of the tcache's shape first returns the calling thread's cached chunks,
        // which frees them into their arenas: that takes their locks, so it comes before ours.
        if (row != null && (row.Effects & OptionEffects.FlushesTcache) != 0) FlushTcache(ctx, ref ts);
        FutexLock.Enter(&ctx->Main.Mutex);
        try
        {
            MallocConsolidate(ctx, &ctx->Main);
            return SetOptionLocked(ctx, row, value);
        }
        finally
        {
            FutexLock.Exit(&ctx->Main.Mutex);
        }
    }

    /// <summary>OptionTable's row applied: its range, then its store and effects, or its own apply.</summary>
    private static string? SetOptionLocked(MallocContext* ctx, Option? row, long value)
    {
        if (row == null) return "is not an option NativeHeap knows";
        if (OptionTable.CheckRange(ctx, row, value) is string refused) return refused;
        if (row.Apply != null) return row.Apply(ctx, value);
        row.Store(&ctx->Mp, value);
        if ((row.Effects & OptionEffects.StopsDynamicThreshold) != 0) ctx->Mp.NoDynThreshold = 1;
        return null;
    }
}
