using System.Globalization;

namespace NativeHeap.Cli;

/// <summary>One `k` line of a replay: statm in KiB and mallinfo2.</summary>
internal sealed record Checkpoint(string Name, long AnonKib, long ResidentKib, long SizeKib, long Arena, long Uordblks, long Fordblks, long Hblkhd)
{
    /// <summary>Parse the checkpoint lines of a replay's output (`LINE k NAME anon resident size arena uord ford hblkhd`).</summary>
    internal static List<Checkpoint> ParseAll(string output)
    {
        var list = new List<Checkpoint>();
        foreach (string line in output.Split('\n'))
        {
            string[] f = line.Split(' ');
            if (f.Length != 10 || f[1] != "k") continue;
            long N(int i) => long.Parse(f[i], CultureInfo.InvariantCulture);
            list.Add(new Checkpoint(f[2], N(3), N(4), N(5), N(6), N(7), N(8), N(9)));
        }
        return list;
    }
}
