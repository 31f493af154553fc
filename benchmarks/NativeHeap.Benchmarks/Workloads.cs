namespace NativeHeap.Benchmarks;

/// <summary>
/// The allocator world's workloads, re-implemented from their published descriptions, for
/// any allocator. Each returns the number of allocations it made.
/// </summary>
public static unsafe class Workloads<T> where T : struct, IAllocator
{
    /// <summary>glibc's bench-malloc-simple: n blocks of 16/32/64 bytes (n = 25..1600), the first half freed in order, the rest in reverse.</summary>
    public static long Simple()
    {
        long count = 0;
        var blocks = new nint[1600];
        foreach (int size in new[] { 16, 32, 64 })
        {
            foreach (int n in new[] { 25, 100, 400, 1600 })
            {
                for (int rep = 0; rep < 1600 / n * 4; rep++)
                {
                    for (int i = 0; i < n; i++) blocks[i] = (nint)T.Alloc((nuint)size);
                    for (int i = 0; i < n / 2; i++) T.Free((void*)blocks[i]);
                    for (int i = n - 1; i >= n / 2; i--) T.Free((void*)blocks[i]);
                    count += n;
                }
            }
        }
        return count;
    }

    /// <summary>glibc's bench-malloc-thread: per thread a 1024-slot working set, sizes 4..32768 drawn with inverse-square weight, each step replacing a random slot.</summary>
    public static long Thread(int threads, int steps = 200_000)
    {
        long total = 0;
        Parallel(threads, t =>
        {
            var rng = new Random(t + 1);
            var slots = new nint[1024];
            for (int i = 0; i < steps; i++)
            {
                int k = rng.Next(1024);
                if (slots[k] != 0) T.Free((void*)slots[k]);
                slots[k] = (nint)T.Alloc(InverseSquare(rng));
            }
            foreach (nint p in slots) if (p != 0) T.Free((void*)p);
            Interlocked.Add(ref total, steps);
        });
        return total;
    }

    /// <summary>
    /// larson: each thread churns 5000 slots of 8..1000 bytes; then it is replaced by a new
    /// thread that takes over its slots, so the new one frees what the old one allocated.
    /// </summary>
    public static long Larson(int threads = 2, int rounds = 4, int steps = 50_000)
    {
        long total = 0;
        var sets = Enumerable.Range(0, threads).Select(_ => new nint[5000]).ToArray();
        for (int round = 0; round < rounds; round++)
        {
            Parallel(threads, t =>
            {
                var rng = new Random(round * 31 + t);
                nint[] slots = sets[t];
                for (int i = 0; i < steps; i++)
                {
                    int k = rng.Next(slots.Length);
                    if (slots[k] != 0) T.Free((void*)slots[k]);
                    slots[k] = (nint)T.Alloc((nuint)rng.Next(8, 1001));
                }
                Interlocked.Add(ref total, steps);
            });
            // The next round's threads are new threads: every block changes hands.
            Array.Reverse(sets);
        }
        foreach (nint[] slots in sets) foreach (nint p in slots) if (p != 0) T.Free((void*)p);
        return total;
    }

    /// <summary>xmalloc-test: a producer allocates batches of 4096 x 64 bytes; a consumer thread frees them.</summary>
    public static long XMalloc(int batches = 100)
    {
        var queue = new System.Collections.Concurrent.BlockingCollection<nint[]>(4);
        var consumer = new System.Threading.Thread(() =>
        {
            foreach (nint[] batch in queue.GetConsumingEnumerable())
                foreach (nint p in batch) T.Free((void*)p);
        });
        consumer.Start();
        for (int b = 0; b < batches; b++)
        {
            var batch = new nint[4096];
            for (int i = 0; i < batch.Length; i++) batch[i] = (nint)T.Alloc(64);
            queue.Add(batch);
        }
        queue.CompleteAdding();
        consumer.Join();
        return batches * 4096L;
    }

    /// <summary>mstress-like: mixed lifetimes (most short, some long), rare large blocks, in a ring of live blocks.</summary>
    public static long MStress(int steps = 300_000)
    {
        var rng = new Random(5);
        var shortLived = new nint[256];
        var longLived = new nint[4096];
        for (int i = 0; i < steps; i++)
        {
            int roll = rng.Next(1000);
            nuint size = roll < 5 ? (nuint)rng.Next(100_000, 1_000_000) : (nuint)rng.Next(8, 2048);
            var p = (byte*)T.Alloc(size);
            p[0] = 1;
            ref nint slot = ref (roll % 10 == 0 ? ref longLived[rng.Next(longLived.Length)] : ref shortLived[rng.Next(shortLived.Length)]);
            if (slot != 0) T.Free((void*)slot);
            slot = (nint)p;
        }
        foreach (nint p in shortLived) if (p != 0) T.Free((void*)p);
        foreach (nint p in longLived) if (p != 0) T.Free((void*)p);
        return steps;
    }

    /// <summary>malloc-large: zeroed blocks of 5..25 MiB into 20 slots, each replacing the slot's last.</summary>
    public static long Large(int steps = 100)
    {
        var rng = new Random(9);
        var slots = new nint[20];
        for (int i = 0; i < steps; i++)
        {
            int k = rng.Next(slots.Length);
            if (slots[k] != 0) T.Free((void*)slots[k]);
            int size = rng.Next(5 << 20, 25 << 20);
            var p = (byte*)T.AllocZeroed((nuint)size);
            for (int o = 0; o < size; o += 4096 * 16) p[o] = 1; // touch a page in 16
            slots[k] = (nint)p;
        }
        foreach (nint p in slots) if (p != 0) T.Free((void*)p);
        return steps;
    }

    private static nuint InverseSquare(Random rng)
    {
        // P(size) ~ 1/size^2 over 4..32768: inverse transform of the CDF.
        const double lo = 4, hi = 32768;
        double u = rng.NextDouble();
        return (nuint)(1 / (1 / lo - u * (1 / lo - 1 / hi)));
    }

    private static void Parallel(int threads, Action<int> body)
    {
        var list = Enumerable.Range(0, threads).Select(t => new System.Threading.Thread(() => body(t))).ToList();
        list.ForEach(t => t.Start());
        list.ForEach(t => t.Join());
    }
}
