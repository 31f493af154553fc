/* The stack depot described in stackdepot.h, over the unwinder of unwind.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "stackdepot.h"
#include "unwind.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

/* The bounds (a test builds the depot with small ones to fill it). */
#ifndef NHD_FRAME_WORDS
#define NHD_FRAME_WORDS ((size_t)64 << 20 >> 3) /* 64 MiB of records */
#endif
#ifndef NHD_MAX_STACKS
#define NHD_MAX_STACKS ((uint32_t)1 << 20) /* ids 1 .. 2^20 - 1; a power of two */
#endif
#define NHD_TABLE_SLOTS (NHD_MAX_STACKS * 2) /* at most half full */

/*
 * A record, at a word index of words[] (never 0): one header word, the stack's hash with its
 * depth in the low 8 bits, then depth return addresses. offsets[id] is the record's index
 * (0: none yet); table[] holds ids by hash, linear probing, 0 empty.
 */
struct depot {
    uint64_t words[NHD_FRAME_WORDS];
    uint32_t offsets[NHD_MAX_STACKS];
    uint32_t table[NHD_TABLE_SLOTS];
};

static struct depot *depot;
static int depot_state;       /* 0 not started, 1 starting (one thread), 2 ready, -1 failed */
static uint64_t words_used = 1; /* word 0 is no record */
static uint32_t ids_used;       /* the last id given */

/* The first capture maps the depot and starts the unwinder; a capture on another thread
 * meanwhile gets 0 rather than waiting. */
static int depot_ready(void)
{
    int s = __atomic_load_n(&depot_state, __ATOMIC_ACQUIRE);
    if (__builtin_expect(s == 2, 1))
        return 1;
    if (s != 0 || !__atomic_compare_exchange_n(&depot_state, &s, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return 0;
    void *p = mmap(NULL, sizeof(struct depot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED || nh_unwind_init() != 0) {
        if (p != MAP_FAILED)
            munmap(p, sizeof(struct depot));
        __atomic_store_n(&depot_state, -1, __ATOMIC_RELEASE);
        return 0;
    }
    depot = p;
    __atomic_store_n(&depot_state, 2, __ATOMIC_RELEASE);
    return 1;
}

static inline uint64_t header_of(uint64_t hash, uint32_t n)
{
    return (hash & ~(uint64_t)0xff) | n;
}

/* Whether id (read from the table with acquire, so its record is complete) holds f[0..n). */
static inline int same_stack(uint32_t id, uint64_t header, const uintptr_t *f, uint32_t n)
{
    const uint64_t *r = &depot->words[__atomic_load_n(&depot->offsets[id], __ATOMIC_RELAXED)];
    return r[0] == header && memcmp(r + 1, f, n * sizeof *f) == 0;
}

static uint32_t intern(const uintptr_t *f, uint32_t n)
{
    uint64_t h = nh_stack_hash(f, n), header = header_of(h, n);
    uint32_t mask = NHD_TABLE_SLOTS - 1, i = (uint32_t)((h * 0x9E3779B97F4A7C15ull) >> 32) & mask;
    for (;; i = (i + 1) & mask) { /* never full: ids stop at half the slots */
        uint32_t id = __atomic_load_n(&depot->table[i], __ATOMIC_ACQUIRE);
        if (id == 0)
            break;
        if (same_stack(id, header, f, n))
            return id;
    }
    /* New: write the record, give it an id, then publish the id in the table. */
    uint64_t w = __atomic_fetch_add(&words_used, (uint64_t)n + 1, __ATOMIC_RELAXED);
    if (w + n + 1 > NHD_FRAME_WORDS)
        return 0;
    uint32_t id = __atomic_add_fetch(&ids_used, 1, __ATOMIC_RELAXED);
    if (id >= NHD_MAX_STACKS)
        return 0;
    uint64_t *r = &depot->words[w];
    r[0] = header;
    memcpy(r + 1, f, n * sizeof *f);
    __atomic_store_n(&depot->offsets[id], (uint32_t)w, __ATOMIC_RELEASE);
    for (;; i = (i + 1) & mask) {
        uint32_t seen = 0;
        if (__atomic_compare_exchange_n(&depot->table[i], &seen, id, 0, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
            return id;
        if (same_stack(seen, header, f, n))
            return seen; /* another thread added it first; id stays valid, unlisted */
    }
}

/* noinline, and work after the walk: this function keeps a frame of its own, which the walk
 * drops (skip + 1), so that skip counts from its caller. */
NHD_API __attribute__((noinline)) uint32_t nhd_stack_capture(uint32_t skip, uint32_t depth)
{
    if (depth == 0)
        return 0;
    int saved = errno;
    uint32_t id = 0;
    if (depot_ready()) {
        uintptr_t f[NHD_MAX_DEPTH];
        size_t n = nh_backtrace_skip(f, depth < NHD_MAX_DEPTH ? depth : NHD_MAX_DEPTH, (size_t)skip + 1);
        if (n != 0)
            id = intern(f, (uint32_t)n);
    }
    errno = saved;
    return id;
}

NHD_API int32_t nhd_stack_frames(uint32_t id, uintptr_t *out, int32_t max)
{
    if (id == 0 || id >= NHD_MAX_STACKS || max <= 0 || __atomic_load_n(&depot_state, __ATOMIC_ACQUIRE) != 2)
        return 0;
    uint32_t w = __atomic_load_n(&depot->offsets[id], __ATOMIC_ACQUIRE);
    if (w == 0)
        return 0;
    const uint64_t *r = &depot->words[w];
    int32_t n = (int32_t)(r[0] & 0xff);
    if (n > max)
        n = max;
    memcpy(out, r + 1, (size_t)n * sizeof *out);
    return n;
}

#ifdef NHD_OWN_FORK_HOOKS
/* libnativeheap-debug.so on its own: the unwinder's mutex must not be held across fork (its
 * hooks, unwind.h). libnativeheap calls them from its own fork handlers instead. */
__attribute__((constructor)) static void nhd_register_fork_hooks(void)
{
    pthread_atfork(nh_unwind_fork_prepare, nh_unwind_fork_parent, nh_unwind_fork_child);
}
#endif
