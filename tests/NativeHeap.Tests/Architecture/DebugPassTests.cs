using System.Reflection;
using System.Text.RegularExpressions;

namespace NativeHeap.Tests;

/// <summary>
/// CI picks the Debug pass's tests by their trait, so a test class of the allocator's folders
/// without it would silently miss that pass.
/// </summary>
public partial class DebugPassTests
{
    /// <summary>The folders whose tests exercise the allocator.</summary>
    private static readonly string[] AllocatorFolders = ["Allocator", "Threads", "Profiles", "Hardening", "Buffers"];

    [Fact]
    public void EveryTestClassOfTheAllocatorsFolders_CarriesTheAllocatorTrait()
    {
        string root = Path.Combine(NativeTests.RepoRoot, "tests", "NativeHeap.Tests");
        Assembly assembly = typeof(DebugPassTests).Assembly;
        List<Type> classes = AllocatorFolders
            .SelectMany(folder => Directory.EnumerateFiles(Path.Combine(root, folder), "*.cs"))
            .SelectMany(file => ClassName().Matches(File.ReadAllText(file)).Select(m => m.Groups[1].Value))
            .Select(name => assembly.GetType("NativeHeap.Tests." + name, throwOnError: true)!)
            .Where(type => type.GetMethods().Any(m => m.IsDefined(typeof(FactAttribute))))
            .ToList();
        Assert.Contains(typeof(AllocatorPathTests), classes);
        string[] missing = classes.Where(type => !HasAllocatorTrait(type)).Select(type => type.Name).ToArray();
        Assert.True(missing.Length == 0,
            $"[Trait(Traits.Category, Traits.Allocator)] missing on {string.Join(", ", missing)}: the Debug pass would leave them out");
    }

    [Fact]
    public void DebugPass_FiltersByTheAllocatorTrait()
    {
        string ci = File.ReadAllText(Path.Combine(NativeTests.RepoRoot, ".ci", "run"));
        Assert.Matches($@"dotnet test tests/NativeHeap\.Tests -c Debug [^\n]*--filter ""{Traits.Category}={Traits.Allocator}&{Traits.Pass}!={Traits.ReleaseOnly}""", ci);
    }

    private static bool HasAllocatorTrait(Type type) =>
        type.GetCustomAttributesData().Any(a => a.AttributeType == typeof(TraitAttribute)
            && a.ConstructorArguments is [{ Value: Traits.Category }, { Value: Traits.Allocator }]);

    [GeneratedRegex(@"^(?:public|internal)\s+(?:\w+\s+)*class\s+(\w+)", RegexOptions.Multiline)]
    private static partial Regex ClassName();
}
