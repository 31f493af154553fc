/* The allocator's managed entry points (Exports.cs, [UnmanagedCallersOnly]), called only by
 * the C layer (nativeheap.c), which guards them: C semantics (errno, abort on corruption) are
 * the managed side's; who may enter, and when, is the C layer's. */
#ifndef NATIVEHEAP_MANAGED_H
#define NATIVEHEAP_MANAGED_H

#include <malloc.h>
#include <stddef.h>
#include <stdio.h>

void nhm_start(void);
void *nhm_malloc(size_t size);
void nhm_free(void *ptr);
void *nhm_calloc(size_t count, size_t size);
void *nhm_realloc(void *ptr, size_t size);
void *nhm_memalign(size_t alignment, size_t size);
int nhm_posix_memalign(void **result, size_t alignment, size_t size);
void *nhm_aligned_alloc(size_t alignment, size_t size);
void *nhm_valloc(size_t size);
void *nhm_pvalloc(size_t size);
size_t nhm_malloc_usable_size(void *ptr);
int nhm_malloc_trim(size_t pad);
int nhm_mallopt(int param, int value);
struct mallinfo2 nhm_mallinfo2(void);
void nhm_malloc_stats(void);
int nhm_malloc_info(int options, FILE *stream);
void nhm_thread_exit(void);
void nhm_fork_prepare(void);
void nhm_fork_parent(void);
void nhm_fork_child(void);

#endif
