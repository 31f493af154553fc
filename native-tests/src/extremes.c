/*
 * extremes: every malloc-family entry point at extreme sizes and alignments, one line per
 * case, in a form that compares between allocators (run it on glibc and under
 * libnativeheap-preload.so, and diff):
 *   CALL(args) -> OK                  a usable block (aligned, writable, zeroed for calloc)
 *   CALL(args) -> NULL errno=ENOMEM   (errno=unchanged if the call left it alone)
 *   posix_memalign(a, n) -> ret=EINVAL
 * A problem with a block is appended to its line (MISALIGNED, NOT-ZERO, DATA-LOST, ...), and
 * " errno=X" to an OK line if a successful call changed errno.
 *
 *   usage: extremes [FAMILY]   FAMILY: malloc calloc realloc reallocarray memalign
 *                              posix_memalign aligned_alloc valloc pvalloc (default: all)
 *
 * Requests the kernel grants by overcommit (up to about the machine's RAM) succeed: only their
 * first and last bytes are touched, and only blocks up to 16 MiB are written whole, so little
 * is ever resident.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SENTINEL 12345           /* errno before every call */
#define WHOLE ((size_t)16 << 20) /* blocks up to this size are checked and written whole */
#define OLD 32                   /* the block that realloc and reallocarray resize */
#define TOP ((size_t)1 << 63)

static size_t sizes[512], aligns[96], some[64];
static int nsizes, naligns, nsome;
static const char *only;
static long cases;
static size_t page;
static char what[160]; /* the call of the current case, as printed */
static int err;        /* errno right after the call */
/* The block realloc resizes; volatile, as it is still ours after a failed realloc (gcc would warn). */
static unsigned char *volatile old;

/* Insert into a sorted table, without duplicates. */
static void add(size_t *t, int *n, size_t v)
{
    int i = *n;
    while (i > 0 && t[i - 1] > v) i--;
    if (i > 0 && t[i - 1] == v) return;
    memmove(t + i + 1, t + i, (size_t)(*n - i) * sizeof *t);
    t[i] = v;
    (*n)++;
}

static int in(const size_t *t, int n, size_t v)
{
    for (int i = 0; i < n; i++)
        if (t[i] == v) return 1;
    return 0;
}

static const char *err_name(int e)
{
    static char buf[16];
    switch (e) {
    case SENTINEL: return "unchanged";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case EOVERFLOW: return "EOVERFLOW";
    }
    snprintf(buf, sizeof buf, "%d", e);
    return buf;
}

/* The alignment glibc gives for a requested one: a power of two at least 16. */
static size_t want(size_t a)
{
    size_t w = 16;
    while (w < a && w < TOP) w <<= 1;
    return w;
}

/* Use a block: check its alignment (and zeroing), write its first and last byte, all of a small one. */
static const char *use(unsigned char *p, size_t n, size_t align, int zero)
{
    if ((uintptr_t)p % align != 0) return " MISALIGNED";
    if (zero && n > 0 && n <= WHOLE && (p[0] != 0 || memcmp(p, p + 1, n - 1) != 0)) return " NOT-ZERO";
    if (n > 0) {
        p[0] = 1;
        p[n - 1] = 2;
    }
    if (n <= WHOLE) memset(p, 0x5a, n);
    return "";
}

/* Print the line of a call that returned p (a block of n bytes, or NULL), then free the block. */
static void result(void *p, size_t n, size_t align, int zero, const char *extra)
{
    cases++;
    if (p == NULL) {
        printf("%s -> NULL errno=%s%s\n", what, err_name(err), extra);
        return;
    }
    const char *bad = use(p, n, align, zero);
    printf("%s -> OK%s%s%s%s\n", what, err == SENTINEL ? "" : " errno=", err == SENTINEL ? "" : err_name(err), extra, bad);
    free(p);
}

static void old_block(void)
{
    unsigned char *b = malloc(OLD);
    if (b == NULL) abort();
    for (int i = 0; i < OLD; i++) b[i] = (unsigned char)(0xa0 + i);
    old = b;
}

