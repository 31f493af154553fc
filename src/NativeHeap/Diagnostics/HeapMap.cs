using System.Globalization;
using System.Text;
using NativeHeap.Os;

namespace NativeHeap.Diagnostics;

/// <summary>The formats <see cref="HeapMap"/> writes.</summary>
public enum HeapMapFormat
{
    /// <summary>A static picture (SVG).</summary>
    Svg,
    /// <summary>A page that draws the map, zooms with the wheel and shows a chunk's details on hover.</summary>
    Html,
}

/// <summary>What goes on a map besides the chunks.</summary>
public sealed class HeapMapOptions
{
    /// <summary>The title (by default the snapshot's totals).</summary>
    public string? Title { get; init; }

    /// <summary>More about a chunk for its hover text and its label (e.g. the trace line that allocated it), or null.</summary>
    public Func<HeapChunk, string?>? Describe { get; init; }

    /// <summary>
    /// Longer text for a chunk's hover only (e.g. the stack that allocated it), or null. Chunks
    /// that get the same text share one copy in the page, so a stack costs its bytes once.
    /// </summary>
    public Func<HeapChunk, string?>? Details { get; init; }

    /// <summary>Chunks to mark and label on the map (the ones that pin memory).</summary>
    public IReadOnlyList<PinningChunk> Pinned { get; init; } = [];
}

/// <summary>One run of pixels of a map row in one colour.</summary>
/// <param name="Strip">The strip (region) the row belongs to.</param>
/// <param name="Row">The row within the strip.</param>
/// <param name="X">First pixel.</param>
/// <param name="Width">Pixels.</param>
/// <param name="State">The state holding most bytes there.</param>
/// <param name="Resident">Whether most of those bytes are resident.</param>
public readonly record struct HeapMapRun(int Strip, int Row, int X, int Width, ChunkState State, bool Resident);

/// <summary>A strip of a map: one region of address space, drawn in rows.</summary>
/// <param name="Label">What it is ("arena 0, break", "arena 2, heap", "mmapped chunks").</param>
/// <param name="Start">First address.</param>
/// <param name="Bytes">Bytes shown.</param>
/// <param name="Rows">Rows it takes.</param>
/// <param name="Regions">The snapshot's regions drawn in it, in order (mapped chunks share one strip).</param>
public sealed record HeapMapStrip(string Label, nuint Start, ulong Bytes, int Rows, IReadOnlyList<int> Regions);

/// <summary>
/// Heap maps: each arena's break runs and heaps as strips of address space, drawn in rows
/// at one scale for the whole map (so sizes compare), every pixel coloured by the chunk state
/// holding most of its bytes and paled where those bytes are not resident; the pinning chunks
/// marked and labelled. <see cref="Layout"/> gives the runs for any renderer; SVG and HTML
/// are written here (the nativeheap command renders PNG from the same runs).
/// </summary>
public static class HeapMap
{
    /// <summary>Pixels per row.</summary>
    public const int Width = 1200;

    /// <summary>Rows the whole map aims at; the scale is the smallest power of two that keeps within it.</summary>
    public const int TargetRows = 360;

    /// <summary>Each state's colour (#rrggbb), resident.</summary>
    public static string Colour(ChunkState state) => state switch
    {
        ChunkState.InUse => "#3b6fb6",
        ChunkState.Tcache => "#e6194b",
        ChunkState.Fastbin => "#f58231",
        ChunkState.Unsorted => "#ffd23f",
        ChunkState.SmallBin => "#9bd770",
        ChunkState.LargeBin => "#3cb44b",
        ChunkState.Top => "#a9a9a9",
        ChunkState.Metadata => "#7a4ea3",
        _ => "#46c8d2", // mapped
    };

    /// <summary>Each state's colour where its bytes are not resident: the same, paled toward white.</summary>
    public static string PaleColour(ChunkState state)
    {
        string c = Colour(state);
        int Pale(int i) => 255 - (255 - Convert.ToInt32(c.Substring(i, 2), 16)) * 25 / 100;
        return string.Create(CultureInfo.InvariantCulture, $"#{Pale(1):x2}{Pale(3):x2}{Pale(5):x2}");
    }

