using BenchmarkDotNet.Running;

namespace NativeHeap.Benchmarks;

/// <summary>`dotnet run -c Release --project benchmarks/NativeHeap.Benchmarks -- --filter '*'`</summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
