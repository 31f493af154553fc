/*
 * A small x86-64 stack unwinder for code that runs inside malloc (the recorder; later the
 * allocator's C layer): self-contained C, no libunwind, no libgcc unwinder, no malloc.
 *
 * How it unwinds, frame by frame, from the caller of nh_backtrace:
 *   - the rule for a return address RA (where the caller's CFA, return address and RBP are)
 *     comes from a hash table of rules, one per RA (a cache: 4-way sets, fixed size, so a
 *     program with very many hot call sites recomputes some);
 *   - on a miss, from the DWARF CFI of the module holding RA - 1: its PT_GNU_EH_FRAME
 *     (.eh_frame_hdr) table, binary-searched for the FDE, whose CIE and FDE instructions are
 *     run up to RA - 1. Understood: what gcc and clang emit on x86-64 (advance_loc*, def_cfa*,
 *     offset*, restore*, remember/restore_state, same_value, undefined, GNU_args_size, nop).
 *     Only the CFA (RSP or RBP + offset), the return address (CFA - 8) and RBP (unchanged, or
 *     saved at CFA + k) are tracked; no other register is;
 *   - frame pointers where there is no usable rule: an address in no module (.NET's JIT code,
 *     which keeps RBP frames), a module without .eh_frame_hdr, a function without an FDE, or
 *     CFI this interpreter does not follow (expressions, a CFA on another register, as in a
 *     function that realigns its stack): CFA = RBP + 16, RA = [RBP + 8], RBP = [RBP].
 *
 * Where it stops: at max frames; at an RA of 0; where the CFI says the return address is
 * undefined (_start, a thread's start); at a CFA that does not grow; at any stack read outside
 * the calling thread's stack (its bounds come from pthread_getattr_np once per thread, kept in
 * initial-exec TLS). So a signal frame, a stack switched by makecontext or a garbage frame
 * pointer ends the stack rather than producing reads of random memory.
 *
 * What it assumes:
 *   - x86-64 SysV: the return address is pushed by call, and CFI (when there is any) follows
 *     the usual gcc/clang shapes; frames without CFI keep RBP frames or end the unwind;
 *   - the modules' .eh_frame_hdr tables use the encoding every linker writes
 *     (datarel | sdata4), else the module is treated as having no CFI;
 *   - the caller makes malloc re-entrant for the calling thread during nh_backtrace (the
 *     recorder's "inside" flag): pthread_getattr_np, called once per thread, may allocate.
 *     Built with NH_UNWIND_NO_MALLOC (the stack depot), nothing mallocs: a thread's stack
 *     bounds come from /proc/self/maps instead, read with open/read once per thread;
 *   - locks: nh_backtrace takes the unwinder's own mutex only on a cache miss, and only inside
 *     a dl_iterate_phdr callback, i.e. after the loader's lock (glibc calls malloc and free
 *     with that lock held, in dlclose and in dl_iterate_phdr callbacks, so the order must be
 *     loader lock -> unwinder mutex, never the reverse); the rule is read from .eh_frame there,
 *     while no module can be unloaded. Nothing under the unwinder mutex allocates or takes
 *     another lock; nh_unwind_memory_bytes takes no lock (a caller may hold its own lock).
 *     The steady state takes no lock. A program that forks must call the nh_unwind_fork_*
 *     hooks from its pthread_atfork handlers, nh_unwind_fork_prepare before taking a lock of
 *     its own (it waits, bounded, for cache misses inside dl_iterate_phdr to end: glibc's fork
 *     does not take the loader lock, and a child must not inherit it held).
 * The module list is scanned (dl_iterate_phdr) at nh_unwind_init and again when a cache
 * miss (or nh_unwind_refresh) finds the loader's adds/subs counters changed (each miss reads
 * them: an unloaded module must not be read); any change empties the rule cache.
 */
#ifndef NH_UNWIND_H
#define NH_UNWIND_H

#include <stddef.h>
#include <stdint.h>

/** An ELF object the unwinder knows: a trace's M line. */
struct nh_module {
    uintptr_t lo, hi;     /* the span of its PT_LOAD segments */
    uintptr_t bias;       /* ELF virtual address = address - bias */
    const char *path;     /* "" if none; the main program's from /proc/self/exe */
    unsigned char build_id[32];
    unsigned build_id_len; /* 0: none */
    int alive;            /* 0 once a rescan no longer finds it (dlclose) */
    /* private */
    const uint8_t *eh_hdr;  /* PT_GNU_EH_FRAME, or NULL */
    const int32_t *table;   /* its (initial location, FDE) pairs, relative to eh_hdr */
    size_t fde_count;
    unsigned seen;
};

/**
 * The stack of a thread stopped at pc (a signal's context: pc, its RSP and RBP): pc + 1 first
 * (so that it reads as a return address, as the others do), then its callers; at most max.
 * Returns how many; 0 when the stack cannot be read.
 */
size_t nh_backtrace_from(uintptr_t *out, size_t max, uintptr_t pc, uintptr_t sp, uintptr_t bp);

/** Scans the modules and finds the unwinder's own; 0, or -1 if no memory could be mapped. */
int nh_unwind_init(void);

/**
 * Writes at most max return addresses, innermost first, starting with the first frame outside
 * the module that holds the unwinder (the code that called into it, e.g. into malloc).
 * Returns how many.
 */
size_t nh_backtrace(uintptr_t *out, size_t max);

/**
 * Writes at most max return addresses, innermost first, starting with the one this call
 * returns to (in its caller), after dropping the first skip of them. No module is skipped.
 * Returns how many.
 */
size_t nh_backtrace_skip(uintptr_t *out, size_t max, size_t skip);

/** A 64-bit hash of a stack's return addresses (the recorder's and the depot's dedup key). */
static inline uint64_t nh_stack_hash(const uintptr_t *f, size_t n)
{
    uint64_t h = 0x84222325CBF29CE4ull ^ n;
    for (size_t i = 0; i < n; i++)
        h = (h ^ f[i]) * 0x100000001B3ull + (h >> 41);
    return h;
}

/**
 * Rescans the modules and empties the rule cache now if the loader's adds/subs counters
 * changed since the last scan: for a caller that knows a module may have been unloaded (the
 * recorder wraps dlclose). Without it, code loaded where unloaded code was is seen at the next
 * cache miss, and cached rules for the old code's return addresses stay. Returns 1 if a
 * module was found unloaded. Must not be called with a lock held that malloc/free take.
 */
int nh_unwind_refresh(void);

/** How many scans so far found a module unloaded (by nh_unwind_refresh or a cache miss). */
unsigned nh_unwind_unloads(void);

/** Modules known so far: entries are only ever appended, so 0 .. count - 1 stay valid. */
size_t nh_unwind_module_count(void);
const struct nh_module *nh_unwind_module(size_t i);

/** Resident bytes of the unwinder's own mappings (module table, names, rule cache). */
size_t nh_unwind_memory_bytes(void);

/** pthread_atfork hooks: the unwinder's mutex must not be held across fork. */
void nh_unwind_fork_prepare(void);
void nh_unwind_fork_parent(void);
void nh_unwind_fork_child(void);

#endif
