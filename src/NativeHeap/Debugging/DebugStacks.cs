namespace NativeHeap.Debugging; internal static unsafe class DebugStacks { internal static void UseNative(nint capture, nint frames) { /* stub: replaced by the integrator */ } }
