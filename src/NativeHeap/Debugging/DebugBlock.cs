using System.Numerics;
using System.Runtime.CompilerServices;

namespace NativeHeap.Debugging;

/// <summary>What the debug heap knows of a block, read from its header.</summary>
internal enum BlockState : byte
{
    /// <summary>No intact header: not a block's start, a header overwritten from below, or a block long gone.</summary>
    Unknown = 0,
    Live = 1,
    /// <summary>Freed and held, poisoned, in the quarantine.</summary>
    Quarantined = 2,
}

/// <summary>
/// A debug block's layout, inside the chunk the arena gave (mem = the chunk's user pointer):
/// <code>
///   mem                         U-16        U-8           U            U+asked        mem+usable
///   | aligned marker (if A>16) | meta      | size ^ key  | asked bytes | tail canary  |
/// </code>
/// U, the pointer the caller gets, is mem + 16, or mem + A for an alignment A above 16.
/// <list type="bullet">
/// <item>meta: the allocation's stack id (bits 0-31), log2(U - mem) (32-37), the state
/// (38-39), and a 24-bit tag (40-63) keyed by the process's secret and U: a header that does
/// not carry its tag is no header of ours.</item>
/// <item>size word: the size asked for, XOR the secret; its top 16 bits decode to zero, so
/// an underflow of one or two bytes (which lands there first) is seen.</item>
/// <item>tail canary: every byte from U+asked to the chunk's end (at least 8, made room for)
/// holds the keyed pattern <see cref="CanaryByte"/>.</item>
/// <item>aligned marker: for A above 16, mem holds a meta word of state 3 tagged for mem+16,
/// so that a walk over chunks can find U.</item>
/// </list>
/// Freed, the asked bytes are filled with <see cref="Poison"/>; the free's stack lives in the
/// quarantine's entry (DebugQuarantine.cs). All of this is written and read by the thread that owns
/// the block (it is the caller's until freed, the quarantine's after), so no lock guards it.
/// </summary>
internal static unsafe class DebugBlock
{
    internal const nuint HeaderBytes = 16;
    /// <summary>The least tail canary: a one-byte overflow always lands in it.</summary>
    internal const nuint TailMin = 8;
    /// <summary>What a freed block's bytes hold while it is quarantined.</summary>
    internal const byte Poison = 0xDF;
    private const int Log2Shift = 32, StateShift = 38, TagShift = 40;
    private const ulong AlignedMarker = 3;

    // Set once by DebugHeap before the first debug block (getrandom), read freely afterwards.
    private static ulong s_key, s_canary;

    internal static void SetSecrets(ulong key, ulong canary)
    {
        s_key = key;
        // No zero byte in the pattern: memory that was never written (fresh pages) never matches it.
        for (int i = 0; i < 64; i += 8)
            if (((canary >> i) & 0xFF) == 0) canary |= 0x5AUL << i;
        s_canary = canary;
    }

    /// <summary>The canary byte at address <paramref name="a"/>: the pattern depends on the secret and the address's low bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static byte CanaryByte(nuint a) => (byte)(s_canary >> (int)((a & 7) * 8));

    private static ulong Tag(byte* user, ulong low) =>
        Mix(low ^ (ulong)user ^ s_key) >> TagShift << TagShift;

    private static ulong Mix(ulong x)
    {
        x ^= x >> 31; x *= 0x7FB5D329728EA185UL;
        x ^= x >> 27; x *= 0x81DADEF4BC2DD44DUL;
        return x ^ (x >> 33);
    }

    private static ulong Meta(byte* user, uint stack, int log2, BlockState state)
    {
        ulong low = stack | ((ulong)log2 << Log2Shift) | ((ulong)state << StateShift);
        return low | Tag(user, low);
    }

    /// <summary>Writes the header, the marker and the tail canary of a new block at <paramref name="user"/> in [mem, end).</summary>
    internal static void Make(byte* mem, byte* end, byte* user, nuint asked, uint stack)
    {
        int log2 = BitOperations.Log2((ulong)(user - mem));
        if (user - mem > (nint)HeaderBytes)
            *(ulong*)mem = MarkerMeta(mem, log2);
        ((ulong*)user)[-2] = Meta(user, stack, log2, BlockState.Live);
        ((ulong*)user)[-1] = asked ^ s_key;
        FillCanary(user + asked, end);
    }

    private static ulong MarkerMeta(byte* mem, int log2)
    {
        ulong low = ((ulong)log2 << Log2Shift) | (AlignedMarker << StateShift);
        return low | Tag(mem + HeaderBytes, low);
    }

    /// <summary>Writes the canary over [from, end): at an 8-aligned address the pattern is the secret word itself.</summary>
    internal static void FillCanary(byte* from, byte* end)
    {
        byte* b = from;
        for (; b < end && ((nuint)b & 7) != 0; b++) *b = CanaryByte((nuint)b);
        for (; b + 8 <= end; b += 8) *(ulong*)b = s_canary;
        for (; b < end; b++) *b = CanaryByte((nuint)b);
    }

