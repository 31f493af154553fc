using NativeHeap.Bins;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

/// <summary>What a setting does besides storing its value.</summary>
[Flags]
internal enum OptionEffects
{
    None = 0,
    /// <summary>The user chose a threshold: the mmap threshold stops adapting (glibc's mp_.no_dyn_threshold).</summary>
    StopsDynamicThreshold = 1,
    /// <summary>The tcache's shape changes: the calling thread's cached chunks go back to their arenas first.</summary>
    FlushesTcache = 2,
}

/// <summary><paramref name="Min"/> to <paramref name="Max"/>, or <paramref name="Refusal"/>.</summary>
internal readonly record struct OptionRange(long Min, long Max, string Refusal)
{
    internal bool Holds(long value) => value >= Min && value <= Max;
}

/// <summary>
/// One option: its <see cref="HeapOption"/> id, its tunable name, the values it takes, each
/// profile's default and how a value is applied. <see cref="Store"/> writes a value to
/// malloc_par and is what both a profile and <see cref="Heap.SetOption"/> use; an option that
/// is not malloc_par's (or may be refused once the heap is in use) has <see cref="Apply"/> instead.
/// </summary>
internal sealed unsafe class Option
{
    public required HeapOption Id { get; init; }
    /// <summary>The tunable's name in NATIVEHEAP_TUNABLES; each is also taken with glibc's <c>glibc.malloc.</c> prefix.</summary>
    public required string Name { get; init; }
    /// <summary>Whether glibc 2.36 has the tunable (GLIBC_TUNABLES) or mallopt parameter with this meaning.</summary>
    public bool Glibc { get; init; }
    /// <summary>The values it takes, and why another is refused.</summary>
    public required OptionRange Range { get; init; }
    /// <summary>The narrower range of a heap whose tcache has no large bins (the glibc-2.36 profile's).</summary>
    public OptionRange? RangeWithoutLargeTcache { get; init; }
    /// <summary>Each profile's value, which the profile sets; null: a profile leaves the option as it is.</summary>
    public (long Glibc236, long NativeHeap)? Defaults { get; init; }
    public OptionEffects Effects { get; init; }
    public delegate*<MallocParams*, long, void> Store { get; init; }
    /// <summary>Applies a value to the heap and returns null, or returns why it is refused now.</summary>
    public delegate*<MallocContext*, long, string?> Apply { get; init; }

    internal long Default(HeapProfile profile) =>
        profile == HeapProfile.Glibc236 ? Defaults!.Value.Glibc236 : Defaults!.Value.NativeHeap;
}

/// <summary>
/// Every option NativeHeap has, in one table: the tunables parser, <see cref="Ptmalloc.SetOption"/>
/// and the profiles' defaults read it. Adding one takes a row here, its store (or apply), a
/// <see cref="HeapOption"/> member, an NH_M_ line in nativeheap.h and its name in README's
/// options paragraph (OptionTableTests holds the last three to the table).
/// </summary>
internal static unsafe class OptionTable
{
    private const long Off = 0, On = 1;
    private static readonly OptionRange SizeOrNever = new(int.MinValue, long.MaxValue, "must be a byte count, or negative for never");
    private static readonly OptionRange Positive = new(1, long.MaxValue, "must be positive");

    /// <summary>An option that is off or on: 0 (<paramref name="off"/>) or 1 (<paramref name="on"/>).</summary>
    private static OptionRange Switch(string off, string on) => new(0, 1, $"must be 0 ({off}) or 1 ({on})");

    /// <summary>The same default in both profiles.</summary>
    private static (long, long) Both(long value) => (value, value);

