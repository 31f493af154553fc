/* The allocator's managed entry points (Exports.cs, [UnmanagedCallersOnly]), called only by
 * the C layer (nativeheap.c), which guards them: C semantics (errno, abort on corruption) are
 * the managed side's; who may enter, and when, is the C layer's. ts is the calling thread's
 * allocator state (its tcache and arena), which the C layer keeps in a thread-local of its own
 * so that the managed side needs no thread static (and no GC allocation) per C thread. */
#ifndef NATIVEHEAP_MANAGED_H
#define NATIVEHEAP_MANAGED_H

#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../NativeHeap/native/guard.h"

/* ---- One layout, two readers ----
 * The C layer serves a tcache hit and a free into a tcache bin with room itself, on the
 * thread's own tcache, which the managed side made and owns. These structs are the managed
 * ones as C sees them: ThreadLocals (src/NativeHeap/Arenas/ThreadLocals.cs: the tcache
 * pointer comes first), Tcache and TcacheEntry (src/NativeHeap/Bins/Tcache.cs, glibc's
 * tcache_perthread_struct and tcache_entry) and FastPath (src/NativeHeap/Heap.cs: the copies
 * of the options the fast paths test). Each of those says so too; NativeAbiLayoutTests
 * compares the offsets and runs one sequence of calls on both sides. */
#define NHM_TCACHE_BINS 64

struct nhm_tcache_entry {
    struct nhm_tcache_entry *next; /* safe-linked: stored as (&next >> 12) ^ next */
    uint64_t key;                  /* the process's tcache key while cached */
};

struct nhm_tcache {
    uint16_t counts[NHM_TCACHE_BINS];
    struct nhm_tcache_entry *entries[NHM_TCACHE_BINS];
    size_t bytes; /* the cached chunks' sizes (tcache_bytes bounds it); the large bins follow */
};

/* ThreadLocals as far as C reads it. */
struct nhm_thread_locals {
    struct nhm_tcache *tcache; /* null until the managed side makes the tcache, and again once it is given back */
    uint32_t debug_stack;      /* debug heap: the caller's stack id, set by abi.c for the call in progress (0: none) */
};

/* The debug heap's stacks from C: return addresses kept per call, the two of libnativeheap's
 * own (nh_* and the preload's wrapper) included; at most Debugging/DebugStacks.Depth. */
#define NHM_DEBUG_STACK_DEPTH 24

/* The chunk as the fast paths read it (src/NativeHeap/Chunks/Chunk.cs): a 16-byte header whose
 * second word is the size with its flag bits, user memory after it. */
#define NHM_CHUNK_HEADER 16
#define NHM_SIZE_WORD 1   /* in words from the chunk's start */
#define NHM_PREV_INUSE 1
#define NHM_IS_MMAPPED 2
#define NHM_NON_MAIN_ARENA 4
#define NHM_SIZE_BITS (NHM_PREV_INUSE | NHM_IS_MMAPPED | NHM_NON_MAIN_ARENA)
/* Bit 3 of the size word: set only in a size that is not a multiple of 16 (MALLOC_ALIGNMENT),
 * so a header with it set holds no chunk size. Its managed twin is Chunk.UnalignedSizeBit. */
#define NHM_UNALIGNED_SIZE_BIT 8
#define NHM_MIN_CHUNK 32

/* The tcache bin of a request (csize2tidx of request2size; BinIndex.TcacheForRequest) and its chunks' size
 * (BinIndex.TcacheChunkSize). */
static inline size_t nhm_tcache_index(size_t request) { return request <= 8 ? 0 : (request + 8 + 15) / 16 - 2; }
static inline size_t nhm_tcache_chunk_size(size_t index) { return index * 16 + NHM_MIN_CHUNK; }

struct nhm_fast_path {
    size_t request_limit; /* one more than the largest request a bin serves; 0: fast paths off. Written last. */
    size_t bins;          /* tcache bins a free may use (0 in checked mode) */
    size_t count;         /* tcache_count */
    size_t bytes;         /* tcache_bytes */
    uint64_t key;         /* the tcache key */
    uint64_t *heap_slots; /* Ownership's bit per 64 MiB slot holding one of the heaps */
    int32_t calloc_tcache;
    int32_t debug;        /* the debug heap is on (Debugging/DebugHeap): sizes are .NET's to say */
    uint64_t debug_key;   /* a debug block's size word is the size asked XOR this (Debugging/DebugBlock) */
};

/* Ownership's slot: a bit per 64 MiB-aligned region (src/NativeHeap/Arenas/Ownership.cs, SlotShift). */
#define NHM_SLOT_SHIFT 26
#define NHM_SLOTS ((uint64_t)1 << (47 - NHM_SLOT_SHIFT))

/* Starts the runtime and registers fast, the C layer's copy of the fast path's values, which
 * the managed side fills (and refreshes on every option change) from then on. Returns the
 * size of the state behind ts. */
size_t nhm_start(struct nhm_fast_path *fast);
/* The stack depot's two functions (src/NativeHeap/native/stackdepot.h), the symbolizer's
 * (symbols.c), and the guard-page handler's install and its stacks (guard.h), for the debug
 * heap (Debugging/DebugStacks, StackText, DebugGuard). */
void nhm_debug_stacks(uint32_t (*capture)(uint32_t skip, uint32_t depth), int32_t (*frames)(uint32_t id, uintptr_t *out, int32_t max),
                      int32_t (*format)(const uint64_t *ips, int32_t count, char *out, int32_t capacity),
                      int32_t (*guard_install)(struct nhg_slot *table, uint64_t capacity, nhg_stack_text_fn stack_text),
                      nhg_stack_text_fn guard_stack_text);
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
