/* ---- The C ABI: include/nativeheap.h's nh_* functions ----
 * Each serves what it can without entering .NET (fast_path.h), then enters if it may
 * (enter.c), else makes do with the boot allocator or the deferred list. */
#include "nh_internal.h"
#include "fast_path.h"

/* The debug heap's stack of this call, captured before entering .NET (the managed side reads
 * it from the thread state, Debugging/DebugStacks.Capture) only while fast.debug, so the
 * default's calls pay one predictable test; cleared after by a plain store, not a second test. */
#define DEBUG_ENTER()                                                                   \
    do {                                                                                \
        if (__builtin_expect(__atomic_load_n(&fast.debug, __ATOMIC_RELAXED), 0))        \
            ((struct nhm_thread_locals *)thread_locals)->debug_stack =                  \
                nhd_stack_capture(0, NHM_DEBUG_STACK_DEPTH);                            \
    } while (0)
#define DEBUG_LEAVE() (((struct nhm_thread_locals *)thread_locals)->debug_stack = 0)

EXPORT void *nh_malloc(size_t size)
{
    void *hit = tcache_get_fast(size);
    if (hit != NULL) return hit;
    if (!can_enter()) return boot_alloc(size, 16);
    DEBUG_ENTER();
    enter();
    void *p = nhm_malloc(TS, size);
    leave();
    DEBUG_LEAVE();
    return p;
}

EXPORT void nh_free(void *ptr)
{
    if (ptr == NULL || tcache_put_fast(ptr)) return;
    if (is_boot(ptr)) {
        int saved = errno;
        boot_free(ptr);
        errno = saved;
        return;
    }
    if (!can_enter()) {
        defer_free(ptr);
        return;
    }
    DEBUG_ENTER();
    enter();
    nhm_free(TS, ptr);
    leave();
    DEBUG_LEAVE();
}

EXPORT void *nh_calloc(size_t count, size_t size)
{
    size_t bytes;
    int overflow = __builtin_mul_overflow(count, size, &bytes);
    if (fast.calloc_tcache && !overflow) { /* glibc 2.41's calloc from the tcache */
        void *hit = tcache_get_fast(bytes);
        if (hit != NULL) return memset(hit, 0, chunk_usable(hit)); /* all of it: the chunk held someone's data */
    }
    if (!can_enter()) {
        if (overflow) {
            errno = ENOMEM;
            return NULL;
        }
        void *p = boot_alloc(bytes, 16);
        if (p != NULL) memset(p, 0, bytes);
        return p;
    }
    DEBUG_ENTER();
    enter();
    void *p = nhm_calloc(TS, count, size);
    leave();
    DEBUG_LEAVE();
    return p;
}

/* Moves a block to a new one from malloc (the boot allocator or NativeHeap, whichever may be used now). */
static void *move_block(void *old, size_t old_usable, size_t size)
{
    void *p = nh_malloc(size);
    if (p != NULL) {
        memcpy(p, old, old_usable < size ? old_usable : size);
        nh_free(old);
    }
    return p;
}

EXPORT void *nh_realloc(void *ptr, size_t size)
{
    if (ptr != NULL && is_boot(ptr)) {
        if (size == 0) {
            boot_free(ptr);
            return NULL;
        }
        return move_block(ptr, boot_usable(ptr), size);
    }
    if (!can_enter()) {
        if (ptr == NULL) return boot_alloc(size, 16);
        if (size == 0) {
            defer_free(ptr);
            return NULL;
        }
        return move_block(ptr, chunk_usable(ptr), size);
    }
    DEBUG_ENTER();
    enter();
    void *p = nhm_realloc(TS, ptr, size);
    leave();
    DEBUG_LEAVE();
    return p;
}

EXPORT void *nh_reallocarray(void *ptr, size_t count, size_t size)
{
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return nh_realloc(ptr, bytes);
}

