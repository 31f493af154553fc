/* ---- A call's way in and out of NativeHeap: can_enter, enter, leave ----
 * Every entry point asks can_enter (else it uses boot.c or deferred.c), then brackets its
 * nhm_* call with enter and leave, which keep tstate's INSIDE, GATED, HOOKED and EXIT_GATE
 * as nh_internal.h states. */
#include "nh_internal.h"

extern void *__dso_handle;
extern int __cxa_thread_atexit_impl(void (*fn)(void *), void *arg, void *dso);

/* Whether this call may enter; the first that may start the runtime starts it (nh_internal.h). */
static inline int can_enter(void)
{
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (__builtin_expect(s != READY, 0)) {
        if (s != COLD || (&nh_preload_marker != NULL && !__atomic_load_n(&start_allowed, __ATOMIC_ACQUIRE))
            || (tstate & (INSIDE | RUNTIME)))
            return 0;
        start();
        if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != READY) return 0;
    }
    return (tstate & (INSIDE | EXITING | RUNTIME)) == 0;
}

/* rare: a call that allocates managed objects, which passes the fork gate (gate.c) as a
 * thread's first call does. */
static inline void enter_gated(int rare)
{
    NH_ASSERT((tstate & (INSIDE | GATED | EXITING | RUNTIME)) == 0);
    if (__builtin_expect(rare || !(tstate & HOOKED), 0)) {
        gate_pass();
        tstate |= GATED | INSIDE; /* INSIDE: a malloc from pthread_setspecific goes to boot */
        if (!(tstate & EXIT_GATE)) {
            tstate |= EXIT_GATE;
            pthread_setspecific(exit_gate_key, &exit_gate_key); /* exit_gate_release at exit */
        }
    }
    tstate |= INSIDE;
    free_deferred();
}

static inline void enter(void) { enter_gated(0); }

static inline void leave(void)
{
    NH_ASSERT(tstate & INSIDE);
    tstate &= ~INSIDE;
    if (__builtin_expect(tstate & GATED, 0)) {
        tstate &= ~GATED;
        int users = __atomic_fetch_sub(&gate_users, 1, __ATOMIC_ACQ_REL);
        NH_ASSERT(users > 0);
    }
    if (__builtin_expect(!(tstate & HOOKED), 0)) {
        /* After the thread's first call, so after the runtime attached the thread: this hook
         * runs before the runtime's own, which detaches it. */
        tstate |= HOOKED;
        __cxa_thread_atexit_impl(thread_exit_hook, NULL, &__dso_handle);
    }
}