    /// <summary>Lay a snapshot out: its strips, the bytes one pixel stands for, and the runs of colour.</summary>
    public static (IReadOnlyList<HeapMapStrip> Strips, ulong BytesPerPixel, IReadOnlyList<HeapMapRun> Runs) Layout(HeapSnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        var strips = new List<(string Label, List<int> Regions, ulong Bytes)>();
        var mapped = new List<int>();
        ulong mappedBytes = 0;
        for (int r = 0; r < snapshot.Regions.Count; r++)
        {
            HeapRegion region = snapshot.Regions[r];
            switch (region.Kind)
            {
                case HeapRegionKind.Break:
                case HeapRegionKind.Heap:
                    strips.Add(($"arena {region.Arena}, {(region.Kind == HeapRegionKind.Break ? "break" : "heap")} 0x{region.Start:x}", [r], region.Length));
                    break;
                case HeapRegionKind.Mapped:
                    mapped.Add(r);
                    mappedBytes += region.Length;
                    break;
            }
        }
        if (mapped.Count > 0) strips.Add(($"{mapped.Count} mmapped chunk{(mapped.Count == 1 ? "" : "s")}", mapped, mappedBytes));

        ulong total = 0;
        foreach (var s in strips) total += s.Bytes;
        ulong bpp = 16;
        while (RowsFor(strips, bpp) > TargetRows && bpp < total) bpp *= 2;

        var result = new List<HeapMapStrip>();
        var runs = new List<HeapMapRun>();
        // Chunks come region by region: each region's first chunk.
        var first = new int[snapshot.Regions.Count];
        Array.Fill(first, -1);
        for (int i = snapshot.Chunks.Count - 1; i >= 0; i--) first[snapshot.Chunks[i].Region] = i;
        foreach (var (label, regions, bytes) in strips)
        {
            int strip = result.Count;
            int rows = (int)((bytes + bpp * Width - 1) / (bpp * Width));
            result.Add(new HeapMapStrip(label, snapshot.Regions[regions[0]].Start, bytes, rows, regions));
            var pixel = new Pixel(snapshot, runs, strip, bpp);
            ulong offset = 0; // bytes of the strip before the current region
            foreach (int r in regions)
            {
                for (int i = first[r]; i >= 0 && i < snapshot.Chunks.Count && snapshot.Chunks[i].Region == r; i++)
                {
                    HeapChunk c = snapshot.Chunks[i];
                    pixel.Add(offset + (c.Address - snapshot.Regions[r].Start), c, r);
                }
                offset += snapshot.Regions[r].Length;
            }
            pixel.Flush();
        }
        return (result, bpp, runs);
    }

    private static int RowsFor(List<(string Label, List<int> Regions, ulong Bytes)> strips, ulong bpp)
    {
        int rows = 0;
        foreach (var s in strips) rows += (int)((s.Bytes + bpp * Width - 1) / (bpp * Width));
        return rows;
    }

    /// <summary>Accumulates the bytes of each pixel by state and emits runs of equal pixels.</summary>
    private sealed class Pixel(HeapSnapshot snapshot, List<HeapMapRun> runs, int strip, ulong bpp)
    {
        private readonly ulong[] _bytes = new ulong[Enum.GetValues<ChunkState>().Length];
        private ulong _resident, _filled;
        private long _index = -1;
        private HeapMapRun? _run;

        /// <summary>Chunk <paramref name="c"/> of region <paramref name="region"/> lies at <paramref name="offset"/> of the strip.</summary>
        internal void Add(ulong offset, HeapChunk c, int region)
        {
            ulong end = offset + c.Size;
            nuint address = c.Address;
            while (offset < end)
            {
                long index = (long)(offset / bpp);
                if (index != _index) Emit(index);
                ulong next = Math.Min(((ulong)index + 1) * bpp, end);
                ulong part = next - offset;
                _bytes[(int)c.State] += part;
                _resident += snapshot.ResidentBytesIn(region, address, address + (nuint)part);
                _filled += part;
                address += (nuint)part;
                offset = next;
            }
        }

