/*
 * glibc_tests: what glibc's own malloc tests (malloc/tst-*.c) check, as one C program that
 * is built twice: against glibc, and against libnativeheap (-include nh_names.h). Both builds
 * must print the same lines: "NAME PASS" per test, "NAME FAIL: why" otherwise (exit 1).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
static char why[512];

#define CHECK(cond, ...)                                        \
    do {                                                        \
        if (!(cond)) {                                          \
            snprintf(why, sizeof why, __VA_ARGS__);             \
            return 0;                                           \
        }                                                       \
    } while (0)

static void run(const char *name, int (*test)(void))
{
    why[0] = 0;
    if (test()) {
        printf("%s PASS\n", name);
    } else {
        printf("%s FAIL: %s\n", name, why);
        failures++;
    }
    fflush(stdout);
}

static volatile size_t sink; /* keeps the compiler from removing malloc/free pairs */

/* tst-malloc-too-large: requests near SIZE_MAX and PTRDIFF_MAX fail with ENOMEM and leave blocks as they were. */
static int too_large(void)
{
    char *keep = malloc(100);
    memset(keep, 3, 100);
    for (size_t k = 0; k < 16; k++) {
        size_t sizes[] = {SIZE_MAX - k, (size_t)PTRDIFF_MAX + k + 1};
        for (int i = 0; i < 2; i++) {
            size_t n = sizes[i];
            errno = 0;
            CHECK(malloc(n) == NULL && errno == ENOMEM, "malloc(%zu): not NULL/ENOMEM", n);
            errno = 0;
            CHECK(calloc(n, 1) == NULL && errno == ENOMEM, "calloc(%zu, 1)", n);
            errno = 0;
            CHECK(calloc(2, n / 2 + 1) == NULL && errno == ENOMEM, "calloc(2, %zu)", n / 2 + 1);
            errno = 0;
            CHECK(realloc(keep, n) == NULL && errno == ENOMEM, "realloc(keep, %zu)", n);
            errno = 0;
            CHECK(memalign(64, n) == NULL && errno == ENOMEM, "memalign(64, %zu)", n);
            errno = 0;
            CHECK(reallocarray(keep, 2, n / 2 + 1) == NULL && errno == ENOMEM, "reallocarray overflow");
        }
    }
    for (int i = 0; i < 100; i++) CHECK(keep[i] == 3, "kept block changed at %d", i);
    free(keep);
    return 1;
}

/* tst-calloc: calloc memory is zero whatever was there before; calloc(0, 0) is a unique block. */
static int calloc_zeroes(void)
{
    for (size_t n = 1; n < 300000; n = n * 3 / 2 + 7) {
        char *dirty = malloc(n);
        memset(dirty, 0xa5, n);
        free(dirty);
        unsigned char *p = calloc(n, 1);
        CHECK(p != NULL, "calloc(%zu) failed", n);
        for (size_t i = 0; i < n; i++) CHECK(p[i] == 0, "calloc(%zu)[%zu] = %d", n, i, p[i]);
        free(p);
    }
    void *a = calloc(0, 0), *b = calloc(0, 0);
    CHECK(a != NULL && b != NULL && a != b, "calloc(0, 0) not unique");
    free(a);
    free(b);
    return 1;
}

/* malloc(0) and realloc edge cases (tst-realloc). */
static int realloc_semantics(void)
{
    void *a = malloc(0), *b = malloc(0);
    CHECK(a != NULL && b != NULL && a != b, "malloc(0) not unique");
    free(a);
    free(b);
    char *p = realloc(NULL, 50);
    CHECK(p != NULL, "realloc(NULL, 50)");
    for (int i = 0; i < 50; i++) p[i] = (char)i;
    static const size_t sizes[] = {60, 10, 1000, 200000, 5000000, 100, 30};
    size_t have = 50;
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        p = realloc(p, sizes[s]);
        CHECK(p != NULL, "realloc to %zu", sizes[s]);
        size_t keep = have < sizes[s] ? have : sizes[s];
        for (size_t i = 0; i < keep; i++) CHECK(p[i] == (char)i, "realloc to %zu lost byte %zu", sizes[s], i);
        for (size_t i = keep; i < sizes[s]; i++) p[i] = (char)i;
        have = sizes[s];
    }
    errno = 0;
    CHECK(realloc(p, 0) == NULL, "realloc(p, 0) did not free");
    return 1;
}

