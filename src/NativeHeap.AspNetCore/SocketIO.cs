using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace NativeHeap.AspNetCore;

/// <summary>
/// A scheduler that runs its callbacks in order, several per thread-pool work item: the
/// connections' socket side runs on these, as on Kestrel's IOQueue (one hop for a batch of
/// completions, not one each, which is what keeps latency down when the machine is busy).
/// </summary>
internal sealed class IOQueue : PipeScheduler, IThreadPoolWorkItem
{
    private readonly ConcurrentQueue<(Action<object?> Callback, object? State)> _work = new();
    private int _doingWork;

    /// <summary>Kestrel's count: one queue a processor, at most 16.</summary>
    internal static int DefaultCount => Math.Min(Environment.ProcessorCount, 16);

    public override void Schedule(Action<object?> action, object? state)
    {
        _work.Enqueue((action, state));
        if (Interlocked.CompareExchange(ref _doingWork, 1, 0) == 0) System.Threading.ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
    }

    void IThreadPoolWorkItem.Execute()
    {
        while (true)
        {
            while (_work.TryDequeue(out var item)) item.Callback(item.State);
            Volatile.Write(ref _doingWork, 0);
            Interlocked.MemoryBarrier(); // the flag's store before the emptiness check: a Schedule racing in either sees 0 or is seen
            if (_work.IsEmpty || Interlocked.Exchange(ref _doingWork, 1) == 1) return;
        }
    }
}

/// <summary>
/// A socket operation awaited without allocation, its continuation run on a given scheduler
/// (as Kestrel's SocketAwaitableEventArgs). Takes any Memory: SetBuffer(Memory) pins it, so
/// NativeHeap's memory goes to the kernel as it is. A failed operation throws its SocketException.
/// </summary>
internal sealed class SocketOperation(PipeScheduler scheduler) : SocketAsyncEventArgs(unsafeSuppressExecutionContextFlow: true), IValueTaskSource<int>
{
    private static readonly Action<object?> s_completed = _ => { };
    private Action<object?>? _continuation;

    internal ValueTask<int> ReceiveAsync(Socket socket, Memory<byte> buffer)
    {
        SetBuffer(buffer);
        return socket.ReceiveAsync(this) ? new ValueTask<int>(this, 0) : CompletedSynchronously();
    }

    internal ValueTask<int> SendAsync(Socket socket, ReadOnlyMemory<byte> buffer)
    {
        SetBuffer(System.Runtime.InteropServices.MemoryMarshal.AsMemory(buffer));
        return socket.SendAsync(this) ? new ValueTask<int>(this, 0) : CompletedSynchronously();
    }

    private ValueTask<int> CompletedSynchronously() =>
        SocketError == SocketError.Success ? new(BytesTransferred) : ValueTask.FromException<int>(new SocketException((int)SocketError));

    protected override void OnCompleted(SocketAsyncEventArgs e)
    {
        Action<object?>? continuation = _continuation;
        if (continuation != null || (continuation = Interlocked.CompareExchange(ref _continuation, s_completed, null)) != null)
        {
            object? state = UserToken;
            UserToken = null;
            _continuation = s_completed; // in case the continuation is read again
            scheduler.Schedule(continuation, state);
        }
    }

    public int GetResult(short token)
    {
        _continuation = null;
        if (SocketError != SocketError.Success) throw new SocketException((int)SocketError);
        return BytesTransferred;
    }

    public ValueTaskSourceStatus GetStatus(short token) =>
        !ReferenceEquals(_continuation, s_completed) ? ValueTaskSourceStatus.Pending
        : SocketError == SocketError.Success ? ValueTaskSourceStatus.Succeeded : ValueTaskSourceStatus.Faulted;

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        UserToken = state;
        Action<object?>? previous = Interlocked.CompareExchange(ref _continuation, continuation, null);
        if (ReferenceEquals(previous, s_completed))
        {
            UserToken = null; // completed meanwhile: run it now, off this stack
            ThreadPool.UnsafeQueueUserWorkItem(continuation, state, preferLocal: true);
        }
    }
}
