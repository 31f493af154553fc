/*
 * replay: run an allocation trace on glibc's own malloc and print where
 * every block landed.
 *
 *   usage: replay TRACEFILE
 *
 * The point is to observe glibc's heap layout from a pristine state, so only
 * the trace's operations reach glibc's malloc (they call __libc_malloc & co.).
 * All memory the replayer needs comes from mmap, output is formatted by hand
 * into a static buffer and written with write(2); glibc's own calls to malloc
 * and friends get this file's versions, which use mmap too (see "the
 * replayer's own memory" below). The ID table and that buffer are touched
 * before the first operation, so checkpoints do not count them.
 *
 * Trace format (one operation per line; blank lines and '#' lines ignored;
 * a compressed or version-2 trace, docs/trace-format.md, is first decoded to
 * this, see "compressed and version-2 traces" below):
 *   m ID SIZE          malloc(SIZE)
 *   c ID COUNT SIZE    calloc(COUNT, SIZE)
 *   r ID SIZE          realloc(ptr of ID, SIZE)
 *   a ID ALIGN SIZE    memalign(ALIGN, SIZE)
 *   f ID               free(ptr of ID)
 *   w ID               touch one byte in every page of the block
 *   t PAD              malloc_trim(PAD)
 *   k NAME [KEY=N ...] checkpoint (memory statistics); the recorder adds the
 *                      recorded process's own figures as KEY=N (anon_kib,
 *                      rss_kib, size_kib, recorder_kib), which the replay
 *                      checks for form (KEY of [A-Za-z0-9_], N decimal) and
 *                      otherwise ignores
 *   T TID              the following lines are made by recorded thread TID
 *                      (1..1000000); lines before any T line are thread 1's
 *   x TID              thread TID ended
 *
 * A free or never-used ID names NULL: "f" then calls free(NULL), "r" calls
 * realloc(NULL, SIZE) and "w" touches nothing (malloc_usable_size(NULL) is 0).
 * Allocating into a live ID just overwrites it (the old block leaks).
 *
 * Threads: thread 1 runs on the main thread; every other recorded thread on
 * a pthread of its own, taken at its first T line, so that glibc gives it an
 * arena at its first call as it did in the recorded process. Exactly one operation runs at
 * a time, in trace order: the main thread hands each section (the lines up
 * to the next T or x line) to its thread and waits. "x TID" makes that
 * pthread return (glibc flushes its tcache and puts its arena on the free
 * list) and joins it before the next line runs. A T line for a thread after
 * its x starts a fresh pthread (the recorder writes one when a thread still
 * calls malloc or free after its exit hook ran: a fresh thread is the
 * nearest a replay can get; it ends only at a later x). After "x 1" the main
 * thread only coordinates (it cannot end, so its tcache is not given back)
 * and a later "T 1" gets a pthread. An
 * operation after its own thread's x line, without a T line, is an error.
 * The replayer's pthreads are started before the first operation as far as
 * the trace needs them at once. glibc callocs each one's TLS vector (about
 * 300 bytes) through the global calloc, which here is not glibc's: the
 * recorded program's own vectors are already in the trace as "c" lines, so
 * the main heap must not get a second set before the trace's first block.
 *
 * Output, one line per allocating operation:
 *   LINE ID heap OFFSET USABLE   OFFSET relative to the first heap block
 *   LINE ID arena K OFFSET USABLE
 *                                chunk has NON_MAIN_ARENA set: K numbers the
 *                                arenas 1, 2, ... as they first appear here,
 *                                OFFSET from the 64 MiB-aligned start of the
 *                                block's heap (its heap_info)
 *   LINE ID mmap - USABLE        chunk has IS_MMAPPED set
 *   LINE ID null                 allocation failed
 *   LINE k NAME anon_kib resident_kib size_kib arena uordblks fordblks hblkhd
 * and a final "end". A trace without T and x lines runs on the main thread
 * alone and starts no thread.
 */

#define _GNU_SOURCE /* mremap, memfd_create */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rawio.h"

#define MAX_ID 10000000u
#define MAX_TID 1000000u
#define IS_MMAPPED ((size_t)2)     /* bits in the chunk size word */
#define NON_MAIN_ARENA ((size_t)4)
#define HEAP_MAX ((uintptr_t)64 << 20) /* glibc 2.36's HEAP_MAX_SIZE on 64-bit */
#define WORKER_STACK ((size_t)256 << 10)
#define PAGE_STEP 4096

/* --------------------------------------------- the replayer's own memory */

/*
 * The trace's operations call glibc's __libc_malloc & co. (exported by
 * libc.so.6 2.36, not in any header) and nothing else reaches glibc's heap:
 * the global malloc, calloc, realloc and free defined here, which glibc
 * itself calls too (ld.so's TLS vector for each new pthread, and its free),
 * take memory from mmap'd chunks and never give it back. So a threaded
 * replay's heap is a fresh one running the trace, as an unthreaded one is.
 * The nh build (src/nh_names.h) runs the trace on libnativeheap instead and
 * leaves glibc's malloc alone.
 */
#ifdef NH_NAMES_H
#define trace_malloc malloc
#define trace_calloc calloc
#define trace_realloc realloc
#define trace_free free
#define trace_memalign memalign
#else
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *ptr);
#define trace_malloc __libc_malloc
#define trace_calloc __libc_calloc
#define trace_realloc __libc_realloc
#define trace_free __libc_free
#define trace_memalign __libc_memalign

#define OWN_CHUNK ((size_t)64 << 10)
#define OWN_HDR ((size_t)16) /* a block's size, and 16-byte alignment */

