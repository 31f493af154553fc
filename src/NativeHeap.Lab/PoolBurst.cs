using System.Buffers;
using System.Diagnostics;
using NativeHeap.Diagnostics;

namespace NativeHeap.Lab;

/// <summary>
/// The pool's memory story in one routine, for the test that checks it and the benchmark that
/// reports it: rent a burst of buffers (each written whole), give them all back, and read
/// anonymous RSS (statm) while the process sits idle.
/// </summary>
public static class PoolBurst
{
    /// <summary>Rents <paramref name="count"/> buffers of <paramref name="length"/> bytes, fills each, disposes them all; returns the anonymous bytes added at the peak.</summary>
    public static long Run(MemoryPool<byte> pool, int count, int length)
    {
        long before = (long)Statm.Read().AnonymousBytes;
        var owners = new IMemoryOwner<byte>[count];
        for (int i = 0; i < count; i++)
        {
            owners[i] = pool.Rent(length);
            owners[i].Memory.Span[..length].Fill((byte)i);
        }
        long peak = (long)Statm.Read().AnonymousBytes - before;
        foreach (IMemoryOwner<byte> owner in owners) owner.Dispose();
        return peak;
    }

    /// <summary>
    /// Waits (up to 30 s) until the process is settled: anonymous RSS the same two seconds in a
    /// row and, for a NativeHeapMemoryPool, nothing left in it. Returns the anonymous bytes then.
    /// </summary>
    public static long Settle(MemoryPool<byte> pool)
    {
        long last = long.MinValue;
        var curve = Idle(0, Enumerable.Range(1, 30).Select(s => (double)s), anon =>
        {
            bool steady = anon == last && (pool is not Buffers.NativeHeapMemoryPool p || p.GetStatistics().PooledBytes == 0);
            last = anon;
            return steady;
        });
        return curve[^1].Bytes;
    }

    /// <summary>
    /// Sleeps, reading anonymous RSS against <paramref name="baselineBytes"/> at each of
    /// <paramref name="seconds"/> (from now), and stops early once <paramref name="settled"/>
    /// says so. Returns (seconds, bytes above the baseline) pairs.
    /// </summary>
    public static List<(double Seconds, long Bytes)> Idle(long baselineBytes, IEnumerable<double> seconds, Func<long, bool>? settled = null)
    {
        var clock = Stopwatch.StartNew();
        var curve = new List<(double, long)>();
        foreach (double at in seconds)
        {
            TimeSpan wait = TimeSpan.FromSeconds(at) - clock.Elapsed;
            if (wait > TimeSpan.Zero) Thread.Sleep(wait);
            long above = (long)Statm.Read().AnonymousBytes - baselineBytes;
            curve.Add((clock.Elapsed.TotalSeconds, above));
            if (settled?.Invoke(above) == true) break;
        }
        return curve;
    }
}
