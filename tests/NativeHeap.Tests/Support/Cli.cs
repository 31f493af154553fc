using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>The nativeheap command (src/NativeHeap.Cli), run as a user runs it, from the build of this configuration.</summary>
internal static class Cli
{
    internal static string Dll
    {
        get
        {
            // tests/NativeHeap.Tests/bin/<Configuration>/net10.0/ -> src/NativeHeap.Cli/bin/<Configuration>/net10.0/
            string here = AppContext.BaseDirectory.TrimEnd('/');
            string configuration = Path.GetFileName(Path.GetDirectoryName(here))!;
            string dll = Path.Combine(NativeTests.RepoRoot, "src", "NativeHeap.Cli", "bin", configuration, "net10.0", "NativeHeap.Cli.dll");
            Assert.True(File.Exists(dll), $"{dll} is missing: build the solution first.");
            return dll;
        }
    }

    internal static ProcessResult Run(IEnumerable<string> args, params (string Name, string Value)[] environment) =>
        Child.RunProgram(Environment.ProcessPath!, ["exec", Dll, .. args], environment);
}