struct own_chunk {
    struct own_chunk *next;
    char *end;
};
static struct own_chunk *own_chunks; /* every mapping, for own_block() */
static char *own_cur, *own_end;
static char own_lock; /* glibc may call in from any thread */

static int own_block(const void *p)
{
    for (struct own_chunk *c = own_chunks; c != NULL; c = c->next)
        if ((const char *)p > (const char *)c && (const char *)p < c->end)
            return 1;
    return 0;
}

/* Memory from mmap is zeroed and never reused, so calloc needs no memset. */
static void *own_alloc(size_t n)
{
    if (n > SIZE_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    size_t need = OWN_HDR + ((n + 15) & ~(size_t)15);
    void *r = NULL;
    while (__atomic_test_and_set(&own_lock, __ATOMIC_ACQUIRE))
        ;
    if ((size_t)(own_end - own_cur) < need) {
        size_t len = sizeof(struct own_chunk) + need;
        len = len < OWN_CHUNK ? OWN_CHUNK : (len + PAGE_STEP - 1) & ~(size_t)(PAGE_STEP - 1);
        struct own_chunk *c = mmap(NULL, len, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (c == MAP_FAILED)
            goto out;
        c->end = (char *)c + len;
        c->next = own_chunks;
        own_chunks = c;
        own_cur = (char *)(c + 1);
        own_end = c->end;
    }
    *(size_t *)own_cur = n;
    r = own_cur + OWN_HDR;
    own_cur += need;
out:
    __atomic_clear(&own_lock, __ATOMIC_RELEASE);
    if (r == NULL)
        errno = ENOMEM;
    return r;
}

void *malloc(size_t n)
{
    return own_alloc(n);
}

void *calloc(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    return own_alloc(count * size);
}

/* A pointer that is not ours came from glibc's malloc some other way. */
void free(void *p)
{
    if (p != NULL && !own_block(p))
        __libc_free(p);
}

void *realloc(void *p, size_t n)
{
    if (p != NULL && !own_block(p))
        return __libc_realloc(p, n);
    void *q = own_alloc(n);
    if (q != NULL && p != NULL) {
        size_t old = *(size_t *)((char *)p - OWN_HDR);
        memcpy(q, p, old < n ? old : n);
    }
    return q;
}
#endif

/* ---------------------------------------------------------------- output */

/* Static, so that buffering output never touches the heap. */
static char out_buf[1 << 16];
static size_t out_len;
static int out_fd = 1; /* the decoding child's: its memfd */

/* A failed write leaves nowhere to report to: exit 3. */
static void write_or_exit(int fd, const char *p, size_t n)
{
    if (!write_all(fd, p, n))
        _exit(3);
}

static void out_flush(void)
{
    write_or_exit(out_fd, out_buf, out_len);
    out_len = 0;
}

static void out_bytes(const char *p, size_t n)
{
    append_buffered(out_buf, sizeof out_buf, &out_len, p, n, out_flush);
}

static void out_str(const char *s)
{
    out_bytes(s, strlen(s));
}

static void out_char(char c)
{
    out_bytes(&c, 1);
}

/* Not inlined: one copy instead of a dozen keeps the code in the pages it
 * had before malloc & co. were added here, and checkpoints count them. */
__attribute__((noinline)) static void out_u64(uint64_t v)
{
    char buf[32];
    char *p = fmt_u64(buf + 32, v);
    out_bytes(p, (size_t)(buf + 32 - p));
}

static void out_i64(int64_t v)
{
    if (v < 0) {
        out_char('-');
        out_u64(-(uint64_t)v); /* well defined even for INT64_MIN */
    } else {
        out_u64((uint64_t)v);
    }
}

/* "error: line N: WHAT[DETAIL]" on stderr, exit 2. Pending stdout first, so
 * that the error appears after the lines that succeeded. */
static void fail_line(size_t line, const char *what, const char *detail,
                      size_t detail_len)
{
    char buf[32];
    char *num = fmt_u64(buf + 32, line);
    out_flush();
    write_or_exit(2, "error: line ", 12);
    write_or_exit(2, num, (size_t)(buf + 32 - num));
    write_or_exit(2, ": ", 2);
    write_or_exit(2, what, strlen(what));
    if (detail != NULL) {
        write_or_exit(2, " '", 2);
        write_or_exit(2, detail, detail_len > 64 ? 64 : detail_len);
        write_or_exit(2, "'", 1);
    }
    write_or_exit(2, "\n", 1);
    _exit(2);
}

static void fail_msg(const char *a, const char *b)
{
    out_flush();
    write_or_exit(2, "error: ", 7);
    write_or_exit(2, a, strlen(a));
    if (b != NULL)
        write_or_exit(2, b, strlen(b));
    write_or_exit(2, "\n", 1);
    _exit(2);
}

/* ----------------------------------------------------------------- input */

/*
 * Regular files are mapped read-only: no copy, and the pages are file-backed,
 * so they count as "shared" in /proc/self/statm and stay out of anon_kib.
 * Anything else (a pipe, /dev/stdin) is read into an anonymous mapping that
 * grows with mremap.
 */
static const char *load_file(const char *path, size_t *len_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail_msg("cannot open ", path);

    struct stat st;
    if (fstat(fd, &st) != 0)
        fail_msg("cannot stat ", path);

    if (S_ISREG(st.st_mode)) {
        size_t len = (size_t)st.st_size;
        *len_out = len;
        if (len == 0) { /* mmap rejects empty mappings */
            close(fd);
            return "";
        }
        void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd); /* the mapping keeps the file referenced */
        if (p == MAP_FAILED)
            fail_msg("cannot map ", path);
        return p;
    }

    size_t cap = 1 << 20, len = 0;
    char *buf = mmap(NULL, cap, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        fail_msg("out of memory reading ", path);
    for (;;) {
        if (len == cap) {
            void *q = mremap(buf, cap, cap * 2, MREMAP_MAYMOVE);
            if (q == MAP_FAILED)
                fail_msg("out of memory reading ", path);
            buf = q;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail_msg("cannot read ", path);
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    *len_out = len;
    return buf;
}

/* --------------------------------------------------------------- parsing */

struct op {
    char kind;        /* m c r a f w t k T x */
    uint32_t id;      /* T, x: TID */
    size_t a, b;      /* m/r: a=SIZE; c: a=COUNT b=SIZE; a: a=ALIGN b=SIZE;
                         t: a=PAD */
    const char *name; /* k: NAME (not NUL-terminated) */
    size_t name_len;
};

struct cursor {
    const char *p, *end;
    size_t line;
};

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Next whitespace-separated token on the line; returns its length, 0 at end. */
static size_t next_token(struct cursor *c, const char **tok)
{
    while (c->p < c->end && is_blank(*c->p))
        c->p++;
    *tok = c->p;
    while (c->p < c->end && !is_blank(*c->p))
        c->p++;
    return (size_t)(c->p - *tok);
}

static size_t parse_size(struct cursor *c, const char *what)
{
    const char *t;
    size_t n = next_token(c, &t);
    if (n == 0)
        fail_line(c->line, what, NULL, 0);
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(t[i] - '0');
        if (d > 9)
            fail_line(c->line, "not a decimal number:", t, n);
        if (v > (SIZE_MAX - d) / 10)
            fail_line(c->line, "number too large:", t, n);
        v = v * 10 + d;
    }
    return v;
}

static uint32_t parse_id(struct cursor *c)
{
    size_t v = parse_size(c, "missing ID");
    if (v > MAX_ID)
        fail_line(c->line, "ID above 10000000", NULL, 0);
    return (uint32_t)v;
}

static uint32_t parse_tid(struct cursor *c)
{
    size_t v = parse_size(c, "missing TID");
    if (v < 1 || v > MAX_TID)
        fail_line(c->line, "TID not in 1..1000000", NULL, 0);
    return (uint32_t)v;
}

/* A checkpoint's KEY=N: KEY of letters, digits and '_', N a decimal number
 * that fits in 64 bits. */
static void check_key_value(size_t line, const char *t, size_t n)
{
    size_t k = 0;
    while (k < n && (t[k] == '_' || (t[k] >= '0' && t[k] <= '9')
                     || ((t[k] | 0x20) >= 'a' && (t[k] | 0x20) <= 'z')))
        k++;
    int ok = k > 0 && k + 1 < n && t[k] == '=';
    uint64_t v = 0;
    for (size_t i = k + 1; ok && i < n; i++) {
        unsigned d = (unsigned)(t[i] - '0');
        ok = d <= 9 && v <= (UINT64_MAX - d) / 10;
        v = v * 10 + d;
    }
    if (!ok)
        fail_line(line, "malformed KEY=N:", t, n);
}

/* Parses one line (without its '\n'). Returns 0 for blank/comment lines. */
static int parse_line(const char *p, const char *end, size_t line,
                      struct op *op)
{
    struct cursor c = { p, end, line };
    const char *t;
    size_t n = next_token(&c, &t);
    if (n == 0 || t[0] == '#')
        return 0;
    if (n != 1)
        fail_line(line, "unknown operation", t, n);

    op->kind = t[0];
    switch (op->kind) {
    case 's': /* version 2's stacks and modules: not for a replay */
    case 'M':
    case 'J':
        return 0;
    case 'v':
        fail_line(line, "a v line comes before every other line but comments", NULL, 0);
        break;
    case 'm':
    case 'r':
        op->id = parse_id(&c);
        op->a = parse_size(&c, "missing SIZE");
        break;
    case 'c':
        op->id = parse_id(&c);
        op->a = parse_size(&c, "missing COUNT");
        op->b = parse_size(&c, "missing SIZE");
        break;
    case 'a':
        op->id = parse_id(&c);
        op->a = parse_size(&c, "missing ALIGN");
        op->b = parse_size(&c, "missing SIZE");
        break;
    case 'f':
    case 'w':
        op->id = parse_id(&c);
        break;
    case 't':
        op->a = parse_size(&c, "missing PAD");
        break;
    case 'k':
        op->name_len = next_token(&c, &op->name);
        if (op->name_len == 0)
            fail_line(line, "missing checkpoint NAME", NULL, 0);
        while ((n = next_token(&c, &t)) != 0)
            check_key_value(line, t, n);
        break;
    case 'T':
    case 'x':
        op->id = parse_tid(&c);
        break;
    default:
        fail_line(line, "unknown operation", t, n);
    }
    n = next_token(&c, &t);
    /* An allocation's call stack, " @S" (version 2). */
    if (n > 1 && t[0] == '@' && (op->kind == 'm' || op->kind == 'c' || op->kind == 'r' || op->kind == 'a')) {
        for (size_t i = 1; i < n; i++)
            if ((unsigned)(t[i] - '0') > 9)
                fail_line(line, "not a stack node (@S):", t, n);
        n = next_token(&c, &t);
    }
    if (n != 0)
        fail_line(line, "unexpected extra field", t, (size_t)(c.end - t));
    return 1;
}

/* Calls fn for every operation in the trace, with its 1-based line number. */
static void for_each_op(const char *text, size_t len,
                        void (*fn)(size_t line, const struct op *op))
{
    const char *p = text, *end = text + len;
    size_t line = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl != NULL ? nl : end;
        struct op op;
        line++;
        if (parse_line(p, eol, line, &op))
            fn(line, &op);
        p = nl != NULL ? nl + 1 : end;
    }
}

/* ------------------------------------------- compressed and version-2 traces */

/*
 * docs/trace-format.md: a file that starts with zstd's magic is compressed
 * (one or more frames); a trace whose first line that is not blank or a
 * comment is "v 2" has relative IDs. A child process decodes such a file into
 * a memfd, as version-1 text, and the replay maps that: the replayer itself
 * never loads libzstd nor touches the decoder's memory, and the text, shared
 * memory, counts as "shared" in statm as a mapped plain file does, not in
 * anon_kib.
 *
 * The decoded text keeps every line in its place ("v 2" becomes "# v 2", a
 * "v 1" line "# v 1"; s, M, J lines and " @S" stay, and the replay skips
 * them). Relative IDs become
 * compact ones: a new block takes the number freed longest ago (first freed,
 * first reused), or the next unused one (1 first), so the largest is the most
 * blocks live at once, and a freed block's number (which explain uses to name
 * a chunk cached in a tcache by the line that allocated it) lives as long as
 * it can.
 * src/NativeHeap.Lab/TraceFile.cs decodes by the same rule (a test compares
 * the two replays' IDs).
 */

/* libzstd's streaming decompression, declared here (no libzstd-dev needed)
 * and found with dlopen("libzstd.so.1") at run time. */
typedef struct {
    const void *src;
    size_t size, pos;
} zstd_in_buffer;
typedef struct {
    void *dst;
    size_t size, pos;
} zstd_out_buffer;

static const unsigned char zstd_magic[4] = { 0x28, 0xB5, 0x2F, 0xFD };

static int dec_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Whether the trace needs the child: compressed, or a "v" line first. */
static int needs_decoding(const char *text, size_t len)
{
    if (len >= 4 && memcmp(text, zstd_magic, 4) == 0)
        return 1;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl != NULL ? nl : end;
        while (p < eol && is_blank(*p))
            p++;
        if (p < eol && *p != '#')
            return *p == 'v' && (p + 1 == eol || is_blank(p[1]));
        p = nl != NULL ? nl + 1 : end;
    }
    return 0;
}

/* Grows an mmap'd array from *cap to at least want bytes (doubling). */
static void *grow_mapping(void *p, size_t *cap, size_t want)
{
    size_t n = *cap == 0 ? 1 << 16 : *cap;
    while (n < want)
        n *= 2;
    void *q = p == NULL ? mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                        : mremap(p, *cap, n, MREMAP_MAYMOVE);
    if (q == MAP_FAILED)
        fail_msg("out of memory decoding the trace", NULL);
    *cap = n;
    return q;
}

/* The live blocks: block number -> compact ID, open addressing with linear
 * probing (key 0: empty), at most half full. */
static uint64_t *live_key;
static uint32_t *live_val;
static size_t live_cap, live_count; /* slots (a power of two), entries */
static uint32_t *free_ids;         /* freed compact IDs [free_head, free_tail), oldest first */
static size_t free_head, free_tail, free_bytes;
static uint32_t next_compact = 1;
static uint64_t next_block = 1;    /* N */

static size_t live_hash(uint64_t block)
{
    return (size_t)((block * 0x9E3779B97F4A7C15ull) >> 32);
}

static size_t live_slot(uint64_t block)
{
    size_t mask = live_cap - 1, i = live_hash(block) & mask;
    while (live_key[i] != 0 && live_key[i] != block)
        i = (i + 1) & mask;
    return i;
}

static void live_grow(void)
{
    uint64_t *keys = live_key;
    uint32_t *vals = live_val;
    size_t cap = live_cap;
    live_cap = cap == 0 ? 1024 : cap * 2;
    live_key = mmap(NULL, live_cap * sizeof *live_key, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    live_val = mmap(NULL, live_cap * sizeof *live_val, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (live_key == MAP_FAILED || live_val == MAP_FAILED)
        fail_msg("out of memory decoding the trace", NULL);
    for (size_t k = 0; k < cap; k++) {
        if (keys[k] == 0)
            continue;
        size_t i = live_slot(keys[k]);
        live_key[i] = keys[k];
        live_val[i] = vals[k];
    }
    if (cap != 0) {
        munmap(keys, cap * sizeof *keys);
        munmap(vals, cap * sizeof *vals);
    }
}

static uint32_t new_block(size_t line)
{
    uint32_t id = free_head < free_tail ? free_ids[free_head++] : next_compact++;
    if (id > MAX_ID)
        fail_line(line, "more than 10000000 blocks live at once", NULL, 0);
    if (live_count * 2 >= live_cap)
        live_grow();
    size_t i = live_slot(next_block);
    live_key[i] = next_block++;
    live_val[i] = id;
    live_count++;
    return id;
}

/* Block's compact ID; frees: the line frees it (its number joins the queue). */
static uint32_t block_id(uint64_t block, size_t line, int frees)
{
    size_t i = live_cap == 0 ? 0 : live_slot(block);
    if (live_cap == 0 || live_key[i] == 0)
        fail_line(line, "names a block that is not live", NULL, 0);
    uint32_t id = live_val[i];
    if (!frees)
        return id;
    /* Empty slot i, moving back the entries that probed past it. */
    size_t mask = live_cap - 1;
    for (size_t j = (i + 1) & mask; live_key[j] != 0; j = (j + 1) & mask) {
        size_t home = live_hash(live_key[j]) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            live_key[i] = live_key[j];
            live_val[i] = live_val[j];
            i = j;
        }
    }
    live_key[i] = 0;
    live_count--;
    if ((free_tail + 1) * sizeof *free_ids > free_bytes) {
        /* Move the queue to the front when half of the array is behind it, else grow. */
        if (free_head > 0 && free_head * 2 >= free_bytes / sizeof *free_ids) {
            memmove(free_ids, free_ids + free_head, (free_tail - free_head) * sizeof *free_ids);
            free_tail -= free_head;
            free_head = 0;
        } else {
            free_ids = grow_mapping(free_ids, &free_bytes, (free_tail + 1) * sizeof *free_ids);
        }
    }
    free_ids[free_tail++] = id;
    return id;
}

static int dec_version;  /* 0 until the first line that is not blank or a comment */
static size_t dec_line_no;

/* A token's decimal value; 0 when it is not one (*ok = 0). */
static uint64_t dec_number(const char *t, const char *end, int *ok)
{
    uint64_t v = 0;
    *ok = t < end;
    for (; t < end && *ok; t++) {
        unsigned d = (unsigned)(*t - '0');
        *ok = d <= 9 && v <= (UINT64_MAX - d) / 10;
        v = v * 10 + d;
    }
    return v;
}

/* Decodes one line (without its '\n') to the output. */
static void dec_line(const char *p, const char *eol)
{
    size_t line = ++dec_line_no;
    const char *t = p;
    while (t < eol && dec_is_blank(*t))
        t++;
    char op = t < eol ? *t : '#';
    int one_letter = t + 1 == eol || (t + 1 < eol && dec_is_blank(t[1]));
    if (op == 'v' && one_letter) {
        if (dec_version != 0)
            fail_line(line, "a v line comes before every other line but comments", NULL, 0);
        const char *v = t + 1, *ve = eol;
        while (v < ve && is_blank(*v))
            v++;
        while (ve > v && is_blank(ve[-1]))
            ve--;
        if (ve - v != 1 || (*v != '1' && *v != '2'))
            fail_line(line, "trace format version not known to this reader (1 or 2):", v, (size_t)(ve - v));
        dec_version = *v - '0';
        out_bytes("# ", 2);
        out_bytes(p, (size_t)(eol - p));
        return;
    }
    int blank = 1;
    for (const char *q = t; q < eol && blank; q++)
        blank = *q == '\r';
    if (op == '#' || blank || dec_version == 0 || !one_letter
        || (op != 'm' && op != 'c' && op != 'a' && op != 'r' && op != 'f' && op != 'w')) {
        if (op != '#' && !blank && dec_version == 0)
            dec_version = 1; /* copied as it is from here on */
        out_bytes(p, (size_t)(eol - p));
        return;
    }
    /* The ID field. */
    const char *f = t + 1;
    while (f < eol && dec_is_blank(*f))
        f++;
    const char *fe = f;
    while (fe < eol && !is_blank(*fe))
        fe++;
    if (fe == f)
        fail_line(line, "missing ID", NULL, 0);
    int ok;
    uint64_t d = dec_number(f, fe, &ok);
    if (!ok)
        fail_line(line, "not a decimal number:", f, (size_t)(fe - f));
    uint32_t id;
    if (d == 0) {
        if (op == 'f' || op == 'w')
            fail_line(line, "ID 0 names no block (version 2: D >= 1)", NULL, 0);
        id = new_block(line);
    } else {
        if (op != 'r' && op != 'f' && op != 'w')
            fail_line(line, "a new block's ID field is 0 in version 2", NULL, 0);
        if (d >= next_block)
            fail_line(line, "D names a block before the first", NULL, 0);
        /* realloc(p, 0) that freed p: "r D 0". */
        int frees = op == 'f';
        if (op == 'r') {
            const char *s = fe;
            while (s < eol && dec_is_blank(*s))
                s++;
            const char *se = s;
            while (se < eol && !is_blank(*se))
                se++;
            frees = dec_number(s, se, &ok) == 0 && ok;
        }
        id = block_id(next_block - d, line, frees);
    }
    out_bytes(p, (size_t)(f - p));
    out_u64(id);
    out_bytes(fe, (size_t)(eol - fe));
}

/* Decodes complete lines of [p, end) (all of it when final); returns where it stopped. */
static const char *dec_feed(const char *p, const char *end, int final)
{
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL && !final)
            break;
        if (dec_version == 1) { /* version 1: every complete line in one go */
            const char *last = end;
            if (!final)
                while (last[-1] != '\n')
                    last--;
            out_bytes(p, (size_t)(last - p));
            return last;
        }
        const char *eol = nl != NULL ? nl : end;
        dec_line(p, eol);
        if (nl != NULL)
            out_char('\n');
        p = nl != NULL ? nl + 1 : end;
    }
    return p;
}

