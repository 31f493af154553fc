using System.Runtime.InteropServices;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Arenas;

/// <summary>
/// What memory is this heap's: a bit per 64 MiB-aligned slot holding one of its heaps, the
/// regions of the main arena on the break, and every mmapped chunk. glibc trusts a pointer's
/// header; NativeHeap asks here first, so that a pointer from glibc's malloc (same chunk
/// layout), from the stack or from a stale mapping is refused as "free(): invalid pointer"
/// instead of being taken in. The bit test is cheap enough for the free fast path.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Ownership
{
    /// <summary>
    /// A slot is one heap's reservation, <see cref="HeapHeader.MaxSize"/>: 2^47 bytes of user
    /// address space make 2^21 bits. libnativeheap's C free fast path tests the same bits
    /// (NHM_SLOT_SHIFT in nativeheap-managed.h; NativeAbiLayoutTests compares).
    /// </summary>
    internal const int SlotShift = 26;
    internal const nuint Slots = (nuint)1 << (47 - SlotShift);

    // Compiles only while SlotShift is log2(HeapHeader.MaxSize): a byte cannot hold -1.
    private const byte SlotIsOneHeap = HeapHeader.MaxSize == (nuint)1 << SlotShift ? 0 : -1;

    public ulong* HeapSlots;
    /// <summary>Open-addressed set of mmapped chunk addresses (0 empty, 1 deleted).</summary>
    public nuint* Mapped;
    public nuint MappedCapacity;
    public nuint MappedUsed;
    public int MappedLock;

    internal static void Init(Ownership* o)
    {
        o->HeapSlots = (ulong*)OsMemory.MapSparse(Slots / 8);
        if (o->HeapSlots == null) throw new OutOfMemoryException(OsMemory.LastFailure);
    }

    internal static void Release(Ownership* o)
    {
        if (o->HeapSlots != null) OsMemory.Unmap(o->HeapSlots, Slots / 8);
        if (o->Mapped != null) OsMemory.Unmap(o->Mapped, o->MappedCapacity * (nuint)sizeof(nuint));
    }

    internal static bool HoldsHeapSlot(ulong* slots, void* p)
    {
        nuint slot = (nuint)p >> SlotShift;
        return slot < Slots && (slots[slot >> 6] & (1UL << (int)(slot & 63))) != 0;
    }

    internal static void SetHeapSlot(Ownership* o, HeapHeader* h, bool owned)
    {
        nuint slot = (nuint)h >> SlotShift;
        if (slot >= Slots) return;
        ref ulong word = ref o->HeapSlots[slot >> 6];
        ulong bit = 1UL << (int)(slot & 63);
        if (owned) Interlocked.Or(ref word, bit);
        else Interlocked.And(ref word, ~bit);
    }

    /// <summary>
    /// Record an mmapped chunk; false (and the caller unmaps it) when the set cannot grow. A
    /// deleted slot on the chunk's probe path is taken without growing, so a chunk put back
    /// right after its removal (a failed mremap) always fits.
    /// </summary>
    internal static bool AddMapped(Ownership* o, Chunk* p)
    {
        FutexLock.Enter(&o->MappedLock);
        try
        {
            if (o->MappedCapacity != 0)
            {
                nuint mask = o->MappedCapacity - 1;
                for (nuint i = Hash(p) & mask; o->Mapped[i] != 0; i = (i + 1) & mask)
                {
                    if (o->Mapped[i] != 1) continue;
                    o->Mapped[i] = (nuint)p;
                    return true;
                }
            }
            if ((o->MappedUsed + 1) * 2 > o->MappedCapacity && !Rehash(o)) return false;
            nuint m = o->MappedCapacity - 1;
            for (nuint i = Hash(p) & m; ; i = (i + 1) & m)
            {
                if (o->Mapped[i] == 0)
                {
                    o->MappedUsed++;
                    o->Mapped[i] = (nuint)p;
                    return true;
                }
            }
        }
        finally
        {
            FutexLock.Exit(&o->MappedLock);
        }
    }

    /// <summary>Forget an mmapped chunk; false when it was never recorded.</summary>
    internal static bool RemoveMapped(Ownership* o, Chunk* p)
    {
        FutexLock.Enter(&o->MappedLock);
        try
        {
            nuint* slot = FindMapped(o, p);
            if (slot == null) return false;
            *slot = 1;
            return true;
        }
        finally
        {
            FutexLock.Exit(&o->MappedLock);
        }
    }

    internal static bool HoldsMapped(Ownership* o, Chunk* p)
    {
        FutexLock.Enter(&o->MappedLock);
        try { return FindMapped(o, p) != null; }
        finally { FutexLock.Exit(&o->MappedLock); }
    }

    private static nuint* FindMapped(Ownership* o, Chunk* p)
    {
        if (o->MappedCapacity == 0) return null;
        nuint mask = o->MappedCapacity - 1;
        for (nuint i = Hash(p) & mask; ; i = (i + 1) & mask)
        {
            if (o->Mapped[i] == (nuint)p) return &o->Mapped[i];
            if (o->Mapped[i] == 0) return null;
        }
    }

    private static nuint Hash(Chunk* p) => (nuint)(((ulong)p >> 12) * 0x9E3779B97F4A7C15UL >> 20);

    private static bool Rehash(Ownership* o)
    {
        nuint capacity = o->MappedCapacity == 0 ? 512 : o->MappedCapacity * 2;
        var table = (nuint*)OsMemory.Map(capacity * (nuint)sizeof(nuint));
        if (table == null) return false;
        nuint* old = o->Mapped;
        nuint oldCapacity = o->MappedCapacity;
        o->Mapped = table;
        o->MappedCapacity = capacity;
        o->MappedUsed = 0;
        for (nuint i = 0; i < oldCapacity; i++)
        {
            nuint v = old[i];
            if (v <= 1) continue;
            for (nuint j = Hash((Chunk*)v) & (capacity - 1); ; j = (j + 1) & (capacity - 1))
            {
                if (table[j] == 0)
                {
                    table[j] = v;
                    o->MappedUsed++;
                    break;
                }
            }
        }
        if (old != null) OsMemory.Unmap(old, oldCapacity * (nuint)sizeof(nuint));
        return true;
    }
}
