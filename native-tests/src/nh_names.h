/*
 * Build a program written for glibc's malloc against libnativeheap instead:
 *   gcc -include src/nh_names.h -I$NH/include ... -L$NH -lnativeheap
 * Every malloc-family call becomes its nh_ twin (function-like macros: struct mallinfo2
 * stays). libnativeheap's runtime starts here, before main (nh_start), so that the
 * runtime's own start-up (which mallocs from glibc) does not move the break mid-program.
 */
#ifndef NH_NAMES_H
#define NH_NAMES_H

#define _GNU_SOURCE /* included first: the programs' own feature macro comes too late */

#include <nativeheap.h>
#include <stdlib.h>

void nh_start(void); /* libnativeheap's, not in nativeheap.h: starts the runtime */
__attribute__((constructor)) static void nh_names_start(void) { nh_start(); }

#define malloc(...) nh_malloc(__VA_ARGS__)
#define free(...) nh_free(__VA_ARGS__)
#define calloc(...) nh_calloc(__VA_ARGS__)
#define realloc(...) nh_realloc(__VA_ARGS__)
#define reallocarray(...) nh_reallocarray(__VA_ARGS__)
#define memalign(...) nh_memalign(__VA_ARGS__)
#define posix_memalign(...) nh_posix_memalign(__VA_ARGS__)
#define aligned_alloc(...) nh_aligned_alloc(__VA_ARGS__)
#define valloc(...) nh_valloc(__VA_ARGS__)
#define pvalloc(...) nh_pvalloc(__VA_ARGS__)
#define malloc_usable_size(...) nh_malloc_usable_size(__VA_ARGS__)
#define malloc_trim(...) nh_malloc_trim(__VA_ARGS__)
#define mallopt(...) nh_mallopt(__VA_ARGS__)
#define mallinfo2(...) nh_mallinfo2(__VA_ARGS__)
#define malloc_stats(...) nh_malloc_stats(__VA_ARGS__)
#define malloc_info(...) nh_malloc_info(__VA_ARGS__)

#endif
