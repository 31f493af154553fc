/*
 * librecorder: an LD_PRELOAD library that records a program's allocation
 * calls, with their call stacks, as a trace in format version 2
 * (docs/trace-format.md): zstd-compressed text that build/replay
 * (replay.c) and the tool's readers run.
 *
 *   NH_TRACE=/tmp/%n.%p.trace LD_PRELOAD=src/NativeHeap.Cli/native/build/librecorder.so PROG
 *
 * Settings, read by the constructor:
 *   NH_TRACE              the file; "%p" is replaced by the pid, "%n" by the
 *                         program's name (the last part of /proc/self/exe).
 *   NH_TRACE_STACK_DEPTH  frames per stack, 0 to 256 (default 64; 0: none).
 *   NH_TRACE_COMPRESS     zstd level 1 to 19 (default 9), 0 for plain text.
 *   NH_TRACE_EVERY        calls between checkpoints (see k below).
 *
 * Every process writes its own file:
 * a forked child starts a trace of its own in its pthread_atfork child
 * handler, and a program started with exec loads the library again
 * (LD_PRELOAD and NH_TRACE are inherited) and starts one from its
 * constructor. A file is created at the first write (64 KiB of lines, or
 * exit), with O_EXCL; if the name is taken (a rerun without %p, or the same
 * pid after an exec), ".1", ".2", ... up to ".999" is appended. Without
 * NH_TRACE the library only forwards; if the file cannot be created it says
 * so on stderr once and only forwards from then on.
 *
 * Recorded, as trace lines (docs/trace-format.md; the header's "#" lines,
 * then "v 2"):
 *   malloc                   m 0 SIZE @S
 *   calloc                   c 0 COUNT SIZE @S
 *   realloc                  r D SIZE @S  (the block keeps its ID)
 *   realloc(NULL, n)         r 0 SIZE @S
 *   realloc(p, 0) that frees r D 0
 *   memalign, aligned_alloc  a 0 ALIGN SIZE @S
 *   posix_memalign           a 0 ALIGN SIZE @S
 *   valloc                   a 0 PAGESIZE SIZE @S
 *   pvalloc                  a 0 PAGESIZE SIZE-ROUNDED-UP-TO-A-PAGE @S
 *   free                     f D
 * A failed call (NULL, or an error from posix_memalign) records nothing.
 * Every new block gets the next ID (from 1), which the pointer table keeps;
 * lines name it relatively: D = (the ID the next new block would get) - ID,
 * so that a loop's lines repeat byte for byte and compress.
 *
 * Stacks: every allocation's caller is unwound by unwind.c (our own DWARF
 * CFI unwinder with a per-return-address rule cache and a frame-pointer
 * fallback for code in no module, such as .NET's JIT code; unwind.h says
 * what it assumes and where it stops), outside the lock, skipping this
 * library's own frames. The stack's addresses are hashed (64 bits); a table
 * maps the hash to the stack's leaf node, taken when the depth and the
 * innermost address agree too, so a stack seen before costs one hash and one
 * compare. (Two stacks alike in all three but different are not told apart:
 * with a million distinct stacks, odds of about 1 in 10^7 per program run.
 * Confirming by walking the nodes cost 30 ns a call, 13% of the recorder.) A new one is added to
 * a trie of (parent node, address) -> node, root outermost, which writes
 *   s S P ADDR   node S: return address ADDR called from node P (0: none)
 * for each node it lacks, before the line that uses it; and before the first
 * s line, and again whenever the unwinder has found new modules (dlopen),
 *   M LO HI BIAS BUILDID PATH
 * for each module (build-id from its NT_GNU_BUILD_ID note, the main
 * program's path from /proc/self/exe). At exit, if the .NET runtime wrote
 * /tmp/perf-PID.map (DOTNET_PerfMapEnabled), each of its lines becomes
 *   J START SIZE NAME
 * Code the runtime precompiled (ReadyToRun images, mapped without the
 * loader) is in neither: such frames are addresses in no M and no J range.
 *
 * Compression: libzstd.so.1 is loaded at run time (dlopen; the few stable
 * functions are declared here), its memory comes from mmap. The 64 KiB
 * buffer is compressed as it fills; the frame ends at the exit flush, and
 * each later line (frees from other destructors) is a small frame of its
 * own (readers take concatenated frames). Level 9: on the Python JSON loop
 * (57 M calls, 64-frame stacks) it wrote 0.61 MB where level 3 wrote 1.9 MB,
 * for the same CPU time within the runs' noise (12-16 s either way).
 * If libzstd.so.1 cannot be loaded the file is plain text and its header
 * says "# not compressed: ..."; NH_TRACE_COMPRESS=0 asks for plain text.
 * A process that dies from a signal, calls _exit or execs leaves its frame
 * unended: `zstd -d` gives the text up to the last full block, then an error.
 *
 * Threads and memory, also as trace lines:
 *   T TID    the next lines are thread TID's. TIDs count from 1 (the thread
 *            that ran the constructor, normally main) in order of each
 *            thread's first recorded line; a T line is written only when
 *            the thread changes.
 *   x TID    thread TID ended: written from a pthread key destructor, set at
 *            the thread's first line and re-armed once, so that it runs in
 *            a later destructor round than other libraries' destructors that
 *            free. A thread that still calls after that gets "T TID" again
 *            (the replay starts a fresh thread for it, which ends only at
 *            a later x line: an approximation, see replay.c).
 *            Threads alive at exit get none.
 *   k call-N anon_kib=A rss_kib=R size_kib=S recorder_kib=Q
 *            after every NH_TRACE_EVERY-th recorded call (default 100000,
 *            0 for none), and "k exit ..." with the same keys from the exit
 *            destructor: A, R and S are this process's own /proc/self/statm
 *            (resident minus shared, resident, size; KiB). Q is the
 *            recorder's own anonymous memory (its table mapping and its
 *            output buffer), which A includes.
 *   k before-trim-N ...  t PAD  k after-trim-N ...
 *            around the program's N-th malloc_trim(PAD), with the same keys
 *            (read before and after the trim runs): a replay trims where
 *            the program did, and says what the trim really returned.
 * A forked child starts TIDs (its forking thread is 1), the call count, IDs,
 * stack nodes and M lines afresh, in its own file and its own zstd frame.
 *
 * Not seen: anything allocated before this library's constructor ran (by
 * ld.so, by libc's own start-up, by constructors of libraries initialised
 * before this one) and anything a forked child inherited from its parent.
 * Such blocks are "unknown": free of one records nothing; realloc of one is
 * recorded as a new block, "r 0 SIZE", which the replayer runs as
 * realloc(NULL, SIZE), i.e. a fresh allocation (the unknown block
 * just stays where it was, as far as the trace knows). That is the simplest
 * honest mapping: the trace cannot name a block it never saw allocated.
 * Page touching ("w" lines) is not recorded.
 *
 * How it avoids recursion and the heap:
 *   - it forwards to glibc's exported __libc_malloc, __libc_calloc,
 *     __libc_realloc, __libc_memalign and __libc_free, so no dlsym;
 *   - a thread-local "inside" flag (initial-exec TLS, which never allocates)
 *     makes any allocation call made while this thread is already in the
 *     recorder just forward;
 *   - the pointer->ID table lives in mmap'd memory (open addressing, linear
 *     probing, tombstones; rebuilt into a new mapping when it fills up), as
 *     do the stack tables, the unwinder's tables and zstd's memory; the
 *     output buffers are static, and numbers are formatted by hand.
 *
 * Threads: one pthread mutex guards the table, the ID and TID counters and
 * the buffer; a line is appended whole under it and the buffer is written with
 * write(2) under it too, so lines never interleave. The mutex is never held
 * while calling into glibc's malloc (zstd, which compresses under it, gets
 * its memory from mmap through ZSTD_createCCtx_advanced), so it cannot
 * deadlock with the arena locks. Stacks are unwound before it is taken; the
 * unwinder's own mutex is never waited for under it (see the lock order at
 * the lock's declaration). A free is recorded (and its pointer dropped from the table) before
 * the block is released, and an allocation after it has been obtained, so
 * when another thread gets the same address back the table never confuses
 * the two blocks. A realloc takes its pointer out of the table before the
 * call and puts the result in after it.
 *
 * The buffer is written out when it fills, and at exit from a destructor;
 * after that every line is written at once (late frees from other
 * destructors still land in the file). Lost: whatever is still buffered when
 * the process dies from a signal, calls _exit, or replaces itself with exec.
 */

