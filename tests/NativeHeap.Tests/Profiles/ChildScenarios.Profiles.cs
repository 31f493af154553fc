using static NativeHeap.Tests.ChildMain;

namespace NativeHeap.Tests;

/// <summary>Scenarios of <see cref="ProfileTests"/> that need a process of their own.</summary>
internal static unsafe partial class ChildScenarios
{
    /// <summary>
    /// The profile chosen by the program (Heap.SetOption) before its first allocation, with
    /// whatever NATIVEHEAP_TUNABLES says: twenty 40-byte blocks freed show the tcache's depth.
    /// </summary>
    public static void ProfileSetByTheProgram()
    {
        try
        {
            Heap.SetOption(HeapOption.Profile, (long)HeapProfile.Glibc236);
        }
        catch (ArgumentOutOfRangeException e)
        {
            Report("refused", e.Message.Split(" (Parameter")[0]);
        }
        var blocks = new nint[20];
        for (int i = 0; i < blocks.Length; i++) blocks[i] = (nint)Heap.Alloc(40);
        Heap.Alloc(40);
        foreach (nint b in blocks) Heap.Free((void*)b);
        Report("uses_brk", Heap.UsesBrk ? 1 : 0);
        Report("fastbin_chunks", Heap.GetInfo().Smblks);
    }

    /// <summary>What the process heap's profile set: where the main arena lives, and how deep the tcache is.</summary>
    public static void ProfileReport()
    {
        try
        {
            // Ten 40-byte blocks freed: a 7-deep tcache (glibc 2.36) sends three to the fastbin.
            var blocks = new nint[10];
            for (int i = 0; i < blocks.Length; i++) blocks[i] = (nint)Heap.Alloc(40);
            Heap.Alloc(40);
            foreach (nint b in blocks) Heap.Free((void*)b);
            Report("uses_brk", Heap.UsesBrk ? 1 : 0);
            Report("fastbin_chunks", Heap.GetInfo().Smblks);
        }
        catch (InvalidOperationException e)
        {
            Report("error", e.Message);
        }
    }
}
