using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Os;

namespace NativeHeap.Debugging;

/// <summary>
/// The debug heap's guard pages (<c>guard_sample=N</c>): every Nth block gets pages of its own
/// (one mapping), its end right against a last page made inaccessible, so a read or write past
/// it faults at once; freed, all its pages become inaccessible and stay so for the next
/// <see cref="FreedKept"/> guarded frees, so a use after free faults too. The fault is named by
/// a handler in C (src/NativeHeap/native/guard.c) from the table of <see cref="Slot"/>s kept
/// here, then the process ends as the crash it is.
/// </summary>
/// <remarks>
/// <para>A guarded block is a debug block like the others (DebugBlock's header before it, the
/// canary after it): the user pointer stays 16-byte aligned (or as asked), so up to 15 bytes of
/// canary lie between a block's end and its guard page, checked at free and by Validate; a read
/// there is not caught (as mimalloc's guarded blocks).</para>
/// <para>Where the handler comes from: libnativeheap's C layer has it compiled in (handed over by
/// <see cref="UseNative"/>); a .NET process loads libnativeheap-debug.so from NativeHeap's
/// package. Without it guard pages still fault, unnamed.</para>
/// <para>Each guarded block costs two mappings of the kernel's (vm.max_map_count is 65530), so at
/// most <see cref="MaxBlocks"/> are kept, live and freed; past that, blocks are ordinary debug blocks.</para>
/// </remarks>
internal static unsafe class DebugGuard
{
    /// <summary>
    /// One guarded block, as the fault handler reads it: guard.h's struct nhg_slot, field for
    /// field (NativeAbiLayoutTests compares them). Written under <see cref="s_lock"/>, its
    /// <see cref="State"/> last; the handler reads without a lock.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Slot
    {
        public ulong Start, Length, User, Asked;
        public uint State, AllocStack, FreeStack, Reserved;
        public ulong AllocText, FreeText;
    }

    internal const uint Empty = 0, Live = 1, Freed = 2;
    /// <summary>Slots in the table: open addressing by the block's address, at most half full.</summary>
    internal const int Capacity = 1 << 15;
    internal const int MaxBlocks = Capacity / 2;
    /// <summary>Freed guarded blocks whose pages stay inaccessible; the oldest is unmapped past this.</summary>
    internal const int FreedKept = 4096;

    // Set once by libnativeheap's start (Exports' nhm_debug_stacks), before any allocation.
    private static delegate* unmanaged<Slot*, ulong, nint, int> s_install;
    private static nint s_stackText;

    private static readonly Lock s_lock = new();
    // s_table is made once, under s_lock, and published by s_ready; everything else is under s_lock.
    private static Slot* s_table;
    private static int s_ready;
    private static int s_count;
    private static readonly nuint[] s_freed = new nuint[FreedKept]; // a FIFO of freed blocks' addresses
    private static int s_freedHead, s_freedCount;
    private static uint s_tick;

    /// <summary>libnativeheap's C layer hands over its handler's install and its stack naming (guard.h).</summary>
    internal static void UseNative(nint install, nint stackText)
    {
        s_install = (delegate* unmanaged<Slot*, ulong, nint, int>)install;
        s_stackText = stackText;
    }

    /// <summary>Whether this allocation is one of every <paramref name="sample"/>th.</summary>
    internal static bool Sampled(int sample) =>
        sample == 1 || (sample > 1 && Interlocked.Increment(ref s_tick) % (uint)sample == 0);

