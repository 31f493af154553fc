using CsCheck;

namespace NativeHeap.Tests;

/// <summary>
/// Extreme sizes and alignments through every .NET entry point: each call gives a usable
/// block (aligned, written end to end where small enough to touch, its first and last bytes
/// otherwise) or the documented exception, never a crash or a wild write; the heap checks out
/// afterwards. The C side of the same table is <see cref="ExtremeSizeNativeTests"/>.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class ExtremeSizeTests
{
    private static readonly nuint PtrdiffMax = unchecked((nuint)long.MaxValue);
    /// <summary>Blocks up to this size are written whole; larger ones (granted by overcommit) only at both ends.</summary>
    private const nuint WriteWhole = 16 << 20;

    internal static readonly nuint[] Sizes = BuildSizes();

    internal static readonly nuint[] Alignments = BuildAlignments();

    private static nuint[] BuildSizes()
    {
        var s = new SortedSet<nuint> { 0, 1 };
        for (int k = 1; k < 64; k++)
        {
            nuint p = (nuint)1 << k;
            s.Add(p - 1); s.Add(p); s.Add(p + 1);
        }
        for (nuint k = 0; k <= 64; k++)
        {
            s.Add(PtrdiffMax - k); s.Add(nuint.MaxValue - k); s.Add(PtrdiffMax / 2 - k);
        }
        return [.. s];
    }

    private static nuint[] BuildAlignments()
    {
        var a = new List<nuint>();
        for (int k = 0; k < 64; k++) a.Add((nuint)1 << k);
        a.AddRange([0, 3, 24, 48, 100, 4097, ((nuint)1 << 32) + 1, nuint.MaxValue, nuint.MaxValue / 2, (nuint)3 << 62]);
        return [.. a];
    }

    /// <summary>A successful block: usable for n bytes, aligned, written, then freed.</summary>
    private static void Use(byte* p, nuint n, nuint alignment = 16)
    {
        Assert.True(p != null);
        Assert.True((nuint)p % alignment == 0, $"0x{(nuint)p:x} is not {alignment}-aligned");
        Assert.True(Heap.UsableSize(p) >= n, $"usable {Heap.UsableSize(p)} < {n}");
        if (n <= WriteWhole) new Span<byte>(p, (int)n).Fill(0xA5);
        else { p[0] = 1; p[n - 1] = 1; }
        Heap.Free(p);
    }

    /// <summary>Runs one call: a block it uses, or the exception the API documents for that input.</summary>
    private static void Expect(Func<nint> call, nuint n, nuint alignment = 16, bool badAlignment = false)
    {
        nint p;
        try
        {
            p = call();
        }
        catch (ArgumentException) when (badAlignment)
        {
            return;
        }
        catch (OutOfMemoryException)
        {
            Assert.False(badAlignment, $"alignment {alignment} should have been refused as not a power of two");
            return;
        }
        Assert.False(badAlignment, $"alignment {alignment} should have been refused as not a power of two");
        Use((byte*)p, n, alignment);
    }

    [Fact]
    public void MallocCallocRealloc_AtEveryExtremeSize_GiveABlockOrOutOfMemory()
    {
        foreach (nuint n in Sizes)
        {
            Expect(() => (nint)Heap.Alloc(n), n);
            Expect(() => (nint)Heap.AllocZeroed(1, n), n);
            Expect(() => (nint)Heap.AllocZeroed(2, n), n <= nuint.MaxValue / 2 ? 2 * n : 0);
            Expect(() => (nint)Heap.AllocZeroed(n, 2), n <= nuint.MaxValue / 2 ? 2 * n : 0);
            Expect(() => (nint)Heap.Realloc(null, n), n);

            // A failed realloc keeps the old block as it was.
            var old = (byte*)Heap.Alloc(40);
            new Span<byte>(old, 40).Fill(0x5A);
            byte* grown = null;
            try { grown = (byte*)Heap.Realloc(old, n); }
            catch (OutOfMemoryException)
            {
                Assert.True(new Span<byte>(old, 40).IndexOfAnyExcept((byte)0x5A) < 0, $"realloc({n}) failed and changed the old block");
                Heap.Free(old);
            }
            if (grown != null)
            {
                Assert.True(new Span<byte>(grown, (int)Math.Min(n, 40)).IndexOfAnyExcept((byte)0x5A) < 0, $"realloc({n}) lost the old contents");
                Use(grown, n);
            }
        }
        Heap.Validate();
    }

    [Fact]
    public void CallocZeroes_EveryBlockItGives()
    {
        foreach (nuint n in Sizes.Where(n => n <= WriteWhole))
        {
            var dirty = (byte*)Heap.Alloc(n);
            new Span<byte>(dirty, (int)n).Fill(0xFF);
            Heap.Free(dirty);
            var p = (byte*)Heap.AllocZeroed(1, n);
            Assert.True(new Span<byte>(p, (int)n).IndexOfAnyExcept((byte)0) < 0, $"calloc({n}) gave non-zero bytes");
            Heap.Free(p);
        }
        Heap.Validate();
    }

    [Fact]
    public void AlignedAlloc_AtEveryAlignmentAndExtremeSize_GivesAnAlignedBlockOrTheDocumentedError()
    {
        nuint[] someSizes = [0, 1, 48, 4096, 65536, (nuint)1 << 20, (nuint)1 << 33, (nuint)1 << 40,
            PtrdiffMax / 2, PtrdiffMax, nuint.MaxValue, nuint.MaxValue - 64,
            .. Enumerable.Range(0, 65).Where(k => k % 8 == 0).Select(k => PtrdiffMax - (nuint)k),
            .. Enumerable.Range(16, 48).Select(k => PtrdiffMax - (nuint)k)]; // around CVE-2026-0861's sizes
        nuint[] someAlignments = [16, 4096, (nuint)1 << 20, (nuint)1 << 62, (nuint)1 << 63];
        foreach (nuint a in Alignments)
            foreach (nuint n in someSizes)
                Expect(() => (nint)Heap.AlignedAlloc(n, a), n, a == 0 ? 1 : a, badAlignment: a == 0 || (a & (a - 1)) != 0);
        foreach (nuint a in someAlignments)
            foreach (nuint n in Sizes)
                Expect(() => (nint)Heap.AlignedAlloc(n, a), n, a);
        Heap.Validate();
    }

    /// <summary>The case: glibc's CVE-2026-0861. It crashed the process before the fix.</summary>
    [Fact]
    public void AlignedAlloc_HugeAlignmentAndHugeSize_IsOutOfMemory()
    {
        Assert.Throws<OutOfMemoryException>(() => Heap.AlignedAlloc(PtrdiffMax - 32, (nuint)1 << 63));
        Heap.Validate();
    }

    /// <summary>Random extreme values (near powers of two, PTRDIFF_MAX and SIZE_MAX) and any alignment, mixed with live blocks.</summary>
    [Fact]
    public void ExtremeValues_Property_NeverCorruptTheHeap()
    {
        Gen<nuint> near = Gen.Select(Gen.Int[0, 63], Gen.Int[-64, 64], (k, d) => unchecked(((nuint)1 << k) + (nuint)(nint)d));
        Gen<nuint> size = Gen.OneOf(near, Gen.Int[0, 64].Select(d => PtrdiffMax - (nuint)d),
            Gen.Int[0, 64].Select(d => nuint.MaxValue - (nuint)d), Gen.Int[0, 5000].Select(d => (nuint)d));
        Gen<nuint> alignment = Gen.OneOf(Gen.Int[0, 63].Select(k => (nuint)1 << k), near);
        Gen.Select(Gen.Int[0, 4], size, alignment).Array[1, 20].Sample(ops =>
        {
            var keep = new List<nint>();
            foreach (var (kind, n, a) in ops)
            {
                bool powerOfTwo = a != 0 && (a & (a - 1)) == 0;
                try
                {
                    nint p = kind switch
                    {
                        0 => (nint)Heap.Alloc(n),
                        1 => (nint)Heap.AllocZeroed(n, 1),
                        2 => (nint)Heap.Realloc(keep.Count > 0 ? (void*)keep[^1] : null, n),
                        _ => (nint)Heap.AlignedAlloc(n, a),
                    };
                    if (kind == 2 && keep.Count > 0) keep.RemoveAt(keep.Count - 1);
                    if (kind >= 3) Assert.True(powerOfTwo && (nuint)p % a == 0);
                    if (n <= WriteWhole) new Span<byte>((void*)p, (int)n).Fill(1);
                    else { ((byte*)p)[0] = 1; ((byte*)p)[n - 1] = 1; }
                    if (n <= WriteWhole) keep.Add(p); else Heap.Free((void*)p);
                }
                catch (OutOfMemoryException) { }
                catch (ArgumentException) when (kind >= 3 && !powerOfTwo) { }
            }
            Heap.Validate();
            foreach (nint p in keep) Heap.Free((void*)p);
        }, iter: 300, threads: 1);
        Heap.Validate();
    }
}
