/* ---- fork: the unwinder's walks, the gate, NativeHeap's locks, then the boot allocator's ----
 * In that order because NativeHeap's prepare may still allocate (from boot), and the
 * unwinder's prepare waits for the stack captures inside dl_iterate_phdr to end (unwind.h):
 * one may wait for the loader lock of a thread in dlopen whose first malloc would wait at a
 * closed gate. Registered by start(), so only once the runtime runs. */
#include "nh_internal.h"

static void fork_prepare(void)
{
    nh_unwind_fork_prepare();
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
    nh_unwind_fork_parent();
}

static void fork_child(void)
{
    nh_unwind_fork_child();
    boot_lock = 0;
    gate_users = 0; /* the threads that were waiting at the gate are not in the child */
    gate_closed = 0;
    if (can_enter()) {
        tstate |= INSIDE;
        nhm_fork_child(TS);
        tstate &= ~INSIDE;
    }
}
