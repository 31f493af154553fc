namespace NativeHeap.Symbols;

/// <summary>An ELF object a recorded process had loaded: a trace's <c>M</c> line (docs/trace-format.md).</summary>
/// <param name="Low">First address of its loaded segments' span.</param>
/// <param name="High">The span's end (exclusive).</param>
/// <param name="Bias">What to subtract from an address to get the ELF virtual address.</param>
/// <param name="BuildId">The GNU build-id in lower-case hex, or null if it has none.</param>
/// <param name="Path">Its path when it was recorded.</param>
public sealed record TraceModule(ulong Low, ulong High, ulong Bias, string? BuildId, string Path)
{
    /// <summary>Whether <paramref name="address"/> lies in the module's span.</summary>
    public bool Contains(ulong address) => address >= Low && address < High;
}

/// <summary>Run-time compiled code: a trace's <c>J</c> line, from the .NET runtime's perf map.</summary>
/// <param name="Start">First address.</param>
/// <param name="Size">Bytes of code.</param>
/// <param name="Name">The method as the runtime named it.</param>
public sealed record JitCode(ulong Start, ulong Size, string Name);

/// <summary>One recorded frame: a return address, and the module it lies in (null: none, e.g. JIT code).</summary>
public readonly record struct RecordedFrame(ulong Address, TraceModule? Module);

/// <summary>
/// A frame after symbolization. An address inside inlined code gives several: the inlined
/// functions innermost first (<see cref="Inlined"/> true), then the function they were inlined into.
/// </summary>
/// <param name="Function">The function (demangled where it was mangled), or null if no symbol covers the address.</param>
/// <param name="File">The source file, or null without line information.</param>
/// <param name="Line">The source line, or 0.</param>
/// <param name="Module">The module's path (for JIT code: "[jit]"; outside every module: "?").</param>
/// <param name="Offset">The address's ELF virtual address in its module (address − bias), or the address itself outside modules.</param>
/// <param name="Inlined">True for a frame inlined into the one after it.</param>
public sealed record SymbolFrame(string? Function, string? File, int Line, string Module, ulong Offset, bool Inlined)
{
    /// <summary>"function file:line", "function (module)", or "module+0xOFFSET".</summary>
    public override string ToString() =>
        Function is null ? $"{System.IO.Path.GetFileName(Module)}+0x{Offset:x}"
        : File is null ? $"{Function} ({System.IO.Path.GetFileName(Module)})"
        : $"{Function} {File}:{Line}";
}