    /// <summary>In <see cref="HeapOption"/>'s order, which is also the order the tunables are listed in.</summary>
    internal static readonly Option[] Rows =
    [
        new() { Id = HeapOption.MxFast, Name = "mxfast", Glibc = true, Range = new(0, (long)BinIndex.MaxFastSize, $"must be 0 to {BinIndex.MaxFastSize}"),
            Defaults = Both((long)BinIndex.DefaultMxFast), Store = &StoreMxFast },
        // glibc 2.36 takes any value for the size parameters, a negative int becoming a huge
        // size_t (-1: never trim, never mmap), as C's conversion does; a huge pad would only make
        // every growth fail.
        new() { Id = HeapOption.TrimThreshold, Name = "trim_threshold", Glibc = true, Range = SizeOrNever,
            Defaults = Both((long)MallocParams.DefaultTrimThreshold), Effects = OptionEffects.StopsDynamicThreshold, Store = &StoreTrimThreshold },
        new() { Id = HeapOption.TopPad, Name = "top_pad", Glibc = true, Range = new(0, long.MaxValue, "must be a byte count"),
            Defaults = Both((long)MallocParams.DefaultTopPad), Effects = OptionEffects.StopsDynamicThreshold, Store = &StoreTopPad },
        new() { Id = HeapOption.MmapThreshold, Name = "mmap_threshold", Glibc = true, Range = SizeOrNever,
            Defaults = Both((long)MallocParams.DefaultMmapThreshold), Effects = OptionEffects.StopsDynamicThreshold, Store = &StoreMmapThreshold },
        new() { Id = HeapOption.MmapMax, Name = "mmap_max", Glibc = true, Range = new(int.MinValue, int.MaxValue, "must be an int (0 or less: never mmap)"),
            Defaults = Both(MallocParams.DefaultMmapMax), Effects = OptionEffects.StopsDynamicThreshold, Store = &StoreMmapMax },
        new() { Id = HeapOption.Check, Name = "check", Range = new(0, 3, "must be 0 to 3"), Store = &StoreCheck },
        new() { Id = HeapOption.Perturb, Name = "perturb", Glibc = true, Range = new(0, 255, "must be 0 to 255"), Store = &StorePerturb },
        new() { Id = HeapOption.ArenaTest, Name = "arena_test", Glibc = true, Range = Positive, Defaults = Both(8), Store = &StoreArenaTest },
        // The default, 0, is no value a caller may set: the limit is then 8 arenas per core.
        new() { Id = HeapOption.ArenaMax, Name = "arena_max", Glibc = true, Range = Positive, Defaults = Both(0), Store = &StoreArenaMax },
        new() { Id = HeapOption.TcacheCount, Name = "tcache_count", Glibc = true,
            Range = new(0, (long)MallocParams.MaxTcacheCount, $"must be 0 to {MallocParams.MaxTcacheCount}"),
            Defaults = ((long)MallocParams.DefaultTcacheCount, (long)MallocParams.NativeHeapTcacheCount),
            Effects = OptionEffects.FlushesTcache, Store = &Ptmalloc.StoreTcacheCount },
        // The large bins exist but, as in glibc 2.42 and 2.43, take nothing until tcache_max is
        // raised: cached next to top, large chunks keep the heap from shrinking (README).
        new() { Id = HeapOption.TcacheMax, Name = "tcache_max", Glibc = true,
            Range = new(0, (long)Ptmalloc.MaxTcacheLarge, $"must be 0 to {Ptmalloc.MaxTcacheLarge}"),
            RangeWithoutLargeTcache = new(0, (long)Ptmalloc.MaxTcacheSmall,
                $"must be 0 to {Ptmalloc.MaxTcacheSmall} (the glibc-2.36 profile's tcache has no large bins)"),
            Defaults = Both((long)Ptmalloc.MaxTcacheSmall), Effects = OptionEffects.FlushesTcache, Store = &Ptmalloc.StoreTcacheMax },
        new() { Id = HeapOption.TcacheUnsortedLimit, Name = "tcache_unsorted_limit", Glibc = true, Range = new(0, long.MaxValue, "must be 0 or more"),
            Defaults = Both(0), Store = &Ptmalloc.StoreTcacheUnsortedLimit },
        new() { Id = HeapOption.UseBrk, Name = "use_brk", Range = Switch("mmap'd heaps", "the break"), Defaults = (On, Off), Apply = &ApplyUseBrk },
        new() { Id = HeapOption.FailFast, Name = "fail_fast", Range = Switch("throw", "end the process"), Apply = &ApplyFailFast },
        new() { Id = HeapOption.Profile, Name = "profile", Range = Switch("nativeheap", "glibc-2.36"), Apply = &ApplyProfile },
        new() { Id = HeapOption.TcacheBytes, Name = "tcache_bytes", Range = new(0, long.MaxValue, "must be a byte count (0: no bound)"),
            Defaults = (0, (long)MallocParams.NativeHeapTcacheBytes), Effects = OptionEffects.FlushesTcache, Store = &Ptmalloc.StoreTcacheBytes },
        new() { Id = HeapOption.CallocTcache, Name = "calloc_tcache", Range = Switch("the arena, as glibc 2.36", "the tcache, as glibc 2.41"),
            Defaults = (Off, On), Store = &Ptmalloc.StoreCallocTcache },
        new() { Id = HeapOption.TrimTcache, Name = "trim_tcache", Range = Switch("keep the tcache, as glibc", "empty the caller's first"),
            Defaults = (Off, On), Store = &Ptmalloc.StoreTrimTcache },
        new() { Id = HeapOption.PurgeDelay, Name = "purge_delay", Range = new(-1, int.MaxValue, "must be milliseconds, 0 (at once) or -1 (never)"),
            Defaults = (-1, MallocParams.NativeHeapPurgeDelayMs), Store = &StorePurgeDelay },
        new() { Id = HeapOption.TcacheFlush, Name = "tcache_flush", Range = Switch("one chunk to its arena, as glibc", "the bin's older half"),
            Defaults = (Off, On), Store = &Ptmalloc.StoreTcacheFlush },
        new() { Id = HeapOption.ReallocInPlace, Name = "realloc_in_place", Range = Switch("the arena, as glibc 2.36", "in place, as glibc 2.38"),
            Defaults = (Off, On), Store = &StoreReallocInPlace },
        new() { Id = HeapOption.MemalignTcache, Name = "memalign_tcache", Range = Switch("the arena, as glibc 2.36", "the tcache, as glibc 2.39"),
            Defaults = (Off, On), Store = &Ptmalloc.StoreMemalignTcache },
        new() { Id = HeapOption.Debug, Name = "debug", Range = Switch("off", "canaries, quarantine and reports with stacks"), Apply = &ApplyDebug },
        new() { Id = HeapOption.QuarantineBytes, Name = "quarantine_bytes", Range = new(0, long.MaxValue, "must be a byte count"),
            Defaults = Both((long)MallocParams.DefaultQuarantineBytes), Store = &StoreQuarantineBytes },
        new() { Id = HeapOption.GuardSample, Name = "guard_sample", Range = new(0, int.MaxValue, "must be 0 (none) or N (every Nth allocation)"),
            Apply = &ApplyGuardSample },
    ];

