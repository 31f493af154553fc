namespace NativeHeap.Symbols;

/// <summary>A little-endian reader over one DWARF section's bytes; reading past the end throws <see cref="InvalidDataException"/>.</summary>
internal struct DwarfCursor(byte[] data, int position)
{
    public readonly byte[] Data = data;
    public int Position = position;

    public readonly bool AtEnd => Position >= Data.Length;

    private readonly void Need(int n)
    {
        if (n < 0 || Position + n > Data.Length)
            throw new InvalidDataException($"DWARF data ends at {Data.Length}, a read wanted {n} bytes at {Position}");
    }

    public byte U8() { Need(1); return Data[Position++]; }
    public ushort U16() { Need(2); ushort v = BitConverter.ToUInt16(Data, Position); Position += 2; return v; }
    public uint U24() { Need(3); uint v = Data[Position] | (uint)Data[Position + 1] << 8 | (uint)Data[Position + 2] << 16; Position += 3; return v; }
    public uint U32() { Need(4); uint v = BitConverter.ToUInt32(Data, Position); Position += 4; return v; }
    public ulong U64() { Need(8); ulong v = BitConverter.ToUInt64(Data, Position); Position += 8; return v; }

    public ulong Unsigned(int size) => size switch
    {
        1 => U8(),
        2 => U16(),
        3 => U24(),
        4 => U32(),
        8 => U64(),
        _ => throw new InvalidDataException($"DWARF: a {size}-byte value"),
    };

    public ulong Uleb()
    {
        ulong result = 0;
        int shift = 0;
        while (true)
        {
            byte b = U8();
            if (shift < 64) result |= (ulong)(b & 0x7f) << shift;
            shift += 7;
            if ((b & 0x80) == 0) return result;
        }
    }

    public long Sleb()
    {
        long result = 0;
        int shift = 0;
        byte b;
        do
        {
            b = U8();
            if (shift < 64) result |= (long)(b & 0x7f) << shift;
            shift += 7;
        } while ((b & 0x80) != 0);
        if (shift < 64 && (b & 0x40) != 0) result |= -1L << shift;
        return result;
    }

    public string CString()
    {
        int end = Array.IndexOf(Data, (byte)0, Position);
        if (end < 0) throw new InvalidDataException("DWARF: a string without its terminating zero");
        string s = System.Text.Encoding.UTF8.GetString(Data, Position, end - Position);
        Position = end + 1;
        return s;
    }

    public void Skip(ulong n)
    {
        if (n > int.MaxValue) throw new InvalidDataException($"DWARF: skipping {n} bytes");
        Need((int)n);
        Position += (int)n;
    }

    /// <summary>A unit's initial length: the length, and whether the unit uses 64-bit offsets.</summary>
    public (ulong Length, bool Is64) InitialLength()
    {
        uint l = U32();
        if (l == 0xffffffff) return (U64(), true);
        if (l >= 0xfffffff0) throw new InvalidDataException($"DWARF: reserved unit length 0x{l:x}");
        return (l, false);
    }

    public static string CStringAt(byte[] data, ulong offset)
    {
        if (offset >= (ulong)data.Length) throw new InvalidDataException($"DWARF: string offset 0x{offset:x} past its section ({data.Length} bytes)");
        return new DwarfCursor(data, (int)offset).CString();
    }
}