static int aligned(void *p, size_t a) { return p != NULL && ((uintptr_t)p & (a - 1)) == 0; }

/* tst-memalign, tst-posix_memalign, tst-aligned-alloc, tst-valloc, tst-pvalloc. */
static int alignment(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t a = 1; a <= (1u << 20); a <<= 1) {
        void *p = memalign(a, 100);
        CHECK(aligned(p, a), "memalign(%zu)", a);
        memset(p, 1, 100);
        free(p);
        p = aligned_alloc(a, 3000);
        CHECK(aligned(p, a), "aligned_alloc(%zu)", a);
        free(p);
        if (a >= sizeof(void *)) {
            p = NULL;
            CHECK(posix_memalign(&p, a, 10) == 0 && aligned(p, a), "posix_memalign(%zu)", a);
            free(p);
        }
    }
    void *p = (void *)1;
    CHECK(posix_memalign(&p, 3, 10) == EINVAL && p == (void *)1, "posix_memalign(3) not EINVAL");
    CHECK(posix_memalign(&p, 0, 10) == EINVAL && p == (void *)1, "posix_memalign(0) not EINVAL");
    CHECK(posix_memalign(&p, 24, 10) == EINVAL && p == (void *)1, "posix_memalign(24) not EINVAL");
    CHECK(posix_memalign(&p, 64, SIZE_MAX - 100) == ENOMEM, "posix_memalign huge not ENOMEM");
    errno = 0;
    CHECK(memalign((size_t)1 << 63 | 1, 10) == NULL && errno == EINVAL, "memalign(2^63+1) not EINVAL");
    /* glibc 2.36 raises an alignment that is not a power of two to the next one. */
    p = memalign(48, 10);
    CHECK(aligned(p, 64), "memalign(48) not 64-aligned");
    free(p);
    p = valloc(10);
    CHECK(aligned(p, page), "valloc");
    free(p);
    p = pvalloc(10);
    CHECK(aligned(p, page) && malloc_usable_size(p) >= page, "pvalloc: usable %zu", malloc_usable_size(p));
    free(p);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX - 10) == NULL && errno == ENOMEM, "pvalloc(SIZE_MAX - 10)");
    return 1;
}

/* tst-malloc-usable: the usable size is at least the request, and all of it may be written. */
static int usable_size(void)
{
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL)");
    for (size_t n = 0; n < 5000; n += 7) {
        unsigned char *a = malloc(n), *b = malloc(n);
        size_t u = malloc_usable_size(a);
        CHECK(u >= n, "usable %zu < %zu", u, n);
        memset(b, 0x5a, n);
        memset(a, 0xff, u);
        for (size_t i = 0; i < n; i++) CHECK(b[i] == 0x5a, "writing all of a (%zu usable) changed b", u);
        free(a);
        free(b);
    }
    return 1;
}

/* tst-free-errno: free, and calls that succeed, leave errno alone, mmapped chunks included. */
static int errno_kept(void)
{
    static const size_t sizes[] = {16, 1000, 100000, 300000, 8 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        errno = 1789;
        void *p = malloc(sizes[s]);
        CHECK(p != NULL && errno == 1789, "malloc(%zu) changed errno to %d", sizes[s], errno);
        free(p);
        CHECK(errno == 1789, "free of %zu bytes changed errno to %d", sizes[s], errno);
    }
    return 1;
}

/* tst-mallinfo2: in-use and mmapped bytes move with allocations. */
static int mallinfo2_counts(void)
{
    CHECK(mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1, "M_MMAP_THRESHOLD"); /* whatever earlier frees made it */
    struct mallinfo2 before = mallinfo2();
    void *blocks[10]; /* above the tcache's sizes: tcache chunks already count as in use */
    for (int i = 0; i < 10; i++) blocks[i] = malloc(5000);
    struct mallinfo2 during = mallinfo2();
    CHECK(during.uordblks >= before.uordblks + 10 * 5000, "uordblks %zu -> %zu", before.uordblks, during.uordblks);
    void *big = malloc(4 << 20);
    struct mallinfo2 mapped = mallinfo2();
    CHECK(mapped.hblks == during.hblks + 1 && mapped.hblkhd >= during.hblkhd + (4 << 20), "hblks %zu -> %zu", during.hblks, mapped.hblks);
    free(big);
    for (int i = 0; i < 10; i++) free(blocks[i]);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.hblks == before.hblks && after.uordblks < during.uordblks, "after frees: hblks %zu, uordblks %zu", after.hblks, after.uordblks);
    return 1;
}

