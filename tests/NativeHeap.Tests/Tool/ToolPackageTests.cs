using System.IO.Compression;
using System.Text.RegularExpressions;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>
/// The nativeheap .NET tool as a user gets it: src/NativeHeap.Cli packed (from this
/// configuration's build), installed with `dotnet tool install` into a folder of its own and
/// run from an empty directory outside the repository, with no NATIVEHEAP_NATIVE_TOOLS. The C
/// replayer and the recorder must come from the package's native/ folder.
/// </summary>
public class ToolPackageTests
{
    private const string Replay = "tools/net10.0/any/native/replay";
    private const string Recorder = "tools/net10.0/any/native/librecorder.so";

    [Fact]
    public void InstalledTool_RecordsAndComparesWithGlibcInAFreshCProcess_FromAnyDirectory()
    {
        using var temp = new TempDirectory("nativeheap-tool-");
        string root = temp.Path;
        string packageDir = Path.Combine(root, "package"), toolDir = Path.Combine(root, "tool"), work = Path.Combine(root, "empty");
        Directory.CreateDirectory(work);
        string dotnet = Environment.ProcessPath!;
        // tests/NativeHeap.Tests/bin/<Configuration>/net10.0/: pack the command this configuration built.
        string configuration = Path.GetFileName(Path.GetDirectoryName(AppContext.BaseDirectory.TrimEnd('/')))!;
        _ = Cli.Dll; // asserts that the solution was built

        ProcessResult pack = Child.RunProgram(dotnet,
            ["pack", Path.Combine(NativeTests.RepoRoot, "src", "NativeHeap.Cli"), "-c", configuration, "--no-build",
             "--disable-build-servers", "-o", packageDir],
            [], NativeTests.RepoRoot, timeoutSeconds: 120);
        Assert.True(pack.ExitCode == 0, $"dotnet pack exited {pack.ExitCode}:\n{pack.Output}\n{pack.Error}");
        string package = Directory.EnumerateFiles(packageDir, "NativeHeap.Cli.*.nupkg").Single();
        using (ZipArchive zip = ZipFile.OpenRead(package))
        {
            string[] names = zip.Entries.Select(e => e.FullName).ToArray();
            Assert.Contains(Replay, names);
            Assert.Contains(Recorder, names);
        }

        // The package folder is the only source: nothing is asked of a registry.
        string config = Path.Combine(root, "nuget.config");
        File.WriteAllText(config,
            $"""<?xml version="1.0" encoding="utf-8"?><configuration><packageSources><clear /><add key="tool" value="{packageDir}" /></packageSources></configuration>""");
        string tool = DotnetTool.Install("NativeHeap.Cli", "nativeheap", toolDir, work, "--configfile", config, "--add-source", packageDir);
        // NATIVEHEAP_NATIVE_TOOLS empty counts as unset.
        (string, string)[] environment = [("NATIVEHEAP_NATIVE_TOOLS", ""), .. DotnetTool.Environment];

        ProcessResult record = Child.RunProgram(tool, ["record", "-o", Path.Combine(work, "t-%p.trace"), "--", "/bin/true"],
            environment, work, timeoutSeconds: 60);
        Assert.True(record.ExitCode == 0, $"nativeheap record exited {record.ExitCode}:\n{record.Output}\n{record.Error}");
        string trace = Assert.Single(Directory.EnumerateFiles(work, "t-*.trace"));
        Assert.Contains("# recorded by librecorder: /bin/true", System.Text.Encoding.ASCII.GetString(TraceFile.Load(trace)));

        // Who pins it, as a user gets it: a program built without frame pointers, recorded with
        // stacks by the package's recorder, its pinning chunks named by function and line.
        record = Child.RunProgram(tool, ["record", "-o", Path.Combine(work, "p-%p.trace"), "--", NativeTests.Program("pinning_fixture")],
            environment, work, timeoutSeconds: 60);
        Assert.True(record.ExitCode == 0, $"nativeheap record exited {record.ExitCode}:\n{record.Output}\n{record.Error}");
        ProcessResult explain = Child.RunProgram(tool, ["explain", Assert.Single(Directory.EnumerateFiles(work, "p-*.trace")), "--at", "exit"],
            environment, work, timeoutSeconds: 120);
        Assert.True(explain.ExitCode == 0, $"nativeheap explain exited {explain.ExitCode}:\n{explain.Output}\n{explain.Error}");
        Assert.Matches(@"allocated at remember_setting \S*native-tests/src/pinning_fixture\.c:\d+:", explain.Output);

        ProcessResult scenarios = Child.RunProgram(tool, ["scenarios", "seed-002", "--tcache", "on"], environment, work, timeoutSeconds: 120);
        Assert.True(scenarios.ExitCode == 0, $"nativeheap scenarios exited {scenarios.ExitCode}:\n{scenarios.Output}\n{scenarios.Error}");
        // ScenarioRunner's last lines, wrapped to the console's width: glibc in fresh C processes, the replayer the package carries.
        string text = Regex.Replace(scenarios.Output, @"\s+", " ");
        Assert.DoesNotContain("was not found", text);
        Assert.Contains("and in fresh C processes (", text);
        Assert.Contains("NativeHeap is compared with the C processes.", text);
        string joined = text.Replace(" ", "");
        Assert.Contains($"({toolDir}/.store/", joined);
        Assert.Contains($"/{Replay});", joined);
    }
}
