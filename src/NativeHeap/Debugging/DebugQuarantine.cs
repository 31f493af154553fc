using System.Runtime.InteropServices;
using NativeHeap.Os;

namespace NativeHeap.Debugging;

/// <summary>A freed block held by the quarantine: its user pointer, the free's stack, its chunk's bytes / 16.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct QuarantineEntry
{
    public byte* User;
    public uint FreeStack;
    public uint ChunkUnits;
}

/// <summary>
/// The debug heap's quarantine: a FIFO of freed blocks, bounded in chunk bytes
/// (<c>quarantine_bytes</c>) and in entries (<see cref="Capacity"/>), one per process. A block
/// enters poisoned and leaves, oldest first, when the bound is passed: the caller then checks it
/// and gives its chunk back to the arena. In mmap'd memory (MAP_NORESERVE: only the ring's used
/// part becomes resident), made once by <see cref="Create"/>.
/// </summary>
/// <remarks>
/// <see cref="Lock"/> guards every field and the ring; it is held only to push or pop one entry
/// (never while poisoning, checking or freeing), and across fork (DebugHeap.ForkPrepare).
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct DebugQuarantine
{
    internal const nuint Capacity = 1 << 16;

    public int Lock;
    /// <summary>The oldest entry's index.</summary>
    public nuint Head;
    public nuint Count;
    /// <summary>The chunk bytes of the blocks held.</summary>
    public nuint Bytes;
    public QuarantineEntry* Ring;

    internal static DebugQuarantine* Create()
    {
        var q = (DebugQuarantine*)OsMemory.Map((nuint)sizeof(DebugQuarantine));
        if (q == null) return null;
        q->Ring = (QuarantineEntry*)OsMemory.MapSparse(Capacity * (nuint)sizeof(QuarantineEntry));
        if (q->Ring == null)
        {
            OsMemory.Unmap(q, (nuint)sizeof(DebugQuarantine));
            return null;
        }
        return q;
    }

    /// <summary>Holds a block; false when the ring is full (the caller then frees the oldest first).</summary>
    internal static bool TryPush(DebugQuarantine* q, byte* user, uint freeStack, nuint chunkBytes)
    {
        using var _ = FutexLock.Hold(&q->Lock);
        if (q->Count == Capacity) return false;
        q->Ring[(q->Head + q->Count) & (Capacity - 1)] = new QuarantineEntry { User = user, FreeStack = freeStack, ChunkUnits = (uint)(chunkBytes >> 4) };
        q->Count++;
        q->Bytes += chunkBytes;
        return true;
    }

    /// <summary>Takes the oldest block out if more than <paramref name="limit"/> bytes (or a full ring) are held.</summary>
    internal static bool TryPopOver(DebugQuarantine* q, nuint limit, out QuarantineEntry oldest)
    {
        using var _ = FutexLock.Hold(&q->Lock);
        if (q->Count == 0 || (q->Bytes <= limit && q->Count < Capacity))
        {
            oldest = default;
            return false;
        }
        oldest = q->Ring[q->Head];
        q->Head = (q->Head + 1) & (Capacity - 1);
        q->Count--;
        q->Bytes -= (nuint)oldest.ChunkUnits << 4;
        return true;
    }

    /// <summary>The free's stack of the held block at <paramref name="user"/> (0 if it is not held).</summary>
    internal static uint FreeStackOf(DebugQuarantine* q, byte* user)
    {
        using var _ = FutexLock.Hold(&q->Lock);
        for (nuint i = 0; i < q->Count; i++)
        {
            QuarantineEntry* e = &q->Ring[(q->Head + i) & (Capacity - 1)];
            if (e->User == user) return e->FreeStack;
        }
        return 0;
    }

    /// <summary>A copy of every held entry, oldest first (for a full check).</summary>
    internal static QuarantineEntry[] Snapshot(DebugQuarantine* q)
    {
        using var _ = FutexLock.Hold(&q->Lock);
        var copy = new QuarantineEntry[(int)q->Count];
        for (nuint i = 0; i < q->Count; i++) copy[(int)i] = q->Ring[(q->Head + i) & (Capacity - 1)];
        return copy;
    }
}