/* mallopt: values in range are taken, others refused; an unknown parameter returns 1 (glibc). */
static int mallopt_values(void)
{
    CHECK(mallopt(M_MXFAST, 1000) == 0, "M_MXFAST 1000 accepted");
    CHECK(mallopt(M_MXFAST, 64) == 1, "M_MXFAST 64 refused");
    /* The threshold decides when growth maps a chunk of its own instead of growing top. */
    CHECK(mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1, "M_MMAP_THRESHOLD 128 KiB refused");
    size_t hblks = mallinfo2().hblks;
    void *p = malloc(20 << 20);
    CHECK(mallinfo2().hblks == hblks + 1, "20 MiB not mmapped");
    free(p);
    CHECK(mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1, "M_MMAP_THRESHOLD 32 MiB refused");
    CHECK(mallopt(M_MMAP_THRESHOLD, 64 << 20) == 1, "M_MMAP_THRESHOLD 64 MiB refused (glibc 2.36 takes any value)");
    CHECK(mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1, "M_MMAP_THRESHOLD 32 MiB refused");
    p = malloc(20 << 20);
    CHECK(mallinfo2().hblks == hblks, "20 MiB mmapped under a 32 MiB threshold");
    free(p);
    CHECK(mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1 && mallopt(M_MXFAST, 128) == 1, "restore");
    CHECK(mallopt(12345, 1) == 1, "unknown parameter");
    CHECK(mallopt(M_ARENA_MAX, 0) == 1, "M_ARENA_MAX 0 (ignored)");
    return 1;
}

/* tst-trim1 / malloc_trim: memory stays usable after a trim. */
static int trim(void)
{
    char *blocks[2000];
    for (int i = 0; i < 2000; i++) blocks[i] = malloc(4000);
    for (int i = 0; i < 2000; i += 2) free(blocks[i]);
    malloc_trim(0);
    for (int i = 1; i < 2000; i += 2) memset(blocks[i], 7, 4000);
    for (int i = 1; i < 2000; i += 2) free(blocks[i]);
    CHECK(malloc_trim(0) >= 0, "malloc_trim");
    void *p = malloc(100000);
    CHECK(p != NULL, "malloc after trim");
    free(p);
    return 1;
}

/* tst-malloc-tcache-leak / tst-malloc-thread-exit: an ended thread's cached blocks go back. */
static void *thread_body(void *arg)
{
    (void)arg;
    void *p[64];
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 64; i++) p[i] = malloc(16 + 16 * (size_t)(i % 32));
        for (int i = 0; i < 64; i++) free(p[i]);
    }
    return NULL;
}

static int thread_exit_returns(void)
{
    pthread_t t;
    /* The first thread makes the arena; measure the ones that reuse it. */
    pthread_create(&t, NULL, thread_body, NULL);
    pthread_join(t, NULL);
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < 300; i++) {
        CHECK(pthread_create(&t, NULL, thread_body, NULL) == 0, "pthread_create");
        pthread_join(t, NULL);
    }
    size_t after = mallinfo2().uordblks;
    CHECK(after <= before + 16384, "300 threads left %zu bytes in use", after - before);
    return 1;
}

/* tst-mallocfork2 / tst-malloc-fork-deadlock: fork while other threads allocate; the child allocates and frees. */
static volatile int stop_threads;

static void *churn(void *arg)
{
    (void)arg;
    while (!stop_threads) {
        void *p[16];
        for (int i = 0; i < 16; i++) p[i] = malloc(32 + 1000 * (size_t)i);
        for (int i = 0; i < 16; i++) free(p[i]);
    }
    return NULL;
}