    /// <summary>The first byte in [from, end) that is not the canary, or null.</summary>
    internal static byte* FirstBadCanary(byte* from, byte* end)
    {
        byte* b = from;
        for (; b < end && ((nuint)b & 7) != 0; b++)
            if (*b != CanaryByte((nuint)b)) return b;
        for (; b + 8 <= end; b += 8)
            if (*(ulong*)b != s_canary) break; // the bad byte is in this word: the byte loop finds it
        for (; b < end; b++)
            if (*b != CanaryByte((nuint)b)) return b;
        return null;
    }

    /// <summary>The first byte of [from, end) that is not <see cref="Poison"/>, or null.</summary>
    internal static byte* FirstUnpoisoned(byte* from, byte* end)
    {
        int i = new ReadOnlySpan<byte>(from, checked((int)Math.Min((nuint)(end - from), int.MaxValue))).IndexOfAnyExcept(Poison);
        if (i >= 0) return from + i;
        return end - from > int.MaxValue ? FirstUnpoisoned(from + int.MaxValue, end) : null;
    }

    /// <summary>
    /// Writes the free's stack into a freed block's last 8 bytes (inside the tail canary, which
    /// is at least that long): the stack id, and 32 check bits keyed by the secret and the block,
    /// so that a write there after the free is seen like any other.
    /// </summary>
    internal static void SetFreeStack(byte* user, byte* end, uint stack) =>
        Unsafe.WriteUnaligned(end - 8, stack | (Mix((ulong)user ^ s_key ^ stack) << 32));

    /// <summary>The free's stack written by <see cref="SetFreeStack"/>; false when that word was overwritten.</summary>
    internal static bool TryFreeStack(byte* user, byte* end, out uint stack)
    {
        ulong word = Unsafe.ReadUnaligned<ulong>(end - 8);
        stack = (uint)word;
        return word >> 32 == (uint)Mix((ulong)user ^ s_key ^ stack);
    }

    /// <summary>The state the header at <paramref name="user"/> says, <see cref="BlockState.Unknown"/> if it is not intact.</summary>
    internal static BlockState State(byte* user, out uint stack, out int log2)
    {
        ulong meta = ((ulong*)user)[-2];
        ulong low = meta & ((1UL << TagShift) - 1);
        stack = (uint)meta;
        log2 = (int)((meta >> Log2Shift) & 63);
        var state = (BlockState)((meta >> StateShift) & 3);
        if ((meta ^ Tag(user, low)) >> TagShift != 0 || state is not (BlockState.Live or BlockState.Quarantined) || log2 < 4)
            return BlockState.Unknown;
        return state;
    }

    /// <summary>Marks the block <paramref name="state"/>, its allocation's stack and alignment as the header had them.</summary>
    internal static void SetState(byte* user, uint stack, int log2, BlockState state) =>
        ((ulong*)user)[-2] = Meta(user, stack, log2, state);

    /// <summary>The size asked for, or false when the size word's check bits were overwritten (an underflow).</summary>
    internal static bool TryAsked(byte* user, out nuint asked)
    {
        ulong v = ((ulong*)user)[-1] ^ s_key;
        asked = (nuint)(v & 0xFFFF_FFFF_FFFF);
        return v >> 48 == 0;
    }

    /// <summary>
    /// After an underflow: the size asked for if only the size word's check bits were hit (its
    /// low 48 bits still fit the chunk, <paramref name="tail"/> bytes of canary at least after it),
    /// and the word that should be there; false when more was overwritten.
    /// </summary>
    internal static bool TryAskedAfterUnderflow(byte* user, byte* end, nuint tail, out nuint asked, out ulong expected)
    {
        asked = (nuint)((((ulong*)user)[-1] ^ s_key) & 0xFFFF_FFFF_FFFF);
        expected = asked ^ s_key;
        // The slack a chunk can have: under 32 bytes in an arena, under a page when mapped on its own.
        return asked <= (nuint)(end - user) - tail && (nuint)(end - user) - tail - asked < Os.OsMemory.PageSize + 32;
    }

    /// <summary>The block's user pointer if <paramref name="mem"/> (a chunk's user pointer) starts a debug block whose header can be read.</summary>
    internal static byte* UserOfChunk(byte* mem, byte* end)
    {
        if (end - mem < (nint)(HeaderBytes + TailMin)) return null;
        ulong m = *(ulong*)mem;
        int log2 = (int)((m >> Log2Shift) & 63);
        if (((m >> StateShift) & 3) == AlignedMarker && log2 is > 4 and < 48 && m == MarkerMeta(mem, log2))
        {
            byte* u = mem + ((nuint)1 << log2);
            return u + TailMin <= end ? u : null;
        }
        return mem + HeaderBytes;
    }

    /// <summary>Where the chunk's user memory starts for a block at <paramref name="user"/> with <paramref name="log2"/>.</summary>
    internal static byte* Mem(byte* user, int log2) => user - ((nuint)1 << log2);
}
