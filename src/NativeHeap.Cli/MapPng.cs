using NativeHeap.Diagnostics;
using SkiaSharp;

namespace NativeHeap.Cli;

/// <summary>A heap map as PNG: the runs, strips and marks of <see cref="HeapMap"/>, drawn with SkiaSharp.</summary>
internal static class MapPng
{
    internal static void Write(HeapSnapshot snapshot, Stream output, HeapMapOptions options)
    {
        var (strips, bpp, runs) = HeapMap.Layout(snapshot);
        var (stripY, height) = HeapMap.Geometry(strips);
        IReadOnlyList<(int X, int Y, int LabelY, string Label)> marks = HeapMap.PinMarks(snapshot, strips, stripY, bpp, options);
        const int left = 10;
        int width = left + HeapMap.Width + HeapMap.Margin(marks);
        if (marks.Count > 0) height = Math.Max(height, marks[^1].LabelY + 20);

        using var surface = SKSurface.Create(new SKImageInfo(width, height));
        SKCanvas canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        using var typeface = SKTypeface.FromFamilyName("DejaVu Sans") ?? SKTypeface.Default;
        using var text = new SKFont(typeface, 12);
        using var bold = new SKFont(typeface, 14) { Embolden = true };
        using var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true };
        using var fill = new SKPaint();

        string[] header = HeapMap.Header(snapshot, options, bpp);
        canvas.DrawText(header[0], left, 20, bold, ink);
        canvas.DrawText(header[1], left, 38, text, ink);
        canvas.DrawText(header[2], left, 54, text, ink);
        float lx = left;
        foreach (ChunkState s in Enum.GetValues<ChunkState>())
        {
            fill.Color = SKColor.Parse(HeapMap.Colour(s));
            canvas.DrawRect(lx, HeapMap.LegendY, 12, 12, fill);
            fill.Color = SKColor.Parse(HeapMap.PaleColour(s));
            canvas.DrawRect(lx + 12, HeapMap.LegendY, 6, 12, fill);
            canvas.DrawText(HeapMap.Name(s), lx + 22, HeapMap.LegendY + 11, text, ink);
            lx += 30 + text.MeasureText(HeapMap.Name(s));
        }
        for (int s = 0; s < strips.Count; s++)
            canvas.DrawText($"{strips[s].Label}: {Os.Sizes.Approximate((long)strips[s].Bytes)}", left, stripY[s] - 6, text, ink);
        foreach (HeapMapRun r in runs)
        {
            fill.Color = SKColor.Parse(r.Resident ? HeapMap.Colour(r.State) : HeapMap.PaleColour(r.State));
            canvas.DrawRect(left + r.X, stripY[r.Strip] + r.Row * 2, r.Width, 2, fill);
        }
        using var dashed = new SKPaint { Color = SKColors.Black, StrokeWidth = 0.5f, IsStroke = true, PathEffect = SKPathEffect.CreateDash([2, 2], 0) };
        foreach (var (x, y, labelY, label) in marks)
        {
            using var triangle = new SKPath();
            triangle.MoveTo(x, y);
            triangle.LineTo(x - 5, y - 9);
            triangle.LineTo(x + 5, y - 9);
            triangle.Close();
            canvas.DrawPath(triangle, ink);
            canvas.DrawLine(x, y, left + HeapMap.Width + 4, y, dashed);
            canvas.DrawLine(left + HeapMap.Width + 4, y, left + HeapMap.Width + 8, labelY, dashed);
            canvas.DrawText(label, left + HeapMap.Width + 10, labelY + 4, text, ink);
        }
        using SKImage image = surface.Snapshot();
        using SKData data = image.Encode(SKEncodedImageFormat.Png, 100);
        data.SaveTo(output);
    }

}
