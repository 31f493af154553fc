/* ---- Starting the runtime: COLD -> STARTING -> READY ---- */
#include "nh_internal.h"

static void start(void)
{
    int expected = COLD;
    if (!__atomic_compare_exchange_n(&state, &expected, STARTING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return;
    NH_ASSERT((tstate & (INSIDE | RUNTIME)) == 0);
    int saved_errno = errno; /* started inside the program's first call, whose errno is the program's */
    struct sigaction before[SIGRTMIN];
    save_signal_handlers(before);
    tstate |= INSIDE;
    size_t need = nhm_start(&fast); /* starts the runtime; its own mallocs, if they come back here, go to boot */
    nhm_debug_stacks(nhd_stack_capture, nhd_stack_frames, format_stack, nhg_install, guard_stack_text);
    if (need > THREAD_LOCALS_SIZE) boot_die("nativeheap: the thread state does not fit its C thread-local\n");
    tstate &= ~INSIDE;
    restore_signal_handlers(before);
    pthread_key_create(&exit_gate_key, exit_gate_release); /* after the runtime's keys: see thread_exit_hook */
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    NH_ASSERT(__atomic_load_n(&state, __ATOMIC_RELAXED) == STARTING);
    __atomic_store_n(&state, READY, __ATOMIC_RELEASE);
    errno = saved_errno;
}

/* Preloaded, libnativeheap-preload.so's constructor calls it once this library is initialized:
 * from then on the first call that needs the runtime starts it. Linked, it starts the runtime
 * now (nh_names.h's constructor: before main, so that the runtime's own start-up, which
 * mallocs from glibc, does not move the break in the middle of the program). */
EXPORT void nh_start(void)
{
    __atomic_store_n(&start_allowed, 1, __ATOMIC_RELEASE);
    if (&nh_preload_marker == NULL) start();
}
