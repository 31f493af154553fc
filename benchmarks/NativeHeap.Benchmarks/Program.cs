using BenchmarkDotNet.Running;

namespace NativeHeap.Benchmarks;

/// <summary>
/// BenchmarkDotNet suites: <c>dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- --filter '*'</c>.
/// Also <c>break-stress [--seconds N] [--use-brk 1|0]</c>, the shared-break stress test.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "break-stress") return BreakStress.Parent(args);
        if (args.Length > 1 && args[0] == "break-stress-child") return BreakStress.Child(int.Parse(args[1]));
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
