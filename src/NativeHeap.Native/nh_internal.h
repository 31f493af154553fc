/* The C layer's shared state and the rules for changing it. Every part of the layer is one
 * translation unit (nativeheap.c includes them in order), so these are static and the fast
 * paths inline into the entry points. */
#ifndef NH_INTERNAL_H
#define NH_INTERNAL_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nativeheap.h"
#include "nativeheap-managed.h"

#define EXPORT __attribute__((visibility("default")))
#define TLS __thread __attribute__((tls_model("initial-exec")))

/* Checks the state transitions below in a Debug build (-DNH_DEBUG, the csproj's Debug
 * configuration); a Release build compiles them out and never evaluates the condition. */
#ifdef NH_DEBUG
#define NH_ASSERT(cond) ((cond) ? (void)0 : nh_assert_fail(#cond, __FILE__, __LINE__))
/* write(2), not stdio: stdio may malloc, and the failure may be inside malloc. */
__attribute__((noreturn, cold)) static void nh_assert_fail(const char *cond, const char *file, int line)
{
    char digits[12], *d = digits + sizeof digits;
    do *--d = (char)('0' + line % 10);
    while ((line /= 10) != 0);
    const char *parts[] = {"nativeheap: ", file, ":", NULL, ": assertion failed: ", cond, "\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        const char *s = parts[i] != NULL ? parts[i] : d;
        size_t n = parts[i] != NULL ? strlen(s) : (size_t)(digits + sizeof digits - d);
        (void)!write(2, s, n);
    }
    abort();
}
#else
#define NH_ASSERT(cond) ((void)sizeof(cond))
#endif

/* ---- The process: state, COLD -> STARTING -> READY, never back ----
 *   COLD -> STARTING  start(), by the one caller whose compare-exchange wins
 *   STARTING -> READY start(), once the runtime has started and the hooks are registered
 * The runtime starts at the first call that needs it, not before: a program that never
 * allocates (/bin/true) never pays for it. Preloaded, not before libnativeheap-preload.so's
 * constructor has allowed it (nh_start sets start_allowed, 0 -> 1): calls made while other
 * libraries start, before this one's runtime has run its own static constructors, must not
 * start it. A call that meets COLD (not allowed yet) or STARTING goes to boot. */
enum { COLD, STARTING, READY };
static int state;
static int start_allowed;
extern const int nh_preload_marker __attribute__((weak)); /* defined by libnativeheap-preload.so */

/* ---- The thread: tstate, zero in a new thread; a fork child's keeps its parent thread's ----
 * flag        set by                          cleared by                  set only
 * INSIDE      enter_gated, start, the fork    leave, start, the fork      when clear: calls do not nest (the
 *             handlers, thread_exit_hook:     handlers; thread_exit_hook  runtime's own mallocs meanwhile go
 *             around an nhm_* call            (overwrites tstate)         to boot)
 * GATED       enter_gated, holding a pass of  leave, giving the pass back when clear, with INSIDE
 *             the fork gate (gate_users)
 * HOOKED      leave, at the thread's first    never                       once: thread_exit_hook registered
 *             call
 * EXIT_GATE   enter_gated, at the thread's    never                       once: exit_gate_release will run at
 *             first call                                                  the thread's exit
 * EXIT_GATED  thread_exit_hook, holding a     exit_gate_release, giving   once, with HOOKED and EXIT_GATE,
 *             pass of the fork gate           the pass back               never INSIDE
 * EXITING     thread_exit_hook, at its end    never                       once; no call enters after it
 * RUNTIME     runtime_thread_start            never                       alone, first thing in a runtime thread
 * A call enters only with none of INSIDE, EXITING, RUNTIME (can_enter). NH_ASSERT checks the
 * rest where a flag changes. */
enum { INSIDE = 1, EXITING = 2, HOOKED = 4, GATED = 8, RUNTIME = 16, EXIT_GATE = 32, EXIT_GATED = 64 };
static TLS int tstate;

/* The thread's allocator state (the managed ThreadLocals: its tcache and arena), given to every
 * call that needs it. It lives here, not in a managed thread static: those are GC objects,
 * and a C thread that made one left it, and its allocation context, in gen 0 until the next
 * collection, so short-lived threads kept the whole gen 0 budget resident. Zero in each new thread. */
#define THREAD_LOCALS_SIZE 64
static TLS _Alignas(16) unsigned char thread_locals[THREAD_LOCALS_SIZE];
#define TS ((void *)thread_locals)

/* ---- What each part gives the others ---- */

/* start.c */
static void start(void);
/* enter.c */
static inline int can_enter(void);
/* boot.c */
static void boot_die(const char *message);
/* gate.c (which also defines exit_gate_key, used by enter.c and start.c) */
static void gate_pass(void);
static void thread_exit_hook(void *unused);
static void exit_gate_release(void *unused);

#endif
