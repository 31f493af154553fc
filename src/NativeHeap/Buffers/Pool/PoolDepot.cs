using System.Diagnostics;

namespace NativeHeap.Buffers;

/// <summary>
/// The pool's shared cache behind the threads' own: per processor (as ArrayPool&lt;T&gt;.Shared's
/// partitions) and per size class, a short locked stack of idle owners. A thread whose own slot
/// is empty or full comes here; a rent that finds its processor's stack empty looks in the
/// others before it allocates.
/// </summary>
internal sealed class PoolDepot
{
    private readonly Stack[][] _partitions;

    internal PoolDepot()
    {
        _partitions = new Stack[Environment.ProcessorCount][];
        for (int p = 0; p < _partitions.Length; p++)
        {
            var stacks = new Stack[PoolSizeClass.Count + 1];
            for (int c = 0; c < stacks.Length; c++) stacks[c] = new Stack(PoolSizeClass.DepotCapacity(c));
            _partitions[p] = stacks;
        }
    }

    private int Home => Thread.GetCurrentProcessorId() % _partitions.Length;

    /// <summary>An idle owner of class <paramref name="c"/>, or null.</summary>
    internal PooledBuffer? TryPop(int c)
    {
        int home = Home;
        for (int i = 0; i < _partitions.Length; i++)
        {
            PooledBuffer? owner = _partitions[(home + i) % _partitions.Length][c].TryPop();
            if (owner != null) return owner;
        }
        return null;
    }

    /// <summary>Keeps an idle owner; false if its stack is full.</summary>
    internal bool TryPush(PooledBuffer owner) => _partitions[Home][owner.Class].TryPush(owner);

    /// <summary>
    /// Takes out what the eviction rule gives up: with <paramref name="all"/>, everything;
    /// otherwise, from each stack, half (rounded up) of the owners no rent needed since the last
    /// call (the stack's low-water mark), oldest first.
    /// </summary>
    internal void Evict(bool all, List<PooledBuffer> into)
    {
        foreach (Stack[] stacks in _partitions)
            foreach (Stack stack in stacks)
                stack.Evict(all, into);
    }

    /// <summary>Bytes of the blocks the depot holds (for statistics).</summary>
    internal long PooledBytes
    {
        get
        {
            long bytes = 0;
            foreach (Stack[] stacks in _partitions)
                foreach (Stack stack in stacks)
                    bytes += stack.Bytes;
            return bytes;
        }
    }

    private sealed class Stack(int capacity)
    {
        private readonly Lock _lock = new();
        private PooledBuffer[]? _items; // allocated at the first push
        internal int Count;              // under _lock
        private int _low;                // under _lock: the fewest owners held since the last Evict

        internal long Bytes
        {
            get
            {
                if (Volatile.Read(ref Count) == 0) return 0;
                lock (_lock)
                {
                    long bytes = 0;
                    for (int i = 0; i < Count; i++) bytes += _items![i].Capacity;
                    return bytes;
                }
            }
        }

        internal PooledBuffer? TryPop()
        {
            if (Volatile.Read(ref Count) == 0) return null;
            lock (_lock)
            {
                if (Count == 0) return null;
                PooledBuffer owner = _items![--Count];
                _items[Count] = null!;
                if (Count < _low) _low = Count;
                return owner;
            }
        }

        internal bool TryPush(PooledBuffer owner)
        {
            if (Volatile.Read(ref Count) >= capacity) return false;
            lock (_lock)
            {
                if (Count >= capacity) return false;
                _items ??= new PooledBuffer[capacity];
                _items[Count++] = owner;
                return true;
            }
        }

        internal void Evict(bool all, List<PooledBuffer> into)
        {
            if (Volatile.Read(ref Count) == 0 && _low == 0) return;
            lock (_lock)
            {
                int n = all ? Count : (_low + 1) / 2;
                Debug.Assert(n <= Count);
                if (n > 0)
                {
                    for (int i = 0; i < n; i++) into.Add(_items![i]); // the bottom: pushed longest ago
                    Array.Copy(_items!, n, _items!, 0, Count - n);
                    Array.Clear(_items!, Count - n, n);
                    Count -= n;
                }
                _low = Count;
            }
        }
    }
}
