namespace NativeHeap.Tests;

/// <summary>
/// The managed twin of native-tests/src/tcache_abi.c's <c>sequence</c>: the same calls and the
/// same lines, through the managed allocator's fast paths. <see cref="NativeAbiLayoutTests"/>
/// compares the two outputs; change both together.
/// </summary>
internal static unsafe partial class ChildScenarios
{
    public static void TcacheSequence()
    {
        const int Small = 40, Other = 100, N = 40;
        const ulong Data = 0xa5a5a5a5a5a5a5a5;
        var a = new nint[N];
        var b = new nint[8];
        var output = new System.Text.StringBuilder();
        void Block(string what, nint[] blocks, void* p)
        {
            int i = Array.IndexOf(blocks, (nint)p);
            output.Append(i >= 0 ? $"{what} {i}\n" : $"{what} new\n");
        }
        // glibc's REVEAL_PTR: tcache and fastbin links are both safe-linked.
        static nint Reveal(nint pos) => (nint)((nuint)pos >> 12 ^ *(nuint*)pos);

        for (int i = 0; i < N; i++) new Span<byte>((void*)(a[i] = (nint)Heap.Alloc(Small)), Small).Fill(0xa5);
        for (int i = 0; i < 8; i++) new Span<byte>((void*)(b[i] = (nint)Heap.Alloc(Other)), Other).Fill(0x5a);
        output.Append($"usable {Heap.UsableSize((void*)a[0])} {Heap.UsableSize((void*)b[0])}\n");
        foreach (nint p in a) Heap.Free((void*)p);
        ulong key = 0; // the tcache key: the first that is neither data nor 0
        for (int i = 0; i < N && key == 0; i++)
            if (((ulong*)a[i])[1] != Data) key = ((ulong*)a[i])[1];
        for (int i = 0; i < N; i++)
        {
            nint next = Reveal(a[i]);
            ulong k = ((ulong*)a[i])[1];
            int j = Array.IndexOf(a, next);
            string kind = k == Data ? "data" : k == 0 ? "zero" : k == key ? "key" : "other";
            output.Append($"freed {i} next {(next == 0 ? "null" : j >= 0 ? j.ToString() : "other")} key {kind}\n");
        }
        var again = new nint[N + 4];
        for (int i = 0; i < N + 4; i++) Block("malloc", a, (void*)(again[i] = (nint)Heap.Alloc(Small)));
        foreach (nint p in b) Heap.Free((void*)p);
        byte* z = (byte*)Heap.AllocZeroed(1, Other);
        nuint usable = Heap.UsableSize(z), nonzero = 0;
        for (nuint i = 0; i < usable; i++) nonzero += z[i] != 0 ? 1u : 0u;
        Block("calloc", b, z);
        output.Append($"calloc usable {usable} nonzero {nonzero}\n");
        foreach (nint p in again) Heap.Free((void*)p);
        Heap.Free(z);
        Heap.Validate();
        Console.Out.Write(output.ToString());
    }
}
