/*
 * The stack depot: call stacks captured by the debug heap, each kept once, named by a 32-bit
 * id. Built into libnativeheap-debug.so (for NativeHeap under .NET's JIT) and into
 * libnativeheap.so (whose C layer hands the two functions to the managed side at start).
 *
 * Memory: one mapping made at the first capture (MAP_NORESERVE; pages are touched as used):
 * 64 MiB of frames, ids up to 2^20 - 1 (4 MiB of offsets) and an 8 MiB hash table of ids.
 * When the frames or the ids run out, a capture returns 0; earlier ids stay valid.
 * No lock: a new stack is written to space taken by an atomic add, then published by a
 * compare-and-swap into the table, so fork or a signal can leave nothing held. Two threads
 * adding the same new stack at once may both write it; one id goes in the table, the other
 * stays valid (its frames are the same) but is not returned again.
 * Nothing here calls malloc (the unwinder is built with NH_UNWIND_NO_MALLOC), and errno is
 * kept. Capturing is safe with glibc's loader lock held (malloc inside dlopen): unwind.h.
 */
#ifndef NH_STACKDEPOT_H
#define NH_STACKDEPOT_H

#include <stdint.h>

#ifndef NHD_API
#define NHD_API __attribute__((visibility("default")))
#endif

/** Frames kept per stack at most; a larger depth is cut to it. */
#define NHD_MAX_DEPTH 64

/**
 * The calling thread's stack: skip return addresses dropped after the capture's own frame (0:
 * the first is the one into the caller of nhd_stack_capture), then up to depth (at most
 * NHD_MAX_DEPTH). Returns the stack's id (> 0; the same stack, the same id), or 0 when no
 * stack could be taken (depth 0, a thread whose stack bounds are unknown, the depot starting
 * on another thread at that moment) or the depot is full.
 */
NHD_API uint32_t nhd_stack_capture(uint32_t skip, uint32_t depth);

/**
 * Copies at most max of stack id's return addresses, innermost first, to out. Returns how
 * many it copied: 0 for an unknown id (or max <= 0).
 */
NHD_API int32_t nhd_stack_frames(uint32_t id, uintptr_t *out, int32_t max);

#endif
