using System.Reflection;
using System.Text;

namespace NativeHeap.Cli;

/// <summary>A scenario: a trace from scenarios/, carried inside the command.</summary>
internal sealed record Scenario(string Name, string Description, byte[] Trace)
{
    private const string Prefix = "scenarios/";

    internal static IReadOnlyList<Scenario> All { get; } = Load();

    internal static Scenario? Find(string name) => All.FirstOrDefault(s => s.Name == name);

    private static List<Scenario> Load()
    {
        Assembly assembly = typeof(Scenario).Assembly;
        var list = new List<Scenario>();
        foreach (string resource in assembly.GetManifestResourceNames().Where(r => r.StartsWith(Prefix, StringComparison.Ordinal)).Order())
        {
            using Stream stream = assembly.GetManifestResourceStream(resource)!;
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            byte[] trace = memory.ToArray();
            string name = Path.GetFileNameWithoutExtension(resource[Prefix.Length..]);
            list.Add(new Scenario(name, Describe(trace), trace));
        }
        return list;
    }

    /// <summary>The trace's leading "# scenario:" lines, joined.</summary>
    private static string Describe(byte[] trace)
    {
        var text = new StringBuilder();
        foreach (string line in Encoding.ASCII.GetString(trace).Split('\n'))
        {
            if (!line.StartsWith("# scenario:", StringComparison.Ordinal)) break;
            if (text.Length > 0) text.Append(' ');
            text.Append(line["# scenario:".Length..].Trim());
        }
        return text.ToString();
    }
}
