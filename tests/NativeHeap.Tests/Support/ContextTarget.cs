using NativeHeap.Arenas;
using NativeHeap.Diagnostics;
using NativeHeap.Lab;

namespace NativeHeap.Tests;

/// <summary>A private heap (a <see cref="MallocContext"/>) as a replay target, for tests.</summary>
internal sealed unsafe class ContextTarget(MallocContext* ctx) : ReplayTarget
{
    public override void* Malloc(nuint size) => Ptmalloc.Malloc(ctx, ref ctx->Solo, size);
    public override void* Calloc(nuint count, nuint size) => Ptmalloc.Calloc(ctx, ref ctx->Solo, count, size);
    public override void* Realloc(void* block, nuint size) => Ptmalloc.Realloc(ctx, ref ctx->Solo, block, size, out _);
    public override void* Memalign(nuint alignment, nuint size) => Ptmalloc.Memalign(ctx, ref ctx->Solo, alignment, size);
    public override void Free(void* block) => Ptmalloc.Free(ctx, ref ctx->Solo, block);
    public override nuint UsableSize(void* block) => Ptmalloc.UsableSize(block);
    public override void Trim(nuint pad) => Ptmalloc.MallocTrim(ctx, ref ctx->Solo, pad);
    public override HeapInfo GetInfo() => MallInfo.Compute(ctx);
    public override long ForeignBreaks => ctx->ForeignBreaks;
}