    /// <summary>
    /// A guarded block of <paramref name="size"/> bytes aligned to <paramref name="alignment"/>
    /// (16 or more), or null when none can be made now (the table full, the kernel out of
    /// mappings): the caller then makes an ordinary debug block.
    /// </summary>
    internal static byte* Allocate(nuint size, nuint alignment, uint stack)
    {
        nuint page = OsMemory.PageSize;
        if (size > nuint.MaxValue / 4 || alignment > nuint.MaxValue / 4) return null;
        // The header before the block and the alignment's slack fit before it, in whole pages.
        nuint rw = OsMemory.AlignUp(size + alignment + DebugBlock.HeaderBytes, page);
        if (Volatile.Read(ref s_ready) == 0 && !Start()) return null;
        if (Volatile.Read(ref s_count) >= MaxBlocks) return null; // full: no mapping made for nothing (checked again under the lock)
        byte* start = OsMemory.Map(rw + page);
        if (start == null) return null;
        byte* guard = start + rw;
        if (!OsMemory.TryProtectNone(guard, page))
        {
            OsMemory.Unmap(start, rw + page);
            return null;
        }
        var user = (byte*)OsMemory.AlignDown((nuint)(guard - size), alignment);
        DebugBlock.Make(user - DebugBlock.HeaderBytes, guard, user, size, stack);
        var slot = new Slot { Start = (ulong)start, Length = rw + page, User = (ulong)user, Asked = size, AllocStack = stack, AllocText = (ulong)DebugStacks.Text(stack), State = Live };
        lock (s_lock)
        {
            if (s_count < MaxBlocks)
            {
                Insert(slot);
                s_count++;
                return user;
            }
        }
        OsMemory.Unmap(start, rw + page);
        return null;
    }

    /// <summary>The guarded block at <paramref name="user"/> as the table has it; false when it is none.</summary>
    internal static bool TryFind(byte* user, out Slot slot)
    {
        slot = default;
        if (Volatile.Read(ref s_ready) == 0) return false;
        lock (s_lock)
        {
            int i = IndexOf((ulong)user);
            if (i < 0) return false;
            slot = s_table[i];
            return true;
        }
    }

    /// <summary>What is wrong with a live guarded block's header or canary, or null.</summary>
    internal static DebugFinding? CheckLive(in Slot s, string op)
    {
        var user = (byte*)s.User;
        byte* guard = (byte*)(s.Start + s.Length) - OsMemory.PageSize;
        if (DebugBlock.State(user, out _, out _) != BlockState.Live || !DebugBlock.TryAsked(user, out nuint asked) || asked != s.Asked)
            return DebugReport.Underflow(op, user, null, guard, s.AllocStack);
        byte* bad = DebugBlock.FirstBadCanary(user + s.Asked, guard);
        return bad == null ? null : DebugReport.Overflow(op, user, (nuint)s.Asked, null, guard, bad, s.AllocStack, 0, freed: false);
    }

    /// <summary>
    /// free of a guarded block: checked as any live block, then its pages made inaccessible and
    /// kept so; a block already freed is a double free.
    /// </summary>
    internal static void Free(in Slot s, string op, uint freeStack)
    {
        if (s.State == Freed) DebugReport.Raise(DebugReport.GuardedDoubleFree(s, op));
        if (CheckLive(s, op) is DebugFinding f) DebugReport.Raise(f);
        nint freeText = DebugStacks.Text(freeStack);
        lock (s_lock)
        {
            int i = IndexOf(s.User);
            Debug.Assert(i >= 0);
            if (s_table[i].State == Live)
            {
                FreeLocked(i, freeStack, freeText);
                return;
            }
        }
        // Two frees of it raced, and the other one won: this one is the double free.
        TryFind((byte*)s.User, out Slot now);
        DebugReport.Raise(DebugReport.GuardedDoubleFree(now, op));
    }

    private static void FreeLocked(int i, uint freeStack, nint freeText)
    {
        ref Slot s = ref s_table[i];
        OsMemory.DontNeed((void*)s.Start, (nuint)s.Length);
        if (!OsMemory.TryProtectNone((void*)s.Start, (nuint)s.Length))
            throw new InvalidOperationException(OsMemory.LastFailure);
        s.FreeStack = freeStack;
        s.FreeText = (ulong)freeText;
        Volatile.Write(ref s.State, Freed);
        nuint user = (nuint)s.User;
        if (s_freedCount == FreedKept)
        {
            // The oldest freed block's address space goes back: a later use of it is no longer caught.
            int j = IndexOf(s_freed[s_freedHead]);
            Debug.Assert(j >= 0 && s_table[j].State == Freed);
            OsMemory.Unmap((void*)s_table[j].Start, (nuint)s_table[j].Length);
            Remove(j);
            s_count--;
            s_freedHead = (s_freedHead + 1) % FreedKept;
            s_freedCount--;
        }
        s_freed[(s_freedHead + s_freedCount) % FreedKept] = user;
        s_freedCount++;
    }

