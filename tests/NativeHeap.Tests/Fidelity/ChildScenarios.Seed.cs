using NativeHeap.Diagnostics;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="SeedScenarioTests"/> that need a process of their own.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>
    /// seeds/002: 4000 x (malloc(52722), malloc(1)), all touched, freed in reverse, then
    /// malloc(2000) and free; NATIVEHEAP_SEED_TRIM=1 adds malloc_trim(0) at the end.
    /// </summary>
    public static void Seed002()
    {
        const int N = 4000;
        var a = new byte*[N];
        var b = new byte*[N];
        Heap.Free(Heap.Alloc(1));
        long foreign0 = Heap.ForeignBreaks;
        Statm baseline = Statm.Read();
        for (int i = 0; i < N; i++)
        {
            a[i] = (byte*)Heap.Alloc(52722);
            new Span<byte>(a[i], 52722).Fill(1);
            b[i] = (byte*)Heap.Alloc(1);
            b[i][0] = 1;
        }
        long mallocs = AnonDeltaKib(baseline);
        for (int i = N - 1; i >= 0; i--)
        {
            Heap.Free(a[i]);
            Heap.Free(b[i]);
        }
        long frees = AnonDeltaKib(baseline);
        Heap.Free(Heap.Alloc(2000));
        long last = AnonDeltaKib(baseline);
        bool trimmed = Environment.GetEnvironmentVariable("NATIVEHEAP_SEED_TRIM") == "1" && Heap.Trim(0);
        long trim = AnonDeltaKib(baseline);
        Report("mallocs_kib", mallocs);
        Report("frees_kib", frees);
        Report("last_kib", last);
        Report("trimmed", trimmed);
        Report("trim_kib", trim);
        Report("foreign_breaks", Heap.ForeignBreaks - foreign0);
        Report("last_foreign", $"0x{Heap.LastForeignBreak.Break:x} after 0x{Heap.LastForeignBreak.OldEnd:x}");
        Heap.Validate();
    }
}
