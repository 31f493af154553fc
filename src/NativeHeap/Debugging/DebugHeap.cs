using System.Numerics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeHeap.Arenas;
using NativeHeap.Chunks;
using NativeHeap.Diagnostics;
using NativeHeap.Os;

namespace NativeHeap.Debugging;

/// <summary>
/// The debug heap (<c>debug=1</c>): malloc and its kin over the arenas' own, each block in the
/// layout of <see cref="DebugBlock"/> (a tagged header, the size asked, a keyed tail canary),
/// each free checked, poisoned and held in the freeing thread's <see cref="DebugQuarantine"/>
/// before its chunk goes back to the arena, and each finding reported with the stacks that allocated and freed the
/// block (<see cref="DebugReport"/>). The façade sends every call here when the option is on
/// (the fast paths are off then, as in checked mode); with it off nothing here runs.
/// </summary>
/// <remarks>
/// Every check comes before any change: a block found overwritten is reported and left as it
/// is (lost, like glibc's corrupted chunk), and the heap stays usable. A block evicted from the
/// quarantine is checked by the thread whose free pushed it out, and freed into that thread's
/// tcache. The secrets and the quarantine are made once, by the first call (<see cref="Start"/>).
/// </remarks>
internal static unsafe class DebugHeap
{
    private static int s_started;
    private static readonly Lock s_startLock = new();

    private static void Start(MallocContext* ctx)
    {
        lock (s_startLock)
        {
            if (s_started != 0) return;
            DebugBlock.SetSecrets(ctx->Mp.DebugKey, ctx->Mp.DebugCanary);
            Volatile.Write(ref s_started, 1);
        }
    }

    /// <summary>malloc.</summary>
    internal static void* Malloc(MallocContext* ctx, ref ThreadLocals ts, nuint size) =>
        Allocate(ctx, ref ts, size, Chunk.Alignment);

    /// <summary>_mid_memalign: alignments up to 16 are malloc; others as glibc raises them.</summary>
    internal static void* Memalign(MallocContext* ctx, ref ThreadLocals ts, nuint alignment, nuint size)
    {
        if (alignment <= Chunk.Alignment) return Allocate(ctx, ref ts, size, Chunk.Alignment);
        alignment = Ptmalloc.MemalignAlignment(alignment);
        return alignment == 0 ? null : Allocate(ctx, ref ts, size, alignment);
    }

    /// <summary>calloc: the bytes asked for are zeroed (the canary after them is not).</summary>
    internal static void* Calloc(MallocContext* ctx, ref ThreadLocals ts, nuint count, nuint size)
    {
        if (Math.BigMul((ulong)count, (ulong)size, out ulong bytes) != 0) return null;
        void* p = Allocate(ctx, ref ts, (nuint)bytes, Chunk.Alignment);
        if (p != null) NativeMemory.Clear(p, (nuint)bytes);
        return p;
    }

    private static void* Allocate(MallocContext* ctx, ref ThreadLocals ts, nuint size, nuint alignment)
    {
        if (Volatile.Read(ref s_started) == 0) Start(ctx);
        nuint offset = Math.Max(alignment, DebugBlock.HeaderBytes);
        if (size > Chunk.MaxRequest - offset - DebugBlock.TailMin) return null;
        if (ctx->Mp.GuardSample != 0 && DebugGuard.Sampled(ctx->Mp.GuardSample)
            && DebugGuard.Allocate(size, alignment, DebugStacks.Capture(ts)) is var guarded && guarded != null)
            return guarded;
        nuint inner = offset + size + DebugBlock.TailMin;
        var mem = (byte*)(offset == DebugBlock.HeaderBytes ? Ptmalloc.Malloc(ctx, ref ts, inner) : Ptmalloc.Memalign(ctx, ref ts, offset, inner));
        if (mem == null) return null;
        byte* user = mem + offset;
        DebugBlock.Make(mem, mem + Ptmalloc.UsableSize(mem), user, size, DebugStacks.Capture(ts));
        return user;
    }

    /// <summary>A block found by its user pointer: where its chunk's memory lies, and what its header says.</summary>
    private readonly struct Found(byte* user, byte* mem, byte* end, BlockState state, uint stack)
    {
        public readonly byte* User = user, Mem = mem, End = end;
        public readonly BlockState State = state;
        public readonly uint AllocStack = stack;
    }

