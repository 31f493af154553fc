using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using NativeHeap.Arenas;

namespace NativeHeap.Tests;

/// <summary>
/// OptionTable is where an option is defined; HeapOption, nativeheap.h's NH_M_ names and
/// README's options paragraph are written by hand and held to it here.
/// </summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class OptionTableTests
{
    private static readonly HeapOption[] Declared = typeof(HeapOption)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .OrderBy(f => f.MetadataToken)
        .Select(f => (HeapOption)f.GetValue(null)!)
        .ToArray();

    [Fact]
    public void EveryHeapOption_HasOneRow_InTheEnumsOrder()
    {
        Assert.Equal(Declared, OptionTable.Rows.Select(row => row.Id));
        Assert.Equal(OptionTable.Rows.Length, OptionTable.Rows.Select(row => row.Name).Distinct().Count());
    }

    [Fact]
    public void EveryRow_IsWhole()
    {
        foreach (Option row in OptionTable.Rows)
        {
            Assert.True(Regex.IsMatch(row.Name, "^[a-z]+(_[a-z]+)*$"), row.Name);
            Assert.True(row.Range.Min <= row.Range.Max, row.Name);
            Assert.True((row.Store != null) != (row.Apply != null), $"{row.Name}: a store or an apply, one of them");
            Assert.True(row.Defaults is null || row.Store != null || row.Id == HeapOption.UseBrk, $"{row.Name}: a profile stores its defaults");
            string value = row.Id == HeapOption.Profile ? "nativeheap" : row.Range.Min.ToString(CultureInfo.InvariantCulture);
            Assert.Equal(row.Id, Tunables.Parse($"{row.Name}={value}").Single().Option);
            Assert.Equal(row.Id, Tunables.Parse($"glibc.malloc.{row.Name}={value}").Single().Option);
        }
    }

    [Fact]
    public void NativeheapH_NamesEveryNativeHeapOption()
    {
        string header = File.ReadAllText(Path.Combine(NativeTests.RepoRoot, "src", "NativeHeap.Native", "include", "nativeheap.h"));
        var defined = Regex.Matches(header, @"#define NH_M_(\w+) (-?\d+)")
            .ToDictionary(m => m.Groups[1].Value, m => long.Parse(m.Groups[2].Value));
        var expected = OptionTable.Rows.Where(row => (long)row.Id >= 100)
            .ToDictionary(row => row.Name.ToUpperInvariant(), row => (long)row.Id);
        Assert.Equal(expected.OrderBy(kv => kv.Key), defined.OrderBy(kv => kv.Key));
    }

    [Fact]
    public void Readme_NamesExactlyTheTablesTunables()
    {
        string readme = File.ReadAllText(Path.Combine(NativeTests.RepoRoot, "README.md"));
        const string Start = "Besides glibc's (";
        int start = readme.IndexOf(Start, StringComparison.Ordinal);
        Assert.True(start >= 0, $"README has no paragraph starting \"{Start}\"");
        int end = readme.IndexOf("\n\n", start, StringComparison.Ordinal);
        string paragraph = readme[start..end];
        string glibcList = paragraph[Start.Length..paragraph.IndexOf(')', StringComparison.Ordinal)];

        static SortedSet<string> Named(string text) => new(
            Regex.Matches(text, "`([a-z_]+)`").Select(m => m.Groups[1].Value).Where(name => !Tunables.ProfileNames.ContainsKey(name)),
            StringComparer.Ordinal);
        Assert.Equal(new SortedSet<string>(OptionTable.Rows.Select(row => row.Name), StringComparer.Ordinal), Named(paragraph));
        Assert.Equal(new SortedSet<string>(OptionTable.Rows.Where(row => row.Glibc).Select(row => row.Name), StringComparer.Ordinal), Named(glibcList));
    }
}
