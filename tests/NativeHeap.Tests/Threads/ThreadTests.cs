using System.Collections.Concurrent;
using NativeHeap.Arenas;
using NativeHeap.Chunks;

namespace NativeHeap.Tests;

/// <summary>Many threads on the process heap: per-thread tcaches, arenas, frees across threads.</summary>
[Trait(Traits.Category, Traits.Allocator)]
public unsafe class ThreadTests
{
    private const int Threads = 4;
    private const int OperationsInAll = 1_000_000;

    /// <summary>
    /// 4 threads, a million operations in all. A third of the blocks are handed to the next
    /// thread through a queue and freed there; every block carries a pattern from its id that
    /// is checked before it is freed and after realloc; the whole heap is checked at the end.
    /// </summary>
    [Fact]
    public void FourThreads_AMillionOperations_AThirdOfFreesCrossThreads()
    {
        var queues = Enumerable.Range(0, Threads).Select(_ => new ConcurrentQueue<(nint Ptr, int Size, byte Fill)>()).ToArray();
        long crossFrees = 0, frees = 0;
        Exception? failure = null;
        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            try
            {
                var rng = new Random(1000 + t);
                var live = new List<(nint Ptr, int Size, byte Fill)>();
                for (int op = 0; op < OperationsInAll / Threads; op++)
                {
                    if (queues[t].TryDequeue(out var handed))
                    {
                        Verify(handed);
                        Heap.Free((void*)handed.Ptr);
                        Interlocked.Increment(ref crossFrees);
                        Interlocked.Increment(ref frees);
                        continue;
                    }
                    int roll = rng.Next(100);
                    if (live.Count > 0 && (roll < 45 || live.Count > 500))
                    {
                        int k = rng.Next(live.Count);
                        var b = live[k];
                        live[k] = live[^1];
                        live.RemoveAt(live.Count - 1);
                        if (rng.Next(3) == 0)
                        {
                            queues[(t + 1) % Threads].Enqueue(b);
                        }
                        else
                        {
                            Verify(b);
                            Heap.Free((void*)b.Ptr);
                            Interlocked.Increment(ref frees);
                        }
                    }
                    else if (live.Count > 0 && roll < 55)
                    {
                        int k = rng.Next(live.Count);
                        var b = live[k];
                        int size = Size(rng);
                        var q = (byte*)Heap.Realloc((void*)b.Ptr, (nuint)size);
                        Verify(((nint)q, Math.Min(size, b.Size), b.Fill));
                        new Span<byte>(q, size).Fill(b.Fill);
                        live[k] = ((nint)q, size, b.Fill);
                    }
                    else
                    {
                        int size = Size(rng);
                        var p = (byte*)Heap.Alloc((nuint)size);
                        byte fill = (byte)rng.Next(1, 256);
                        new Span<byte>(p, size).Fill(fill);
                        live.Add(((nint)p, size, fill));
                    }
                }
                foreach (var b in live)
                {
                    Verify(b);
                    Heap.Free((void*)b.Ptr);
                }
            }
            catch (Exception e)
            {
                failure ??= e;
            }
        })).ToList();
        threads.ForEach(th => th.Start());
        threads.ForEach(th => th.Join());
        Assert.Null(failure);
        foreach (var q in queues)
        {
            while (q.TryDequeue(out var b))
            {
                Verify(b);
                Heap.Free((void*)b.Ptr);
                crossFrees++;
            }
        }
        Assert.InRange(crossFrees, frees / 5, frees / 2); // about a third
        Assert.True(Heap.ArenaCount >= 2, $"{Heap.ArenaCount} arenas for {Threads} threads");
        Heap.Validate();
    }

    /// <summary>
    /// xmalloc-test's shape: one thread allocates small blocks, another frees them, so that the
    /// frees push onto the producer's fastbin while its mallocs take runs off it (and, with
    /// tcache_flush, the consumer returns half a tcache bin at a time). Each block carries its
    /// number until it is freed: a chunk handed out twice would be overwritten and seen.
    /// </summary>
    [Fact]
    public void OneThreadAllocates_AnotherFrees_NoChunkIsHandedOutTwice()
    {
        var queue = new BlockingCollection<nint[]>(4);
        Exception? failure = null;
        var consumer = new Thread(() =>
        {
            try
            {
                foreach (nint[] batch in queue.GetConsumingEnumerable())
                {
                    for (int i = 0; i < batch.Length; i++)
                    {
                        long seen = *(long*)batch[i], last = ((long*)batch[i])[3];
                        if (seen != batch[i] || last != ~batch[i])
                            throw new Xunit.Sdk.XunitException($"block 0x{batch[i]:x} was written while in use");
                        Heap.Free((void*)batch[i]);
                    }
                }
            }
            catch (Exception e)
            {
                failure ??= e;
            }
        });
        consumer.Start();
        for (int b = 0; b < 200 && failure == null; b++)
        {
            var batch = new nint[2048];
            for (int i = 0; i < batch.Length; i++)
            {
                var p = (long*)Heap.Alloc((nuint)(32 + (i & 3) * 8));
                p[0] = (long)p;
                p[3] = ~(long)p;
                batch[i] = (nint)p;
            }
            queue.Add(batch);
        }
        queue.CompleteAdding();
        consumer.Join();
        Assert.Null(failure);
        Heap.Validate();
    }

    [Fact]
    public void EndedThreads_GiveTheirArenaAndTcacheBack_WithoutWaitingForAGc()
    {
        var r = Child.Run(nameof(ChildScenarios.EndedThreadsGiveTheirArenasBack));
        Assert.Equal("0", r["gc_count"]); // else the finalizers, not the release on the next thread, could have done it
        Assert.Equal("1", r["new_arenas"]);
        // The last thread's 30 cached chunks of 112 bytes, its tcache, and the new arena's own
        // struct (counted in use, as glibc's mallinfo counts it): two tcaches kept would be 9 KiB.
        Assert.InRange(long.Parse(r["cached_bytes_left"]), 30 * 112, 30 * 112 + 4096);
    }

    private static int Size(Random rng) => rng.Next(100) switch
    {
        < 80 => rng.Next(0, 1025),
        < 98 => rng.Next(1025, 65536),
        _ => rng.Next(65536, 1 << 20),
    };

    private static void Verify((nint Ptr, int Size, byte Fill) b)
    {
        int bad = new Span<byte>((void*)b.Ptr, b.Size).IndexOfAnyExcept(b.Fill);
        if (bad >= 0) throw new Xunit.Sdk.XunitException($"block 0x{b.Ptr:x} ({b.Size} bytes): byte {bad} changed");
    }

    [Fact]
    public void ArenaMax2_EightThreads_ExactlyTwoArenas()
    {
        var r = Child.Run(nameof(ChildScenarios.EightThreads), (Tunables.Variable, "arena_max=2"));
        Assert.Equal("2", r["arenas"]);
        Assert.Equal("8", r["threads_done"]);
    }

    [Fact]
    public void ANonMainArena_GivesBack100MB_WhenItIsFreed()
    {
        var r = Child.Run(nameof(ChildScenarios.HundredMegabytesOnAThreadArena));
        Assert.Equal("True", r["non_main"]);
        Assert.InRange(long.Parse(r["alloc_kib"]), 97_656 - 1024, 97_656 + 4096); // 100,000,000 bytes
        Assert.InRange(long.Parse(r["free_kib"]), -2048, 2048);
    }

    [Fact]
    public void TenThousandThreadsThatExit_LeaveNothingInUse()
    {
        var r = Child.Run(nameof(ChildScenarios.TenThousandThreads));
        Assert.Equal("10000", r["threads"]);
        Assert.InRange(long.Parse(r["uordblks_delta"]), -100_000, 100_000);
    }

    [Fact]
    public void ChunksOfOtherArenas_FindTheirArenaThroughTheHeapHeader()
    {
        byte* fromOtherThread = null;
        var t = new Thread(() => fromOtherThread = (byte*)Heap.Alloc(5000));
        t.Start();
        t.Join();
        Chunk* p = Chunk.FromMem(fromOtherThread);
        if ((p->Size & Chunk.NonMainArena) != 0)
        {
            HeapHeader* h = HeapHeader.For(p);
            Assert.True(h->Arena != null);
            Assert.Equal(0UL, (ulong)h % HeapHeader.MaxSize);
        }
        // Freed on this thread, into its own tcache or the chunk's arena: either way the heap stays whole.
        Heap.Free(fromOtherThread);
        Heap.Validate();
    }
}