    /// <summary>
    /// The block at <paramref name="user"/>, its header read only once the address is known to
    /// be in this heap's memory; a pointer that is not a block's start is reported as glibc's
    /// "invalid pointer" for <paramref name="op"/>.
    /// </summary>
    private static Found Find(MallocContext* ctx, byte* user, string op)
    {
        if (Volatile.Read(ref s_started) == 0) Start(ctx);
        if (((nuint)user & Chunk.AlignMask) != 0) DebugReport.NotABlock(op, user, "it is not 16-byte aligned");
        int mappedLog2 = -1;
        bool inHeap = MallocContext.OwnsHeapChunk(ctx, (Chunk*)(user - DebugBlock.HeaderBytes));
        if (!inHeap && (mappedLog2 = MappedLog2(ctx, user)) < 0)
            DebugReport.NotABlock(op, user, "it is not in this heap's memory");
        BlockState state = DebugBlock.State(user, out uint stack, out int headerLog2);
        if (state == BlockState.Unknown || (mappedLog2 >= 0 && headerLog2 != mappedLog2))
            DebugReport.NotABlock(op, user,
                "no intact debug header before it: not the start of a block, a block freed long ago (it has left the quarantine), or a header overwritten from below");
        byte* mem = DebugBlock.Mem(user, headerLog2);
        if (inHeap && !MallocContext.OwnsHeapChunk(ctx, Chunk.FromMem(mem)))
            DebugReport.NotABlock(op, user, "its header points outside this heap");
        nuint usable = Ptmalloc.UsableSize(mem);
        if (usable < (nuint)(user - mem) + DebugBlock.TailMin)
            DebugReport.NotABlock(op, user, "its chunk is not in use");
        return new Found(user, mem, mem + usable, state, stack);
    }

    /// <summary>
    /// For a block mapped on its own, log2 of its offset from its chunk's memory (its chunk is
    /// recorded, 16 bytes before mem = user - 2^log2); -1 when no recorded chunk has it.
    /// </summary>
    private static int MappedLog2(MallocContext* ctx, byte* user)
    {
        for (int log2 = 4; log2 < 48 && (nuint)user > ((nuint)1 << log2) + Chunk.HeaderSize; log2++)
            if (Ownership.HoldsMapped(&ctx->Owned, Chunk.FromMem(user - ((nuint)1 << log2))))
                return log2;
        return -1;
    }

    /// <summary>What is wrong with a live block's header or canary, or null; <paramref name="asked"/>, the size it was asked for.</summary>
    private static DebugFinding? CheckLive(in Found b, string op, out nuint asked)
    {
        if (!DebugBlock.TryAsked(b.User, out asked) || b.User + asked + DebugBlock.TailMin > b.End)
            return DebugReport.Underflow(op, b.User, b.Mem, b.End, b.AllocStack);
        byte* bad = DebugBlock.FirstBadCanary(b.User + asked, b.End);
        return bad == null ? null : DebugReport.Overflow(op, b.User, asked, b.Mem, b.End, bad, b.AllocStack, 0, freed: false);
    }

    /// <summary>The size asked for of a live block, once its header and canary are found intact; else the finding is raised.</summary>
    private static nuint CheckedLive(in Found b, string op)
    {
        DebugFinding? f = CheckLive(b, op, out nuint asked);
        if (f != null) DebugReport.Raise(f);
        return asked;
    }

