/*
 * The C view of the layout libnativeheap's C fast paths share with the managed allocator
 * (src/NativeHeap.Native/nativeheap-managed.h), one "name value" line each.
 * NativeAbiLayoutTests prints the managed view the same way and compares the two.
 */
#include <stdio.h>
#include "nativeheap-managed.h"

#define LINE(name, value) printf("%s %zu\n", name, (size_t)(value))

int main(void)
{
    LINE("tcache.counts", offsetof(struct nhm_tcache, counts));
    LINE("tcache.entries", offsetof(struct nhm_tcache, entries));
    LINE("tcache.bytes", offsetof(struct nhm_tcache, bytes));
    LINE("tcache.bins", NHM_TCACHE_BINS);
    LINE("tcache_entry.next", offsetof(struct nhm_tcache_entry, next));
    LINE("tcache_entry.key", offsetof(struct nhm_tcache_entry, key));
    LINE("tcache_entry.size", sizeof(struct nhm_tcache_entry));
    LINE("fast_path.request_limit", offsetof(struct nhm_fast_path, request_limit));
    LINE("fast_path.bins", offsetof(struct nhm_fast_path, bins));
    LINE("fast_path.count", offsetof(struct nhm_fast_path, count));
    LINE("fast_path.bytes", offsetof(struct nhm_fast_path, bytes));
    LINE("fast_path.key", offsetof(struct nhm_fast_path, key));
    LINE("fast_path.heap_slots", offsetof(struct nhm_fast_path, heap_slots));
    LINE("fast_path.calloc_tcache", offsetof(struct nhm_fast_path, calloc_tcache));
    LINE("fast_path.debug", offsetof(struct nhm_fast_path, debug));
    LINE("fast_path.debug_key", offsetof(struct nhm_fast_path, debug_key));
    LINE("fast_path.size", sizeof(struct nhm_fast_path));
    LINE("thread_locals.tcache", offsetof(struct nhm_thread_locals, tcache));
    LINE("thread_locals.debug_stack", offsetof(struct nhm_thread_locals, debug_stack));
    LINE("debug.stack_depth", NHM_DEBUG_STACK_DEPTH);
    /* The guard pages' table (guard.h's struct nhg_slot, DebugGuard.Slot). */
    LINE("guard_slot.start", offsetof(struct nhg_slot, start));
    LINE("guard_slot.length", offsetof(struct nhg_slot, length));
    LINE("guard_slot.user", offsetof(struct nhg_slot, user));
    LINE("guard_slot.asked", offsetof(struct nhg_slot, asked));
    LINE("guard_slot.state", offsetof(struct nhg_slot, state));
    LINE("guard_slot.alloc_stack", offsetof(struct nhg_slot, alloc_stack));
    LINE("guard_slot.free_stack", offsetof(struct nhg_slot, free_stack));
    LINE("guard_slot.alloc_text", offsetof(struct nhg_slot, alloc_text));
    LINE("guard_slot.free_text", offsetof(struct nhg_slot, free_text));
    LINE("guard_slot.size", sizeof(struct nhg_slot));
    LINE("guard_slot.live", NHG_LIVE);
    LINE("guard_slot.freed", NHG_FREED);
    LINE("chunk.header", NHM_CHUNK_HEADER);
    LINE("chunk.size_word", NHM_SIZE_WORD);
    LINE("chunk.prev_inuse", NHM_PREV_INUSE);
    LINE("chunk.is_mmapped", NHM_IS_MMAPPED);
    LINE("chunk.non_main_arena", NHM_NON_MAIN_ARENA);
    LINE("chunk.size_bits", NHM_SIZE_BITS);
    LINE("chunk.unaligned_size_bit", NHM_UNALIGNED_SIZE_BIT);
    LINE("chunk.min", NHM_MIN_CHUNK);
    /* Each bin's chunk size and the largest request it serves. */
    for (size_t idx = 0, request = 0; idx < NHM_TCACHE_BINS; idx++) {
        while (nhm_tcache_index(request + 1) == idx) request++;
        printf("bin.%zu %zu %zu\n", idx, nhm_tcache_chunk_size(idx), request);
    }
    LINE("slot_shift", NHM_SLOT_SHIFT);
    LINE("slots", NHM_SLOTS);
    return 0;
}
