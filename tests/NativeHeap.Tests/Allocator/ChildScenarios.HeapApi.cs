using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="HeapApiTests"/> that need a process of their own.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>Free one small block: with the tcache on it is cached, with tcache_count=0 it goes to a fastbin.</summary>
    public static void TcacheOrFastbin()
    {
        try
        {
            void* p = Heap.Alloc(40);
            Heap.Alloc(40);
            Heap.Free(p);
            Report("fastbin_chunks", Heap.GetInfo().Smblks);
        }
        catch (InvalidOperationException e)
        {
            Report("error", e.Message);
        }
    }
}
