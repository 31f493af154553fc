/* libnativeheap's C layer, linked into libnativeheap.so with the allocator (NativeAOT):
 * the nh_* functions of include/nativeheap.h. NativeHeap itself is managed code (the
 * nhm_* entry points of Exports.cs) on a .NET runtime, and that runtime mallocs for itself:
 * while it starts, while it attaches a thread, in the GC. Linked beside glibc, those calls
 * go to glibc; under libnativeheap-preload.so they come back here, while a call is already
 * inside NativeHeap (or before NativeHeap can be called at all, on the runtime's own
 * threads, or after this thread's runtime state is gone), and must not go back in. They get
 * a small boot allocator; a NativeHeap block freed at such a time waits on a list and is
 * freed by the next call that can enter. This layer also owns what C needs around the
 * allocator: the thread-exit hook, fork handlers, and a gate that keeps fork out of the
 * .NET allocations a thread's first call makes.
 *
 * One translation unit of one part per mechanism, so that the fast paths and enter/leave
 * inline into the entry points and the parts share static state:
 *   nh_internal.h       the process's and the thread's state, who changes them and when
 *   fast_path.h         a tcache hit and a free into a bin with room, without entering .NET
 *   boot.c              the boot allocator
 *   deferred.c          NativeHeap blocks freed while no call could enter
 *   gate.c              the fork gate, and the thread's exit through it
 *   enter.c             a call's way in and out: can_enter, enter, leave
 *   fork.c              the fork handlers
 *   signals.c           the program's signals kept from the runtime
 *   runtime_threads.c   the runtime's own threads (--wrap=pthread_create)
 *   start.c             starting the runtime at the first call
 *   symbols.c           the debug heap's symbolizer, loaded from beside this library for a report
 *   abi.c               the exported nh_* functions
 * and the debug heap's native parts, shared with libnativeheap-debug.so (src/NativeHeap/native:
 * unwind.c, the DWARF unwinder, built without malloc; stackdepot.c; guard.c, the guard pages'
 * fault handler), not exported: start.c hands their functions, and symbols.c's, to the
 * managed side (nhm_debug_stacks). */
#define NHG_API /* nhg_install stays inside: start.c hands it over */
#include "nh_internal.h"
#include "fast_path.h"
#define NH_UNWIND_NO_MALLOC
#define NHD_API
#include "../NativeHeap/native/unwind.c"
#include "../NativeHeap/native/stackdepot.c"
#include "../NativeHeap/native/guard.c"
#include "boot.c"
#include "deferred.c"
#include "gate.c"
#include "enter.c"
#include "fork.c"
#include "signals.c"
#include "runtime_threads.c"
#include "symbols.c"
#include "start.c"
#include "abi.c"
