namespace NativeHeap;

/// <summary>
/// glibc's <c>struct mallinfo2</c>: the heap's statistics, every field with mallinfo2's meaning.
/// Chunks in the tcache count as in use, as in glibc.
/// </summary>
public readonly record struct HeapInfo
{
    /// <summary>arena: bytes obtained from the system for the arenas (sbrk and arena mappings).</summary>
    public ulong Arena { get; init; }
    /// <summary>ordblks: free chunks in the bins, plus one for top.</summary>
    public ulong Ordblks { get; init; }
    /// <summary>smblks: free chunks in fastbins.</summary>
    public ulong Smblks { get; init; }
    /// <summary>hblks: mmapped chunks.</summary>
    public ulong Hblks { get; init; }
    /// <summary>hblkhd: bytes in mmapped chunks.</summary>
    public ulong Hblkhd { get; init; }
    /// <summary>usmblks: always 0 (as glibc).</summary>
    public ulong Usmblks { get; init; }
    /// <summary>fsmblks: bytes in fastbin chunks.</summary>
    public ulong Fsmblks { get; init; }
    /// <summary>uordblks: bytes in use in the arenas (tcache included).</summary>
    public ulong Uordblks { get; init; }
    /// <summary>fordblks: free bytes in the arenas (bins, fastbins, top).</summary>
    public ulong Fordblks { get; init; }
    /// <summary>keepcost: the size of the main arena's top, the most trim could release.</summary>
    public ulong Keepcost { get; init; }
}
