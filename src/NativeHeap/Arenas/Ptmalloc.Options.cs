using NativeHeap.Bins;
using NativeHeap.Chunks;
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
        // A change of the tcache's shape first returns the calling thread's cached chunks,
        // which frees them into their arenas: that takes their locks, so it comes before ours.
        if (option is HeapOption.TcacheCount or HeapOption.TcacheMax or HeapOption.TcacheBytes) FlushTcache(ctx, ref ts);
        FutexLock.Enter(&ctx->Main.Mutex);
        try
        {
            MallocConsolidate(ctx, &ctx->Main);
            return SetOptionLocked(ctx, option, value);
        }
        finally
        {
            FutexLock.Exit(&ctx->Main.Mutex);
        }
    }

    /// <summary>do_set_tcache_max's bound (glibc 2.43): the largest request whose chunk is below 4 MiB.</summary>
    private static nuint MaxTcacheLarge => ((nuint)1 << (10 + BinIndex.TcacheLargeBins)) - Chunk.Alignment - Chunk.SizeSz;

    private static string? SetOptionLocked(MallocContext* ctx, HeapOption option, long value)
    {
        MallocParams* mp = &ctx->Mp;
        switch (option)
        {
            case HeapOption.MxFast:
                if (value < 0 || (ulong)value > BinIndex.MaxFastSize) return $"must be 0 to {BinIndex.MaxFastSize}";
                mp->MaxFast = BinIndex.MaxFastChunk((nuint)value);
                return null;
            // glibc 2.36 takes any value for the size parameters, a negative int becoming a
            // huge size_t (-1: never trim, never mmap), as C's conversion does.
            case HeapOption.TrimThreshold:
                if (value < int.MinValue) return "must be a byte count, or negative for never";
                mp->TrimThreshold = unchecked((nuint)value);
                mp->NoDynThreshold = 1;
                return null;
            case HeapOption.TopPad:
                if (value < 0) return "must be a byte count"; // a huge pad would only make every growth fail
                mp->TopPad = (nuint)value;
                mp->NoDynThreshold = 1;
                return null;
            case HeapOption.MmapThreshold:
                if (value < int.MinValue) return "must be a byte count, or negative for never";
                mp->MmapThreshold = unchecked((nuint)value);
                mp->NoDynThreshold = 1;
                return null;
            case HeapOption.MmapMax:
                if (value < int.MinValue || value > int.MaxValue) return "must be an int (0 or less: never mmap)";
                mp->NMmapsMax = (int)value;
                mp->NoDynThreshold = 1;
                return null;
            case HeapOption.Check:
                if (value < 0 || value > 3) return "must be 0 to 3";
                mp->CheckAction = (int)value;
                return null;
            case HeapOption.Perturb:
                if (value < 0 || value > 255) return "must be 0 to 255";
                mp->PerturbByte = (int)value;
                return null;
            case HeapOption.ArenaTest:
                if (value <= 0) return "must be positive";
                mp->ArenaTest = (nuint)value;
                return null;
            case HeapOption.ArenaMax:
                if (value <= 0) return "must be positive";
                mp->ArenaMax = (nuint)value;
                return null;
            case HeapOption.TcacheCount:
                if (value < 0 || (ulong)value > MallocParams.MaxTcacheCount) return $"must be 0 to {MallocParams.MaxTcacheCount}";
                mp->TcacheCount = (nuint)value;
                return null;
            case HeapOption.TcacheMax:
            {
                nuint smallMax = BinIndex.TcacheUsableSize(BinIndex.TcacheMaxBins - 1);
                nuint max = mp->TcacheHasLarge != 0 ? MaxTcacheLarge : smallMax;
                if (value < 0 || (ulong)value > max)
                    return mp->TcacheHasLarge != 0 ? $"must be 0 to {max}" : $"must be 0 to {max} (the glibc-2.36 profile's tcache has no large bins)";
                nuint nb = Chunk.RequestToSize((nuint)value);
                mp->TcacheMaxBytes = (nuint)value;
                mp->TcacheBins = (nuint)value > smallMax ? BinIndex.TcacheMaxBins : BinIndex.Tcache(nb) + 1;
                mp->TcacheLargeLimit = (nuint)value > smallMax ? nb + 1 : 0;
                return null;
            }
            case HeapOption.TcacheUnsortedLimit:
                if (value < 0) return "must be 0 or more";
                mp->TcacheUnsortedLimit = (nuint)value;
                return null;
            case HeapOption.FailFast:
                if (value is not (0 or 1)) return "must be 0 (throw) or 1 (end the process)";
                MallocPrinterr.FailFast = value == 1;
                return null;
            case HeapOption.TcacheBytes:
                if (value < 0) return "must be a byte count (0: no bound)";
                mp->TcacheBytes = value == 0 ? nuint.MaxValue : (nuint)value;
                return null;
            case HeapOption.CallocTcache:
                if (value is not (0 or 1)) return "must be 0 (the arena, as glibc 2.36) or 1 (the tcache, as glibc 2.41)";
                mp->CallocFromTcache = (int)value;
                return null;
            case HeapOption.TrimTcache:
                if (value is not (0 or 1)) return "must be 0 (keep the tcache, as glibc) or 1 (empty the caller's first)";
                mp->TrimTcache = (int)value;
                return null;
            case HeapOption.TcacheFlush:
                if (value is not (0 or 1)) return "must be 0 (one chunk to its arena, as glibc) or 1 (the bin's older half)";
                mp->TcacheFlush = (int)value;
                return null;
            case HeapOption.ReallocInPlace:
                if (value is not (0 or 1)) return "must be 0 (the arena, as glibc 2.36) or 1 (in place, as glibc 2.38)";
                mp->ReallocInPlace = (int)value;
                return null;
            case HeapOption.MemalignTcache:
                if (value is not (0 or 1)) return "must be 0 (the arena, as glibc 2.36) or 1 (the tcache, as glibc 2.39)";
                mp->MemalignTcache = (int)value;
                return null;
            case HeapOption.PurgeDelay:
                if (value < -1 || value > int.MaxValue) return "must be milliseconds, 0 (at once) or -1 (never)";
                mp->PurgeDelayMs = value;
                return null;
            case HeapOption.Profile:
                if (value is not ((long)HeapProfile.NativeHeap or (long)HeapProfile.Glibc236))
                    return "must be 0 (nativeheap) or 1 (glibc-2.36)";
                if (ctx->Main.Top != MallocState.InitialTop(&ctx->Main))
                    return "can only change before the heap's first allocation";
                mp->SetDefaults((HeapProfile)value);
                return SetOptionLocked(ctx, HeapOption.UseBrk, value == (long)HeapProfile.Glibc236 ? 1 : 0);
            case HeapOption.UseBrk:
                if (value is not (0 or 1)) return "must be 0 (mmap'd heaps) or 1 (the break)";
                if (ctx->UseBrk == value) return null;
                if (ctx->Main.Top != MallocState.InitialTop(&ctx->Main))
                    return "can only change before the heap's first allocation";
                ctx->UseBrk = (int)value;
                ctx->Main.Flags = value == 1 ? ctx->Main.Flags & ~MallocState.NonContiguousBit : ctx->Main.Flags | MallocState.NonContiguousBit;
                return null;
            default:
                return "is not an option NativeHeap knows";
        }
    }

    /// <summary>
    /// Return every chunk in the calling thread's tcache to its arena (as glibc's
    /// tcache_thread_shutdown, keeping the tcache), so that a change of the tcache's shape
    /// leaves no chunk stranded in a bin it no longer uses. Other threads' tcaches keep theirs
    /// until those threads end.
    /// </summary>
    internal static void FlushTcache(MallocContext* ctx, ref ThreadLocals ts)
    {
        if (ts.Tcache != null) DrainTcache(ctx, ts.Tcache);
    }

    /// <summary>
    /// The loop of tcache_thread_shutdown: every cached chunk back to its arena, in glibc's
    /// order; with tcache_flush each bin as runs (one push or one lock per arena, not per
    /// chunk: a new thread releasing an ended one's full tcache paid a lock per chunk).
    /// </summary>
    private static void DrainTcache(MallocContext* ctx, Tcache* tc)
    {
        const string Unaligned = "tcache_thread_shutdown(): unaligned tcache chunk detected";
        void* bad = null; // a broken bin is reported once the others are back
        for (nuint i = 0; i < BinIndex.TcacheMaxBins; i++)
        {
            if (ctx->Mp.TcacheFlush != 0)
            {
                void* broken = tc->Counts[i] != 0 ? TcacheFlushBin(ctx, tc, i, 0) : null;
                if (bad == null) bad = broken;
                continue;
            }
            while (*Tcache.Head(tc, i) != null)
                FreeInArena(ctx, null, Chunk.FromMem(Tcache.Take(tc, i, Unaligned)));
        }
        ReturnLargeCached(ctx, tc, 0);
        if (bad != null) MallocPrinterr.Raise(Unaligned, bad);
    }
}
