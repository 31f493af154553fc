/* The allocator's managed entry points (Exports.cs, [UnmanagedCallersOnly]), called only by
 * the C layer (nativeheap.c), which guards them: C semantics (errno, abort on corruption) are
 * the managed side's; who may enter, and when, is the C layer's. ts is the calling thread's
 * allocator state (its tcache and arena), which the C layer keeps in a thread-local of its own
 * so that the managed side needs no thread static (and no GC allocation) per C thread. */
#ifndef NATIVEHEAP_MANAGED_H
#define NATIVEHEAP_MANAGED_H

#include <malloc.h>
#include <stddef.h>
#include <stdio.h>

size_t nhm_start(void); /* returns the size of the state behind ts */
void *nhm_malloc(void *ts, size_t size);
void nhm_free(void *ts, void *ptr);
void *nhm_calloc(void *ts, size_t count, size_t size);
void *nhm_realloc(void *ts, void *ptr, size_t size);
void *nhm_memalign(void *ts, size_t alignment, size_t size);
int nhm_posix_memalign(void *ts, void **result, size_t alignment, size_t size);
void *nhm_aligned_alloc(void *ts, size_t alignment, size_t size);
void *nhm_valloc(void *ts, size_t size);
void *nhm_pvalloc(void *ts, size_t size);
size_t nhm_malloc_usable_size(void *ptr);
int nhm_malloc_trim(void *ts, size_t pad);
int nhm_mallopt(void *ts, int param, int value);
struct mallinfo2 nhm_mallinfo2(void);
void nhm_malloc_stats(void);
int nhm_malloc_info(int options, FILE *stream);
void nhm_thread_exit(void *ts);
void nhm_fork_prepare(void);
void nhm_fork_parent(void);
void nhm_fork_child(void *ts);

#endif
