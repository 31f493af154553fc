using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// A .NET tool installed as a user installs one (<c>dotnet tool install --tool-path</c>), into a
/// folder of the test's, and run on the runtime the tests run on.
/// </summary>
internal static class DotnetTool
{
    /// <summary>Install <paramref name="package"/> into <paramref name="toolDir"/>; returns the path of its command <paramref name="command"/>.</summary>
    internal static string Install(string package, string command, string toolDir, string workingDirectory, params string[] options)
    {
        ProcessResult install = Child.RunProgram(System.Environment.ProcessPath!, ["tool", "install", "--tool-path", toolDir, .. options, package],
            [], workingDirectory, timeoutSeconds: 120);
        Assert.True(install.ExitCode == 0, $"dotnet tool install {package} exited {install.ExitCode}:\n{install.Output}\n{install.Error}");
        return Path.Combine(toolDir, command);
    }

    /// <summary>What a tool's launcher needs to find the runtime this test runs on.</summary>
    internal static (string Name, string Value)[] Environment =>
        [("DOTNET_ROOT", Path.GetDirectoryName(new FileInfo(System.Environment.ProcessPath!).ResolveLinkTarget(true)?.FullName ?? System.Environment.ProcessPath!)!)];
}