static void decompress(const char *text, size_t len)
{
    void *lib = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        fail_msg("compressed trace, and no libzstd.so.1 to read it: ", dlerror());
    void *(*create)(void) = (void *(*)(void))dlsym(lib, "ZSTD_createDCtx");
    size_t (*stream)(void *, zstd_out_buffer *, zstd_in_buffer *) =
        (size_t (*)(void *, zstd_out_buffer *, zstd_in_buffer *))dlsym(lib, "ZSTD_decompressStream");
    size_t (*out_size)(void) = (size_t (*)(void))dlsym(lib, "ZSTD_DStreamOutSize");
    unsigned (*is_error)(size_t) = (unsigned (*)(size_t))dlsym(lib, "ZSTD_isError");
    const char *(*error_name)(size_t) = (const char *(*)(size_t))dlsym(lib, "ZSTD_getErrorName");
    size_t (*free_ctx)(void *) = (size_t (*)(void *))dlsym(lib, "ZSTD_freeDCtx");
    if (!create || !stream || !out_size || !is_error || !error_name || !free_ctx)
        fail_msg("libzstd.so.1 lacks the streaming decompression calls", NULL);
    void *ctx = create();
    if (ctx == NULL)
        fail_msg("cannot create a zstd context", NULL);

    /* buf: an unfinished line, then what zstd writes after it. */
    size_t piece = out_size(), cap = 0, held = 0, ret = 0;
    char *buf = grow_mapping(NULL, &cap, 2 * piece);
    zstd_in_buffer in = { text, len, 0 };
    while (in.pos < in.size || ret != 0) {
        if (cap - held < piece)
            buf = grow_mapping(buf, &cap, held + piece);
        zstd_out_buffer out = { buf + held, piece, 0 };
        ret = stream(ctx, &out, &in);
        if (is_error(ret))
            fail_msg("corrupt zstd data: ", error_name(ret));
        if (out.pos == 0 && in.pos == in.size && ret != 0)
            fail_msg("truncated zstd data", NULL);
        held += out.pos;
        const char *used = dec_feed(buf, buf + held, 0);
        held -= (size_t)(used - buf);
        memmove(buf, used, held);
    }
    dec_feed(buf, buf + held, 1);
    free_ctx(ctx);
}

