using System.Globalization;
using NativeHeap.Lab;

namespace NativeHeap.Benchmarks;

/// <summary>
/// The workloads written in C (native-tests/src/workloads.c), each in a fresh process under
/// LD_PRELOAD of each allocator: glibc (none), NativeHeap (libnativeheap-preload.so),
/// mimalloc, jemalloc. Rounds interleave the allocators so that all see the same machine;
/// the table gives medians (time, peak and retained RSS) and NativeHeap's ratios to glibc.
/// A process under LD_PRELOAD cannot be measured by BenchmarkDotNet; this is its stand-in.
/// <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- c-workloads [--rounds N]</c>
/// (after <c>dotnet publish src/NativeHeap.Native -c Release -o artifacts/native</c> and <c>make -C native-tests</c>).
/// </summary>
internal static class CWorkloads
{
    private static readonly string[] Workloads = ["simple", "thread1", "thread2", "larson", "xmalloc", "mstress", "large"];

    private static readonly (string Name, string? Preload)[] Allocators =
    [
        ("glibc", null),
        ("NativeHeap", Program.NativeHeapPreload),
        ("mimalloc", Program.MimallocPreload),
        ("jemalloc", Program.JemallocPreload),
    ];

    internal static int Run(string[] args)
    {
        int rounds = args.SkipWhile(a => a != "--rounds").Skip(1).Select(int.Parse).FirstOrDefault(7);
        string root = Program.RepoRoot();
        string program = Path.Combine(root, "native-tests", "build", "workloads");
        foreach (string path in Allocators.Select(a => a.Preload).OfType<string>().Select(p => Path.Combine(root, p)).Append(program))
        {
            if (!File.Exists(path))
            {
                Console.Error.WriteLine($"c-workloads: {path} is missing (publish src/NativeHeap.Native, make -C native-tests, run setup.sh)");
                return 2;
            }
        }

        var samples = new Dictionary<(string Workload, string Allocator), List<(double Seconds, long Peak, long Retained)>>();
        for (int round = 0; round < rounds; round++)
        {
            foreach (string workload in Workloads)
            {
                // A different allocator goes first in each round.
                for (int i = 0; i < Allocators.Length; i++)
                {
                    var (name, preload) = Allocators[(i + round) % Allocators.Length];
                    var sample = RunOnce(program, workload, preload is null ? null : Path.Combine(root, preload));
                    if (!samples.TryGetValue((workload, name), out var list)) samples[(workload, name)] = list = [];
                    list.Add(sample);
                }
            }
            Console.Error.WriteLine($"c-workloads: round {round + 1} of {rounds} done");
        }

        Console.WriteLine($"| workload (C, LD_PRELOAD; medians of {rounds}) | " + string.Join(" | ", Allocators.Select(a => $"{a.Name} ms, peak / retained KiB")) + " | NativeHeap/glibc time | peak |");
        Console.WriteLine("|---|" + string.Concat(Allocators.Select(_ => "---:|")) + "---:|---:|");
        foreach (string w in Workloads)
        {
            var cells = Allocators.Select(a =>
            {
                var s = samples[(w, a.Name)];
                return (Ms: Program.Median(s.Select(x => x.Seconds * 1000)), Peak: Program.Median(s.Select(x => (double)x.Peak)), Retained: Program.Median(s.Select(x => (double)x.Retained)));
            }).ToList();
            string row = string.Join(" | ", cells.Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Ms:F2}, {c.Peak:N0} / {c.Retained:N0}")));
            string timeRatio = (cells[1].Ms / cells[0].Ms).ToString("F2", CultureInfo.InvariantCulture);
            string peakRatio = cells[0].Peak > 0 ? (cells[1].Peak / cells[0].Peak).ToString("F2", CultureInfo.InvariantCulture) : "-";
            Console.WriteLine($"| {w} | {row} | {timeRatio} | {peakRatio} |");
        }
        return 0;
    }

    private static (double Seconds, long Peak, long Retained) RunOnce(string program, string workload, string? preload)
    {
        var environment = new List<(string Name, string Value)> { ("GLIBC_TUNABLES", Program.JemallocTunables) };
        if (preload != null) environment.Add(("LD_PRELOAD", preload));
        ProcessResult p = ChildProcess.Run(program, [workload],
            new ProcessOptions { RemoveEnvironment = ["LD_PRELOAD", Tunables.Variable], Environment = environment });
        if (p.ExitCode != 0) throw new InvalidOperationException($"workloads {workload} under {preload ?? "glibc"} exited {p.ExitCode}: {p.Error}");
        var fields = p.Output.Trim().Split(' ').Skip(1).Select(f => f.Split('=')).ToDictionary(f => f[0], f => f[1]);
        return (double.Parse(fields["seconds"], CultureInfo.InvariantCulture), long.Parse(fields["peak_kib"], CultureInfo.InvariantCulture),
            long.Parse(fields["retained_kib"], CultureInfo.InvariantCulture));
    }
}
