using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace NativeHeap.Lab;

/// <summary>
/// JIT-compiles NativeHeap and the lab before a measurement. The JIT mallocs from glibc's main arena on
/// the thread that first calls a method: in the middle of a measured run that allocation moves
/// the program break under a heap on the break (a foreign sbrk) and lands above glibc's own
/// blocks (pinning its top). Ahead-of-time code needs none of this, and gets none.
/// </summary>
internal static class Precompile
{
    private static int s_done;

    /// <summary>Compile every method of NativeHeap and of the lab (the replayer, the targets), once per process.</summary>
    [UnconditionalSuppressMessage("Trimming", "IL2026", Justification = "Only with a JIT; a trimmed-away method is one nobody calls.")]
    internal static void Assembly()
    {
        if (!RuntimeFeature.IsDynamicCodeCompiled || Interlocked.Exchange(ref s_done, 1) != 0) return;
        foreach (System.Type type in typeof(Heap).Assembly.GetTypes()) Type(type);
        foreach (System.Type type in typeof(Precompile).Assembly.GetTypes()) Type(type);
    }

    /// <summary>Compile every non-generic method and constructor a type declares.</summary>
    [UnconditionalSuppressMessage("Trimming", "IL2070", Justification = "Only with a JIT; a trimmed-away method is one nobody calls.")]
    internal static void Type(System.Type type)
    {
        if (!RuntimeFeature.IsDynamicCodeCompiled || type.IsGenericTypeDefinition) return;
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly;
        foreach (MethodInfo method in type.GetMethods(all))
        {
            if (method.IsAbstract || method.ContainsGenericParameters) continue;
            RuntimeHelpers.PrepareMethod(method.MethodHandle);
        }
        foreach (ConstructorInfo ctor in type.GetConstructors(all))
            RuntimeHelpers.PrepareMethod(ctor.MethodHandle);
    }
}