    /// <summary>Every live guarded block's header and canary (Heap.Validate): the first finding, or null.</summary>
    internal static DebugFinding? CheckAll(string op)
    {
        if (Volatile.Read(ref s_ready) == 0) return null;
        // Under the lock: a free meanwhile would make the pages being read inaccessible.
        lock (s_lock)
            for (int i = 0; i < Capacity; i++)
                if (s_table[i].State == Live && CheckLive(s_table[i], op) is DebugFinding f) return f;
        return null;
    }

    // The table and the handler, once; false when the table cannot be mapped.
    private static bool Start()
    {
        lock (s_lock)
        {
            if (s_ready != 0) return true;
            var table = (Slot*)OsMemory.MapSparse((nuint)(Capacity * sizeof(Slot)));
            if (table == null) return false;
            InstallHandler(table);
            s_table = table;
            Volatile.Write(ref s_ready, 1);
            return true;
        }
    }

    private static void InstallHandler(Slot* table)
    {
        delegate* unmanaged<Slot*, ulong, nint, int> install = s_install;
        // RuntimeFeature.IsDynamicCodeSupported is false under NativeAOT, where libnativeheap always
        // hands its own handler over: the trimmer drops the loading, which every C process would carry.
        if (install == null && RuntimeFeature.IsDynamicCodeSupported
            && NativeLibrary.TryLoad(DebugLibrary, typeof(DebugGuard).Assembly, null, out nint lib)
            && NativeLibrary.TryGetExport(lib, "nhg_install", out nint export))
            install = (delegate* unmanaged<Slot*, ulong, nint, int>)export;
        int error = install == null ? -1 : install(table, Capacity, s_stackText);
        if (error != 0)
            OsProcess.WriteStderr(error < 0
                ? $"nativeheap: guard pages without their fault handler ({DebugLibrary} was not found): a fault in one will not name its block\n"
                : $"nativeheap: guard pages without their fault handler (sigaction failed, errno {error}): a fault in one will not name its block\n");
    }

    /// <summary>The library a .NET process takes the fault handler from (NativeHeap's package carries it).</summary>
    internal const string DebugLibrary = "libnativeheap-debug.so";

    // Open addressing with linear probing over the block's address; Remove shifts the entries
    // after a removed one back, so no slot is ever a tombstone and a lookup stops at the first empty.
    private static int Home(ulong user) => (int)((user >> 4) * 0x9E3779B97F4A7C15UL >> (64 - 15));

    private static int IndexOf(ulong user)
    {
        for (int i = Home(user); ; i = (i + 1) & (Capacity - 1))
        {
            if (s_table[i].State == Empty) return -1;
            if (s_table[i].User == user) return i;
        }
    }

    private static void Insert(in Slot slot)
    {
        int i = Home(slot.User);
        while (s_table[i].State != Empty) i = (i + 1) & (Capacity - 1);
        Slot s = slot;
        uint state = s.State;
        s.State = Empty;
        s_table[i] = s;
        Volatile.Write(ref s_table[i].State, state); // the handler sees a slot only once it is whole
    }

    private static void Remove(int i)
    {
        Volatile.Write(ref s_table[i].State, Empty);
        for (int j = (i + 1) & (Capacity - 1); s_table[j].State != Empty; j = (j + 1) & (Capacity - 1))
        {
            int home = Home(s_table[j].User);
            // j's entry may move to the hole at i unless its home lies cyclically in (i, j].
            bool stays = i <= j ? home > i && home <= j : home > i || home <= j;
            if (stays) continue;
            Slot moved = s_table[j];
            uint state = moved.State;
            moved.State = Empty;
            s_table[i] = moved;
            Volatile.Write(ref s_table[i].State, state);
            Volatile.Write(ref s_table[j].State, Empty);
            i = j;
        }
    }
}