static int intact(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n && i < OLD; i++)
        if (b[i] != (unsigned char)(0xa0 + i)) return 0;
    return 1;
}

/* After realloc(old, n): the data moved along, or on failure the old block is as it was. */
static void resized(unsigned char *p, size_t n)
{
    if (p != NULL) {
        result(p, n, 16, 0, intact(p, n) ? "" : " DATA-LOST");
    } else if (n == 0) {
        result(p, n, 16, 0, ""); /* realloc(p, 0) freed it */
    } else {
        result(p, n, 16, 0, intact(old, OLD) ? "" : " OLD-CHANGED");
        free(old);
    }
}

static void do_malloc(size_t n)
{
    snprintf(what, sizeof what, "malloc(%#zx)", n);
    errno = SENTINEL;
    void *p = malloc(n);
    err = errno;
    result(p, n, 16, 0, "");
}

static void do_calloc(size_t a, size_t b)
{
    size_t n;
    if (__builtin_mul_overflow(a, b, &n)) n = 0; /* a block here is wrong anyway: the line says OK */
    snprintf(what, sizeof what, "calloc(%#zx, %#zx)", a, b);
    errno = SENTINEL;
    void *p = calloc(a, b);
    err = errno;
    result(p, n, 16, 1, "");
}

static void do_realloc_null(size_t n)
{
    snprintf(what, sizeof what, "realloc(NULL, %#zx)", n);
    errno = SENTINEL;
    void *p = realloc(NULL, n);
    err = errno;
    result(p, n, 16, 0, "");
}

static void do_realloc(size_t n)
{
    old_block();
    snprintf(what, sizeof what, "realloc(small, %#zx)", n);
    errno = SENTINEL;
    unsigned char *p = realloc(old, n);
    err = errno;
    resized(p, n);
}

static void do_reallocarray(size_t n)
{
    size_t bytes;
    if (__builtin_mul_overflow(n, 2, &bytes)) bytes = 1; /* fails: not the realloc(p, 0) that frees */
    old_block();
    snprintf(what, sizeof what, "reallocarray(small, %#zx, 2)", n);
    errno = SENTINEL;
    unsigned char *p = reallocarray(old, n, 2);
    err = errno;
    resized(p, bytes);
}

static void do_memalign(size_t a, size_t n)
{
    snprintf(what, sizeof what, "memalign(%#zx, %#zx)", a, n);
    errno = SENTINEL;
    void *p = memalign(a, n);
    err = errno;
    result(p, n, want(a), 0, "");
}

static void do_aligned_alloc(size_t a, size_t n)
{
    snprintf(what, sizeof what, "aligned_alloc(%#zx, %#zx)", a, n);
    errno = SENTINEL;
    void *p = aligned_alloc(a, n);
    err = errno;
    result(p, n, want(a), 0, "");
}

static void do_posix_memalign(size_t a, size_t n)
{
    snprintf(what, sizeof what, "posix_memalign(%#zx, %#zx)", a, n);
    void *p = what; /* must be left alone on failure */
    errno = SENTINEL;
    int ret = posix_memalign(&p, a, n);
    err = errno;
    if (ret == 0) {
        result(p, n, want(a), 0, "");
        return;
    }
    /* errno too: glibc 2.36 leaves ENOMEM there as a side effect, and programs may see it. */
    cases++;
    printf("%s -> ret=%s errno=%s%s\n", what, err_name(ret), err_name(err), p == what ? "" : " P-CHANGED");
}

static void do_valloc(size_t n)
{
    snprintf(what, sizeof what, "valloc(%#zx)", n);
    errno = SENTINEL;
    void *p = valloc(n);
    err = errno;
    result(p, n, page, 0, "");
}

static void do_pvalloc(size_t n)
{
    snprintf(what, sizeof what, "pvalloc(%#zx)", n);
    errno = SENTINEL;
    void *p = pvalloc(n);
    err = errno;
    result(p, n, page, 0, "");
}

