using System.IO.Compression;
using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;

namespace NativeHeap.Tests;

/// <summary>The NuGet packages that `dotnet pack src/NativeHeap -o artifacts/package` (and src/NativeHeap.AspNetCore) make (CI does).</summary>
public class PackageTests
{
    /// <summary>Package <paramref name="id"/>'s .nupkg in artifacts/package (NativeHeap.0.1.0.nupkg, not NativeHeap.AspNetCore's for "NativeHeap").</summary>
    private static string Package(string id)
    {
        string dir = Path.Combine(NativeTests.RepoRoot, "artifacts", "package");
        string? package = Directory.Exists(dir)
            ? Directory.EnumerateFiles(dir, id + ".*.nupkg").SingleOrDefault(f => char.IsAsciiDigit(Path.GetFileName(f)[id.Length + 1]))
            : null;
        Assert.True(package != null, $"no {id} .nupkg in {dir}: run `dotnet pack src/{id} -c Release -o artifacts/package` (CI does).");
        return package;
    }

    [Fact]
    public void AspNetCorePackage_CarriesItsAssemblyDocsAndSymbols_AndDependsOnNativeHeap()
    {
        string package = Package("NativeHeap.AspNetCore");
        using (ZipArchive zip = ZipFile.OpenRead(package))
        {
            string[] names = zip.Entries.Select(e => e.FullName).ToArray();
            Assert.Contains("README.md", names);
            Assert.Contains("lib/net10.0/NativeHeap.AspNetCore.dll", names);
            Assert.Contains("lib/net10.0/NativeHeap.AspNetCore.xml", names);
            Assert.Contains("Microsoft.Extensions.DependencyInjection.NativeHeapServiceCollectionExtensions", PublicTypes(zip.GetEntry("lib/net10.0/NativeHeap.AspNetCore.dll")!));
            using var nuspec = new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open());
            Assert.Matches("<dependency id=\"NativeHeap\" version=\"0.1.0\"", nuspec.ReadToEnd());
        }
        Assert.True(File.Exists(Path.ChangeExtension(package, ".snupkg")), "the .snupkg is missing");
    }

    [Fact]
    public void Package_CarriesReadmeXmlDocsAndSymbols()
    {
        string package = Package("NativeHeap");
        using (ZipArchive zip = ZipFile.OpenRead(package))
        {
            string[] names = zip.Entries.Select(e => e.FullName).ToArray();
            Assert.Contains("README.md", names);
            Assert.Contains("lib/net10.0/NativeHeap.dll", names);
            Assert.Contains("lib/net10.0/NativeHeap.xml", names);
            // The debug heap's guard-page fault handler, where a .NET process's native probing finds it.
            Assert.Contains("runtimes/linux-x64/native/libnativeheap-debug.so", names);
            using var reader = new StreamReader(zip.GetEntry("lib/net10.0/NativeHeap.xml")!.Open());
            string docs = reader.ReadToEnd();
            Assert.Contains("T:NativeHeap.Buffers.NativeHeapMemoryPool", docs);
            Assert.Contains("T:NativeHeap.Buffers.SafeNativeHeapHandle", docs);
            // Its one dependency: Tmds.LibC, the OS layer's bindings for its cold calls.
            using (var nuspec = new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open()))
                Assert.Matches("<dependency id=\"Tmds.LibC\" version=\"0.5.0\"", nuspec.ReadToEnd());

            // The lab (src/NativeHeap.Lab) is not the allocator: its replayer and targets are not in the package.
            Assert.DoesNotContain(names, n => n.Contains("NativeHeap.Lab", StringComparison.OrdinalIgnoreCase));
            string[] types = PublicTypes(zip.GetEntry("lib/net10.0/NativeHeap.dll")!);
            Assert.Contains("NativeHeap.Diagnostics.Statm", types);
            Assert.Contains("NativeHeap.Heap", types);
            foreach (string lab in new[] { "TraceReplayer", "ReplayTarget", "NativeHeapTarget", "GlibcTarget", "TraceFormatException", "ReplayResult" })
                Assert.DoesNotContain(types, t => t.EndsWith("." + lab, StringComparison.Ordinal));
        }
        string symbols = Path.ChangeExtension(package, ".snupkg");
        Assert.True(File.Exists(symbols), $"{symbols} is missing");
        using ZipArchive snupkg = ZipFile.OpenRead(symbols);
        Assert.Contains("lib/net10.0/NativeHeap.pdb", snupkg.Entries.Select(e => e.FullName));
    }

    /// <summary>The full names of the public types (nested ones included) of an assembly in the package, read from its metadata.</summary>
    private static string[] PublicTypes(ZipArchiveEntry dll)
    {
        var bytes = new MemoryStream();
        using (Stream s = dll.Open()) s.CopyTo(bytes);
        bytes.Position = 0;
        using var pe = new PEReader(bytes);
        MetadataReader md = pe.GetMetadataReader();
        bool Public(TypeDefinition t) => (t.Attributes & TypeAttributes.VisibilityMask) switch
        {
            TypeAttributes.Public => true,
            TypeAttributes.NestedPublic => Public(md.GetTypeDefinition(t.GetDeclaringType())),
            _ => false,
        };
        string Name(TypeDefinition t) => t.GetDeclaringType().IsNil
            ? $"{md.GetString(t.Namespace)}.{md.GetString(t.Name)}"
            : $"{Name(md.GetTypeDefinition(t.GetDeclaringType()))}+{md.GetString(t.Name)}";
        return md.TypeDefinitions.Select(md.GetTypeDefinition).Where(Public).Select(Name).ToArray();
    }
}