        internal void Flush()
        {
            Emit(-1);
            if (_run is { } r) runs.Add(r);
            _run = null;
        }

        private void Emit(long next)
        {
            if (_index >= 0 && _filled > 0)
            {
                int best = 0;
                for (int s = 1; s < _bytes.Length; s++) if (_bytes[s] > _bytes[best]) best = s;
                var state = (ChunkState)best;
                bool resident = _resident * 2 >= _filled;
                int row = (int)(_index / Width), x = (int)(_index % Width);
                if (_run is { } r && r.Row == row && r.X + r.Width == x && r.State == state && r.Resident == resident)
                {
                    _run = r with { Width = r.Width + 1 };
                }
                else
                {
                    if (_run is { } done) runs.Add(done);
                    _run = new HeapMapRun(strip, row, x, 1, state, resident);
                }
            }
            Array.Clear(_bytes);
            _resident = _filled = 0;
            _index = next;
        }
    }

    /// <summary>The title a map gets by default: the snapshot's resident totals by state.</summary>
    public static string DefaultTitle(HeapSnapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        var byState = new ulong[Enum.GetValues<ChunkState>().Length];
        foreach (HeapChunk c in snapshot.Chunks) byState[(int)c.State] += c.ResidentBytes;
        var parts = Enum.GetValues<ChunkState>().Where(s => byState[(int)s] > 0)
            .Select(s => $"{Name(s)} {Sizes.Approximate((long)byState[(int)s])}");
        return $"heap: {Sizes.Approximate((long)snapshot.ResidentBytes)} resident ({string.Join(", ", parts)})";
    }

    /// <summary>A state's name in the legend.</summary>
    public static string Name(ChunkState state) => state switch
    {
        ChunkState.InUse => "in use",
        ChunkState.Tcache => "tcache",
        ChunkState.Fastbin => "fastbin",
        ChunkState.Unsorted => "unsorted",
        ChunkState.SmallBin => "small bin",
        ChunkState.LargeBin => "large bin",
        ChunkState.Top => "top",
        ChunkState.Metadata => "metadata",
        _ => "mmapped",
    };

