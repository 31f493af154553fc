// A minimal API on Kestrel with NativeHeap, or with Kestrel's default pool to compare:
//   dotnet run -c Release --project samples/NativeHeap.Samples.Server -- --pool nativeheap --urls http://127.0.0.1:5000
//   curl --data-binary @file http://127.0.0.1:5000/upload   -> "<length> <checksum>"
//   curl --data-binary @file http://127.0.0.1:5000/echo     -> the body back
// --pool default (or no --pool) keeps Kestrel's pool; POOL=nativeheap in the environment works too.
using System.Runtime.InteropServices;
using NativeHeap;
using NativeHeap.Buffers;

var builder = WebApplication.CreateBuilder(args);
builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning); // no log line per request
string pool = builder.Configuration["pool"] ?? "default";
if (pool == "nativeheap") builder.Services.AddNativeHeapMemoryPool(); // the one line
else if (pool != "default") throw new ArgumentException($"--pool {pool}: expected nativeheap or default");

var app = builder.Build();

// The body read into NativeHeap memory (a NativeBuffer, grown as it comes), then summed.
app.MapPost("/upload", async (HttpRequest request, CancellationToken cancel) =>
{
    const int MaxUpload = 64 << 20;
    if (request.ContentLength > MaxUpload) return Results.StatusCode(StatusCodes.Status413PayloadTooLarge);
    using var buffer = new NativeBuffer<byte>(request.ContentLength is > 0 and long known ? (int)known : 16 * 1024);
    int length = 0;
    while (true)
    {
        if (length == buffer.Length)
        {
            if (length == MaxUpload) return Results.StatusCode(StatusCodes.Status413PayloadTooLarge);
            buffer.Resize(Math.Min(MaxUpload, length * 2));
        }
        int read = await request.Body.ReadAsync(buffer.Memory[length..], cancel);
        if (read == 0) break;
        length += read;
    }
    return Results.Text($"{length} {Sum(buffer.Span[..length]):x}\n");
});

// The body straight back, pipe to pipe: Kestrel's buffers in, Kestrel's buffers out.
app.MapPost("/echo", async (HttpContext context) =>
{
    context.Response.ContentLength = context.Request.ContentLength;
    await context.Request.BodyReader.CopyToAsync(context.Response.BodyWriter, context.RequestAborted);
});

// Where the memory is: NativeHeap's (mallinfo's figures) and the GC's, in KiB.
app.MapGet("/memory", () =>
{
    HeapInfo heap = NativeHeap.Heap.GetInfo();
    GCMemoryInfo gc = GC.GetGCMemoryInfo();
    return Results.Text($"nativeheap_in_use_kib={(heap.Uordblks + heap.Hblkhd) / 1024} nativeheap_free_held_kib={heap.Fordblks / 1024} " +
        $"nativeheap_arenas={NativeHeap.Heap.ArenaCount} threadpool_items={ThreadPool.CompletedWorkItemCount} gc_collections={GC.CollectionCount(0)} gc_heap_kib={GC.GetTotalMemory(false) / 1024} gc_committed_kib={gc.TotalCommittedBytes / 1024} (at the last GC)\n");
});

app.Lifetime.ApplicationStarted.Register(() => Console.WriteLine($"pool={pool} pid={Environment.ProcessId} listening on {string.Join(' ', app.Urls)}"));
app.Run();

// The bytes' sum, eight at a time: a check the client can recompute.
static ulong Sum(ReadOnlySpan<byte> bytes)
{
    ulong sum = 0;
    foreach (ulong word in MemoryMarshal.Cast<byte, ulong>(bytes)) sum += word;
    foreach (byte b in bytes[(bytes.Length & ~7)..]) sum += b;
    return sum;
}