/* Replaces *text (*len bytes) with its decoded version-1 text, made by a child. */
static const char *decode_trace(const char *text, size_t *len)
{
    int fd = memfd_create("trace", MFD_CLOEXEC);
    if (fd < 0)
        fail_msg("cannot create a memfd for the decoded trace", NULL);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("cannot fork to decode the trace", NULL);
    if (pid == 0) {
        out_fd = fd;
        if (*len >= 4 && memcmp(text, zstd_magic, 4) == 0)
            decompress(text, *len);
        else
            dec_feed(text, text + *len, 1);
        out_flush();
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            fail_msg("cannot wait for the decoding child", NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 2); /* it said why */
    if (*len > 0)
        munmap((void *)text, *len);
    struct stat st;
    if (fstat(fd, &st) != 0)
        fail_msg("cannot stat the decoded trace", NULL);
    *len = (size_t)st.st_size;
    if (*len == 0) {
        close(fd);
        return "";
    }
    void *p = mmap(NULL, *len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        fail_msg("cannot map the decoded trace", NULL);
    return p;
}

/* ------------------------------------------------------------- execution */

static void **ids;        /* ID -> block; mmap'd, NULL means free */
static uint32_t max_id;   /* largest ID in the trace (sizes the table) */
static uintptr_t base;    /* address of the first heap (non-mmapped) block */
static int have_base;
static size_t page_size;

/* Pass 1's view of the threads, mapped at the first T or x line (a trace
 * without them maps nothing, so it runs exactly as before threads). */
static unsigned char *tid_running; /* TID -> 1 while it has a thread */
static uint32_t max_tid = 1;
static uint32_t scan_tid = 1;       /* thread of the current section */
static int main_has_1 = 1;          /* thread 1 still runs on the main thread */
static size_t scan_workers, max_workers; /* pthreads alive at once */

static void scan_threads(size_t line, const struct op *op)
{
    if (tid_running == NULL) {
        tid_running = mmap(NULL, MAX_TID + 1, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (tid_running == MAP_FAILED)
            fail_msg("cannot map the thread table", NULL);
        tid_running[1] = 1;
    }
    uint32_t tid = op->id;
    if (tid > max_tid)
        max_tid = tid;
    if (op->kind == 'T') {
        if (!tid_running[tid]) {
            tid_running[tid] = 1;
            if (tid != 1 || !main_has_1) {
                scan_workers++;
                if (scan_workers > max_workers)
                    max_workers = scan_workers;
            }
        }
        scan_tid = tid;
    } else {
        if (!tid_running[tid])
            fail_line(line, "x of a thread that is not running", NULL, 0);
        tid_running[tid] = 0;
        if (tid == 1 && main_has_1)
            main_has_1 = 0;
        else
            scan_workers--;
    }
}

static void scan_op(size_t line, const struct op *op)
{
    if (op->kind == 'T' || op->kind == 'x') {
        scan_threads(line, op);
        return;
    }
    if (tid_running != NULL && !tid_running[scan_tid])
        fail_line(line, "operation of a thread after its x line (needs a T line)",
                  NULL, 0);
    if (op->kind != 't' && op->kind != 'k' && op->id > max_id)
        max_id = op->id;
}

/* Non-main arenas in order of first appearance (mmap'd when first needed). */
static uintptr_t *arenas;
static size_t n_arenas, arenas_cap;

static uint64_t arena_number(uintptr_t arena)
{
    for (size_t i = 0; i < n_arenas; i++)
        if (arenas[i] == arena)
            return i + 1;
    if (n_arenas == arenas_cap) {
        size_t cap = arenas_cap == 0 ? 512 : arenas_cap * 2;
        void *q = arenas == NULL
            ? mmap(NULL, cap * sizeof *arenas, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            : mremap(arenas, arenas_cap * sizeof *arenas, cap * sizeof *arenas,
                     MREMAP_MAYMOVE);
        if (q == MAP_FAILED)
            fail_msg("cannot map the arena table", NULL);
        arenas = q;
        arenas_cap = cap;
    }
    arenas[n_arenas++] = arena;
    return n_arenas;
}

static void print_block(size_t line, uint32_t id, void *p)
{
    out_u64(line);
    out_char(' ');
    out_u64(id);
    if (p == NULL) {
        out_str(" null\n");
        return;
    }
    size_t size_word = ((size_t *)p)[-1];
    if (size_word & IS_MMAPPED) {
        out_str(" mmap -");
    } else if (size_word & NON_MAIN_ARENA) {
        /* A non-main arena's heaps are HEAP_MAX-aligned and start with a
         * heap_info, whose first word is the arena. */
        uintptr_t heap = (uintptr_t)p & ~(HEAP_MAX - 1);
        out_str(" arena ");
        out_u64(arena_number(*(uintptr_t *)heap));
        out_char(' ');
        out_u64((uintptr_t)p - heap);
    } else {
        if (!have_base) {
            base = (uintptr_t)p;
            have_base = 1;
        }
        out_str(" heap ");
        out_i64((int64_t)((uintptr_t)p - base));
    }
    out_char(' ');
    out_u64(malloc_usable_size(p));
    out_char('\n');
}

static void checkpoint(size_t line, const struct op *op)
{
    uint64_t statm[3]; /* size, resident, shared; in pages */
    int r = read_statm_pages(statm);
    if (r == 0)
        fail_line(line, "cannot open /proc/self/statm", NULL, 0);
    if (r < 0)
        fail_line(line, "cannot parse /proc/self/statm", NULL, 0);
    struct mallinfo2 mi = mallinfo2(); /* walks the arenas, no allocation */

    out_u64(line);
    out_str(" k ");
    out_bytes(op->name, op->name_len);
    out_char(' ');
    out_u64((statm[1] - statm[2]) * page_size / 1024);
    out_char(' ');
    out_u64(statm[1] * page_size / 1024);
    out_char(' ');
    out_u64(statm[0] * page_size / 1024);
    out_char(' ');
    out_u64(mi.arena);
    out_char(' ');
    out_u64(mi.uordblks);
    out_char(' ');
    out_u64(mi.fordblks);
    out_char(' ');
    out_u64(mi.hblkhd);
    out_char('\n');
}

/* Writes one byte per page so the block's pages become resident. volatile:
 * otherwise the stores are dead as far as the compiler can tell. */
static void touch(void *block)
{
    volatile unsigned char *p = block;
    size_t n = malloc_usable_size(block); /* 0 for NULL */
    for (size_t off = 0; off < n; off += PAGE_STEP)
        p[off] = 1;
    if (n > 0)
        p[n - 1] = 1;
}

/* Writes a byte in every page of [p, p+n), which need not start on a page,
 * so the pages become resident. */
static void prefault(void *p, size_t n)
{
    volatile char *c = p;
    for (size_t off = 0; off < n; off += page_size)
        c[off] = 0;
    if (n > 0)
        c[n - 1] = 0;
}

static void run_op(size_t line, const struct op *op)
{
    void *p;
    switch (op->kind) {
    case 'm':
        p = trace_malloc(op->a);
        ids[op->id] = p;
        print_block(line, op->id, p);
        break;
    case 'c':
        p = trace_calloc(op->a, op->b);
        ids[op->id] = p;
        print_block(line, op->id, p);
        break;
    case 'a':
        p = trace_memalign(op->a, op->b);
        ids[op->id] = p;
        print_block(line, op->id, p);
        break;
    case 'r': {
        void *old = ids[op->id];
        p = trace_realloc(old, op->a);
        if (p != NULL) {
            ids[op->id] = p;
            print_block(line, op->id, p);
        } else if (old != NULL && op->a == 0) {
            ids[op->id] = NULL; /* realloc(p, 0) freed the block */
        } else {
            print_block(line, op->id, NULL); /* failed; old block stays */
        }
        break;
    }
    case 'f':
        trace_free(ids[op->id]);
        ids[op->id] = NULL;
        break;
    case 'w':
        touch(ids[op->id]);
        break;
    case 't':
        malloc_trim(op->a);
        break;
    case 'k':
        checkpoint(line, op);
        break;
    }
}

/* Pass 2 walks the trace section by section; a section (the lines up to
 * the next T or x line) runs on its thread, the T or x line on the main
 * thread. Handed between threads with the semaphores below, which also
 * order every other access. */
static struct {
    const char *p, *end;
    size_t line;
    int at_ctl;     /* stopped at a T or x line, which is in ctl */
    struct op ctl;
} sec;

static void run_section(void)
{
    while (sec.p < sec.end) {
        const char *nl = memchr(sec.p, '\n', (size_t)(sec.end - sec.p));
        const char *eol = nl != NULL ? nl : sec.end;
        const char *p = sec.p;
        struct op op;
        sec.p = nl != NULL ? nl + 1 : sec.end;
        sec.line++;
        if (!parse_line(p, eol, sec.line, &op))
            continue;
        if (op.kind == 'T' || op.kind == 'x') {
            sec.ctl = op;
            sec.at_ctl = 1;
            return;
        }
        run_op(sec.line, &op);
    }
    sec.at_ctl = 0;
}

struct worker {
    pthread_t thread;
    sem_t go;
    int quit;
    int alive;      /* its pthread exists */
    size_t next;    /* free list of unassigned workers */
};

static struct worker *workers; /* max_workers of them, mmap'd */
static size_t free_worker = SIZE_MAX;
static struct worker **tid_worker; /* TID -> its worker, ON_MAIN, or NULL */
static sem_t section_done;
static pthread_attr_t worker_attr;
static char on_main_mark;
#define ON_MAIN ((struct worker *)&on_main_mark)

static void sem_wait_retry(sem_t *s)
{
    while (sem_wait(s) != 0)
        if (errno != EINTR)
            fail_msg("sem_wait failed", NULL);
}

/* A recorded thread's pthread: runs each section it is handed, returns when
 * its thread ends. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        sem_wait_retry(&w->go);
        if (w->quit)
            return NULL;
        run_section();
        sem_post(&section_done);
    }
}

static void start_pthread(struct worker *w)
{
    w->quit = 0;
    if (pthread_create(&w->thread, &worker_attr, worker_main, w) != 0)
        fail_msg("cannot start a thread", NULL);
    w->alive = 1;
}

/* Maps the tables and starts as many pthreads as the trace has alive at
 * once; each waits for its first section. */
static void start_threads(void)
{
    tid_worker = mmap(NULL, ((size_t)max_tid + 1) * sizeof *tid_worker,
                      PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tid_worker == MAP_FAILED)
        fail_msg("cannot map the thread table", NULL);
    tid_worker[1] = ON_MAIN;
    if (max_workers == 0)
        return;
    workers = mmap(NULL, max_workers * sizeof *workers, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (workers == MAP_FAILED)
        fail_msg("cannot map the thread table", NULL);
    if (sem_init(&section_done, 0, 0) != 0 || pthread_attr_init(&worker_attr) != 0
        || pthread_attr_setstacksize(&worker_attr, WORKER_STACK) != 0)
        fail_msg("cannot set up threads", NULL);
    for (size_t i = max_workers; i-- > 0;) {
        if (sem_init(&workers[i].go, 0, 0) != 0)
            fail_msg("cannot set up threads", NULL);
        start_pthread(&workers[i]);
        workers[i].next = free_worker;
        free_worker = i;
    }
}

/* Pass 2: runs the trace from the top, each section on its thread. */
static void run_trace(const char *text, size_t len)
{
    sec.p = text;
    sec.end = text + len;
    sec.line = 0;
    struct worker *cur = ON_MAIN; /* NULL: the section's thread has ended */
    for (;;) {
        if (cur == ON_MAIN || cur == NULL) { /* NULL: pass 1 saw no operation */
            run_section();
        } else {
            sem_post(&cur->go);
            sem_wait_retry(&section_done);
        }
        if (!sec.at_ctl)
            return;
        uint32_t tid = sec.ctl.id;
        struct worker *w = tid_worker[tid];
        if (sec.ctl.kind == 'T') {
            if (w == NULL) { /* pass 1 counted it: one is free */
                w = &workers[free_worker];
                free_worker = w->next;
                if (!w->alive)
                    start_pthread(w); /* reuses an ended one's stack */
                tid_worker[tid] = w;
            }
            cur = w;
        } else {
            if (w != ON_MAIN) {
                w->quit = 1;
                sem_post(&w->go);
                if (pthread_join(w->thread, NULL) != 0)
                    fail_msg("cannot join a thread", NULL);
                w->alive = 0;
                w->next = free_worker;
                free_worker = (size_t)(w - workers);
            }
            tid_worker[tid] = NULL;
            if (cur == w)
                cur = NULL;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        write_or_exit(2, "usage: replay TRACEFILE\n", 24);
        return 2;
    }
    page_size = (size_t)sysconf(_SC_PAGESIZE);

    size_t len;
    const char *text = load_file(argv[1], &len);
    if (needs_decoding(text, len))
        text = decode_trace(text, &len);

    /* Pass 1: validate every line before any allocation happens, and find
     * the largest ID so the table is only as big as the trace needs. */
    for_each_op(text, len, scan_op);

    size_t table_bytes = ((size_t)max_id + 1) * sizeof(void *);
    ids = mmap(NULL, table_bytes, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ids == MAP_FAILED)
        fail_msg("cannot map the ID table", NULL);

    /* Fault both in now: touched as the trace went, they grew into the
     * checkpoints (2.7 MiB of a perl trace's "heap" was the table). */
    prefault(ids, table_bytes);
    prefault(out_buf, sizeof out_buf);

    /* REPLAY_ALIGN_BREAK=N (a power of two): first move the break up to a
     * multiple of N. Blocks aligned to more than a page land relative to the
     * heap's absolute address; two heaps that start alike place them alike. */
    const char *align = getenv("REPLAY_ALIGN_BREAK");
    if (align != NULL) {
        uintptr_t n = strtoul(align, NULL, 10);
        if (n == 0 || (n & (n - 1)) != 0)
            fail_msg("REPLAY_ALIGN_BREAK must be a power of two", NULL);
        uintptr_t cur = (uintptr_t)sbrk(0);
        uintptr_t want = (cur + n - 1) & ~(n - 1);
        if (want != cur && sbrk((intptr_t)(want - cur)) == (void *)-1)
            fail_msg("REPLAY_ALIGN_BREAK: sbrk failed", NULL);
    }

    /* Their TLS vectors come from this file's calloc, not glibc's heap. */
    if (tid_running != NULL) {
        munmap(tid_running, MAX_TID + 1);
        start_threads();
    }

    /* Pass 2: run it. */
    run_trace(text, len);

    out_str("end\n");
    out_flush();
    return 0;
}
