using System.Buffers.Binary;
using System.Globalization;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace NativeHeap.Symbols;

/// <summary>
/// Symbolization of this process's own return addresses, for the allocator's reports: modules
/// from /proc/self/maps (path, load bias, build-id), named by the same reader as the tool's
/// offline <see cref="Symbolizer"/> (ELF symbols, DWARF lines and inlined frames, separate debug
/// files); JIT-compiled methods from the runtime's perf map (/tmp/perf-PID.map) when it is
/// written (<see cref="EnableManagedNames"/>). Thread-safe (one lock); the first call reads
/// files and costs milliseconds to seconds (DWARF), later ones hit caches.
/// </summary>
public static class ProcessSymbols
{
    private static readonly Lock s_lock = new();
    private static Symbolizer? s_symbolizer;
    private static List<TraceModule> s_modules = [];
    private static ulong[] s_moduleLow = [];
    private static long s_perfMapLength = -1;
    private static int s_managedNames; // 0: not tried, 1: the perf map is written, 2: it could not be
    private static string? s_perfMapCreated;

    /// <summary>
    /// One list per return address of this process (looked up at address − 1, the call), each
    /// with its inlined frames innermost first, then the function holding them. An address in no
    /// file and no JIT range gives one frame with module "?".
    /// </summary>
    public static IReadOnlyList<IReadOnlyList<SymbolFrame>> Symbolize(ReadOnlySpan<ulong> returnAddresses)
    {
        ulong[] addresses = returnAddresses.ToArray();
        lock (s_lock)
        {
            // Demangling starts c++filt: only under the JIT, where the allocator is not the
            // process's malloc (inside libnativeheap it could be called from malloc itself).
            s_symbolizer ??= new Symbolizer([], new SymbolizerOptions { Demangle = RuntimeFeature.IsDynamicCodeSupported });
            if (s_modules.Count == 0) ReadModules();
            bool refreshed = false;
            var frames = new RecordedFrame[addresses.Length];
            for (int i = 0; i < addresses.Length; i++)
            {
                TraceModule? module = ModuleOf(addresses[i]);
                // A library loaded or a method compiled since the last look: read both again, once.
                if (module is null && !refreshed && !s_symbolizer.InJit(addresses[i]))
                {
                    refreshed = true;
                    ReadModules();
                    ReadPerfMap();
                    module = ModuleOf(addresses[i]);
                }
                frames[i] = new RecordedFrame(addresses[i], module);
            }
            return s_symbolizer.SymbolizeAll(frames);
        }
    }

    /// <summary>"function (file:line) [module+0xOFF]" as the tool prints a frame; without a line "function [module+0xOFF]", without a name "[module+0xOFF]".</summary>
    public static string Format(SymbolFrame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        // JIT code and unknown addresses have no module to be relative to: the address itself.
        string where = frame.Module is "[jit]" or "?" ? $"[0x{frame.Offset:x}]" : $"[{Path.GetFileName(frame.Module)}+0x{frame.Offset:x}]";
        return frame.Function is null ? where
            : frame.File is null ? $"{frame.Function} {where}"
            : $"{frame.Function} ({frame.File}:{frame.Line.ToString(CultureInfo.InvariantCulture)}) {where}";
    }

    /// <summary>
    /// Best effort, once, cheap to call again: makes the .NET runtime write its perf map
    /// (/tmp/perf-PID.map) from now on, including the methods it has already compiled, so JIT
    /// frames get names (the diagnostics IPC's EnablePerfMap, .NET 8+, over this process's own
    /// diagnostics socket). False when it could not: no JIT (NativeAOT, whose methods the ELF
    /// symbols name), the diagnostics server disabled (DOTNET_EnableDiagnostics=0), or
    /// DOTNET_PerfMapEnabled set to a value without a perf map (0, 2), which is left as it is.
    /// A perf map this call made the runtime create is deleted when the process exits.
    /// </summary>
    /// <remarks>Ready-to-run (precompiled) framework code is never in a perf map: its frames read as
    /// the assembly file and an offset.</remarks>
    public static bool EnableManagedNames()
    {
        // First, so that NativeAOT compiles neither the diagnostics IPC nor its sockets.
        if (!RuntimeFeature.IsDynamicCodeSupported) return false;
        lock (s_lock)
        {
            if (s_managedNames == 0) s_managedNames = TryEnablePerfMap() ? 1 : 2;
            return s_managedNames == 1;
        }
    }

    private static bool TryEnablePerfMap()
    {
        string? configured = Environment.GetEnvironmentVariable("DOTNET_PerfMapEnabled") ?? Environment.GetEnvironmentVariable("COMPlus_PerfMapEnabled");
        // Set by whoever started the process: theirs to decide (1: perf map and jitdump, 3: perf map only).
        if (configured is not null) return configured.Trim() is "1" or "3";
        string perfMap = PerfMapPath();
        bool existed = File.Exists(perfMap);
        if (!DiagnosticsIpc.EnablePerfMap()) return false;
        if (!existed && File.Exists(perfMap))
        {
            s_perfMapCreated = perfMap;
            AppDomain.CurrentDomain.ProcessExit += (_, _) => DeleteCreatedPerfMap();
        }
        return true;
    }