    /// <summary>free.</summary>
    internal static void Free(MallocContext* ctx, ref ThreadLocals ts, void* ptr)
    {
        if (ptr == null) return;
        if (DebugGuard.TryFind((byte*)ptr, out DebugGuard.Slot guarded))
        {
            DebugGuard.Free(guarded, "free", DebugStacks.Capture(ts));
            return;
        }
        Found b = Find(ctx, (byte*)ptr, "free");
        if (b.State == BlockState.Quarantined) DoubleFree(b, "free");
        nuint asked = CheckedLive(b, "free");
        nuint chunkBytes = Chunk.SizeOf(Chunk.FromMem(b.Mem));
        nuint limit = ctx->Mp.QuarantineBytes;
        var q = (DebugQuarantine*)ts.Quarantine;
        if (q == null && chunkBytes <= limit) ts.Quarantine = q = DebugQuarantine.Create();
        if (q == null || chunkBytes > limit)
        {
            ((ulong*)b.User)[-2] = 0; // no longer a block of ours
            Ptmalloc.Free(ctx, ref ts, b.Mem);
            return;
        }
        uint freeStack = DebugStacks.Capture(ts);
        NativeMemory.Fill(b.User, asked, DebugBlock.Poison);
        DebugBlock.SetFreeStack(b.User, b.End, freeStack);
        DebugBlock.SetState(b.User, b.AllocStack, (int)BitOperations.Log2((ulong)(b.User - b.Mem)), BlockState.Quarantined);
        while (!DebugQuarantine.TryPush(q, b.User, chunkBytes))
            Evict(ctx, ref ts, q, 0); // the ring is full: make room
        Evict(ctx, ref ts, q, limit);
    }

    [DoesNotReturn]
    private static void DoubleFree(in Found b, string op)
    {
        uint freeStack = DebugBlock.TryFreeStack(b.User, b.End, out uint s) ? s : 0;
        DebugReport.DoubleFree(b.User, b.Mem, b.End, b.AllocStack, freeStack, op);
    }

    /// <summary>Frees the oldest quarantined blocks until at most <paramref name="limit"/> bytes are held, each checked first.</summary>
    private static void Evict(MallocContext* ctx, ref ThreadLocals ts, DebugQuarantine* q, nuint limit)
    {
        while (DebugQuarantine.TryPopOver(q, limit, out byte* user))
        {
            DebugFinding? f = CheckQuarantined(user, "free", out int log2);
            if (f != null)
            {
                // Left out of the arena (its memory is lost, the heap usable), and no longer a block
                // of ours: reported once, not again by every later check.
                ((ulong*)user)[-2] = 0;
                DebugReport.Raise(f);
            }
            byte* mem = DebugBlock.Mem(user, log2);
            ((ulong*)user)[-2] = 0; // no longer a block of ours: a late free of it is no double free we can name
            Ptmalloc.Free(ctx, ref ts, mem);
        }
    }

    /// <summary>The thread is ending: its quarantined blocks go back (checked) before its tcache does.</summary>
    internal static void ThreadExit(MallocContext* ctx, ref ThreadLocals ts)
    {
        var q = (DebugQuarantine*)ts.Quarantine;
        if (q == null) return;
        ts.Quarantine = null;
        try
        {
            Evict(ctx, ref ts, q, 0);
        }
        finally
        {
            DebugQuarantine.Destroy(q); // a block found overwritten stays out of the heap, as at any eviction
        }
    }

    /// <summary>What is wrong with a quarantined block (its header, its poison, its canary and the free's stack after it), or null.</summary>
    private static DebugFinding? CheckQuarantined(byte* user, string op, out int log2)
    {
        BlockState state = DebugBlock.State(user, out uint allocStack, out log2);
        byte* mem = DebugBlock.Mem(user, log2);
        byte* end = state == BlockState.Unknown ? user : mem + Ptmalloc.UsableSize(mem);
        if (state != BlockState.Quarantined || !DebugBlock.TryAsked(user, out nuint asked) || user + asked + DebugBlock.TailMin > end)
            return DebugReport.WriteAfterFree(op, user, 0, mem, end, null, allocStack, 0, "the header before the block");
        bool stackIntact = DebugBlock.TryFreeStack(user, end, out uint freeStack);
        byte* bad = DebugBlock.FirstUnpoisoned(user, user + asked);
        if (bad != null) return DebugReport.WriteAfterFree(op, user, asked, mem, end, bad, allocStack, stackIntact ? freeStack : 0, null);
        bad = DebugBlock.FirstBadCanary(user + asked, end - 8);
        if (bad == null && !stackIntact) bad = end - 8; // the word that holds the free's stack: which byte, its check cannot say
        return bad == null ? null : DebugReport.Overflow(op, user, asked, mem, end, bad, allocStack, stackIntact ? freeStack : 0, freed: true);
    }

