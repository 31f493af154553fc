using System.IO.Compression;

namespace NativeHeap.Tests;

/// <summary>The NuGet package that `dotnet pack src/NativeHeap -o artifacts/package` makes (CI does).</summary>
public class PackageTests
{
    [Fact]
    public void Package_CarriesReadmeXmlDocsAndSymbols()
    {
        string dir = Path.Combine(NativeTests.RepoRoot, "artifacts", "package");
        string? package = Directory.Exists(dir) ? Directory.EnumerateFiles(dir, "NativeHeap.*.nupkg").SingleOrDefault() : null;
        Assert.True(package != null, $"no NativeHeap .nupkg in {dir}: run `dotnet pack src/NativeHeap -c Release -o artifacts/package` (CI does).");
        using (ZipArchive zip = ZipFile.OpenRead(package))
        {
            string[] names = zip.Entries.Select(e => e.FullName).ToArray();
            Assert.Contains("README.md", names);
            Assert.Contains("lib/net10.0/NativeHeap.dll", names);
            Assert.Contains("lib/net10.0/NativeHeap.xml", names);
            using var reader = new StreamReader(zip.GetEntry("lib/net10.0/NativeHeap.xml")!.Open());
            string docs = reader.ReadToEnd();
            Assert.Contains("T:NativeHeap.Buffers.NativeHeapMemoryPool", docs);
            Assert.Contains("T:NativeHeap.Buffers.SafeNativeHeapHandle", docs);
        }
        string symbols = Path.ChangeExtension(package, ".snupkg");
        Assert.True(File.Exists(symbols), $"{symbols} is missing");
        using ZipArchive snupkg = ZipFile.OpenRead(symbols);
        Assert.Contains("lib/net10.0/NativeHeap.pdb", snupkg.Entries.Select(e => e.FullName));
    }
}
