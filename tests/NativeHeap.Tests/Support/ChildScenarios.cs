using NativeHeap.Diagnostics;

namespace NativeHeap.Tests;

/// <summary>
/// Bodies run in a child process of their own (<see cref="Child.Run"/>, by name through
/// <see cref="ChildMain"/>). Each lives in a ChildScenarios.*.cs beside the test that runs it
/// and reports numbers as key=value lines, which the test asserts on; here what they share.
/// </summary>
internal static unsafe partial class ChildScenarios
{
    private static long AnonDeltaKib(Statm baseline) => ((long)Statm.Read().AnonymousBytes - (long)baseline.AnonymousBytes) / 1024;
}
