using System.Runtime.InteropServices;
using NativeHeap.Os;

namespace NativeHeap.Debugging;

/// <summary>A freed block held by a quarantine: its user pointer and its chunk's bytes / 16.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct QuarantineEntry
{
    public byte* User;
    public nuint ChunkUnits;
}

/// <summary>
/// A thread's quarantine: a FIFO of the blocks it freed, bounded in chunk bytes
/// (<c>quarantine_bytes</c>) and in entries (<see cref="Capacity"/>). A block enters poisoned
/// and leaves, oldest first, when the bound is passed: the caller then checks it and gives its
/// chunk back to the arena. In mmap'd memory (the ring MAP_NORESERVE: only its used part
/// becomes resident), made at the thread's first free and given back at its exit.
/// </summary>
/// <remarks>
/// One a thread, reached through its ThreadLocals, so it has no lock: only its thread (or,
/// once the thread has ended, the one that shuts its state down) touches it. Nothing else
/// needs to: a block's state and the stack of its free are in the block itself (DebugBlock).
/// One shared FIFO was measured first: its lock, taken at every free, made larson 25 times
/// slower under debug=1 (2 threads, 1.7 M operations a second against 43 M).
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct DebugQuarantine
{
    internal const nuint Capacity = 1 << 16;

    /// <summary>The oldest entry's index.</summary>
    public nuint Head;
    public nuint Count;
    /// <summary>The chunk bytes of the blocks held.</summary>
    public nuint Bytes;
    public QuarantineEntry* Ring;

    private static nuint RingBytes => Capacity * (nuint)sizeof(QuarantineEntry);

    /// <summary>A new, empty quarantine; null when there is no memory for it (blocks are then freed at once).</summary>
    internal static DebugQuarantine* Create()
    {
        var q = (DebugQuarantine*)OsMemory.Map((nuint)sizeof(DebugQuarantine));
        if (q == null) return null;
        q->Ring = (QuarantineEntry*)OsMemory.MapSparse(RingBytes);
        if (q->Ring != null) return q;
        OsMemory.Unmap(q, (nuint)sizeof(DebugQuarantine));
        return null;
    }

    /// <summary>Gives an empty quarantine's memory back.</summary>
    internal static void Destroy(DebugQuarantine* q)
    {
        OsMemory.Unmap(q->Ring, RingBytes);
        OsMemory.Unmap(q, (nuint)sizeof(DebugQuarantine));
    }

    /// <summary>Holds a block; false when the ring is full (the caller takes the oldest out first).</summary>
    internal static bool TryPush(DebugQuarantine* q, byte* user, nuint chunkBytes)
    {
        if (q->Count == Capacity) return false;
        q->Ring[(q->Head + q->Count) & (Capacity - 1)] = new QuarantineEntry { User = user, ChunkUnits = chunkBytes >> 4 };
        q->Count++;
        q->Bytes += chunkBytes;
        return true;
    }

    /// <summary>Takes the oldest block out if more than <paramref name="limit"/> bytes are held.</summary>
    internal static bool TryPopOver(DebugQuarantine* q, nuint limit, out byte* user)
    {
        if (q->Count == 0 || q->Bytes <= limit)
        {
            user = null;
            return false;
        }
        QuarantineEntry oldest = q->Ring[q->Head];
        q->Head = (q->Head + 1) & (Capacity - 1);
        q->Count--;
        q->Bytes -= oldest.ChunkUnits << 4;
        user = oldest.User;
        return true;
    }
}
