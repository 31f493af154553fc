using NativeHeap.Arenas;

namespace NativeHeap.Tests;

/// <summary>
/// A million random operations against a shadow of what each live block must hold: every
/// block is filled with a byte derived from its id, checked before it is freed and after it
/// is reallocated, and the whole heap is checked every 10,000 operations. Seeded; the seed and
/// operation number are in any failure.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class ShadowTests
{
#if DEBUG
    // CI's Debug pass (glibc's asserts, Category=Allocator) runs half, to keep CI within its
    // 15 minutes; the Release pass runs the million.
    private const int Operations = 500_000;
#else
    private const int Operations = 1_000_000;
#endif
    private const int MaxLive = 2000;

    [Theory]
    [InlineData(20261122, 7)]
    [InlineData(4242, 0)]
    public void MillionRandomOperations_KeepEveryBlockIntact(int seed, int tcacheCount)
    {
        int op = 0;
        try
        {
            Run(seed, tcacheCount, ref op);
        }
        catch (Exception e)
        {
            throw new Xunit.Sdk.XunitException($"seed {seed}, tcache {tcacheCount}, operation {op}: {e}");
        }
    }

    private struct Block
    {
        public byte* Ptr;
        public nuint Size;
        public byte Fill;
    }

    private static void Run(int seed, int tcacheCount, ref int op)
    {
        var rng = new Random(seed);
        using var h = new PrivateHeap(tcacheCount);
        var live = new List<Block>();
        int nextId = 0;
        for (op = 0; op < Operations; op++)
        {
            int roll = rng.Next(1000);
            if (live.Count > 0 && (roll < 400 || live.Count >= MaxLive))
            {
                int k = rng.Next(live.Count);
                Verify(live[k]);
                h.Free(live[k].Ptr);
                live[k] = live[^1];
                live.RemoveAt(live.Count - 1);
            }
            else if (live.Count > 0 && roll < 550)
            {
                int k = rng.Next(live.Count);
                Block b = live[k];
                nuint size = Size(rng);
                byte* q = h.Realloc(b.Ptr, size);
                if (size == 0)
                {
                    Assert.True(q == null);
                    live[k] = live[^1];
                    live.RemoveAt(live.Count - 1);
                    continue;
                }
                Assert.True(q != null);
                Verify(new Block { Ptr = q, Size = Math.Min(b.Size, size), Fill = b.Fill });
                b.Ptr = q;
                b.Size = size;
                Fill(b);
                live[k] = b;
            }
            else if (roll < 998)
            {
                nuint size = Size(rng);
                byte* p;
                if (roll < 620)
                {
                    p = h.Calloc(1, size);
                    Assert.True(p != null);
                    Assert.Equal(-1, new Span<byte>(p, (int)size).IndexOfAnyExcept((byte)0));
                }
                else if (roll < 680)
                {
                    nuint align = (nuint)1 << rng.Next(4, 17);
                    p = h.Memalign(align, size);
                    Assert.True(p != null);
                    Assert.Equal(0UL, (ulong)((nuint)p % align));
                }
                else
                {
                    p = h.Malloc(size);
                }
                Assert.True(Ptmalloc.UsableSize(p) >= size);
                var b = new Block { Ptr = p, Size = size, Fill = (byte)(nextId++ * 31 + 7) };
                Fill(b);
                live.Add(b);
            }
            else
            {
                h.Trim((nuint)rng.Next(0, 256 * 1024));
            }
            if (op % 10_000 == 0) h.Check();
        }
        foreach (Block b in live)
        {
            Verify(b);
            h.Free(b.Ptr);
        }
        h.Check();
        Assert.Equal(0UL, h.Info.Hblks);
    }

    /// <summary>0 to 4 MiB, skewed small: most under 1 KiB, one in a thousand over 1 MiB.</summary>
    private static nuint Size(Random rng)
    {
        int roll = rng.Next(1000);
        if (roll < 850) return (nuint)rng.Next(0, 1025);
        if (roll < 980) return (nuint)rng.Next(1025, 65536);
        if (roll < 999) return (nuint)rng.Next(65536, 1 << 20);
        return (nuint)rng.Next(1 << 20, 4 << 20);
    }

    private static void Fill(Block b) => new Span<byte>(b.Ptr, (int)b.Size).Fill(b.Fill);

    private static void Verify(Block b)
    {
        int bad = new Span<byte>(b.Ptr, (int)b.Size).IndexOfAnyExcept(b.Fill);
        if (bad >= 0)
            throw new Xunit.Sdk.XunitException($"block 0x{(nuint)b.Ptr:x} of {b.Size} bytes: byte {bad} is {b.Ptr[bad]}, expected {b.Fill}");
    }
}
