using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Programs that <see cref="AllocationSiteTests"/> records with `nativeheap record`.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>
    /// seeds/002 from .NET: 60,000-byte blocks from glibc's malloc (NativeMemory.Alloc), each
    /// followed by an 80-byte one that <see cref="RememberSetting"/> keeps; the big ones freed,
    /// the small ones pin them. explain must name RememberSetting as the pinning chunks' site.
    /// </summary>
    public static void NativeMemoryPinning()
    {
        const int N = 400;
        var big = new void*[N];
        var kept = new void*[N];
        for (int i = 0; i < N; i++)
        {
            big[i] = NativeMemory.Alloc(60_000);
            kept[i] = RememberSetting();
        }
        for (int i = 0; i < N; i++) NativeMemory.Free(big[i]);
        Report("kept", N);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void* RememberSetting() => NativeMemory.Alloc(80);
}
