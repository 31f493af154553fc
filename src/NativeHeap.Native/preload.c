/* libnativeheap-preload.so: glibc's malloc names over libnativeheap.so, for LD_PRELOAD.
 * Everything else (the runtime's own mallocs coming back, thread exit, fork) is
 * libnativeheap.so's C layer (nativeheap.c); this only gives its functions glibc's names. */
#include <malloc.h>
#include <stdlib.h>

#include "nativeheap.h"

#define EXPORT __attribute__((visibility("default")))

/* Tells libnativeheap that it is preloaded: its runtime may start only once this constructor has run. */
EXPORT const int nh_preload_marker = 1;
void nh_start(void);

__attribute__((constructor)) static void preload_start(void) { nh_start(); }

EXPORT void *malloc(size_t size) { return nh_malloc(size); }
EXPORT void free(void *ptr) { nh_free(ptr); }
EXPORT void *calloc(size_t count, size_t size) { return nh_calloc(count, size); }
EXPORT void *realloc(void *ptr, size_t size) { return nh_realloc(ptr, size); }
EXPORT void *reallocarray(void *ptr, size_t count, size_t size) { return nh_reallocarray(ptr, count, size); }
EXPORT void *memalign(size_t alignment, size_t size) { return nh_memalign(alignment, size); }
EXPORT int posix_memalign(void **result, size_t alignment, size_t size) { return nh_posix_memalign(result, alignment, size); }
EXPORT void *aligned_alloc(size_t alignment, size_t size) { return nh_aligned_alloc(alignment, size); }
EXPORT void *valloc(size_t size) { return nh_valloc(size); }
EXPORT void *pvalloc(size_t size) { return nh_pvalloc(size); }
EXPORT size_t malloc_usable_size(void *ptr) { return nh_malloc_usable_size(ptr); }
EXPORT int malloc_trim(size_t pad) { return nh_malloc_trim(pad); }
EXPORT int mallopt(int param, int value) { return nh_mallopt(param, value); }
EXPORT struct mallinfo2 mallinfo2(void) { return nh_mallinfo2(); }
EXPORT void malloc_stats(void) { nh_malloc_stats(); }
EXPORT int malloc_info(int options, FILE *stream) { return nh_malloc_info(options, stream); }

/* The old interface, as glibc 2.36 keeps it: mallinfo2's figures cut to int. */
EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = nh_mallinfo2();
    struct mallinfo m = {
        .arena = (int)m2.arena, .ordblks = (int)m2.ordblks, .smblks = (int)m2.smblks,
        .hblks = (int)m2.hblks, .hblkhd = (int)m2.hblkhd, .usmblks = (int)m2.usmblks,
        .fsmblks = (int)m2.fsmblks, .uordblks = (int)m2.uordblks, .fordblks = (int)m2.fordblks,
        .keepcost = (int)m2.keepcost,
    };
    return m;
}