#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "rawio.h"
#include "unwind.h"

/* glibc's own entry points (exported by libc.so.6 2.36, not in any header). */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *ptr);

#define EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------ state */

static int active;    /* recording; set by the constructor / fork child */
static int flushed;   /* the exit flush happened: write every line at once */
static int trace_fd = -1; /* opened at the first write (see flush_locked) */
static int open_failed;
static char pattern[4096]; /* NH_TRACE, copied by the constructor */
/*
 * lock guards everything of the recorder's below (the pointer table, the IDs,
 * TIDs and counters, the stack tables, the buffers, zstd's context, the trace
 * file) and the static buffers of open_trace and format_path. Lock order:
 *   1. glibc's loader lock (dlopen/dlclose free and malloc under it, and so do
 *      dl_iterate_phdr callbacks): it may be held when lock is taken;
 *   2. lock;
 *   3. the unwinder's ulock (unwind.c): never taken under lock.
 *      nh_unwind_memory_bytes (k lines, under lock) takes no lock at all, and
 *      nothing done under ulock allocates, so no thread holding ulock ever
 *      waits for lock. fork_prepare takes ulock (nh_unwind_fork_prepare, once
 *      no unwinder walk is in flight), then lock: no thread holding lock ever
 *      waits for ulock, so that is no cycle either.
 * Under lock the recorder calls neither glibc's malloc nor dl_iterate_phdr.
 */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

#define TLS __thread __attribute__((tls_model("initial-exec")))

static TLS int inside;

static uint64_t next_id = 1;
static uint64_t n_unknown_free, n_unknown_realloc, n_stale;

/* Threads. A thread's TID is valid while its my_gen is tid_gen, which a
 * fork child bumps: the child's TIDs start afresh. */
#define MAX_TID 1000000u
static uint32_t next_tid = 1, last_tid, tid_gen = 1;
static TLS uint32_t my_tid, my_gen;
static TLS int my_armed; /* end_key is set for this thread */
static pthread_key_t end_key;
static int have_key;

static uint64_t every = 100000; /* NH_TRACE_EVERY */
static uint64_t n_calls;
static uint64_t n_trims; /* malloc_trim calls recorded */

static char buf[1 << 16];
static size_t buf_len;

/* Stacks: NH_TRACE_STACK_DEPTH frames at most (0: none). */
#define MAX_DEPTH 256
static size_t stack_depth = 64;

/* ---------------------------------------------------------------- zstd */

/* libzstd.so.1's stable ABI, declared here so that no -dev package is needed. */
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct { const void *src; size_t size; size_t pos; } ZSTD_inBuffer;
typedef struct { void *dst; size_t size; size_t pos; } ZSTD_outBuffer;
typedef struct {
    void *(*customAlloc)(void *opaque, size_t size);
    void (*customFree)(void *opaque, void *address);
    void *opaque;
} ZSTD_customMem;
enum { ZSTD_e_continue = 0, ZSTD_e_end = 2 };
enum { ZSTD_c_compressionLevel = 100 };
enum { ZSTD_reset_session_only = 1 };

static struct {
    ZSTD_CCtx *(*createCCtx)(void);
    ZSTD_CCtx *(*createCCtx_advanced)(ZSTD_customMem);
    size_t (*setParameter)(ZSTD_CCtx *, int, int);
    size_t (*compressStream2)(ZSTD_CCtx *, ZSTD_outBuffer *, ZSTD_inBuffer *, int);
    size_t (*reset)(ZSTD_CCtx *, int);
    unsigned (*isError)(size_t);
} zstd;
static ZSTD_CCtx *zc;        /* NULL: plain text */
static int zlevel = 9;       /* NH_TRACE_COMPRESS; see the header comment for why 9 */
static char zbuf[1 << 17];   /* compressed output */
static size_t zstd_bytes;    /* what zstd has mapped through z_alloc */
static const char *plain_reason; /* why the file is plain text, for its header */

/* ------------------------------------------------------------ the output */


static int open_trace(void);
static size_t recorder_bytes(void);

/* zstd holds input of a frame that is not ended yet (under lock). */
static int frame_open;

/* The file is created only when there is something to write: a process
 * image that is replaced by exec before its first write (its lines are lost
 * anyway) leaves no empty file behind and does not take the name. */
static void write_out_locked(const char *p, size_t n, int end_frame)
{
    if (zc == NULL) {
        write_all(trace_fd, p, n);
        return;
    }
    ZSTD_inBuffer in = {p, n, 0};
    for (;;) {
        ZSTD_outBuffer out = {zbuf, sizeof zbuf, 0};
        size_t left = zstd.compressStream2(zc, &out, &in, end_frame ? ZSTD_e_end : ZSTD_e_continue);
        if (zstd.isError(left)) {
            write_all(2, "librecorder: zstd failed, recording stopped\n", 44);
            active = 0;
            return;
        }
        if (out.pos != 0)
            write_all(trace_fd, zbuf, out.pos);
        if (end_frame ? left == 0 : in.pos == in.size) {
            frame_open = !end_frame && (frame_open || n != 0);
            return;
        }
    }
}

/* end_frame: end the zstd frame (at exit, and for each line after it). */
static void flush_frame_locked(int end_frame)
{
    /* nothing to write, and no frame to end: no empty zstd frame */
    if (buf_len == 0 && !(end_frame && zc != NULL && trace_fd >= 0 && frame_open))
        return;
    if (trace_fd < 0 && !open_failed) {
        trace_fd = open_trace();
        if (trace_fd < 0) {
            open_failed = 1;
            active = 0; /* nowhere to write: only forward from now on */
        }
    }
    if (trace_fd >= 0)
        write_out_locked(buf, buf_len, end_frame);
    buf_len = 0;
}

