using System.Diagnostics;

namespace NativeHeap.Cli.Symbols;

/// <summary>
/// C++ (Itanium ABI) names demangled by the system's <c>c++filt</c> (binutils), one process per
/// batch of names; without it, names stay mangled. A managed demangler would be a large dependency
/// for what is a display nicety here.
/// </summary>
internal sealed class Demangler(string? tool)
{
    private readonly Dictionary<string, string> _cache = [];
    private bool _broken;

    public static Demangler FromPath() => new(FindOnPath("c++filt"));

    public static bool IsMangled(string? name) => name is not null && name.StartsWith("_Z", StringComparison.Ordinal);

    /// <summary>The demangled name, if this demangler has seen it in a batch; otherwise the name itself.</summary>
    public string Get(string name) => _cache.TryGetValue(name, out var d) ? d : name;

    /// <summary>Demangles the names not yet seen, with one run of c++filt.</summary>
    public void Prepare(IEnumerable<string> names)
    {
        var todo = names.Where(n => IsMangled(n) && !_cache.ContainsKey(n)).Distinct().ToList();
        if (todo.Count == 0) return;
        if (tool is null || _broken) { foreach (var n in todo) _cache[n] = n; return; }
        try
        {
            var psi = new ProcessStartInfo(tool) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi)!;
            var writer = Task.Run(() =>
            {
                foreach (var n in todo) p.StandardInput.Write(n + "\n");
                p.StandardInput.Close();
            });
            _ = p.StandardError.ReadToEndAsync();
            var lines = new List<string>(todo.Count);
            while (p.StandardOutput.ReadLine() is { } line) lines.Add(line);
            writer.Wait();
            p.WaitForExit();
            if (lines.Count != todo.Count) throw new InvalidOperationException($"{tool} gave {lines.Count} lines for {todo.Count} names");
            for (int i = 0; i < todo.Count; i++) _cache[todo[i]] = lines[i];
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or IOException or AggregateException)
        {
            // Mangled names are still right, only harder to read: go on without demangling.
            _broken = true;
            foreach (var n in todo) _cache[n] = n;
        }
    }

    internal static string? FindOnPath(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = System.IO.Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }
}
