/* ---- fork: the gate, NativeHeap's locks, then the boot allocator's ----
 * In that order because NativeHeap's prepare may still allocate (from boot). Registered by
 * start(), so only once the runtime runs. */
#include "nh_internal.h"

static void fork_prepare(void)
{
    gate_close();
    if (can_enter()) {
        tstate |= INSIDE;
        nhm_fork_prepare();
        tstate &= ~INSIDE;
    }
    boot_acquire();
}

static void fork_parent(void)
{
    boot_release();
    __atomic_store_n(&gate_closed, 0, __ATOMIC_RELEASE);
    if (can_enter()) {
        tstate |= INSIDE;
        nhm_fork_parent();
        tstate &= ~INSIDE;
    }
}

static void fork_child(void)
{
    boot_lock = 0;
    gate_users = 0; /* the threads that were waiting at the gate are not in the child */
    gate_closed = 0;
    if (can_enter()) {
        tstate |= INSIDE;
        nhm_fork_child(TS);
        tstate &= ~INSIDE;
    }
}
