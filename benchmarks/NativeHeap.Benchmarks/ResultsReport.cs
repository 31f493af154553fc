using System.Globalization;
using System.Text;
using ScottPlot;

namespace NativeHeap.Benchmarks;

/// <summary>
/// Writes benchmarks/RESULTS.md (and RESULTS.png) from one BenchmarkDotNet run's CSV reports
/// and the RSS report: every benchmark's time for every allocator as a ratio to glibc through
/// NativeMemory. <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- results DIR RSS.md OUT.md</c>
/// </summary>
internal static class ResultsReport
{
    private static readonly string[] Allocators = ["NativeMemory", "glibc", "NativeHeap", "mimalloc", "jemalloc"];

    internal static int Write(string artifacts, string rssMarkdown, string outMarkdown, string machine, string command)
    {
        // (benchmark, allocator) -> mean ns
        var means = new Dictionary<(string Bench, string Alloc), double>();
        var order = new List<string>();
        foreach (string csv in Directory.EnumerateFiles(artifacts, "*-report.csv"))
        {
            string file = Path.GetFileName(csv);
            string? alloc = Allocators.FirstOrDefault(a => file.Contains("_" + a + "Allocator", StringComparison.OrdinalIgnoreCase));
            if (alloc is null) continue;
            string kind = file[(file.IndexOf("Benchmarks.", StringComparison.Ordinal) + "Benchmarks.".Length)..file.IndexOf('_')];
            string[] lines = File.ReadAllLines(csv);
            string[] header = Split(lines[0]);
            int method = Array.IndexOf(header, "Method"), mean = Array.IndexOf(header, "Mean");
            int size = Array.IndexOf(header, "Size"), live = Array.IndexOf(header, "LiveBlocks");
            foreach (string line in lines.Skip(1))
            {
                string[] f = Split(line);
                string name = $"{kind}: {f[method].Trim('\'')}";
                if (size >= 0) name += $", {f[size]} B";
                if (live >= 0) name += $", {f[live]} live";
                if (!TryNanoseconds(f[mean], out double ns)) continue;
                if (!order.Contains(name)) order.Add(name);
                means[(name, alloc)] = ns;
            }
        }

        var md = new StringBuilder();
        md.AppendLine("# Benchmark results").AppendLine();
        md.AppendLine($"Machine: {machine}").AppendLine();
        md.AppendLine($"Command: `{command}`").AppendLine();
        md.AppendLine("Time per operation, as a ratio to glibc through `NativeMemory` (lower is faster; `NativeMemory` = 1.00), with NativeMemory's absolute time. One run.").AppendLine();
        md.AppendLine("| benchmark | NativeMemory | " + string.Join(" | ", Allocators.Skip(1)) + " |");
        md.AppendLine("|---|---:|" + string.Concat(Allocators.Skip(1).Select(_ => "---:|")));
        var ratios = new Dictionary<string, List<double>>();
        foreach (string bench in order)
        {
            if (!means.TryGetValue((bench, "NativeMemory"), out double baseline)) continue;
            var cells = new List<string> { Format(baseline) };
            foreach (string a in Allocators.Skip(1))
            {
                if (means.TryGetValue((bench, a), out double ns))
                {
                    double r = ns / baseline;
                    cells.Add(r.ToString("F2", CultureInfo.InvariantCulture));
                    (ratios.TryGetValue(a, out var l) ? l : ratios[a] = []).Add(r);
                }
                else
                {
                    cells.Add("missing");
                }
            }
            md.AppendLine($"| {bench} | {string.Join(" | ", cells)} |");
        }
        md.AppendLine().AppendLine("![time ratios](RESULTS.png)").AppendLine();
        md.AppendLine("## Memory").AppendLine();
        md.AppendLine("`dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- rss`: each workload once per allocator in a fresh process; peak = VmHWM over the process's baseline, retained = anonymous RSS after every block is freed (KiB).").AppendLine();
        md.AppendLine(File.ReadAllText(rssMarkdown));
        File.WriteAllText(outMarkdown, md.ToString());
        Plot(order.Where(b => means.ContainsKey((b, "NativeMemory"))).ToList(), means, Path.ChangeExtension(outMarkdown, ".png"));
        return 0;
    }

    private static void Plot(List<string> benches, Dictionary<(string, string), double> means, string png)
    {
        var plot = new Plot();
        string[] shown = ["NativeHeap", "mimalloc", "jemalloc", "glibc"];
        for (int a = 0; a < shown.Length; a++)
        {
            var bars = new List<Bar>();
            for (int i = 0; i < benches.Count; i++)
            {
                if (!means.TryGetValue((benches[i], shown[a]), out double ns)) continue;
                double r = ns / means[(benches[i], "NativeMemory")];
                bars.Add(new Bar { Position = i * (shown.Length + 1) + a, Value = Math.Min(r, 4), FillColor = Colors.Category10[a] });
            }
            var series = plot.Add.Bars(bars);
            series.LegendText = shown[a];
        }
        plot.Add.HorizontalLine(1, 1, Colors.Black, LinePattern.Dashed);
        plot.Axes.Bottom.SetTicks(benches.Select((_, i) => i * (shown.Length + 1) + 1.5).ToArray(), benches.ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 60;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 260;
        plot.YLabel("time / glibc through NativeMemory (capped at 4)");
        plot.ShowLegend(Alignment.UpperRight);
        plot.SavePng(png, Math.Max(1200, benches.Count * 40), 800);
    }

    /// <summary>A CSV line's fields; a quoted field may hold commas.</summary>
    private static string[] Split(string line)
    {
        var fields = new List<string>();
        var field = new StringBuilder();
        bool quoted = false;
        foreach (char c in line)
        {
            if (c == '"') quoted = !quoted;
            else if (c == ',' && !quoted) { fields.Add(field.ToString()); field.Clear(); }
            else field.Append(c);
        }
        fields.Add(field.ToString());
        return fields.ToArray();
    }

    private static bool TryNanoseconds(string text, out double ns)
    {
        ns = 0;
        string[] parts = text.Replace(",", "").Split(' ');
        if (parts.Length != 2 || !double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double v)) return false;
        double scale = parts[1] switch { "ns" => 1, "us" or "μs" => 1e3, "ms" => 1e6, "s" => 1e9, _ => double.NaN };
        ns = v * scale;
        return !double.IsNaN(ns);
    }

    private static string Format(double ns) =>
        ns >= 1e6 ? $"{ns / 1e6:F2} ms" : ns >= 1e3 ? $"{ns / 1e3:F2} µs" : $"{ns:F2} ns";
}
