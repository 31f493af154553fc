/* libnativeheap: NativeHeap (glibc 2.36's ptmalloc2 in C#, compiled by NativeAOT) beside
 * the process's own malloc. Link with -lnativeheap; every function is glibc's of the same
 * name without the nh_ prefix, on NativeHeap's own heap:
 *   - failures return NULL (or an error number) with errno ENOMEM, EINVAL for a bad alignment;
 *   - calls that succeed, and nh_free, leave errno as it was;
 *   - a corrupted heap, a double free or a foreign pointer prints glibc's message on stderr
 *     and aborts, as glibc does;
 *   - NATIVEHEAP_TUNABLES (glibc's malloc tunable names) is read at the first call.
 * Blocks from nh_* must go back through nh_free, never through free, and the reverse.
 * libnativeheap-preload.so provides the same functions under glibc's names for LD_PRELOAD. */
#ifndef NATIVEHEAP_H
#define NATIVEHEAP_H

#include <malloc.h> /* struct mallinfo2, the M_* mallopt parameters */
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

void *nh_malloc(size_t size);
void nh_free(void *ptr);
void *nh_calloc(size_t count, size_t size);
void *nh_realloc(void *ptr, size_t size);
void *nh_reallocarray(void *ptr, size_t count, size_t size);
/* As glibc 2.36: an alignment that is not a power of two is raised to one (memalign and
 * aligned_alloc alike); one above SIZE_MAX/2+1 fails with EINVAL. */
void *nh_memalign(size_t alignment, size_t size);
int nh_posix_memalign(void **result, size_t alignment, size_t size);
void *nh_aligned_alloc(size_t alignment, size_t size);
void *nh_valloc(size_t size);
void *nh_pvalloc(size_t size);
size_t nh_malloc_usable_size(void *ptr);
int nh_malloc_trim(size_t pad);
/* glibc's M_* parameters, and NativeHeap's own (HeapOption's ids; README lists what each does): */
#define NH_M_TCACHE_COUNT 100
#define NH_M_TCACHE_MAX 101
#define NH_M_TCACHE_UNSORTED_LIMIT 102
#define NH_M_USE_BRK 103
#define NH_M_FAIL_FAST 104
#define NH_M_PROFILE 105
#define NH_M_TCACHE_BYTES 106
#define NH_M_CALLOC_TCACHE 107
#define NH_M_TRIM_TCACHE 108
#define NH_M_PURGE_DELAY 109
#define NH_M_TCACHE_FLUSH 110
#define NH_M_REALLOC_IN_PLACE 111
#define NH_M_MEMALIGN_TCACHE 112
#define NH_M_DEBUG 113
#define NH_M_QUARANTINE_BYTES 114
#define NH_M_GUARD_SAMPLE 115
int nh_mallopt(int param, int value);
struct mallinfo2 nh_mallinfo2(void);
void nh_malloc_stats(void);
int nh_malloc_info(int options, FILE *stream);
/* Give the calling thread's tcache and arena back now. Done for every thread when it
 * exits; a thread that calls nh_* again afterwards gets a new tcache. */
void nh_thread_exit(void);

#ifdef __cplusplus
}
#endif

#endif
