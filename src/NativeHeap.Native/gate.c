/* ---- The fork gate, and the thread's exit through it ----
 * The .NET runtime's GC is not fork-safe: a fork while another thread holds the GC's
 * allocation lock leaves that lock held in the child for ever. NativeHeap allocates managed
 * objects only in the process's first call (its options) and in the rare calls (mallopt,
 * malloc_stats, malloc_info, malloc_trim, mallinfo); a thread's first call attaches the thread
 * to the runtime. Those pass a gate that fork closes until no such call is in progress.
 * gate_users counts the passes held: one per thread with GATED or EXIT_GATED. */
#include "nh_internal.h"

static pthread_key_t exit_gate_key; /* made by start(), after the runtime's own keys */
static int gate_users, gate_closed;

static void gate_pass(void)
{
    for (;;) {
        while (__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) sched_yield();
        __atomic_fetch_add(&gate_users, 1, __ATOMIC_ACQ_REL);
        if (!__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) return;
        __atomic_fetch_sub(&gate_users, 1, __ATOMIC_ACQ_REL);
    }
}

/* fork_prepare's: waits out the passes held; the fork handlers reopen it. */
static void gate_close(void)
{
    while (__atomic_exchange_n(&gate_closed, 1, __ATOMIC_ACQ_REL)) sched_yield();
    while (__atomic_load_n(&gate_users, __ATOMIC_ACQUIRE) != 0) sched_yield();
}

/* A thread's exit passes the gate too, from here until the runtime has detached the thread:
 * that detach takes the runtime's thread-store lock, and a fork meanwhile left it held in the
 * child, whose next new thread then hung attaching. The detach is a pthread key destructor of
 * the runtime's; those run after this hook (a __cxa_thread_atexit_impl destructor, registered
 * by leave), in the order the keys were made, and start() makes exit_gate_key after the
 * runtime has made its own, so exit_gate_release comes after it. */
static void thread_exit_hook(void *unused)
{
    (void)unused;
    NH_ASSERT((tstate & (INSIDE | GATED | HOOKED | EXITING | RUNTIME | EXIT_GATE | EXIT_GATED)) == (HOOKED | EXIT_GATE));
    gate_pass();
    tstate |= EXIT_GATED;
    if (can_enter()) {
        tstate |= INSIDE;
        nhm_thread_exit(TS);
    }
    tstate = EXITING | HOOKED | EXIT_GATE | EXIT_GATED;
}

static void exit_gate_release(void *unused)
{
    (void)unused;
    if (tstate & EXIT_GATED) {
        tstate &= ~EXIT_GATED;
        int users = __atomic_fetch_sub(&gate_users, 1, __ATOMIC_ACQ_REL);
        NH_ASSERT(users > 0);
    }
}
