using System.Globalization;
using System.Text;
using NativeHeap.Arenas;
using NativeHeap.Bins;
using NativeHeap.Chunks;
using NativeHeap.Os;

namespace NativeHeap.Diagnostics;

/// <summary>malloc_info's XML and malloc_stats's text, in glibc 2.36's exact shape.</summary>
internal static unsafe class MallocReport
{
    private struct SizeClass
    {
        public ulong From, To, Total, Count;
    }

    /// <summary>__malloc_info: per arena ("heap"), a size line per non-empty fastbin and bin, then totals.</summary>
    internal static string InfoXml(MallocContext* ctx)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        ulong totalNblocks = 0, totalNfastblocks = 0, totalAvail = 0, totalFastavail = 0;
        ulong totalSystem = 0, totalMaxSystem = 0, totalAspace = 0, totalAspaceMprotect = 0;
        sb.Append("<malloc version=\"1\">\n");
        int n = 0;
        MallocState* av = &ctx->Main;
        do
        {
            sb.Append(inv, $"<heap nr=\"{n++}\">\n<sizes>\n");
            var sizes = new SizeClass[BinIndex.NFastBins + BinIndex.NBins - 1];
            ulong nblocks = 0, nfastblocks = 0, avail = 0, fastavail = 0;
            ulong system, maxSystem, aspace, aspaceMprotect;
            FutexLock.Enter(&av->Mutex);
            try
            {
                for (int i = 0; i < BinIndex.NFastBins; i++)
                {
                    const string unaligned = "__malloc_info(): unaligned fastbin chunk detected";
                    Chunk** fb = MallocState.Fastbin(av, i);
                    Chunk* p = Ptmalloc.FastbinWalked(fb, *fb, unaligned);
                    if (p != null)
                    {
                        ulong count = 0;
                        ulong thisSize = Chunk.SizeOf(p);
                        for (; p != null; p = Ptmalloc.FastbinWalked(fb, Chunk.Reveal(&p->Fd), unaligned)) count++;
                        fastavail += count * thisSize;
                        nfastblocks += count;
                        sizes[i].From = thisSize - (Chunk.Alignment - 1);
                        sizes[i].To = thisSize;
                        sizes[i].Count = count;
                    }
                    sizes[i].Total = sizes[i].Count * sizes[i].To;
                }
                for (int i = 1; i < BinIndex.NBins; i++)
                {
                    ref SizeClass s = ref sizes[BinIndex.NFastBins - 1 + i];
                    Chunk* bin = MallocState.BinAt(av, i);
                    s.From = ulong.MaxValue;
                    for (Chunk* r = bin->Fd; r != bin; r = r->Fd)
                    {
                        ulong rSize = r->Size;
                        s.Count++;
                        s.Total += rSize;
                        s.From = Math.Min(s.From, rSize);
                        s.To = Math.Max(s.To, rSize);
                    }
                    if (s.Count == 0) s.From = 0;
                    nblocks += s.Count;
                    avail += s.Total;
                }
                system = av->SystemMem;
                maxSystem = av->MaxSystemMem;
                if (Ptmalloc.OnHeaps(ctx, av) && av->Top != MallocState.InitialTop(av))
                {
                    HeapHeader* heap = HeapHeader.For(av->Top);
                    aspace = heap->Size;
                    aspaceMprotect = heap->MprotectSize;
                }
                else
                {
                    aspace = aspaceMprotect = av->SystemMem;
                }
            }
            finally
            {
                FutexLock.Exit(&av->Mutex);
            }
            totalNfastblocks += nfastblocks;
            totalFastavail += fastavail;
            totalNblocks += nblocks;
            totalAvail += avail;
            for (int i = 0; i < sizes.Length; i++)
            {
                if (sizes[i].Count != 0 && i != BinIndex.NFastBins)
                    sb.Append(inv, $"  <size from=\"{sizes[i].From}\" to=\"{sizes[i].To}\" total=\"{sizes[i].Total}\" count=\"{sizes[i].Count}\"/>\n");
            }
            SizeClass u = sizes[BinIndex.NFastBins];
            if (u.Count != 0)
                sb.Append(inv, $"  <unsorted from=\"{u.From}\" to=\"{u.To}\" total=\"{u.Total}\" count=\"{u.Count}\"/>\n");
            totalSystem += system;
            totalMaxSystem += maxSystem;
            totalAspace += aspace;
            totalAspaceMprotect += aspaceMprotect;
            sb.Append("</sizes>\n");
            AppendTotals(sb, nfastblocks, fastavail, nblocks, avail, null, system, maxSystem, aspace, aspaceMprotect);
            sb.Append("</heap>\n");
            av = av->Next;
        }
        while (av != &ctx->Main);

        AppendTotals(sb, totalNfastblocks, totalFastavail, totalNblocks, totalAvail, (ctx->Mp.NMmaps, ctx->Mp.MmappedMem),
            totalSystem, totalMaxSystem, totalAspace, totalAspaceMprotect);
        sb.Append("</malloc>\n");
        return sb.ToString();
    }

    /// <summary>The totals block malloc_info prints per heap and, with the mmap line, for all.</summary>
    private static void AppendTotals(StringBuilder sb, ulong nfast, ulong fast, ulong nrest, ulong rest,
        (int Count, nuint Size)? mmap, ulong system, ulong maxSystem, ulong aspace, ulong aspaceMprotect)
    {
        var inv = CultureInfo.InvariantCulture;
        sb.Append(inv, $"<total type=\"fast\" count=\"{nfast}\" size=\"{fast}\"/>\n");
        sb.Append(inv, $"<total type=\"rest\" count=\"{nrest}\" size=\"{rest}\"/>\n");
        if (mmap is { } m) sb.Append(inv, $"<total type=\"mmap\" count=\"{m.Count}\" size=\"{m.Size}\"/>\n");
        sb.Append(inv, $"<system type=\"current\" size=\"{system}\"/>\n");
        sb.Append(inv, $"<system type=\"max\" size=\"{maxSystem}\"/>\n");
        sb.Append(inv, $"<aspace type=\"total\" size=\"{aspace}\"/>\n");
        sb.Append(inv, $"<aspace type=\"mprotect\" size=\"{aspaceMprotect}\"/>\n");
    }

    /// <summary>__malloc_stats: per arena, system and in-use bytes; then the totals with mmapped chunks.</summary>
    internal static string Stats(MallocContext* ctx)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        // glibc prints these with %10u through unsigned int casts.
        uint systemB = (uint)ctx->Mp.MmappedMem, inUseB = systemB;
        int i = 0;
        MallocState* av = &ctx->Main;
        do
        {
            HeapInfo mi = MallInfo.ForArena(ctx, av);
            sb.Append(inv, $"Arena {i++}:\n");
            sb.Append(inv, $"system bytes     = {(uint)mi.Arena,10}\n");
            sb.Append(inv, $"in use bytes     = {(uint)mi.Uordblks,10}\n");
            systemB += (uint)mi.Arena;
            inUseB += (uint)mi.Uordblks;
            av = av->Next;
        }
        while (av != &ctx->Main);
        sb.Append("Total (incl. mmap):\n");
        sb.Append(inv, $"system bytes     = {systemB,10}\n");
        sb.Append(inv, $"in use bytes     = {inUseB,10}\n");
        sb.Append(inv, $"max mmap regions = {(uint)ctx->Mp.MaxNMmaps,10}\n");
        sb.Append(inv, $"max mmap bytes   = {(ulong)ctx->Mp.MaxMmappedMem,10}\n");
        return sb.ToString();
    }
}
