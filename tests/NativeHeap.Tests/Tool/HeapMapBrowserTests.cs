using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;

namespace NativeHeap.Tests;

/// <summary>
/// The HTML map as a person sees it: `nativeheap map` written, opened in Debian's chromium
/// (driven by Playwright, told where the browser is: none is downloaded), drawn, zoomed with
/// the wheel and hovered.
/// </summary>
public class HeapMapBrowserTests
{
    /// <summary>Debian's chromium, which .ci/run installs when missing.</summary>
    private const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task Map_Html_InChromium_DrawsZoomsOnTheWheelAndShowsTheHoveredChunk()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: `apt-get install -y chromium` (.ci/run installs it when missing)");
        using var temp = new TempDirectory("nh-map-browser");
        string html = Path.Combine(temp.Path, "seed-002.html");
        var r = Cli.Run(["map", "seed-002", "--at", "after-frees", "--out", html]);
        Assert.True(r.ExitCode == 0, r.Output + r.Error);

        using IPlaywright playwright = await Playwright.CreateAsync();
        // --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        await using IBrowser browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Args = ["--no-sandbox"],
        });
        IPage page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 900 } });
        var problems = new List<string>();
        page.Console += (_, m) =>
        {
            if (m.Type is "error" or "warning") problems.Add($"console {m.Type}: {m.Text}");
        };
        page.PageError += (_, e) => problems.Add($"page error: {e}");
        await page.GotoAsync(new Uri(html).AbsoluteUri);

        // Drawn: the canvas's pixels, read back, are not all the white it starts from.
        long drawn = await page.EvaluateAsync<long>("""
            () => { const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data; let n = 0;
                    for (let i = 0; i < d.length; i += 4) if (d[i] !== 255 || d[i + 1] !== 255 || d[i + 2] !== 255) n++; return n; }
            """);
        Assert.True(drawn > 10_000, $"{drawn} pixels drawn");
        Assert.Equal(Enum.GetValues<NativeHeap.Diagnostics.ChunkState>().Length, await page.Locator("#legend span").CountAsync() / 2);

        // The wheel over the map zooms in: bytes a pixel halve, the rows grow, the pixels change.
        long scale = await page.EvaluateAsync<long>("bpp");
        string before = await page.EvaluateAsync<string>("cv.toDataURL()");
        int height = await page.EvaluateAsync<int>("cv.height");
        await page.Locator("#map").HoverAsync(new LocatorHoverOptions { Position = new Position { X = 300, Y = 30 } });
        await page.Mouse.WheelAsync(0, -100);
        await page.WaitForFunctionAsync($"bpp !== {scale}");
        Assert.Equal(scale / 2, await page.EvaluateAsync<long>("bpp"));
        Assert.True(await page.EvaluateAsync<int>("cv.height") > height, "the rows did not grow");
        Assert.NotEqual(before, await page.EvaluateAsync<string>("cv.toDataURL()"));

        // Hover the first chunk the trace names (lowest in the heap, so still on the canvas when
        // zoomed), zoomed in until it is 4 pixels wide: the tip gives its address, size, state and trace line.
        JsonElement chunk = await page.EvaluateAsync<JsonElement>("""
            () => { const c = strips[0].chunks.find(c => c[5] !== '');
                    return { offset: c[0], size: c[1], address: c[4], size_text: fmt(c[1]), state: states[c[2]][0], line: c[5] }; }
            """);
        long size = chunk.GetProperty("size").GetInt64();
        string address = chunk.GetProperty("address").GetString()!, line = chunk.GetProperty("line").GetString()!;
        Assert.Matches(@"^line \d+ \(id \d+\)", line);
        for (long bpp = scale / 2; bpp * 4 > size; bpp /= 2)
        {
            await page.Mouse.WheelAsync(0, -100);
            await page.WaitForFunctionAsync($"bpp === {bpp / 2}");
        }
        JsonElement point = await page.EvaluateAsync<JsonElement>("""
            offset => { const top = layout()[0].top, p = Math.floor(offset / bpp) + 2, row = Math.floor(p / width), y = top + row * rowH + 1;
                        window.scrollTo(0, cv.getBoundingClientRect().top + window.scrollY + y - 200);
                        const b = cv.getBoundingClientRect(); return { x: b.left + left + p - row * width + 0.5, y: b.top + y }; }
            """, chunk.GetProperty("offset").GetInt64());
        await page.Mouse.MoveAsync((float)point.GetProperty("x").GetDouble(), (float)point.GetProperty("y").GetDouble());
        ILocator tip = page.Locator("#tip");
        await Microsoft.Playwright.Assertions.Expect(tip).ToBeVisibleAsync();
        string text = await tip.InnerTextAsync();
        Assert.StartsWith($"{address}: {chunk.GetProperty("size_text").GetString()}, {chunk.GetProperty("state").GetString()}, ", text);
        Assert.Matches(new Regex(@"^0x[0-9a-f]+: .+, (in use|tcache|fastbin|unsorted|small bin|large bin|top|metadata|mmapped), .+ resident\n" + Regex.Escape(line)), text);

        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }
}
