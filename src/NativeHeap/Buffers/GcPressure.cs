namespace NativeHeap.Buffers;

/// <summary>
/// Tells the GC how much native memory the buffers hold, in steps of 16 MiB with a step of
/// hysteresis: GC.AddMemoryPressure counts every addition towards its next induced collection,
/// so reporting each buffer made a loop of 1 MiB Rent/Dispose force gen-2 collections. In
/// steps, a steady working set reports nothing, and forgotten buffers (freed only by their
/// finalizers) still add up to pressure that makes the GC collect them.
/// </summary>
internal static class GcPressure
{
    private const long Step = 16 << 20;
    private static long s_live, s_reported;
    private static readonly Lock s_lock = new();

    /// <summary>Bytes the buffers hold now.</summary>
    internal static long Live => Volatile.Read(ref s_live);

    internal static void Change(long bytes)
    {
        if (bytes == 0) return;
        long live = Interlocked.Add(ref s_live, bytes);
        long reported = Volatile.Read(ref s_reported);
        if (live >= reported + Step || live < reported - Step) Adjust();
    }

    private static void Adjust()
    {
        lock (s_lock)
        {
            long live = Volatile.Read(ref s_live);
            long target = live / Step * Step;
            if (target >= s_reported + Step) GC.AddMemoryPressure(target - s_reported);
            else if (live < s_reported - Step)
            {
                target += Step; // keep a step of headroom, so that a working set at a boundary does not flap
                GC.RemoveMemoryPressure(s_reported - target);
            }
            else return;
            s_reported = target;
        }
    }
}
