namespace NativeHeap.Tests;

/// <summary>The traits CI's filters select tests by.</summary>
internal static class Traits
{
    /// <summary>The trait's name.</summary>
    internal const string Category = "Category";

    /// <summary>
    /// The allocator's own tests, which .ci/run runs a second time in Debug (where Debug.Assert
    /// checks glibc's assertions) with <c>--filter "Category=Allocator"</c>. Every test class of
    /// the allocator's folders carries it: <see cref="DebugPassTests"/> fails on one that does not.
    /// </summary>
    internal const string Allocator = "Allocator";

    /// <summary>
    /// The trait <c>Pass</c> = <see cref="ReleaseOnly"/>: an allocator test whose time is spent
    /// waiting (an idle timer), not in the allocator, which the Debug pass leaves out with
    /// <c>Pass!=ReleaseOnly</c> to keep CI within its time; the Release pass runs it.
    /// </summary>
    internal const string Pass = "Pass";
    internal const string ReleaseOnly = "ReleaseOnly";
}
