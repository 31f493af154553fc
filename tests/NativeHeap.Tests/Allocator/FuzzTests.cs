using CsCheck;
using NativeHeap.Arenas;

namespace NativeHeap.Tests;

/// <summary>
/// Property-based fuzz (CsCheck) of operation sequences against the shadow model: whatever
/// the sequence of mallocs, callocs, reallocs, memaligns, frees and trims, with the tcache on
/// or off, every live block keeps its contents and the heap checks out. CsCheck shrinks a
/// failing sequence and prints the seed that replays it. CI runs a short budget;
/// <c>NATIVEHEAP_FUZZ_SECONDS=600 dotnet test --filter FuzzTests</c> runs longer.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class FuzzTests
{
    private readonly record struct Op(int Kind, int Size, int Pick);

    private static readonly Gen<Op> GenOp = Gen.Select(
        Gen.Int[0, 99],
        Gen.Frequency((8, Gen.Int[0, 128]), (4, Gen.Int[129, 4096]), (2, Gen.Int[4097, 200_000]), (1, Gen.Int[200_001, 1 << 20])),
        Gen.Int[0, 1000],
        (kind, size, pick) => new Op(kind, size, pick));

    private static readonly Gen<(bool Tcache, Op[] Ops)> GenRun = Gen.Select(Gen.Bool, GenOp.Array[1, 400]);

    [Fact]
    public void OperationSequences_KeepEveryBlockIntact()
    {
        string? seconds = Environment.GetEnvironmentVariable("NATIVEHEAP_FUZZ_SECONDS");
        if (seconds is null)
            GenRun.Sample(run => Run(run.Tcache, run.Ops), iter: 300, threads: 1);
        else
            GenRun.Sample(run => Run(run.Tcache, run.Ops), time: int.Parse(seconds), threads: 1);
    }

    private static void Run(bool tcache, Op[] ops)
    {
        using var h = new PrivateHeap(tcache ? 7 : 0);
        var live = new List<(nint P, int Size, byte Fill)>();
        byte fill = 1;
        foreach (Op op in ops)
        {
            if (live.Count > 0 && op.Kind < 35)
            {
                int k = op.Pick % live.Count;
                Verify(live[k]);
                h.Free((void*)live[k].P);
                live.RemoveAt(k);
            }
            else if (live.Count > 0 && op.Kind < 50)
            {
                int k = op.Pick % live.Count;
                var b = live[k];
                byte* q = h.Realloc((void*)b.P, (nuint)op.Size);
                if (op.Size == 0)
                {
                    live.RemoveAt(k);
                    continue;
                }
                Verify(((nint)q, Math.Min(b.Size, op.Size), b.Fill));
                new Span<byte>(q, op.Size).Fill(b.Fill);
                live[k] = ((nint)q, op.Size, b.Fill);
            }
            else if (op.Kind < 98)
            {
                byte* p = op.Kind switch
                {
                    < 60 => h.Calloc(1, (nuint)op.Size),
                    < 66 => h.Memalign((nuint)1 << (op.Pick % 13 + 4), (nuint)op.Size),
                    _ => h.Malloc((nuint)op.Size),
                };
                if (op.Kind < 60 && new Span<byte>(p, op.Size).IndexOfAnyExcept((byte)0) >= 0)
                    throw new InvalidOperationException($"calloc({op.Size}) was not zeroed");
                new Span<byte>(p, op.Size).Fill(fill);
                live.Add(((nint)p, op.Size, fill));
                fill = (byte)(fill % 255 + 1);
            }
            else
            {
                h.Trim((nuint)op.Pick * 256);
            }
        }
        h.Check();
        foreach (var b in live)
        {
            Verify(b);
            h.Free((void*)b.P);
        }
        h.Check();
    }

    private static void Verify((nint P, int Size, byte Fill) b)
    {
        int bad = new Span<byte>((void*)b.P, b.Size).IndexOfAnyExcept(b.Fill);
        if (bad >= 0) throw new InvalidOperationException($"block 0x{b.P:x} of {b.Size} bytes: byte {bad} changed");
    }
}
