/* ---- The runtime's own threads (the finalizer): they never enter ----
 * libnativeheap.so is linked with --wrap=pthread_create, so this sees exactly the threads the
 * runtime inside it creates, and no one else's; their calls all go to boot. */
#include "nh_internal.h"

extern int __real_pthread_create(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

struct runtime_start {
    void *(*fn)(void *);
    void *arg;
};

static void *runtime_thread_start(void *p)
{
    struct runtime_start start = *(struct runtime_start *)p;
    boot_free(p);
    NH_ASSERT(tstate == 0);
    tstate = RUNTIME;
    block_process_signals();
    return start.fn(start.arg);
}

int __wrap_pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    struct runtime_start *start = boot_alloc(sizeof *start, 16);
    if (start == NULL) return EAGAIN;
    start->fn = fn;
    start->arg = arg;
    int r = __real_pthread_create(thread, attr, runtime_thread_start, start);
    if (r != 0) boot_free(start);
    return r;
}