static void flush_locked(void)
{
    flush_frame_locked(flushed);
}

static void put_bytes_locked(const char *p, size_t n)
{
    append_buffered(buf, sizeof buf, &buf_len, p, n, flush_locked);
}

/* Appends one whole line (so a file cut short ends with whole lines). */
static void put_line_locked(const char *p, size_t n)
{
    if (buf_len + n > sizeof buf || (flushed && buf_len != 0))
        flush_locked();
    put_bytes_locked(p, n);
    if (flushed)
        flush_locked();
}

/* Appends "C N\n" (T and x lines). */
static void put_tid_line_locked(char kind, uint32_t tid)
{
    char line[32];
    char *end = line + sizeof line, *p = end;
    *--p = '\n';
    p = fmt_u64(p, tid);
    *--p = ' ';
    *--p = kind;
    put_line_locked(p, (size_t)(end - p));
}

/* Gives the calling thread a TID at its first line and writes a T line when
 * it is not the previous line's thread. Returns 0 when TIDs ran out, which
 * stops the recording (the trace so far stays valid). */
static int switch_thread_locked(void)
{
    if (my_gen != tid_gen || my_tid == 0) {
        if (next_tid > MAX_TID) {
            write_all(2, "librecorder: more than 1000000 threads, recording stopped\n", 58);
            active = 0;
            return 0;
        }
        my_tid = next_tid++;
        my_gen = tid_gen;
        my_armed = 0;
    }
    if (my_tid != last_tid) {
        put_tid_line_locked('T', my_tid);
        last_tid = my_tid;
    }
    return 1;
}

/* Appends "k NAME anon_kib=A rss_kib=R size_kib=S recorder_kib=Q\n", NAME
 * being name followed by num unless num is 0; just "k NAME" if statm cannot
 * be read. */
static void put_checkpoint_locked(const char *name, uint64_t num)
{
    char line[256];
    size_t n = 0;
    char tmp[32], *d;
#define ADD(s, len) (memcpy(line + n, (s), (len)), n += (len))
#define ADD_U64(v) (d = fmt_u64(tmp + sizeof tmp, (v)), ADD(d, (size_t)(tmp + sizeof tmp - d)))
    ADD("k ", 2);
    ADD(name, strlen(name));
    if (num != 0)
        ADD_U64(num);
    uint64_t v[3]; /* size, resident, shared; in pages */
    if (read_statm_pages(v) == 1) {
        uint64_t kib = (uint64_t)getpagesize() / 1024;
        ADD(" anon_kib=", 10);
        ADD_U64((v[1] - v[2]) * kib);
        ADD(" rss_kib=", 9);
        ADD_U64(v[1] * kib);
        ADD(" size_kib=", 10);
        ADD_U64(v[0] * kib);
        ADD(" recorder_kib=", 14);
        ADD_U64(recorder_bytes() / 1024);
    }
    ADD("\n", 1);
#undef ADD
#undef ADD_U64
    put_line_locked(line, n);
}

/* Appends "KIND ID A[ B][ @S]\n" (nargs = 1 or 2) or "f ID\n" (nargs = 0),
 * after a T line if the thread changed, and counts it for the periodic
 * checkpoints. ID is the line's field: 0 for a new block, else D. */
static void emit_locked(char kind, uint64_t id, size_t a, size_t b, int nargs, uint32_t stack)
{
    if (!switch_thread_locked())
        return;
    char line[128];
    char *end = line + sizeof line, *p = end;
    *--p = '\n';
    if (stack != 0) {
        p = fmt_u64(p, stack);
        *--p = '@';
        *--p = ' ';
    }
    if (nargs >= 2) {
        p = fmt_u64(p, b);
        *--p = ' ';
    }
    if (nargs >= 1) {
        p = fmt_u64(p, a);
        *--p = ' ';
    }
    p = fmt_u64(p, id);
    *--p = ' ';
    *--p = kind;
    put_line_locked(p, (size_t)(end - p));
    n_calls++;
    if (every != 0 && n_calls % every == 0)
        put_checkpoint_locked("call-", n_calls);
}

static void put_str_locked(const char *s)
{
    put_bytes_locked(s, strlen(s));
}

static void put_u64_locked(uint64_t v)
{
    char tmp[32];
    char *p = fmt_u64(tmp + sizeof tmp, v);
    put_bytes_locked(p, (size_t)(tmp + sizeof tmp - p));
}

/* ------------------------------------------- pointer -> ID, in mmap'd memory */

struct slot {
    uintptr_t key; /* EMPTY, TOMB or a block address */
    uint64_t id;
};

#define EMPTY ((uintptr_t)0)
#define TOMB ((uintptr_t)1) /* no block lives at address 1 */
#define MIN_CAP ((size_t)1 << 14)

static struct slot *tab;
static size_t tab_cap;  /* a power of two, or 0 before the first insert */
static size_t tab_live; /* slots holding a block */
static size_t tab_used; /* live + tombstones */

static size_t hash_ptr(uintptr_t key, size_t cap)
{
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull; /* Fibonacci hashing */
    return (size_t)(h >> 32) & (cap - 1);
}

