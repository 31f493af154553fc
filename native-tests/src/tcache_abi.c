/*
 * One sequence of calls whose result shows the tcache's state: which freed block each
 * malloc returns, and what each freed block holds (the safe-linked next entry, the key).
 * Linked against libnativeheap (tcache_abi-nh) its frees and mallocs go through the C
 * fast paths (src/NativeHeap.Native/fast_path.h); NativeAbiLayoutTests runs the same sequence through the
 * managed allocator (ChildScenarios.TcacheSequence) and on glibc, and compares the lines.
 *   tcache_abi sequence         the sequence
 *   tcache_abi misuse KIND      a misuse that must abort with glibc's words (foreign, poisoned, unreadable)
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SMALL 40  /* a 48-byte chunk */
#define OTHER 100 /* a 112-byte chunk */
#define DATA 0xa5a5a5a5a5a5a5a5
#define N 40      /* more than the default profile's tcache_count (32) and glibc's (7) */

static void *a[N], *b[8];

static int index_of(void **blocks, int n, const void *p)
{
    for (int i = 0; i < n; i++)
        if (blocks[i] == p) return i;
    return -1;
}

static void print_block(const char *what, void **blocks, int n, const void *p)
{
    int i = index_of(blocks, n, p);
    if (i >= 0) printf("%s %d\n", what, i);
    else printf("%s new\n", what);
}

/* glibc's REVEAL_PTR: tcache and fastbin links are both safe-linked. */
static const void *reveal(void *const *pos) { return (const void *)(((uintptr_t)pos >> 12) ^ (uintptr_t)*pos); }

static int sequence(void)
{
    for (int i = 0; i < N; i++) memset(a[i] = malloc(SMALL), 0xa5, SMALL); /* DATA */
    for (int i = 0; i < 8; i++) memset(b[i] = malloc(OTHER), 0x5a, OTHER);
    printf("usable %zu %zu\n", malloc_usable_size(a[0]), malloc_usable_size(b[0]));
    for (int i = 0; i < N; i++) free(a[i]);
    uint64_t key = 0; /* the tcache key: the first that is neither data nor 0 */
    for (int i = 0; i < N && key == 0; i++)
        if (((uint64_t *)a[i])[1] != DATA) key = ((uint64_t *)a[i])[1];
    for (int i = 0; i < N; i++) {
        const void *next = reveal((void *const *)a[i]);
        uint64_t k = ((uint64_t *)a[i])[1];
        int j = index_of(a, N, next);
        const char *kind = k == DATA ? "data" : k == 0 ? "zero" : k == key ? "key" : "other";
        if (next == NULL) printf("freed %d next null key %s\n", i, kind);
        else if (j >= 0) printf("freed %d next %d key %s\n", i, j, kind);
        else printf("freed %d next other key %s\n", i, kind);
    }
    void *again[N + 4];
    for (int i = 0; i < N + 4; i++) print_block("malloc", a, N, again[i] = malloc(SMALL));
    for (int i = 0; i < 8; i++) free(b[i]);
    unsigned char *z = calloc(1, OTHER);
    size_t usable = malloc_usable_size(z), nonzero = 0;
    for (size_t i = 0; i < usable; i++) nonzero += z[i] != 0;
    print_block("calloc", b, 8, z);
    printf("calloc usable %zu nonzero %zu\n", usable, nonzero);
    for (int i = 0; i < N + 4; i++) free(again[i]);
    free(z);
    return 0;
}

/* A block whose header says "a 48-byte chunk in use", in memory the heap never gave out. */
static int foreign(void)
{
    free(malloc(SMALL)); /* the thread's tcache exists: the fast path is live */
    static _Alignas(16) uint64_t fake[8] = { 0, 48 | 1, 0, 0, 0, 0, 0, 48 | 1 };
    free(&fake[2]); /* glibc takes it in (house of spirit); NativeHeap refuses it */
    return 0;
}

/* A pointer at the start of a page whose header, in the page before, cannot be read: refused
 * by address before any header is read (glibc reads it and dies of SIGSEGV). */
static int unreadable(void)
{
    free(malloc(SMALL)); /* the thread's tcache exists: the fast path is live */
    long page = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m, (size_t)page, PROT_NONE) != 0) return 3;
    free(m + page);
    return 0;
}

/* A freed block's tcache link overwritten (a use after free): the second malloc meets it. */
static int poisoned(void)
{
    void *p = malloc(SMALL), *q = malloc(SMALL);
    free(q);
    free(p);
    ((uintptr_t *)p)[0] = ((uintptr_t)p >> 12) ^ 0x1001; /* reveals to a misaligned address */
    malloc(SMALL);
    malloc(SMALL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "sequence") == 0) return sequence();
    if (argc == 3 && strcmp(argv[1], "misuse") == 0 && strcmp(argv[2], "foreign") == 0) return foreign();
    if (argc == 3 && strcmp(argv[1], "misuse") == 0 && strcmp(argv[2], "poisoned") == 0) return poisoned();
    if (argc == 3 && strcmp(argv[1], "misuse") == 0 && strcmp(argv[2], "unreadable") == 0) return unreadable();
    fprintf(stderr, "usage: tcache_abi sequence | misuse foreign|poisoned|unreadable\n");
    return 2;
}