EXPORT void *nh_memalign(size_t alignment, size_t size)
{
    if (!can_enter()) return boot_alloc(size, alignment);
    DEBUG_ENTER();
    enter();
    void *p = nhm_memalign(TS, alignment, size);
    leave();
    DEBUG_LEAVE();
    return p;
}

EXPORT int nh_posix_memalign(void **result, size_t alignment, size_t size)
{
    if (!can_enter()) {
        if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0 || alignment == 0) return EINVAL;
        void *p = boot_alloc(size, alignment);
        if (p == NULL) return ENOMEM; /* errno ENOMEM too, as glibc and the managed path leave it */
        *result = p;
        return 0;
    }
    DEBUG_ENTER();
    enter();
    int r = nhm_posix_memalign(TS, result, alignment, size);
    leave();
    DEBUG_LEAVE();
    return r;
}

EXPORT void *nh_aligned_alloc(size_t alignment, size_t size)
{
    if (!can_enter()) return boot_alloc(size, alignment);
    DEBUG_ENTER();
    enter();
    void *p = nhm_aligned_alloc(TS, alignment, size);
    leave();
    DEBUG_LEAVE();
    return p;
}

EXPORT void *nh_valloc(size_t size)
{
    if (!can_enter()) return boot_alloc(size, (size_t)sysconf(_SC_PAGESIZE));
    DEBUG_ENTER();
    enter();
    void *p = nhm_valloc(TS, size);
    leave();
    DEBUG_LEAVE();
    return p;
}

EXPORT void *nh_pvalloc(size_t size)
{
    if (!can_enter()) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE), rounded;
        if (__builtin_add_overflow(size, page - 1, &rounded)) {
            errno = ENOMEM;
            return NULL;
        }
        return boot_alloc(rounded & ~(page - 1), page);
    }
    DEBUG_ENTER();
    enter();
    void *p = nhm_pvalloc(TS, size);
    leave();
    DEBUG_LEAVE();
    return p;
}

EXPORT size_t nh_malloc_usable_size(void *ptr)
{
    if (ptr == NULL) return 0;
    if (is_boot(ptr)) return boot_usable(ptr);
    char *p = (char *)ptr - NHM_CHUNK_HEADER;
    if (!__atomic_load_n(&fast.debug, __ATOMIC_RELAXED) && ((uintptr_t)p & 15) == 0 && in_heap_slot(p)) { /* a debug block's size is its header's */ /* a heap chunk: its header, then the next one's */
        size_t head = ((size_t *)p)[NHM_SIZE_WORD], size = head & ~(size_t)NHM_SIZE_BITS;
        if ((head & NHM_IS_MMAPPED) == 0 && size >= NHM_MIN_CHUNK && (((uintptr_t)p ^ ((uintptr_t)p + size)) >> NHM_SLOT_SHIFT) == 0)
            return (((size_t *)(p + size))[NHM_SIZE_WORD] & NHM_PREV_INUSE) ? size - 8 : 0; /* in use: glibc's musable */
    }
    if (!can_enter()) return chunk_usable(ptr);
    enter();
    size_t n = nhm_malloc_usable_size(ptr);
    leave();
    return n;
}

EXPORT int nh_malloc_trim(size_t pad)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nhm_malloc_trim(TS, pad);
    leave();
    return r;
}

EXPORT int nh_mallopt(int param, int value)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nhm_mallopt(TS, param, value);
    leave();
    return r;
}

EXPORT struct mallinfo2 nh_mallinfo2(void)
{
    struct mallinfo2 m = {0};
    if (!can_enter()) return m;
    enter_gated(1);
    m = nhm_mallinfo2();
    leave();
    return m;
}

EXPORT void nh_malloc_stats(void)
{
    if (!can_enter()) return;
    enter_gated(1);
    nhm_malloc_stats();
    leave();
}

EXPORT int nh_malloc_info(int options, FILE *stream)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nhm_malloc_info(options, stream);
    leave();
    return r;
}

EXPORT void nh_thread_exit(void)
{
    if (!can_enter()) return;
    enter();
    nhm_thread_exit(TS);
    leave();
}