    /// <summary>The row of <paramref name="id"/>, or null for a value that is no option.</summary>
    internal static Option? Find(HeapOption id)
    {
        foreach (Option row in Rows)
            if (row.Id == id) return row;
        return null;
    }

    /// <summary>Every option a profile sets, to <paramref name="profile"/>'s value, without their effects.</summary>
    internal static void StoreDefaults(MallocParams* mp, HeapProfile profile)
    {
        foreach (Option row in Rows)
            if (row.Defaults is not null && row.Store != null) row.Store(mp, row.Default(profile));
    }

    /// <summary>Why <paramref name="value"/> is outside <paramref name="row"/>'s range on this heap, or null.</summary>
    internal static string? CheckRange(MallocContext* ctx, Option row, long value)
    {
        OptionRange range = row.RangeWithoutLargeTcache is OptionRange small && ctx->Mp.TcacheHasLarge == 0 ? small : row.Range;
        return range.Holds(value) ? null : range.Refusal;
    }

    private static void StoreMxFast(MallocParams* mp, long value) => mp->MaxFast = BinIndex.MaxFastChunk((nuint)value);
    private static void StoreTrimThreshold(MallocParams* mp, long value) => mp->TrimThreshold = unchecked((nuint)value);
    private static void StoreTopPad(MallocParams* mp, long value) => mp->TopPad = (nuint)value;
    private static void StoreMmapThreshold(MallocParams* mp, long value) => mp->MmapThreshold = unchecked((nuint)value);
    private static void StoreMmapMax(MallocParams* mp, long value) => mp->NMmapsMax = (int)value;
    private static void StoreCheck(MallocParams* mp, long value) => mp->CheckAction = (int)value;
    private static void StorePerturb(MallocParams* mp, long value) => mp->PerturbByte = (int)value;
    private static void StoreArenaTest(MallocParams* mp, long value) => mp->ArenaTest = (nuint)value;
    private static void StoreArenaMax(MallocParams* mp, long value) => mp->ArenaMax = (nuint)value;
    private static void StorePurgeDelay(MallocParams* mp, long value) => mp->PurgeDelayMs = value;
    private static void StoreReallocInPlace(MallocParams* mp, long value) => mp->ReallocInPlace = (int)value;
    private static void StoreQuarantineBytes(MallocParams* mp, long value) => mp->QuarantineBytes = (nuint)value;