    private static void DeleteCreatedPerfMap()
    {
        try
        {
            if (s_perfMapCreated is { } path) File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>Where the runtime writes the perf map: DOTNET_PerfMapJitDumpPath, else /tmp.</summary>
    internal static string PerfMapPath()
    {
        string dir = Environment.GetEnvironmentVariable("DOTNET_PerfMapJitDumpPath") ?? Environment.GetEnvironmentVariable("COMPlus_PerfMapJitDumpPath") ?? "/tmp";
        return Path.Combine(dir, $"perf-{Environment.ProcessId}.map");
    }

    private static TraceModule? ModuleOf(ulong address)
    {
        int i = Array.BinarySearch(s_moduleLow, address);
        if (i < 0) i = ~i - 1;
        // A return address may sit just past its module's end (a call as the last instruction).
        return i >= 0 && s_modules[i].Contains(address - 1) ? s_modules[i] : null;
    }

    private static void ReadModules()
    {
        try
        {
            s_modules = [.. ProcessModules.Read().OrderBy(m => m.Low)];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            s_modules = []; // no /proc: every address stays unknown
        }
        s_moduleLow = [.. s_modules.Select(m => m.Low)];
    }

    private static void ReadPerfMap()
    {
        string path = PerfMapPath();
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists || info.Length == s_perfMapLength) return;
            s_perfMapLength = info.Length;
            var jit = new List<JitCode>();
            using var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
            while (reader.ReadLine() is { } line)
                if (ParsePerfMapLine(line) is { } code) jit.Add(code);
            s_symbolizer!.ReplaceJit(jit);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>A perf map line, "START SIZE NAME" (hex, START with or without 0x), or null if it is not one.</summary>
    internal static JitCode? ParsePerfMapLine(string line)
    {
        string[] f = line.Split(' ', 3);
        if (f.Length < 3 || f[2].Length == 0) return null;
        string start = f[0].StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? f[0][2..] : f[0];
        return ulong.TryParse(start, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong s)
            && ulong.TryParse(f[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong size) && size > 0
            ? new JitCode(s, size, f[2]) : null;
    }
}

/// <summary>
/// The one diagnostics IPC command used here, EnablePerfMap, sent to this process's own
/// diagnostics server (docs: dotnet/diagnostics, documentation/design-docs/ipc-protocol.md).
/// </summary>
internal static class DiagnosticsIpc
{
    private const byte CommandSetProcess = 0x04, CommandEnablePerfMap = 0x05, CommandSetServer = 0xFF, ServerOk = 0x00;
    private const uint PerfMapOnly = 3; // PerfMapType: DISABLED 0, ALL 1 (perf map and jitdump), JITDUMP 2, PERFMAP 3
    private static ReadOnlySpan<byte> Magic => "DOTNET_IPC_V1\0"u8;

    /// <summary>The server's socket: $TMPDIR/dotnet-diagnostic-PID-KEY-socket (the newest, if a dead process with this pid left one).</summary>
    internal static string? SocketPath()
    {
        try
        {
            return new DirectoryInfo(Path.GetTempPath()).GetFiles($"dotnet-diagnostic-{Environment.ProcessId}-*-socket")
                .OrderByDescending(f => f.LastWriteTimeUtc).FirstOrDefault()?.FullName;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Sends EnablePerfMap(PERFMAP); true when the runtime answered OK with hresult 0.</summary>
    public static bool EnablePerfMap()
    {
        if (SocketPath() is not { } socketPath) return false;
        Span<byte> request = stackalloc byte[24];
        Magic.CopyTo(request);
        BinaryPrimitives.WriteUInt16LittleEndian(request[14..], (ushort)request.Length);
        request[16] = CommandSetProcess;
        request[17] = CommandEnablePerfMap;
        BinaryPrimitives.WriteUInt16LittleEndian(request[18..], 0);
        BinaryPrimitives.WriteUInt32LittleEndian(request[20..], PerfMapOnly);
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveTimeout = 10_000, SendTimeout = 10_000 };
            socket.Connect(new UnixDomainSocketEndPoint(socketPath));
            socket.Send(request);
            // The answer: a 20-byte header, then the hresult (int32).
            Span<byte> response = stackalloc byte[24];
            int got = 0;
            while (got < response.Length)
            {
                int n = socket.Receive(response[got..]);
                if (n == 0) break;
                got += n;
            }
            return got == 24 && response[..14].SequenceEqual(Magic) && response[16] == CommandSetServer && response[17] == ServerOk
                && BinaryPrimitives.ReadInt32LittleEndian(response[20..]) == 0;
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            return false;
        }
    }
}
