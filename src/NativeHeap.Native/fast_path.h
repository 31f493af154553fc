/* ---- The fast paths: a tcache hit and a free into a bin with room, without entering .NET ----
 * The managed fast paths' steps and checks (Heap.Calls.cs: TcacheGetFast, TcachePutFast,
 * CallocFast; Tcache.Put and Tcache.Take), on the tcache the managed side made for this
 * thread, in nativeheap-managed.h's layout. Inlined into the entry points (abi.c).
 * Invariants:
 * - TCACHE is this thread's own tcache or null: the managed side sets it when it makes the
 *   tcache and clears it when it gives it back at thread exit; a fork child keeps it, as glibc's.
 * - `fast` is the managed side's copy of the options (Heap.FastPath), refreshed on every option
 *   change after the bins are drained; request_limit is written last, 0 turns both paths off.
 * - Not while this thread is INSIDE a NativeHeap call: the runtime's own mallocs then must not
 *   touch a tcache being changed.
 * - Anything unusual (a bad entry, a chunk not in a heap, a possible double free) returns
 *   "no" and enters .NET, which reports it: these paths never fail a call themselves. */
#ifndef NH_FAST_PATH_H
#define NH_FAST_PATH_H

#include "nh_internal.h"

static struct nhm_fast_path fast; /* kept current by the managed side (Heap.FastPath) */

#define TCACHE (((struct nhm_thread_locals *)thread_locals)->tcache)

static inline struct nhm_tcache_entry *reveal(struct nhm_tcache_entry **pos)
{
    return (struct nhm_tcache_entry *)(((uintptr_t)pos >> 12) ^ (uintptr_t)*pos);
}

/* Whether chunk p is in one of the heaps' 64 MiB slots (Ownership.HoldsHeapSlot): before any header is read. */
static inline int in_heap_slot(const void *p)
{
    const uint64_t *slots = fast.heap_slots;
    uintptr_t slot = (uintptr_t)p >> NHM_SLOT_SHIFT;
    return slots != NULL && slot < NHM_SLOTS && ((slots[slot >> 6] >> (slot & 63)) & 1) != 0;
}

static inline void *tcache_get_fast(size_t size)
{
    struct nhm_tcache *tc = TCACHE;
    if (__builtin_expect(tc == NULL || size >= __atomic_load_n(&fast.request_limit, __ATOMIC_ACQUIRE) || (tstate & INSIDE), 0))
        return NULL;
    size_t idx = nhm_tcache_index(size);
    if (tc->counts[idx] == 0) return NULL;
    struct nhm_tcache_entry *e = tc->entries[idx];
    if ((uintptr_t)e & 15) return NULL; /* "malloc(): unaligned tcache chunk detected", said by .NET */
    tc->entries[idx] = reveal(&e->next);
    tc->counts[idx]--;
    tc->bytes -= nhm_tcache_chunk_size(idx);
    e->key = 0;
    return e;
}

static inline int tcache_put_fast(void *ptr)
{
    struct nhm_tcache *tc = TCACHE;
    char *p = (char *)ptr - NHM_CHUNK_HEADER;
    if (tc == NULL || __atomic_load_n(&fast.request_limit, __ATOMIC_ACQUIRE) == 0 || (tstate & INSIDE)
        || ((uintptr_t)p & 15) != 0 || !in_heap_slot(p))
        return 0;
    size_t head = ((size_t *)p)[NHM_SIZE_WORD];
    size_t idx = (head - NHM_MIN_CHUNK) >> 4; /* huge when the size is below MINSIZE */
    if (idx >= fast.bins || (head & (NHM_IS_MMAPPED | NHM_UNALIGNED_SIZE_BIT)) != 0
        || tc->counts[idx] >= fast.count || tc->bytes + nhm_tcache_chunk_size(idx) > fast.bytes)
        return 0;
    struct nhm_tcache_entry *e = ptr;
    if (e->key == fast.key) return 0; /* maybe a double free: .NET walks the bin */
    e->key = fast.key;
    e->next = (struct nhm_tcache_entry *)(((uintptr_t)&e->next >> 12) ^ (uintptr_t)tc->entries[idx]);
    tc->entries[idx] = e;
    tc->counts[idx]++;
    tc->bytes += nhm_tcache_chunk_size(idx);
    return 1;
}

#endif
