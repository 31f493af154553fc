/*
 * The debug heap's guard pages (guard_sample=N): the fault handler that names the block a
 * fault hit. The blocks are made and freed by the managed side (Debugging/DebugGuard.cs),
 * which writes one struct nhg_slot per guarded mapping into a table it owns and hands the
 * table here once, with nhg_install. Built into libnativeheap.so (C callers) and into
 * libnativeheap-debug.so (a .NET process's, which NativeHeap loads from its package).
 *
 * The handler takes SIGSEGV first: a fault inside a table slot's mapping is reported on
 * stderr (the words, the block, its stacks), then the handler that was there before (the
 * .NET runtime's, or the default) gets the fault as if ours were not there, and ends the
 * process as a crash would. Every other fault goes straight to that handler.
 */
#ifndef NH_GUARD_H
#define NH_GUARD_H

#include <stdint.h>

#ifndef NHG_API
#define NHG_API __attribute__((visibility("default")))
#endif

/* One guarded block. The managed view is DebugGuard.Slot (Debugging/DebugGuard.cs): the two
 * must agree field for field (NativeAbiLayoutTests compares them). */
struct nhg_slot {
    uint64_t start;       /* the mapping, [start, start + length): its last page is the guard */
    uint64_t length;
    uint64_t user;        /* the block, right-aligned (16 bytes) against the guard page */
    uint64_t asked;       /* the size asked for */
    uint32_t state;       /* NHG_* */
    uint32_t alloc_stack; /* C callers: stack depot ids (0: none) */
    uint32_t free_stack;
    uint32_t reserved;
    uint64_t alloc_text;  /* .NET callers: the stack as report lines, NUL-terminated UTF-8 (0: none) */
    uint64_t free_text;
};

enum { NHG_EMPTY = 0, NHG_LIVE = 1, NHG_FREED = 2 };

/* C callers' stacks: writes stack id's lines (id 0: the faulting thread's stack from pc, sp,
 * bp) into out; returns the bytes written, or a negative number when it cannot. */
typedef int32_t (*nhg_stack_text_fn)(uint32_t id, uintptr_t pc, uintptr_t sp, uintptr_t bp, char *out, int32_t capacity);

/*
 * Installs the handler (once; later calls change the table) over table[0 .. capacity).
 * stack_text may be NULL (then the slots' texts are used). Returns 0, or errno of sigaction.
 */
NHG_API int32_t nhg_install(struct nhg_slot *table, uint64_t capacity, nhg_stack_text_fn stack_text);

#endif