    /// <summary>
    /// realloc: always a new block (a stale pointer to the old one is then caught by the
    /// quarantine), the contents copied, the old block freed as by <see cref="Free"/>.
    /// </summary>
    internal static void* Realloc(MallocContext* ctx, ref ThreadLocals ts, void* ptr, nuint size, out bool failed)
    {
        failed = false;
        if (ptr == null)
        {
            void* fresh = Allocate(ctx, ref ts, size, Chunk.Alignment);
            failed = fresh == null;
            return fresh;
        }
        nuint asked;
        if (DebugGuard.TryFind((byte*)ptr, out DebugGuard.Slot guarded))
        {
            if (guarded.State == DebugGuard.Freed) DebugReport.Raise(DebugReport.GuardedDoubleFree(guarded, "realloc"));
            if (DebugGuard.CheckLive(guarded, "realloc") is DebugFinding f) DebugReport.Raise(f);
            asked = (nuint)guarded.Asked;
        }
        else
        {
            Found b = Find(ctx, (byte*)ptr, "realloc");
            if (b.State == BlockState.Quarantined) DoubleFree(b, "realloc");
            asked = CheckedLive(b, "realloc");
        }
        if (size == 0)
        {
            Free(ctx, ref ts, ptr);
            return null;
        }
        void* p = Allocate(ctx, ref ts, size, Chunk.Alignment);
        if (p == null)
        {
            failed = true;
            return null;
        }
        NativeMemory.Copy(ptr, p, Math.Min(asked, size));
        Free(ctx, ref ts, ptr);
        return p;
    }

    /// <summary>malloc_usable_size: the size asked for, as the canary starts right after it; 0 for a pointer that is no live block.</summary>
    internal static nuint UsableSize(MallocContext* ctx, void* ptr)
    {
        var user = (byte*)ptr;
        if (user == null || ((nuint)user & Chunk.AlignMask) != 0 || Volatile.Read(ref s_started) == 0) return 0;
        if (DebugGuard.TryFind(user, out DebugGuard.Slot guarded)) return guarded.State == DebugGuard.Live ? (nuint)guarded.Asked : 0;
        if (!MallocContext.OwnsHeapChunk(ctx, (Chunk*)(user - DebugBlock.HeaderBytes)) && MappedLog2(ctx, user) < 0)
            return 0; // found as free finds it, without reporting
        return DebugBlock.State(user, out _, out _) == BlockState.Live && DebugBlock.TryAsked(user, out nuint asked) ? asked : 0;
    }

    /// <summary>
    /// The debug part of a full check (Heap.Validate, the statistics walks): every live block's
    /// header and canary, every quarantined block's poison, in the chunks
    /// <paramref name="snapshot"/> found in use and the chunks mapped on their own. A chunk
    /// without a debug header (the tcaches' own, or one whose header was destroyed) is passed over.
    /// </summary>
    internal static void CheckAll(MallocContext* ctx, HeapSnapshot snapshot)
    {
        if (Volatile.Read(ref s_started) == 0) return;
        foreach (HeapChunk c in snapshot.Chunks)
            if (c.State == ChunkState.InUse && CheckChunk(Chunk.ToMem((Chunk*)c.Address)) is DebugFinding f)
                DebugReport.Raise(f);
        // Under the set's lock, as free takes a chunk out of it before unmapping it; raised after.
        DebugFinding? mapped = null;
        using (FutexLock.Hold(&ctx->Owned.MappedLock))
            for (nuint i = 0; i < ctx->Owned.MappedCapacity && mapped == null; i++)
                if (ctx->Owned.Mapped[i] > 1) mapped = CheckChunk(Chunk.ToMem((Chunk*)ctx->Owned.Mapped[i]));
        if (mapped != null) DebugReport.Raise(mapped);
        if (DebugGuard.CheckAll("Heap.Validate") is DebugFinding guarded) DebugReport.Raise(guarded);
    }

    private static DebugFinding? CheckChunk(byte* mem)
    {
        nuint usable = Ptmalloc.UsableSize(mem);
        byte* user = DebugBlock.UserOfChunk(mem, mem + usable);
        if (user == null) return null;
        BlockState state = DebugBlock.State(user, out uint stack, out int log2);
        if (state == BlockState.Unknown || DebugBlock.Mem(user, log2) != mem) return null;
        return state == BlockState.Live
            ? CheckLive(new Found(user, mem, mem + usable, state, stack), "Heap.Validate", out _)
            : CheckQuarantined(user, "Heap.Validate", out _);
    }
}
