using System.Diagnostics;

namespace NativeHeap.Symbols;

/// <summary>
/// C++ (Itanium ABI) names demangled by the system's <c>c++filt</c> (binutils): one process kept
/// for the demangler's life (it answers line by line), fed a batch of names at a time; without
/// it, names stay mangled. A managed demangler would be a large dependency for a display nicety.
/// </summary>
internal sealed class Demangler(string? tool) : IDisposable
{
    private readonly Dictionary<string, string> _cache = [];
    private Process? _process;
    private bool _broken;

    public static Demangler FromPath() => new(FindOnPath("c++filt"));

    public static bool IsMangled(string? name) => name is not null && name.StartsWith("_Z", StringComparison.Ordinal);

    /// <summary>The demangled name, if this demangler has seen it in a batch; otherwise the name itself.</summary>
    public string Get(string name) => _cache.TryGetValue(name, out var d) ? d : name;

    /// <summary>Demangles the names not yet seen, in one exchange with c++filt.</summary>
    public void Prepare(IEnumerable<string> names)
    {
        var todo = names.Where(n => IsMangled(n) && !_cache.ContainsKey(n) && !n.Contains('\n')).Distinct().ToList();
        if (todo.Count == 0) return;
        // No c++filt under NativeAOT (libnativeheap, where this may run inside malloc): the
        // check also lets the compiler leave System.Diagnostics.Process out.
        if (tool is null || _broken || !System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported) { foreach (var n in todo) _cache[n] = n; return; }
        try
        {
            if (_process is null)
            {
                var psi = new ProcessStartInfo(tool) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                _process = Process.Start(psi) ?? throw new InvalidOperationException($"{tool} did not start");
                _process.ErrorDataReceived += (_, _) => { };
                _process.BeginErrorReadLine();
            }
            Process p = _process;
            // Written while read: a large batch would fill both pipes otherwise.
            var writer = Task.Run(() =>
            {
                foreach (var n in todo) p.StandardInput.Write(n + "\n");
                p.StandardInput.Flush();
            });
            for (int i = 0; i < todo.Count; i++)
                _cache[todo[i]] = p.StandardOutput.ReadLine() ?? throw new InvalidOperationException($"{tool} stopped after {i} of {todo.Count} names");
            writer.Wait();
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or IOException or AggregateException)
        {
            // Mangled names are still right, only harder to read: go on without demangling.
            _broken = true;
            foreach (var n in todo) _cache.TryAdd(n, n);
        }
    }

    /// <summary>Ends c++filt (closing its input is enough: it stops at end of file).</summary>
    public void Dispose()
    {
        if (_process is null) return;
        try
        {
            _process.StandardInput.Close();
            if (!_process.WaitForExit(2000)) _process.Kill();
        }
        catch (Exception e) when (e is InvalidOperationException or IOException) { }
        _process.Dispose();
        _process = null;
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