    /// <summary>Write a map of <paramref name="snapshot"/> to <paramref name="output"/>.</summary>
    public static void Write(HeapSnapshot snapshot, Stream output, HeapMapFormat format, HeapMapOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        ArgumentNullException.ThrowIfNull(output);
        options ??= new HeapMapOptions();
        string text = format switch
        {
            HeapMapFormat.Svg => Svg(snapshot, options),
            HeapMapFormat.Html => Html(snapshot, options),
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, "SVG or HTML"),
        };
        var bytes = Encoding.UTF8.GetBytes(text);
        output.Write(bytes, 0, bytes.Length);
    }

    private const int RowHeight = 2, StripGap = 26, Left = 10, Top0 = 94;

    /// <summary>Where the legend's boxes start (y); the header's three lines are above it.</summary>
    public const int LegendY = 64;

    /// <summary>The header's three lines: the title, the resident totals by state, the scale.</summary>
    public static string[] Header(HeapSnapshot snapshot, HeapMapOptions options, ulong bytesPerPixel)
    {
        ArgumentNullException.ThrowIfNull(options);
        return [options.Title ?? "heap map", DefaultTitle(snapshot),
            $"one row = {Sizes.Approximate((long)(bytesPerPixel * Width))}, one pixel = {Sizes.Approximate((long)bytesPerPixel)}; pale = not resident"];
    }

    /// <summary>The right margin the labels need (about 7 pixels a character).</summary>
    public static int Margin(IReadOnlyList<(int X, int Y, int LabelY, string Label)> marks)
    {
        ArgumentNullException.ThrowIfNull(marks);
        return Math.Max(200, 24 + 7 * marks.Select(m => m.Label.Length).DefaultIfEmpty(0).Max());
    }

    /// <summary>Where each strip's first row is drawn (y), and the picture's height.</summary>
    public static (int[] StripY, int Height) Geometry(IReadOnlyList<HeapMapStrip> strips)
    {
        ArgumentNullException.ThrowIfNull(strips);
        var y = new int[strips.Count];
        int at = Top0;
        for (int s = 0; s < strips.Count; s++)
        {
            at += StripGap;
            y[s] = at;
            at += strips[s].Rows * RowHeight;
        }
        return (y, at + 40);
    }

    private static string Svg(HeapSnapshot snapshot, HeapMapOptions options)
    {
        var (strips, bpp, runs) = Layout(snapshot);
        var (stripY, height) = Geometry(strips);
        IReadOnlyList<(int X, int Y, int LabelY, string Label)> marks = PinMarks(snapshot, strips, stripY, bpp, options);
        if (marks.Count > 0) height = Math.Max(height, marks[^1].LabelY + 20);
        int width = Left + Width + Margin(marks);
        var sb = new StringBuilder();
        CultureInfo c = CultureInfo.InvariantCulture;
        sb.Append(c, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        sb.Append(c, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
        string[] header = Header(snapshot, options, bpp);
        sb.Append(c, $"<text x=\"{Left}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{Escape(header[0])}</text>\n");
        sb.Append(c, $"<text x=\"{Left}\" y=\"38\">{Escape(header[1])}</text>\n");
        sb.Append(c, $"<text x=\"{Left}\" y=\"54\">{Escape(header[2])}</text>\n");
        int lx = Left;
        foreach (ChunkState s in Enum.GetValues<ChunkState>())
        {
            sb.Append(c, $"<rect x=\"{lx}\" y=\"{LegendY}\" width=\"12\" height=\"12\" fill=\"{Colour(s)}\"/><rect x=\"{lx + 12}\" y=\"{LegendY}\" width=\"6\" height=\"12\" fill=\"{PaleColour(s)}\"/>");
            sb.Append(c, $"<text x=\"{lx + 22}\" y=\"{LegendY + 11}\">{Name(s)}</text>\n");
            lx += 30 + Name(s).Length * 7;
        }
        for (int s = 0; s < strips.Count; s++)
            sb.Append(c, $"<text x=\"{Left}\" y=\"{stripY[s] - 6}\">{Escape(strips[s].Label)}: {Sizes.Approximate((long)strips[s].Bytes)}</text>\n");
        foreach (HeapMapRun r in runs)
            sb.Append(c, $"<rect x=\"{Left + r.X}\" y=\"{stripY[r.Strip] + r.Row * RowHeight}\" width=\"{r.Width}\" height=\"{RowHeight}\" fill=\"{(r.Resident ? Colour(r.State) : PaleColour(r.State))}\"/>\n");
        foreach (var (x, y, ly, label) in marks)
        {
            sb.Append(c, $"<path d=\"M{x} {y} l-5 -9 h10 z\" fill=\"black\"/>");
            sb.Append(c, $"<polyline points=\"{x},{y} {Left + Width + 4},{y} {Left + Width + 8},{ly}\" fill=\"none\" stroke=\"black\" stroke-width=\"0.5\" stroke-dasharray=\"2 2\"/>");
            sb.Append(c, $"<text x=\"{Left + Width + 10}\" y=\"{ly + 4}\">{Escape(label)}</text>\n");
        }
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    /// <summary>
    /// The pinning chunks' marks (at most 12, the ones that free most): the pixel each lies at,
    /// and its label, placed in the right margin in the order of the marks, a line apart.
    /// </summary>
    public static IReadOnlyList<(int X, int Y, int LabelY, string Label)> PinMarks(HeapSnapshot snapshot, IReadOnlyList<HeapMapStrip> strips,
        int[] stripY, ulong bytesPerPixel, HeapMapOptions options)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        ArgumentNullException.ThrowIfNull(strips);
        ArgumentNullException.ThrowIfNull(stripY);
        ArgumentNullException.ThrowIfNull(options);
        var marks = new List<(int, int, string)>();
        foreach (PinningChunk p in options.Pinned.OrderByDescending(p => p.FreesBytes).Take(12))
        {
            for (int s = 0; s < strips.Count; s++)
            {
                ulong offset = 0;
                foreach (int r in strips[s].Regions)
                {
                    HeapRegion region = snapshot.Regions[r];
                    if (p.Chunk.Address >= region.Start && p.Chunk.Address < region.Start + region.Length)
                    {
                        ulong pixel = (offset + p.Chunk.Address - region.Start) / bytesPerPixel;
                        string more = options.Describe?.Invoke(p.Chunk) is { } d ? d + ", " : "";
                        marks.Add(((int)(Left + (long)(pixel % Width)), stripY[s] + (int)(pixel / Width) * RowHeight,
                            $"{more}{p.Chunk.Size} B {HeapExplanation.Describe(p.Chunk.State)}: frees {Sizes.Approximate((long)p.FreesBytes)}"));
                    }
                    offset += region.Length;
                }
            }
        }
        var placed = new List<(int, int, int, string)>();
        int labelY = 0;
        foreach (var (x, y, label) in marks.OrderBy(m => m.Item2).ThenBy(m => m.Item1))
        {
            labelY = Math.Max(y, labelY + 14);
            placed.Add((x, y, labelY, label));
        }
        return placed;
    }

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&quot;");

    private static string Html(HeapSnapshot snapshot, HeapMapOptions options)
    {
        // The page draws from the chunks themselves (not the runs), so zooming in shows single chunks.
        var (strips, bpp, _) = Layout(snapshot);
        var sb = new StringBuilder();
        CultureInfo c = CultureInfo.InvariantCulture;
        sb.Append("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>heap map</title>\n<style>body{font-family:sans-serif;font-size:12px;margin:8px}#tip{position:fixed;background:#fffbe6;border:1px solid #999;padding:4px;pointer-events:none;display:none;white-space:pre}canvas{border:1px solid #ccc}</style></head><body>\n");
        sb.Append(c, $"<h3>{Escape(options.Title ?? DefaultTitle(snapshot))}</h3>\n<div id=\"legend\"></div><p>Wheel over the map: zoom (the rows grow; scroll the page to move along them); hover: a chunk's details. Pale: not resident.</p>\n<canvas id=\"map\"></canvas><div id=\"tip\"></div>\n<script>\n");
        sb.Append("const states=[").Append(string.Join(",", Enum.GetValues<ChunkState>().Select(s => $"[\"{Name(s)}\",\"{Colour(s)}\",\"{PaleColour(s)}\"]"))).Append("];\n");
        sb.Append(c, $"const width={Width}, bpp0={bpp};\n");
        sb.Append("const strips=[\n");
        int chunkIndex = 0;
        var pinned = options.Pinned.ToDictionary(p => p.Chunk.Address);
        var details = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int s = 0; s < strips.Count; s++)
        {
            sb.Append(c, $"{{label:\"{Js(strips[s].Label)}\",start:{strips[s].Start},bytes:{strips[s].Bytes},chunks:[");
            ulong offset = 0;
            foreach (int r in strips[s].Regions)
            {
                HeapRegion region = snapshot.Regions[r];
                for (; chunkIndex < snapshot.Chunks.Count && snapshot.Chunks[chunkIndex].Region < r; chunkIndex++) { }
                for (; chunkIndex < snapshot.Chunks.Count && snapshot.Chunks[chunkIndex].Region == r; chunkIndex++)
                {
                    HeapChunk ch = snapshot.Chunks[chunkIndex];
                    string? more = options.Describe?.Invoke(ch);
                    if (pinned.TryGetValue(ch.Address, out PinningChunk p))
                        more = (more == null ? "" : more + "; ") + $"pins: frees {Sizes.Approximate((long)p.FreesBytes)}, {Sizes.Approximate((long)p.PinnedBytes)} with those above";
                    int detail = -1;
                    if (options.Details?.Invoke(ch) is { } d && !details.TryGetValue(d, out detail)) details[d] = detail = details.Count;
                    sb.Append(c, $"[{offset + ch.Address - region.Start},{ch.Size},{(int)ch.State},{ch.ResidentBytes},\"0x{ch.Address:x}\",\"{Js(more ?? "")}\",{(pinned.ContainsKey(ch.Address) ? 1 : 0)},{detail}],");
                }
                offset += region.Length;
            }
            sb.Append("]},\n");
        }
        sb.Append("];\n");
        sb.Append("const details=[").Append(string.Join(",", details.OrderBy(kv => kv.Value).Select(kv => $"\"{Js(kv.Key)}\""))).Append("];\n");
        sb.Append(HtmlScript);
        sb.Append("</script></body></html>\n");
        return sb.ToString();
    }

    private static string Js(string s) => s.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    // Draws each strip in rows of `width` pixels at `bpp` bytes a pixel (zoom divides it),
    // every chunk as the pixels it covers; a pixel shared by chunks shows the last drawn, so
    // zoom in to see small ones. Hover finds the chunk under the pointer by binary search.
    private const string HtmlScript = """
const cv=document.getElementById('map'), tip=document.getElementById('tip'), ctx=cv.getContext('2d');
const rowH=2, gap=22, left=10;
let bpp=bpp0, scroll=0;
document.getElementById('legend').innerHTML=states.map(s=>`<span style="background:${s[1]};padding:0 8px;margin-right:2px"></span><span style="background:${s[2]};padding:0 4px"></span> ${s[0]} &nbsp;`).join('');
function fmt(b){return b>=1<<30?(b/(1<<30)).toFixed(2)+' GiB':b>=1<<20?(b/(1<<20)).toFixed(1)+' MiB':b>=1024?(b/1024).toFixed(1)+' KiB':b+' bytes';}
function layout(){let y=gap;return strips.map(s=>{const rows=Math.ceil(s.bytes/(bpp*width));const top=y;y+=rows*rowH+gap;return {s,top,rows};});}
function draw(){
  const L=layout(); const h=L.length?L[L.length-1].top+L[L.length-1].rows*rowH+gap:100;
  cv.width=width+2*left; cv.height=Math.min(h,20000); ctx.fillStyle='#fff'; ctx.fillRect(0,0,cv.width,cv.height);
  ctx.font='12px sans-serif';
  for(const {s,top} of L){
    ctx.fillStyle='#000'; ctx.fillText(`${s.label}: ${fmt(s.bytes)} (one pixel = ${fmt(bpp)})`,left,top-6);
    for(const c of s.chunks){
      let a=c[0]/bpp, e=(c[0]+c[1])/bpp; const pale=c[3]*2<c[1];
      ctx.fillStyle=states[c[2]][pale?2:1];
      while(a<e){const row=Math.floor(a/width), x=a-row*width, w=Math.max(Math.min(e-a,width-x),0.5);
        const y=top+row*rowH; if(y>cv.height)break; ctx.fillRect(left+x,y,w,rowH); a+=Math.max(width-x,0.5);}
      if(c[6]){const p=c[0]/bpp,row=Math.floor(p/width);ctx.fillStyle='#000';ctx.beginPath();ctx.moveTo(left+p%width,top+row*rowH);ctx.lineTo(left+p%width-4,top+row*rowH-8);ctx.lineTo(left+p%width+4,top+row*rowH-8);ctx.fill();}
    }
  }
}
cv.addEventListener('wheel',ev=>{ev.preventDefault();bpp=Math.max(1,ev.deltaY<0?bpp/2:bpp*2);draw();});
cv.addEventListener('mousemove',ev=>{
  const r=cv.getBoundingClientRect(), px=ev.clientX-r.left-left, py=ev.clientY-r.top;
  for(const {s,top,rows} of layout()){
    if(py<top||py>=top+rows*rowH||px<0||px>=width)continue;
    const off=(Math.floor((py-top)/rowH)*width+px)*bpp; let lo=0,hi=s.chunks.length-1;
    while(lo<hi){const m=(lo+hi+1)>>1; if(s.chunks[m][0]<=off)lo=m; else hi=m-1;}
    const c=s.chunks[lo]; if(!c||off>=c[0]+c[1])break;
    tip.textContent=`${c[4]}: ${fmt(c[1])}, ${states[c[2]][0]}, ${fmt(c[3])} resident${c[5]?'\n'+c[5]:''}${c[7]>=0?'\n'+details[c[7]]:''}`;
    tip.style.left=(ev.clientX+12)+'px'; tip.style.top=(ev.clientY+12)+'px'; tip.style.display='block'; return;
  }
  tip.style.display='none';
});
draw();
""";
}
