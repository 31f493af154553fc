using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace NativeHeap.Debugging;

/// <summary>
/// One thing the debug heap found wrong with a block: glibc-style words for the headline, and
/// what a person needs to fix it: the block (address, size asked, chunk), what is wrong (the
/// first overwritten offset and the bytes found there) and the stacks that allocated and freed
/// it. Made by the checks (which may hold a lock), raised by <see cref="DebugReport.Raise"/>
/// (which symbolizes, and so must hold none).
/// </summary>
internal sealed class DebugFinding
{
    public required string Words { get; init; }
    public required nuint User { get; init; }
    /// <summary>Block, size and chunk, and what is wrong: the report's lines before the stacks.</summary>
    public required string What { get; init; }
    public uint AllocStack { get; init; }
    public uint FreeStack { get; init; }
    public bool Freed { get; init; }
}

/// <summary>The debug heap's findings, and how they are reported (MallocPrinterr's policy, with the stacks symbolized).</summary>
internal static unsafe class DebugReport
{
    /// <summary>How many bytes found are shown from the first one overwritten.</summary>
    private const int Shown = 8;

    [DoesNotReturn]
    internal static void NotABlock(string op, byte* user, string why) =>
        Raise(new DebugFinding { Words = $"{op}(): invalid pointer", User = (nuint)user, What = $"0x{(nuint)user:x} is no block of this heap: {why}" });

    /// <summary>The header before the block overwritten; <paramref name="mem"/> null for a guarded block (DebugGuard), whose canary may be empty.</summary>
    internal static DebugFinding Underflow(string op, byte* user, byte* mem, byte* end, uint allocStack)
    {
        string what;
        if (DebugBlock.TryAskedAfterUnderflow(user, end, mem == null ? 0 : DebugBlock.TailMin, out nuint asked, out ulong expected))
        {
            // The lowest byte that differs is where the write before the block began.
            var e = (byte*)&expected;
            int first = 0;
            while (first < 8 && user[first - 8] == e[first]) first++;
            what = $"{Block(user, asked, mem, end)}\nthe byte at offset {first - 8} ({8 - first} before the start) was overwritten: found {Bytes(user - 8 + first, 8 - first)}, expected {Bytes(e + first, 8 - first)}";
        }
        else
        {
            what = $"{Block(user, null, mem, end)}\nthe size word right before the block was overwritten (a write before its start): found {Bytes(user - 8, 8)}";
        }
        return new DebugFinding { Words = $"{op}(): heap buffer underflow detected", User = (nuint)user, What = what, AllocStack = allocStack };
    }

    /// <summary>
    /// A byte after the block overwritten. For a freed block the canary ends 8 bytes short of
    /// the chunk's end, where the free's stack is kept (DebugBlock.SetFreeStack).
    /// </summary>
    internal static DebugFinding Overflow(string op, byte* user, nuint asked, byte* mem, byte* end, byte* bad, uint allocStack, uint freeStack, bool freed)
    {
        byte* canaryEnd = freed ? end - 8 : end;
        int shown = (int)Math.Min(Shown, canaryEnd - bad);
        string found = shown > 0
            ? $"found {Bytes(bad, shown)}, expected {Canary(bad, shown)}"
            : $"the word that holds the free's stack no longer checks: found {Bytes(end - 8, 8)}";
        return new DebugFinding
        {
            Words = $"{op}(): heap buffer overflow detected",
            User = (nuint)user,
            What = $"{Block(user, asked, mem, end)}\nthe byte at offset {(nuint)(bad - user)} ({(nuint)(bad - user) - asked} past the end) was overwritten{(freed ? " (the block is freed)" : "")}: {found}",
            AllocStack = allocStack,
            FreeStack = freeStack,
            Freed = freed,
        };
    }

    internal static DebugFinding WriteAfterFree(string op, byte* user, nuint asked, byte* mem, byte* end, byte* bad, uint allocStack, uint freeStack, string? where) => new()
    {
        Words = $"{op}(): write after free detected",
        User = (nuint)user,
        What = bad == null
            ? $"block 0x{(nuint)user:x} (freed)\n{where} was overwritten after the block was freed: found {Bytes(user - 16, 16)}"
            : $"{Block(user, asked, mem, end)}\nthe byte at offset {(nuint)(bad - user)} was written after the block was freed: found {Bytes(bad, (int)Math.Min(Shown, user + asked - bad))}, expected {DebugBlock.Poison:x2} (the poison)",
        AllocStack = allocStack,
        FreeStack = freeStack,
        Freed = true,
    };

    [DoesNotReturn]
    internal static void DoubleFree(byte* user, byte* mem, byte* end, uint allocStack, uint freeStack, string op = "free") =>
        Raise(new DebugFinding
        {
            Words = op == "free" ? "free(): double free detected" : $"{op}(): invalid pointer",
            User = (nuint)user,
            What = $"{Block(user, DebugBlock.TryAsked(user, out nuint asked) ? asked : null, mem, end)}\nthe block was already freed (it is in the quarantine)",
            AllocStack = allocStack,
            FreeStack = freeStack,
            Freed = true,
        });

    internal static DebugFinding GuardedDoubleFree(in DebugGuard.Slot s, string op) => new()
    {
        Words = op == "free" ? "free(): double free detected" : $"{op}(): invalid pointer",
        User = (nuint)s.User,
        What = $"{Block((byte*)s.User, (nuint)s.Asked, null, (byte*)(s.Start + s.Length) - Os.OsMemory.PageSize)}\nthe block was already freed (its pages are kept inaccessible)",
        AllocStack = s.AllocStack,
        FreeStack = s.FreeStack,
        Freed = true,
    };

    /// <summary>The block's line; <paramref name="mem"/> null for a guarded block (DebugGuard), whose <paramref name="end"/> is its guard page.</summary>
    private static string Block(byte* user, nuint? asked, byte* mem, byte* end) =>
        $"block 0x{(nuint)user:x}: {(asked is nuint n ? $"{n} bytes asked" : "size unknown")}, "
        + (mem == null ? $"on pages of its own before the guard page at 0x{(nuint)end:x}" : $"in the chunk at 0x{(nuint)mem - 16:x} ({(nuint)(end - mem)} usable bytes)");

    private static string Bytes(byte* at, int n)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < n; i++) sb.Append(i == 0 ? "" : " ").Append(at[i].ToString("x2"));
        return sb.ToString();
    }

    private static string Canary(byte* at, int n)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < n; i++) sb.Append(i == 0 ? "" : " ").Append(DebugBlock.CanaryByte((nuint)(at + i)).ToString("x2"));
        return sb.ToString();
    }

    /// <summary>Reports <paramref name="f"/> as MallocPrinterr decides: thrown, failed fast, or glibc's abort for C.</summary>
    [DoesNotReturn]
    internal static void Raise(DebugFinding f)
    {
        var details = new StringBuilder(f.What).Append('\n');
        AppendStack(details, "allocated", f.AllocStack);
        if (f.Freed) AppendStack(details, "freed", f.FreeStack);
        MallocPrinterr.Raise(f.Words, (void*)f.User, details.ToString().TrimEnd('\n'));
    }

    private static void AppendStack(StringBuilder sb, string verb, uint id)
    {
        List<string> frames = DebugStacks.Describe(id);
        if (frames.Count == 0)
        {
            sb.Append(verb).Append(" at: (no stack was recorded)\n");
            return;
        }
        sb.Append(verb).Append(" at:\n");
        for (int i = 0; i < frames.Count; i++) sb.Append("  #").Append(i).Append(' ').Append(frames[i]).Append('\n');
    }
}
