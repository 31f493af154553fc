using System.Text.RegularExpressions;

namespace NativeHeap.Tests;

/// <summary>
/// The library's layering, as README's layout map states it, checked on the source text
/// (comments and string literals removed): only Os/ and Interop/ bind libc; the allocator's
/// layers never reach up to the <c>Heap</c> façade or to Diagnostics; and a folder names no type
/// of a folder above it. A type is "named" when its identifier appears in the code.
/// </summary>
public partial class ArchitectureTests
{
    /// <summary>
    /// The folders from the bottom up: each may name the types of those before it, none of those
    /// after it. The root folder's types other than <c>Heap</c> (options, profiles, the
    /// corruption report) are the shared vocabulary every folder may name.
    /// </summary>
    private static readonly string[] Layers = ["Interop", "Os", "Chunks", "Bins", "Arenas", "Diagnostics", "Debugging", Facade, "Buffers"];

    private const string Facade = "Heap";
    private const string Root = "";

    [GeneratedRegex(@"\b(DllImport|LibraryImport)(Attribute)?\s*\(|\bTmds\.|\bMono\.Posix\b|\bLibc\.")]
    private static partial Regex LibcBinding();

    // A member of Heap, Heap fully qualified, or Heap as typeof's, nameof's or a type argument
    // (not a member named Heap, such as HeapRegionKind.Heap).
    [GeneratedRegex(@"(?<![\w.])Heap\s*\.|\bNativeHeap\.Heap\b|[(<]\s*Heap\s*[)>,]")]
    private static partial Regex FacadeUse();

    // The namespace itself, not System.Diagnostics.
    [GeneratedRegex(@"\bNativeHeap\.Diagnostics\b|(?<![\w.])Diagnostics\.")]
    private static partial Regex DiagnosticsNamespace();

    [GeneratedRegex(@"\b(?:class|struct|enum|interface|record(?:\s+struct|\s+class)?)\s+(\w+)")]
    private static partial Regex TypeDeclaration();

    [GeneratedRegex(@"//[^\n]*|/\*.*?\*/|@""(?:[^""]|"""")*""|\$?""(?:[^""\\\n]|\\.)*""|'(?:[^'\\\n]|\\.)'", RegexOptions.Singleline)]
    private static partial Regex CommentOrLiteral();

    [Fact]
    public void OnlyOsAndInterop_BindLibc()
    {
        var outside = Sources()
            .Where(f => f.Folder is not ("Os" or "Interop"))
            .SelectMany(f => LibcBinding().Matches(f.Code).Select(m => $"{f.Path}: {m.Value}"));
        Assert.Empty(outside);
    }

    [Theory]
    [InlineData("Arenas")]
    [InlineData("Bins")]
    [InlineData("Chunks")]
    [InlineData("Os")]
    [InlineData("Interop")]
    public void TheAllocatorsLayers_UseNeitherTheFacadeNorDiagnostics(string folder)
    {
        var diagnosticsTypes = DeclaredTypes().Where(t => t.Folder == "Diagnostics").Select(t => t.Name).ToHashSet();
        var reaching = new List<string>();
        foreach (var f in Sources().Where(f => f.Folder == folder))
        {
            if (FacadeUse().Match(f.Code) is { Success: true } m) reaching.Add($"{f.Path}: {m.Value}");
            if (DiagnosticsNamespace().Match(f.Code) is { Success: true } d) reaching.Add($"{f.Path}: {d.Value}");
            reaching.AddRange(Identifiers(f.Code).Where(diagnosticsTypes.Contains).Select(n => $"{f.Path}: {n}"));
        }
        Assert.Empty(reaching);
    }

    [Fact]
    public void CallsOnlyGoDownward()
    {
        var rank = Layers.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i);
        var typeLayer = new Dictionary<string, string>();
        foreach (var (folder, name) in DeclaredTypes().Where(t => t.Folder != Root)) typeLayer[name] = folder;
        var upward = new List<string>();
        foreach (var f in Sources())
        {
            string layer = f.Folder == Root ? Facade : f.Folder;
            Assert.True(rank.ContainsKey(layer), $"{f.Folder}/ is in no layer: add it to {nameof(Layers)} (and to README's map)");
            if (rank[layer] < rank[Facade] && FacadeUse().Match(f.Code) is { Success: true } m)
                upward.Add($"{f.Path} ({layer}) uses {m.Value.Trim()} ({Facade})");
            foreach (string name in Identifiers(f.Code))
                if (typeLayer.TryGetValue(name, out string? other) && rank[other] > rank[layer])
                    upward.Add($"{f.Path} ({layer}) names {name} ({other})");
        }
        Assert.Empty(upward);
    }

    /// <summary>Every word of the code, member names included: a type named through its namespace counts too.</summary>
    private static IEnumerable<string> Identifiers(string code) =>
        Regex.Matches(code, @"\b[A-Za-z_]\w*").Select(m => m.Value).Distinct();

    private static IEnumerable<(string Folder, string Name)> DeclaredTypes() =>
        Sources().SelectMany(f => TypeDeclaration().Matches(f.Code).Select(m => (f.Folder, m.Groups[1].Value)));

    /// <summary>The library's C# files: path from src/NativeHeap, top folder ("" at the root), code without comments and literals.</summary>
    private static IEnumerable<(string Path, string Folder, string Code)> Sources()
    {
        string library = Path.Combine(NativeTests.RepoRoot, "src", "NativeHeap");
        foreach (string file in Directory.EnumerateFiles(library, "*.cs", SearchOption.AllDirectories))
        {
            string path = Path.GetRelativePath(library, file).Replace(Path.DirectorySeparatorChar, '/');
            if (path.StartsWith("bin/") || path.StartsWith("obj/")) continue;
            int slash = path.IndexOf('/');
            string folder = slash < 0 ? Root : path[..slash];
            yield return (path, folder, CommentOrLiteral().Replace(File.ReadAllText(file), " "));
        }
    }
}