/* An aligned call: every alignment against a few sizes, every size against a few alignments. */
static void aligned(void (*call)(size_t, size_t))
{
    static const size_t common[] = {16, 4096, (size_t)1 << 20, (size_t)1 << 62, TOP};
    for (int i = 0; i < naligns; i++)
        for (int j = 0; j < nsome; j++) call(aligns[i], some[j]);
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        for (int j = 0; j < nsizes; j++)
            if (!in(some, nsome, sizes[j])) call(common[i], sizes[j]);
}

static int family(const char *name) { return only == NULL || strcmp(only, name) == 0; }

int main(int argc, char **argv)
{
    static const char *families[] = {"malloc", "calloc", "realloc", "reallocarray", "memalign",
                                     "posix_memalign", "aligned_alloc", "valloc", "pvalloc"};
    only = argc > 1 ? argv[1] : NULL;
    int known = only == NULL;
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (only != NULL && strcmp(only, families[i]) == 0) known = 1;
    if (argc > 2 || !known) {
        fprintf(stderr, "usage: extremes [malloc|calloc|realloc|reallocarray|memalign|posix_memalign|aligned_alloc|valloc|pvalloc]\n");
        return 2;
    }
    /* Line-buffered: after a crash the output ends at the last case that finished. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    page = (size_t)sysconf(_SC_PAGESIZE);

    add(sizes, &nsizes, 0);
    add(sizes, &nsizes, 1);
    for (int k = 1; k <= 63; k++) {
        size_t v = (size_t)1 << k;
        add(sizes, &nsizes, v - 1);
        add(sizes, &nsizes, v);
        add(sizes, &nsizes, v + 1);
    }
    for (size_t k = 0; k <= 64; k++) {
        add(sizes, &nsizes, PTRDIFF_MAX - k);
        add(sizes, &nsizes, SIZE_MAX - k);
        add(sizes, &nsizes, PTRDIFF_MAX / 2 - k);
    }
    for (int k = 0; k <= 63; k++) add(aligns, &naligns, (size_t)1 << k);
    static const size_t odd[] = {0, 3, 24, 48, 100, 4097, ((size_t)1 << 32) + 1, SIZE_MAX, SIZE_MAX / 2, (size_t)3 << 62};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) add(aligns, &naligns, odd[i]);
    static const size_t few[] = {0, 1, 4096, (size_t)1 << 20, (size_t)1 << 33, (size_t)1 << 40, PTRDIFF_MAX / 2};
    for (size_t i = 0; i < sizeof few / sizeof few[0]; i++) add(some, &nsome, few[i]);
    for (size_t k = 0; k <= 64; k += 8) {
        add(some, &nsome, PTRDIFF_MAX - k);
        add(some, &nsome, SIZE_MAX - k);
    }

    if (family("malloc"))
        for (int i = 0; i < nsizes; i++) do_malloc(sizes[i]);
    if (family("calloc")) {
        /* n * n: zero, small, 16 MiB, 4 GiB, either side of PTRDIFF_MAX and of SIZE_MAX */
        static const size_t square[] = {0, 1, 4096, 65536, 3037000499u, 3037000500u, 0xffffffffu, (size_t)1 << 32, SIZE_MAX};
        for (int i = 0; i < nsizes; i++) {
            do_calloc(1, sizes[i]);
            do_calloc(sizes[i], 2);
            do_calloc(2, sizes[i]);
        }
        for (size_t i = 0; i < sizeof square / sizeof square[0]; i++) do_calloc(square[i], square[i]);
    }
    if (family("realloc"))
        for (int i = 0; i < nsizes; i++) {
            do_realloc_null(sizes[i]);
            do_realloc(sizes[i]);
        }
    if (family("reallocarray"))
        for (int i = 0; i < nsizes; i++) do_reallocarray(sizes[i]);
    if (family("memalign")) aligned(do_memalign);
    if (family("posix_memalign")) aligned(do_posix_memalign);
    if (family("aligned_alloc")) aligned(do_aligned_alloc);
    if (family("valloc"))
        for (int i = 0; i < nsizes; i++) do_valloc(sizes[i]);
    if (family("pvalloc"))
        for (int i = 0; i < nsizes; i++) do_pvalloc(sizes[i]);

    malloc_trim(0);
    free(malloc(100));
    printf("done %ld cases\n", cases);
    return 0;
}
