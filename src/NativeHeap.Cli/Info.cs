using NativeHeap.Lab;
using Spectre.Console;

namespace NativeHeap.Cli;

/// <summary>`nativeheap info`: mallinfo2, malloc_stats and malloc_info of this process's NativeHeap.</summary>
internal static class Info
{
    internal static int Run(string? nameOrPath, string tcache)
    {
        if (tcache == "off") Heap.SetOption(HeapOption.TcacheCount, 0);
        if (nameOrPath is not null)
        {
            byte[]? trace = Program.LoadTrace(nameOrPath, out string label);
            if (trace is null || Program.Validate(trace, label) is null) return Program.UsageError;
            TraceReplayer.Replay(trace, new NativeHeapTarget(), Stream.Null, new ReplayOptions { Placements = false });
        }

        HeapInfo info = Heap.GetInfo();
        var table = new Table().AddColumn("mallinfo2").AddColumn(new TableColumn("bytes / count").RightAligned()).AddColumn("meaning");
        void Row(string name, ulong value, string meaning) => table.AddRow(name, value.ToString("N0"), meaning);
        Row("arena", info.Arena, "bytes from the system for the heap");
        Row("ordblks", info.Ordblks, "free chunks in bins, plus top");
        Row("smblks", info.Smblks, "free chunks in fastbins");
        Row("hblks", info.Hblks, "mmapped chunks");
        Row("hblkhd", info.Hblkhd, "bytes in mmapped chunks");
        Row("usmblks", info.Usmblks, "always 0");
        Row("fsmblks", info.Fsmblks, "bytes in fastbin chunks");
        Row("uordblks", info.Uordblks, "bytes in use (tcache included)");
        Row("fordblks", info.Fordblks, "free bytes (bins, fastbins, top)");
        Row("keepcost", info.Keepcost, "top: the most trim could release");
        AnsiConsole.Write(table);

        Console.WriteLine();
        Console.WriteLine("malloc_stats:");
        Heap.WriteStats(Console.Out);
        Console.WriteLine();
        Console.WriteLine("malloc_info:");
        Heap.WriteInfoXml(Console.Out);
        return 0;
    }
}