static struct slot *map_slots(size_t cap)
{
    void *p = mmap(NULL, cap * sizeof(struct slot), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Rebuilds the table into a fresh mapping: twice the size when it is at
 * least a quarter live, else the same size (only clearing tombstones). */
static int rebuild_locked(void)
{
    size_t cap = tab_cap == 0 ? MIN_CAP
                 : tab_live * 4 >= tab_cap ? tab_cap * 2 : tab_cap;
    struct slot *t = map_slots(cap);
    if (t == NULL)
        return -1;
    for (size_t i = 0; i < tab_cap; i++) {
        uintptr_t k = tab[i].key;
        if (k == EMPTY || k == TOMB)
            continue;
        size_t j = hash_ptr(k, cap);
        while (t[j].key != EMPTY)
            j = (j + 1) & (cap - 1);
        t[j] = tab[i];
    }
    if (tab != NULL)
        munmap(tab, tab_cap * sizeof(struct slot));
    tab = t;
    tab_cap = cap;
    tab_used = tab_live;
    return 0;
}

/* Removes key; returns its ID, or 0 if it is not in the table. */
static uint64_t take_locked(uintptr_t key)
{
    if (tab_cap == 0)
        return 0;
    for (size_t i = hash_ptr(key, tab_cap);; i = (i + 1) & (tab_cap - 1)) {
        if (tab[i].key == EMPTY)
            return 0;
        if (tab[i].key == key) {
            tab[i].key = TOMB;
            tab_live--;
            return tab[i].id;
        }
    }
}

static void put_locked(uintptr_t key, uint64_t id)
{
    /* Keep at most half the slots used, so probes stay short and an
     * EMPTY slot always ends a search. */
    if ((tab_used + 1) * 2 > tab_cap && rebuild_locked() != 0) {
        if (tab_cap == 0 || tab_used + 1 >= tab_cap)
            return; /* out of memory: this block becomes unknown */
    }
    size_t i = hash_ptr(key, tab_cap);
    struct slot *tomb = NULL;
    for (;; i = (i + 1) & (tab_cap - 1)) {
        if (tab[i].key == EMPTY)
            break;
        if (tab[i].key == TOMB) {
            if (tomb == NULL)
                tomb = &tab[i];
        } else if (tab[i].key == key) {
            /* Still listed: freed by a path we never saw. Its old ID just
             * stays live (leaked) in the trace. */
            tab[i].id = id;
            n_stale++;
            return;
        }
    }
    struct slot *s = tomb != NULL ? tomb : &tab[i];
    if (s == &tab[i])
        tab_used++;
    s->key = key;
    s->id = id;
    tab_live++;
}

/* ------------------------------------------------------------- stacks */

/* Node S (1, 2, ...): frame addr called from node parent. nodes[0] is unused. */
struct node {
    uintptr_t addr;
    uint32_t parent;
    uint32_t pad;
};

/* (parent, addr) -> node, for building the trie. id 0: empty. */
struct trie_slot {
    uintptr_t addr;
    uint32_t parent;
    uint32_t id;
};

/* hash of a whole stack -> its leaf node (and its depth). leaf 0: empty. */
struct stack_slot {
    uint64_t hash;
    uint32_t leaf;
    uint32_t depth;
};

static struct node *nodes;
static size_t nodes_cap, n_nodes; /* n_nodes: the last ID given */
static struct trie_slot *trie;
static size_t trie_cap;
static struct stack_slot *stacks;
static size_t stacks_cap, n_stacks;
static size_t mods_written; /* modules already written as M lines */
/* The unwinder's count of scans that found a module unloaded (after a dlclose
 * that really unmapped something: see the dlclose wrapper below) when the
 * stack tables were last emptied: code loaded where unloaded code was has the
 * same addresses, and must get new nodes after its own M line. */
static unsigned seen_unloads;

static void *map_bytes(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static size_t mix(uint64_t h, size_t cap)
{
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return (size_t)h & (cap - 1);
}

static uint64_t hash_edge(uint32_t parent, uintptr_t addr)
{
    return (uint64_t)addr * 0x9E3779B97F4A7C15ull + parent;
}

static void free_stack_tables(void)
{
    if (nodes != NULL)
        munmap(nodes, nodes_cap * sizeof *nodes);
    if (trie != NULL)
        munmap(trie, trie_cap * sizeof *trie);
    if (stacks != NULL)
        munmap(stacks, stacks_cap * sizeof *stacks);
    nodes = NULL;
    trie = NULL;
    stacks = NULL;
    nodes_cap = n_nodes = trie_cap = stacks_cap = n_stacks = 0;
    mods_written = 0;
}

/* Grows the node array and the trie (rebuilt into twice the size) so that one more node
 * fits with the trie at most half full. */
static int grow_nodes_locked(void)
{
    if (n_nodes + 1 < nodes_cap && (n_nodes + 1) * 2 <= trie_cap)
        return 1;
    if (n_nodes + 1 >= UINT32_MAX)
        return 0;
    if (n_nodes + 1 >= nodes_cap) {
        size_t cap = nodes_cap == 0 ? 4096 : nodes_cap * 2;
        struct node *t = map_bytes(cap * sizeof *t);
        if (t == NULL)
            return 0;
        if (nodes != NULL) {
            memcpy(t, nodes, (n_nodes + 1) * sizeof *t);
            munmap(nodes, nodes_cap * sizeof *nodes);
        }
        nodes = t;
        nodes_cap = cap;
    }
    if ((n_nodes + 1) * 2 > trie_cap) {
        size_t cap = trie_cap == 0 ? 8192 : trie_cap * 2;
        while ((n_nodes + 1) * 2 > cap) /* after forget_stacks_locked, n_nodes kept growing */
            cap *= 2;
        struct trie_slot *t = map_bytes(cap * sizeof *t);
        if (t == NULL)
            return 0;
        for (size_t i = 0; i < trie_cap; i++) {
            if (trie[i].id == 0)
                continue;
            size_t j = mix(hash_edge(trie[i].parent, trie[i].addr), cap);
            while (t[j].id != 0)
                j = (j + 1) & (cap - 1);
            t[j] = trie[i];
        }
        if (trie != NULL)
            munmap(trie, trie_cap * sizeof *trie);
        trie = t;
        trie_cap = cap;
    }
    return 1;
}

static int grow_stacks_locked(void)
{
    if ((n_stacks + 1) * 2 <= stacks_cap)
        return 1;
    size_t cap = stacks_cap == 0 ? 4096 : stacks_cap * 2;
    struct stack_slot *t = map_bytes(cap * sizeof *t);
    if (t == NULL)
        return 0;
    for (size_t i = 0; i < stacks_cap; i++) {
        if (stacks[i].leaf == 0)
            continue;
        size_t j = mix(stacks[i].hash, cap);
        while (t[j].leaf != 0)
            j = (j + 1) & (cap - 1);
        t[j] = stacks[i];
    }
    if (stacks != NULL)
        munmap(stacks, stacks_cap * sizeof *stacks);
    stacks = t;
    stacks_cap = cap;
    return 1;
}

static char *fmt_hex(char *end, uint64_t v)
{
    do {
        *--end = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v != 0);
    return end;
}

static void put_hex_locked(uint64_t v)
{
    char tmp[32];
    char *p = fmt_hex(tmp + sizeof tmp, v);
    put_bytes_locked(p, (size_t)(tmp + sizeof tmp - p));
}

/* "M LO HI BIAS BUILDID PATH" for the modules the unwinder found since the last call. */
static void put_modules_locked(void)
{
    size_t n = nh_unwind_module_count();
    for (; mods_written < n; mods_written++) {
        const struct nh_module *m = nh_unwind_module(mods_written);
        if (buf_len + 4096 + 200 > sizeof buf)
            flush_locked();
        put_str_locked("M ");
        put_hex_locked(m->lo);
        put_str_locked(" ");
        put_hex_locked(m->hi);
        put_str_locked(" ");
        put_hex_locked(m->bias);
        put_str_locked(" ");
        if (m->build_id_len == 0)
            put_str_locked("-");
        for (unsigned i = 0; i < m->build_id_len; i++) {
            char h[2] = {"0123456789abcdef"[m->build_id[i] >> 4], "0123456789abcdef"[m->build_id[i] & 15]};
            put_bytes_locked(h, 2);
        }
        put_str_locked(" ");
        size_t len = strnlen(m->path, 4096);
        for (size_t i = 0; i < len; i++) /* one line: no newline in a path */
            put_bytes_locked(m->path[i] == '\n' ? "?" : &m->path[i], 1);
        put_str_locked("\n");
        if (flushed)
            flush_locked();
    }
}

/* The node for frame addr under parent, writing "s S P ADDR" if it is new; 0 if out of memory. */
static uint32_t edge_locked(uint32_t parent, uintptr_t addr)
{
    if (trie_cap != 0) {
        for (size_t i = mix(hash_edge(parent, addr), trie_cap);; i = (i + 1) & (trie_cap - 1)) {
            if (trie[i].id == 0)
                break;
            if (trie[i].addr == addr && trie[i].parent == parent)
                return trie[i].id;
        }
    }
    if (!grow_nodes_locked())
        return 0;
    uint32_t id = (uint32_t)++n_nodes;
    nodes[id].addr = addr;
    nodes[id].parent = parent;
    size_t i = mix(hash_edge(parent, addr), trie_cap);
    while (trie[i].id != 0)
        i = (i + 1) & (trie_cap - 1);
    trie[i].addr = addr;
    trie[i].parent = parent;
    trie[i].id = id;

    char line[80];
    char *end = line + sizeof line, *p = end;
    *--p = '\n';
    p = fmt_hex(p, addr);
    *--p = ' ';
    p = fmt_u64(p, parent);
    *--p = ' ';
    p = fmt_u64(p, id);
    *--p = ' ';
    *--p = 's';
    put_line_locked(p, (size_t)(end - p));
    return id;
}

/* After a dlclose: no stack seen so far is reused (node IDs keep counting). */
static void forget_stacks_locked(void)
{
    if (trie != NULL)
        munmap(trie, trie_cap * sizeof *trie);
    if (stacks != NULL)
        munmap(stacks, stacks_cap * sizeof *stacks);
    trie = NULL;
    stacks = NULL;
    trie_cap = stacks_cap = n_stacks = 0;
}

/* The leaf node of stack f[0..n) (innermost first), defining the nodes it lacks; 0 for none.
 * The common case: one hash, one probe, one compare (hash, depth, innermost frame). */
static uint32_t intern_stack_locked(const uintptr_t *f, size_t n, uint64_t h)
{
    if (n == 0)
        return 0;
    unsigned u = nh_unwind_unloads();
    if (u != seen_unloads) {
        seen_unloads = u;
        forget_stacks_locked();
    }
    if (stacks_cap != 0) {
        for (size_t i = mix(h, stacks_cap);; i = (i + 1) & (stacks_cap - 1)) {
            if (stacks[i].leaf == 0)
                break;
            if (stacks[i].hash == h && stacks[i].depth == n && nodes[stacks[i].leaf].addr == f[0])
                return stacks[i].leaf;
        }
    }
    put_modules_locked();
    uint32_t node = 0;
    for (size_t k = n; k-- > 0;) {
        node = edge_locked(node, f[k]);
        if (node == 0)
            return 0;
    }
    if (grow_stacks_locked()) {
        size_t i = mix(h, stacks_cap);
        while (stacks[i].leaf != 0)
            i = (i + 1) & (stacks_cap - 1);
        stacks[i].hash = h;
        stacks[i].leaf = node;
        stacks[i].depth = (uint32_t)n;
        n_stacks++;
    }
    return node;
}

/* The caller's stack, outside the lock (the unwinder has its own). */
struct captured {
    size_t n;
    uint64_t hash;
    uintptr_t f[MAX_DEPTH];
};

static void capture(struct captured *c)
{
    c->n = stack_depth == 0 ? 0 : nh_backtrace(c->f, stack_depth);
    c->hash = c->n == 0 ? 0 : nh_stack_hash(c->f, c->n);
}

/* The mappings (pointer table, stack tables, zstd's), the buffers and the unwinder's
 * resident memory (the cmdline buffer is only touched once, for the header). */
static size_t recorder_bytes(void)
{
    return tab_cap * sizeof(struct slot) + sizeof buf + nodes_cap * sizeof *nodes + trie_cap * sizeof *trie
           + stacks_cap * sizeof *stacks + (zc != NULL ? sizeof zbuf + zstd_bytes : 0)
           + (stack_depth != 0 ? nh_unwind_memory_bytes() : 0);
}

/* ------------------------------------------------------------- threads */

/* end_key's destructor: writes "x TID". The first call only re-arms the key,
 * so that the line comes a destructor round later, after other keys'
 * destructors (which may still free) have run. */
static void thread_end(void *v)
{
    if (v == (void *)1) {
        pthread_setspecific(end_key, (void *)2);
        return;
    }
    int was_inside = inside;
    inside = 1;
    int saved = errno;
    pthread_mutex_lock(&lock);
    if (active && my_tid != 0 && my_gen == tid_gen) {
        put_tid_line_locked('x', my_tid);
        if (last_tid == my_tid)
            last_tid = 0; /* a later line of this thread is a new T */
    }
    my_armed = 0; /* a call after this arms it again (if a round is left) */
    pthread_mutex_unlock(&lock);
    errno = saved;
    inside = was_inside;
}

/* Sets end_key for the calling thread after its first line (outside the
 * lock: with a key index above 31 pthread_setspecific callocs, which then
 * just forwards since inside is set). */
static void arm_thread_end(void)
{
    if (have_key && !my_armed && my_tid != 0
        && my_gen == __atomic_load_n(&tid_gen, __ATOMIC_RELAXED)) {
        my_armed = 1;
        pthread_setspecific(end_key, (void *)1);
    }
}

/* ------------------------------------------------------------- recording */

static void record_alloc(char kind, void *p, size_t a, size_t b, int nargs)
{
    int saved = errno;
    struct captured c;
    capture(&c);
    pthread_mutex_lock(&lock);
    if (active) {
        uint32_t s = intern_stack_locked(c.f, c.n, c.hash);
        uint64_t id = next_id++;
        put_locked((uintptr_t)p, id);
        emit_locked(kind, 0, a, b, nargs, s);
    }
    pthread_mutex_unlock(&lock);
    arm_thread_end();
    errno = saved;
}

/* ------------------------------------------------ start, fork and exit */

/* NH_TRACE with every "%p" replaced by the pid and every "%n" by the
 * program's name (the last part of /proc/self/exe); 0 if it does not fit. */
static int format_path(char *out, size_t cap, const char *pattern, pid_t pid)
{
    size_t n = 0;
    for (const char *s = pattern; *s != '\0'; s++) {
        if (s[0] == '%' && (s[1] == 'p' || s[1] == 'n')) {
            /* static: a thread with a small stack (16 KiB) may be the first to write;
             * guarded by lock, which open_trace's callers hold */
            static char tmp[4096];
            char *d;
            size_t k;
            if (s[1] == 'p') {
                d = fmt_u64(tmp + sizeof tmp, (uint64_t)pid);
                k = (size_t)(tmp + sizeof tmp - d);
            } else {
                ssize_t len = readlink("/proc/self/exe", tmp, sizeof tmp);
                if (len <= 0 || (size_t)len == sizeof tmp) {
                    memcpy(tmp, "unknown", 7);
                    len = 7;
                }
                d = tmp;
                for (ssize_t i = 0; i < len; i++)
                    if (tmp[i] == '/')
                        d = tmp + i + 1;
                k = (size_t)(tmp + len - d);
            }
            if (n + k >= cap)
                return 0;
            memcpy(out + n, d, k);
            n += k;
            s++;
        } else {
            if (n + 1 >= cap)
                return 0;
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return 1;
}

static void complain(const char *what, const char *path)
{
    write_all(2, "librecorder: ", 13);
    write_all(2, what, strlen(what));
    write_all(2, path, strlen(path));
    write_all(2, "\n", 1);
}

/* Opens this process's trace file (O_EXCL; ".N" suffixes on collision). */
static int open_trace(void)
{
    /* static, not 4 KiB of a thread's stack that may be 16 KiB in all; guarded
     * by lock (open_trace is only called from flush_frame_locked) */
    static char path[4096 + 8];
    if (!format_path(path, 4096, pattern, getpid())) {
        complain("NH_TRACE too long: ", pattern);
        return -1;
    }
    size_t base_len = strlen(path);
    for (unsigned n = 0; n < 1000; n++) {
        if (n > 0) {
            char tmp[32];
            char *d = fmt_u64(tmp + sizeof tmp, n);
            path[base_len] = '.';
            memcpy(path + base_len + 1, d, (size_t)(tmp + sizeof tmp - d));
            path[base_len + 1 + (size_t)(tmp + sizeof tmp - d)] = '\0';
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST) {
            complain("cannot create ", path);
            return -1;
        }
    }
    path[base_len] = '\0';
    complain("every name is taken: ", path);
    return -1;
}

/* "# recorded by librecorder: PROGRAM ARGS..." from /proc/self/cmdline. NULs
 * become spaces, a newline becomes "\n", other control bytes '?'. */
static void put_header_locked(void)
{
    static char cmd[16384];
    ssize_t got = read_small_file("/proc/self/cmdline", cmd, sizeof cmd);
    size_t len = got < 0 ? 0 : (size_t)got;
    while (len > 0 && cmd[len - 1] == '\0')
        len--;
    put_str_locked("# recorded by librecorder:");
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && cmd[i] != '\0')
            continue;
        put_bytes_locked(" ", 1);
        for (size_t j = start; j < i; j++) {
            unsigned char c = (unsigned char)cmd[j];
            if (c == '\n')
                put_bytes_locked("\\n", 2);
            else if (c < 0x20 || c == 0x7f)
                put_bytes_locked("?", 1);
            else
                put_bytes_locked(&cmd[j], 1);
        }
        start = i + 1;
    }
    if (len == sizeof cmd)
        put_str_locked(" ...");
    put_str_locked("\n# pid ");
    put_u64_locked((uint64_t)getpid());
    put_str_locked("\n");
    if (plain_reason != NULL) {
        put_str_locked("# not compressed: ");
        put_str_locked(plain_reason);
        put_str_locked("\n");
    }
}

/* A fork from a signal handler that interrupted this thread inside the
 * recorder (which may hold lock, or the unwinder's mutex): the locks are not
 * taken (that would deadlock), the parent goes on where it was and the child,
 * whose copy of the recorder's state may be half updated, stops recording. */
static TLS int fork_was_inside;

static void fork_prepare(void)
{
    fork_was_inside = inside;
    if (fork_was_inside)
        return;
    inside = 1; /* anything this thread allocates until the fork just forwards */
    /* first, without lock: it waits for the unwinder's walks in flight, which
     * may wait for a loader lock whose holder's free waits for lock */
    nh_unwind_fork_prepare();
    pthread_mutex_lock(&lock);
}

static void fork_parent(void)
{
    if (fork_was_inside)
        return; /* nothing was locked; inside stays set for the interrupted call */
    pthread_mutex_unlock(&lock);
    nh_unwind_fork_parent();
    inside = 0;
}

/* The child starts a trace of its own: the blocks it inherited are unknown
 * to it, like those allocated before the constructor ran. */
static void fork_child(void)
{
    nh_unwind_fork_child();
    pthread_mutex_init(&lock, NULL);
    if (fork_was_inside) {
        /* forked from a signal handler inside the recorder: its state may be
         * half updated, so the child only forwards (inside stays set for the
         * interrupted call, as in the parent) */
        __atomic_store_n(&active, 0, __ATOMIC_RELEASE);
        trace_fd = -1; /* the parent's */
        open_failed = 1;
        return;
    }
    int was_active = active;
    active = 0;
    buf_len = 0; /* the parent's unwritten lines are the parent's */
    frame_open = 0;
    if (tab != NULL)
        munmap(tab, tab_cap * sizeof(struct slot));
    tab = NULL;
    tab_cap = tab_live = tab_used = 0;
    free_stack_tables(); /* the child's trace defines its own nodes and modules */
    /* The parent's frame (and what zstd holds of it) is the parent's. */
    if (zc != NULL && (zstd.reset == NULL || zstd.isError(zstd.reset(zc, ZSTD_reset_session_only)))) {
        zc = NULL;
        plain_reason = "zstd context could not be reset after fork";
    }
    next_id = 1;
    n_unknown_free = n_unknown_realloc = n_stale = 0;
    tid_gen++; /* every thread's TID was the parent's */
    my_tid = 1;
    my_gen = tid_gen;
    next_tid = 2;
    last_tid = 1;
    n_calls = 0;
    flushed = 0;
    trace_fd = -1; /* the parent's descriptor stays open; it is the parent's file */
    open_failed = 0;
    if (was_active) {
        put_header_locked();
        put_str_locked("# forked child; blocks inherited from the parent are unknown\nv 2\n");
        active = 1;
    }
    inside = 0;
}

/* zstd's memory comes from mmap, not from the heap being recorded. A block
 * starts with its mapping's size. */
static void *z_alloc(void *opaque, size_t size)
{
    (void)opaque;
    size_t total = size + 16;
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    *(size_t *)p = total;
    __atomic_add_fetch(&zstd_bytes, total, __ATOMIC_RELAXED);
    return (char *)p + 16;
}

static void z_free(void *opaque, void *address)
{
    (void)opaque;
    if (address == NULL)
        return;
    char *p = (char *)address - 16;
    size_t total = *(size_t *)p;
    __atomic_sub_fetch(&zstd_bytes, total, __ATOMIC_RELAXED);
    munmap(p, total);
}

/* NH_TRACE_COMPRESS: unset or empty = level 9, 0 = plain text, 1..19 = that level. */
static void start_zstd(void)
{
    const char *env = getenv("NH_TRACE_COMPRESS");
    if (env != NULL && env[0] != '\0') {
        int v = 0;
        const char *c = env;
        for (; *c >= '0' && *c <= '9' && v < 100; c++)
            v = v * 10 + (*c - '0');
        if (*c != '\0' || v > 19) {
            complain("NH_TRACE_COMPRESS is not a level from 0 to 19, using 9: ", env);
        } else if (v == 0) {
            return; /* asked for plain text: no note in the file */
        } else {
            zlevel = v;
        }
    }
    void *h = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        plain_reason = "libzstd.so.1 could not be loaded";
        return;
    }
    zstd.createCCtx = (ZSTD_CCtx * (*)(void)) dlsym(h, "ZSTD_createCCtx");
    zstd.createCCtx_advanced = (ZSTD_CCtx * (*)(ZSTD_customMem)) dlsym(h, "ZSTD_createCCtx_advanced");
    zstd.setParameter = (size_t(*)(ZSTD_CCtx *, int, int))dlsym(h, "ZSTD_CCtx_setParameter");
    zstd.compressStream2 = (size_t(*)(ZSTD_CCtx *, ZSTD_outBuffer *, ZSTD_inBuffer *, int))dlsym(h, "ZSTD_compressStream2");
    zstd.reset = (size_t(*)(ZSTD_CCtx *, int))dlsym(h, "ZSTD_CCtx_reset");
    zstd.isError = (unsigned (*)(size_t))dlsym(h, "ZSTD_isError");
    if (zstd.createCCtx == NULL || zstd.setParameter == NULL || zstd.compressStream2 == NULL || zstd.isError == NULL) {
        plain_reason = "libzstd.so.1 lacks the streaming functions";
        return;
    }
    ZSTD_customMem mem = {z_alloc, z_free, NULL};
    ZSTD_CCtx *c = zstd.createCCtx_advanced != NULL ? zstd.createCCtx_advanced(mem) : zstd.createCCtx();
    if (c == NULL || zstd.isError(zstd.setParameter(c, ZSTD_c_compressionLevel, zlevel))) {
        plain_reason = "zstd context could not be made";
        return;
    }
    zc = c;
}

__attribute__((constructor)) static void recorder_init(void)
{
    inside = 1;
    const char *env = getenv("NH_TRACE");
    if (env == NULL || env[0] == '\0') {
        inside = 0;
        return;
    }
    if (strlen(env) >= sizeof pattern) {
        complain("NH_TRACE too long: ", env);
    } else {
        memcpy(pattern, env, strlen(env) + 1);
        const char *ev = getenv("NH_TRACE_EVERY");
        if (ev != NULL && ev[0] != '\0') {
            uint64_t v = 0;
            const char *c = ev;
            for (; *c >= '0' && *c <= '9' && v < UINT64_MAX / 100; c++)
                v = v * 10 + (uint64_t)(*c - '0');
            if (*c == '\0')
                every = v;
            else
                complain("NH_TRACE_EVERY is not a number (under 10^17), using 100000: ", ev);
        }
        const char *sd = getenv("NH_TRACE_STACK_DEPTH");
        if (sd != NULL && sd[0] != '\0') {
            uint64_t v = 0;
            const char *c = sd;
            for (; *c >= '0' && *c <= '9' && v <= MAX_DEPTH; c++)
                v = v * 10 + (uint64_t)(*c - '0');
            if (*c == '\0' && v <= MAX_DEPTH)
                stack_depth = (size_t)v;
            else
                complain("NH_TRACE_STACK_DEPTH is not a number from 0 to 256, using 64: ", sd);
        }
        if (stack_depth != 0 && nh_unwind_init() != 0) {
            complain("no memory for the unwinder, recording without stacks", "");
            stack_depth = 0;
        }
        start_zstd();
        have_key = pthread_key_create(&end_key, thread_end) == 0;
        pthread_mutex_lock(&lock);
        put_header_locked();
        put_str_locked("v 2\n");
        my_tid = 1; /* this thread's lines need no T line */
        my_gen = tid_gen;
        next_tid = 2;
        last_tid = 1;
        pthread_mutex_unlock(&lock);
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        __atomic_store_n(&active, 1, __ATOMIC_RELEASE);
        arm_thread_end();
    }
    inside = 0;
}

/* "J START SIZE NAME\n" from a perf map line "START SIZE NAME\n": the runtime
 * writes START with "0x" and may write upper case; the trace's hex has neither. */
static void put_perf_line_locked(const char *p, size_t n)
{
    put_bytes_locked("J ", 2);
    size_t i = 0;
    for (int field = 0; field < 2; field++) {
        if (i + 1 < n && p[i] == '0' && (p[i + 1] == 'x' || p[i + 1] == 'X'))
            i += 2;
        for (; i < n && p[i] != ' '; i++) {
            char c = p[i] >= 'A' && p[i] <= 'F' ? (char)(p[i] - 'A' + 'a') : p[i];
            put_bytes_locked(&c, 1);
        }
        if (i < n)
            put_bytes_locked(&p[i++], 1); /* the space */
    }
    put_bytes_locked(p + i, n - i);
}

/* "J START SIZE NAME" for each line of the .NET runtime's perf map, if it wrote one. */
static void put_perf_map_locked(void)
{
    char path[64] = "/tmp/perf-", tmp[32];
    char *d = fmt_u64(tmp + sizeof tmp, (uint64_t)getpid());
    size_t k = (size_t)(tmp + sizeof tmp - d);
    memcpy(path + 10, d, k);
    memcpy(path + 10 + k, ".map", 5);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    static char in[1 << 16];
    size_t have = 0;
    for (;;) {
        ssize_t got = read(fd, in + have, sizeof in - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        have += (size_t)got;
        size_t start = 0;
        for (size_t i = 0; i < have; i++) {
            if (in[i] != '\n')
                continue;
            if (i > start)
                put_perf_line_locked(in + start, i + 1 - start);
            start = i + 1;
        }
        if (start == 0 && have == sizeof in)
            start = have; /* a line longer than the buffer: dropped */
        memmove(in, in + start, have - start);
        have -= start;
    }
    close(fd); /* a last line without its newline is still being written: left out */
}

__attribute__((destructor)) static void recorder_fini(void)
{
    if (!active)
        return;
    int saved = errno;
    int was_inside = inside;
    if (was_inside) {
        /* exit() from a signal handler that interrupted this thread in the
         * recorder, which may hold lock: locking again would hang. */
        write_all(2, "librecorder: exit from inside the recorder (a signal handler?), trace not flushed\n", 82);
        errno = saved;
        return;
    }
    inside = 1; /* zstd and the unwinder may allocate: forward */
    /* Another thread may hold lock for good (it was stopped in a signal
     * handler that called exit, say): a bounded wait, then no flush. */
    int got = 0;
    for (int i = 0; i < 2000 && !got; i++) {
        got = pthread_mutex_trylock(&lock) == 0;
        if (!got) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    if (!got) {
        write_all(2, "librecorder: the recorder's lock is held at exit, trace not flushed\n", 68);
        inside = was_inside;
        errno = saved;
        return;
    }
    if (switch_thread_locked())
        put_checkpoint_locked("exit", 0);
    put_str_locked("# exit: ");
    put_u64_locked(next_id - 1);
    put_str_locked(" allocations, ");
    put_u64_locked(tab_live);
    put_str_locked(" still live, ");
    put_u64_locked(n_unknown_free);
    put_str_locked(" frees and ");
    put_u64_locked(n_unknown_realloc);
    put_str_locked(" reallocs of unknown blocks, ");
    put_u64_locked(n_stale);
    put_str_locked(" stale table entries, ");
    put_u64_locked(next_tid - 1);
    put_str_locked(" threads\n");
    put_perf_map_locked();
    flushed = 1; /* later lines (other destructors) are written at once, each its own zstd frame */
    flush_frame_locked(1);
    pthread_mutex_unlock(&lock);
    inside = was_inside;
    errno = saved;
}

/* ------------------------------------------------------------ the API */

static int recording(void)
{
    return __atomic_load_n(&active, __ATOMIC_ACQUIRE) && !inside;
}

EXPORT void *malloc(size_t size)
{
    if (!recording())
        return __libc_malloc(size);
    inside = 1;
    void *p = __libc_malloc(size);
    if (p != NULL)
        record_alloc('m', p, size, 0, 1);
    inside = 0;
    return p;
}

EXPORT void *calloc(size_t count, size_t size)
{
    if (!recording())
        return __libc_calloc(count, size);
    inside = 1;
    void *p = __libc_calloc(count, size);
    if (p != NULL)
        record_alloc('c', p, count, size, 2);
    inside = 0;
    return p;
}

EXPORT void free(void *ptr)
{
    if (ptr == NULL || !recording()) {
        __libc_free(ptr);
        return;
    }
    inside = 1;
    int saved = errno;
    /* Record before releasing: once released, another thread may get the
     * same address back and must find no entry for it. */
    pthread_mutex_lock(&lock);
    if (active) {
        uint64_t id = take_locked((uintptr_t)ptr);
        if (id != 0)
            emit_locked('f', next_id - id, 0, 0, 0, 0);
        else
            n_unknown_free++;
    }
    pthread_mutex_unlock(&lock);
    arm_thread_end();
    errno = saved;
    __libc_free(ptr);
    inside = 0;
}

EXPORT void *realloc(void *ptr, size_t size)
{
    if (!recording())
        return __libc_realloc(ptr, size);
    inside = 1;
    uint64_t id = 0;
    if (ptr != NULL) {
        pthread_mutex_lock(&lock);
        id = take_locked((uintptr_t)ptr);
        pthread_mutex_unlock(&lock);
    }
    void *q = __libc_realloc(ptr, size);
    int saved = errno;
    struct captured c;
    c.n = 0;
    if (q != NULL)
        capture(&c);
    pthread_mutex_lock(&lock);
    if (!active) {
        /* cannot happen outside a fork race; nothing to do */
    } else if (q != NULL) {
        uint32_t s = intern_stack_locked(c.f, c.n, c.hash);
        uint64_t field;
        if (id == 0) {
            /* realloc(NULL, n), or realloc of an unknown block: a new
             * block, which the replayer runs as realloc(NULL, n). */
            id = next_id++;
            field = 0;
            if (ptr != NULL)
                n_unknown_realloc++;
        } else {
            field = next_id - id;
        }
        put_locked((uintptr_t)q, id);
        emit_locked('r', field, size, 0, 1, s);
    } else if (ptr != NULL && size == 0) {
        /* glibc 2.36: realloc(p, 0) frees p and returns NULL. */
        if (id != 0)
            emit_locked('r', next_id - id, 0, 0, 1, 0);
        else
            n_unknown_free++;
    } else if (id != 0) {
        put_locked((uintptr_t)ptr, id); /* failed: the old block stays */
    }
    pthread_mutex_unlock(&lock);
    arm_thread_end();
    errno = saved;
    inside = 0;
    return q;
}

EXPORT void *memalign(size_t align, size_t size)
{
    if (!recording())
        return __libc_memalign(align, size);
    inside = 1;
    void *p = __libc_memalign(align, size);
    if (p != NULL)
        record_alloc('a', p, align, size, 2);
    inside = 0;
    return p;
}

/* glibc 2.36's aligned_alloc is an alias of memalign (no extra checks). */
EXPORT void *aligned_alloc(size_t align, size_t size)
{
    return memalign(align, size);
}

/* As glibc: EINVAL unless ALIGN is a power-of-two multiple of sizeof(void *),
 * without allocating; ENOMEM (and *out untouched) if the allocation fails. */
EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (align == 0 || align % sizeof(void *) != 0
        || ((align / sizeof(void *)) & (align / sizeof(void *) - 1)) != 0)
        return EINVAL;
    void *p = memalign(align, size);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

EXPORT void *valloc(size_t size)
{
    return memalign((size_t)getpagesize(), size);
}

/* As glibc: SIZE rounded up to a page (ENOMEM on overflow), page aligned. */
EXPORT void *pvalloc(size_t size)
{
    size_t page = (size_t)getpagesize();
    if (size > SIZE_MAX - (page - 1)) {
        errno = ENOMEM;
        return NULL;
    }
    return memalign(page, (size + page - 1) & ~(page - 1));
}

/* dlclose, so that code later loaded at an unloaded module's addresses gets
 * M and s lines of its own: when a module was unloaded, the unwinder rescans
 * the modules and the stack tables are emptied (see intern_stack_locked). */
static int (*next_dlclose)(void *);

EXPORT int dlclose(void *handle)
{
    int (*next)(void *) = __atomic_load_n(&next_dlclose, __ATOMIC_ACQUIRE);
    int was = inside;
    if (next == NULL) {
        inside = 1;
        next = (int (*)(void *))dlsym(RTLD_NEXT, "dlclose");
        inside = was;
        if (next == NULL)
            return -1;
        __atomic_store_n(&next_dlclose, next, __ATOMIC_RELEASE);
    }
    int r = next(handle);
    if (stack_depth != 0 && __atomic_load_n(&active, __ATOMIC_ACQUIRE)) {
        /* Rescans (and empties the caches) only if the loader's counters
         * changed: a dlclose that only dropped a reference, or of dlopen(NULL),
         * unloads nothing and costs one look at them. */
        inside = 1;
        nh_unwind_refresh();
        inside = was;
    }
    return r;
}

/* glibc exports no __libc_ name for malloc_trim: the next definition, found
 * once with dlsym (which may allocate: inside is set, so that just forwards). */
static int (*next_malloc_trim)(size_t);

EXPORT int malloc_trim(size_t pad)
{
    int (*next)(size_t) = __atomic_load_n(&next_malloc_trim, __ATOMIC_ACQUIRE);
    if (next == NULL) {
        int was = inside;
        inside = 1;
        next = (int (*)(size_t))dlsym(RTLD_NEXT, "malloc_trim");
        inside = was;
        if (next == NULL)
            return 0;
        __atomic_store_n(&next_malloc_trim, next, __ATOMIC_RELEASE);
    }
    if (!recording())
        return next(pad);
    inside = 1;
    uint64_t n = 0;
    pthread_mutex_lock(&lock);
    if (active && switch_thread_locked()) {
        n = ++n_trims;
        put_checkpoint_locked("before-trim-", n);
        char line[32];
        char *end = line + sizeof line, *p = end;
        *--p = '\n';
        p = fmt_u64(p, pad);
        *--p = ' ';
        *--p = 't';
        put_line_locked(p, (size_t)(end - p));
    }
    pthread_mutex_unlock(&lock);
    int r = next(pad);
    pthread_mutex_lock(&lock);
    if (active && n != 0 && switch_thread_locked()) /* a T line if another thread wrote since */
        put_checkpoint_locked("after-trim-", n);
    pthread_mutex_unlock(&lock);
    inside = 0;
    return r;
}
