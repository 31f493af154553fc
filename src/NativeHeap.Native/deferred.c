/* ---- Deferred frees: NativeHeap blocks freed while no call could enter ----
 * A free that cannot enter (see boot.c for when) pushes the block here, lock-free; the next
 * call that enters frees the whole list (enter.c). */
#include "nh_internal.h"

static void *deferred;

/* A NativeHeap chunk's usable size from its header (glibc's layout), without calling in. */
static size_t chunk_usable(void *p)
{
    size_t head = ((size_t *)p)[-1];
    if (__atomic_load_n(&fast.debug, __ATOMIC_RELAXED)) /* a debug block: its size word, the size asked (Debugging/DebugBlock) */
        return (size_t)((head ^ fast.debug_key) & 0xFFFFFFFFFFFFull);
    return (head & ~(size_t)NHM_SIZE_BITS) - ((head & NHM_IS_MMAPPED) ? 2 : 1) * sizeof(size_t);
}

static void defer_free(void *p)
{
    void *old = __atomic_load_n(&deferred, __ATOMIC_RELAXED);
    do *(void **)p = old;
    while (!__atomic_compare_exchange_n(&deferred, &old, p, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/* Called INSIDE, by the thread that just entered. */
static inline void free_deferred(void)
{
    if (__builtin_expect(__atomic_load_n(&deferred, __ATOMIC_RELAXED) != NULL, 0)) {
        void *list = __atomic_exchange_n(&deferred, NULL, __ATOMIC_ACQUIRE);
        while (list != NULL) {
            void *next = *(void **)list;
            nhm_free(TS, list);
            list = next;
        }
    }
}
