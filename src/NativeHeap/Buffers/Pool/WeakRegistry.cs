namespace NativeHeap.Buffers;

/// <summary>A thread-safe list of objects held weakly: the pools (for the timer and the metrics) and a pool's thread caches (for eviction and statistics).</summary>
internal sealed class WeakRegistry<T> where T : class
{
    private readonly Lock _lock = new();
    private readonly List<WeakReference<T>> _items = []; // under _lock

    internal void Add(T item)
    {
        lock (_lock) _items.Add(new WeakReference<T>(item));
    }

    /// <summary>The items still alive (the collected ones are dropped on the way).</summary>
    internal List<T> Live()
    {
        var live = new List<T>();
        lock (_lock)
        {
            _items.RemoveAll(w =>
            {
                if (!w.TryGetTarget(out T? item)) return true;
                live.Add(item);
                return false;
            });
        }
        return live;
    }
}