    // Every block's layout depends on it (Debugging/DebugBlock): it cannot change under blocks already made.
    private static string? ApplyDebug(MallocContext* ctx, long value)
    {
        if (ctx->Mp.Debug == value) return null;
        if (ctx->Main.Top != MallocState.InitialTop(&ctx->Main))
            return "can only change before the heap's first allocation";
        ctx->Mp.Debug = (int)value;
        if (value == 1)
        {
            ulong* secrets = stackalloc ulong[2];
            if (!OsProcess.TryGetRandom(secrets, 2 * sizeof(ulong)))
            {
                secrets[0] = (ulong)Random.Shared.NextInt64() ^ (ulong)Environment.TickCount64;
                secrets[1] = (ulong)Random.Shared.NextInt64();
            }
            ctx->Mp.DebugKey = secrets[0];
            ctx->Mp.DebugCanary = secrets[1];
        }
        return null;
    }

    // Guarded blocks are debug blocks: a nonzero sample turns the debug heap on, while it still can be.
    private static string? ApplyGuardSample(MallocContext* ctx, long value)
    {
        if (value != 0 && ctx->Mp.Debug == 0 && ApplyDebug(ctx, 1) is string refused)
            return $"needs debug=1, which {refused}";
        ctx->Mp.GuardSample = (int)value;
        return null;
    }

    private static string? ApplyFailFast(MallocContext* ctx, long value)
    {
        MallocPrinterr.FailFast = value == 1; // process-wide
        return null;
    }

    private static string? ApplyProfile(MallocContext* ctx, long value)
    {
        if (ctx->Main.Top != MallocState.InitialTop(&ctx->Main))
            return "can only change before the heap's first allocation";
        var profile = (HeapProfile)value;
        ctx->Mp.SetDefaults(profile);
        return ApplyUseBrk(ctx, Find(HeapOption.UseBrk)!.Default(profile));
    }

    private static string? ApplyUseBrk(MallocContext* ctx, long value)
    {
        if (ctx->UseBrk == value) return null;
        if (ctx->Main.Top != MallocState.InitialTop(&ctx->Main))
            return "can only change before the heap's first allocation";
        ctx->UseBrk = (int)value;
        ctx->Main.Flags = value == 1 ? ctx->Main.Flags & ~MallocState.NonContiguousBit : ctx->Main.Flags | MallocState.NonContiguousBit;
        return null;
    }
}