static int fork_while_allocating(void)
{
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, NULL);
    int bad = 0;
    for (int i = 0; i < 100 && !bad; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int j = 0; j < 1000; j++) {
                void *p = malloc(10 + (size_t)j * 50);
                if (p == NULL) _exit(2);
                memset(p, 1, 10);
                free(p);
            }
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) bad = status | 0x10000;
    }
    stop_threads = 1;
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    CHECK(!bad, "a child failed (status 0x%x)", bad & 0xffff);
    return 1;
}

/* fork while threads are born (each one's first call) and die; the child starts a thread of its own that allocates. */
static void *short_life(void *arg)
{
    free(malloc(100 + (size_t)(intptr_t)arg));
    return NULL;
}

static void *spawner(void *arg)
{
    (void)arg;
    for (intptr_t i = 0; !stop_threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_life, (void *)i) == 0) pthread_join(t, NULL);
    }
    return NULL;
}

static int fork_while_threads_start(void)
{
    pthread_t t[2];
    stop_threads = 0;
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, spawner, NULL);
    int bad = 0;
    for (int i = 0; i < 100 && !bad; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            pthread_t c;
            if (pthread_create(&c, NULL, short_life, NULL) != 0) _exit(3);
            pthread_join(c, NULL);
            free(malloc(5000));
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) bad = status | 0x10000;
    }
    stop_threads = 1;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK(!bad, "a child failed (status 0x%x)", bad & 0xffff);
    return 1;
}

/* tst-tcfree*, tst-malloc-check: misuse is reported with glibc's words and the process aborts. */
static int misuse_aborts(const char *expected, void (*act)(void))
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        act();
        _exit(0);
    }
    close(fds[1]);
    char text[4096];
    ssize_t n, got = 0;
    while ((n = read(fds[0], text + got, sizeof text - 1 - (size_t)got)) > 0) got += n;
    text[got] = 0;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "'%s': not aborted (status 0x%x)", expected, status);
    CHECK(strstr(text, expected) != NULL, "expected '%s' on stderr, got '%.200s'", expected, text);
    return 1;
}

static void *volatile victim; /* volatile: the compiler may not drop the malloc/free pair */

static void double_free(void)
{
    victim = malloc(40);
    free(victim);
    free(victim);
}

static volatile size_t eight = 8;

static void misaligned_free(void)
{
    victim = calloc(1, 40); /* zeros: the fake chunk's size is 0 */
    free((char *)victim + eight);
}

static int misuse(void)
{
    return misuse_aborts("free(): double free detected in tcache 2", double_free)
        && misuse_aborts("free(): invalid pointer", misaligned_free);
}

/* Not a glibc test: the allocator leaves the program's signals alone (a raised SIGSEGV kills). */
static int signals_kept(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        free(malloc(10));
        raise(SIGSEGV);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "raise(SIGSEGV) did not kill (status 0x%x)", status);
    return 1;
}

/* malloc_info: glibc's XML; options other than 0 return EINVAL. */
static int info(void)
{
    FILE *f = tmpfile();
    CHECK(f != NULL, "tmpfile");
    CHECK(malloc_info(0, f) == 0, "malloc_info(0)");
    static char text[1 << 16];
    rewind(f);
    size_t got = fread(text, 1, sizeof text - 1, f);
    text[got] = 0;
    fclose(f);
    CHECK(strncmp(text, "<malloc version=\"1\">", 20) == 0, "XML starts '%.30s'", text);
    CHECK(strstr(text, "</malloc>") != NULL, "no </malloc>");
    CHECK(malloc_info(1, stdout) == EINVAL, "malloc_info(1) not EINVAL");
    return 1;
}

int main(void)
{
    run("malloc-too-large", too_large);
    run("calloc", calloc_zeroes);
    run("realloc", realloc_semantics);
    run("alignment", alignment);
    run("malloc-usable", usable_size);
    run("free-errno", errno_kept);
    run("mallinfo2", mallinfo2_counts);
    run("mallopt", mallopt_values);
    run("trim", trim);
    run("thread-exit", thread_exit_returns);
    run("fork", fork_while_allocating);
    run("fork-thread-start", fork_while_threads_start);
    run("misuse", misuse);
    run("malloc-info", info);
    run("signals", signals_kept);
    sink = 0;
    return failures != 0;
}
