/*
 * The stack depot (src/NativeHeap/native/stackdepot.h) in libnativeheap-debug.so, built
 * without frame pointers so that the unwinder's DWARF CFI does the work. One line per check
 * ("ok NAME"), exit status 0; a failed check prints "FAIL ..." on stderr and exits 1; a hang
 * (nothing done for 20 s) prints "HUNG" and exits 3.
 *   stackdepot_test LIBSTACKDEPOT_DL [SECONDS]
 * The library's constructor captures a stack, so every dlopen captures with the loader lock held.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stackdepot.h"

#define NOINLINE __attribute__((noinline, noclone, noipa))

static volatile int sink;

static void fail(const char *what, long a, long b)
{
    fprintf(stderr, "FAIL %s (%ld, %ld)\n", what, a, b);
    exit(1);
}

#define CHECK(cond, what, a, b) do { if (!(cond)) fail(what, (long)(a), (long)(b)); } while (0)

/* ---- frames against __builtin_return_address ---- */

NOINLINE static uint32_t leaf(uint32_t skip, uint32_t depth, uintptr_t *ra)
{
    uint32_t id = nhd_stack_capture(skip, depth);
    *ra = (uintptr_t)__builtin_return_address(0);
    sink++;
    return id;
}

NOINLINE static uint32_t mid(uint32_t skip, uint32_t depth, uintptr_t *ra_leaf, uintptr_t *ra_mid)
{
    uint32_t id = leaf(skip, depth, ra_leaf);
    *ra_mid = (uintptr_t)__builtin_return_address(0);
    sink++;
    return id;
}

static void check_frames(void)
{
    uintptr_t f[NHD_MAX_DEPTH], ra_leaf, ra_mid;
    uint32_t id = mid(0, 16, &ra_leaf, &ra_mid);
    CHECK(id != 0, "capture gave an id", id, 0);
    int32_t n = nhd_stack_frames(id, f, NHD_MAX_DEPTH);
    CHECK(n >= 4, "frames: main, mid, leaf and libc's start at least", n, 4);
    CHECK(f[0] >= (uintptr_t)leaf && f[0] < (uintptr_t)leaf + 256, "frame 0 is in leaf", f[0], (uintptr_t)leaf);
    CHECK(f[1] == ra_leaf, "frame 1 is leaf's return address", f[1], ra_leaf);
    CHECK(f[2] == ra_mid, "frame 2 is mid's return address", f[2], ra_mid);
    /* skip 1: leaf's own frame dropped */
    uint32_t id1 = mid(1, 16, &ra_leaf, &ra_mid);
    CHECK(nhd_stack_frames(id1, f, NHD_MAX_DEPTH) == n - 1, "skip 1 drops one frame", nhd_stack_frames(id1, f, NHD_MAX_DEPTH), n - 1);
    CHECK(f[0] == ra_leaf && f[1] == ra_mid, "skip 1 starts at leaf's return address", f[0], ra_leaf);
    /* depth 2, and fewer copied than kept */
    uint32_t id2 = mid(0, 2, &ra_leaf, &ra_mid);
    CHECK(nhd_stack_frames(id2, f, NHD_MAX_DEPTH) == 2 && f[1] == ra_leaf, "depth 2", nhd_stack_frames(id2, f, NHD_MAX_DEPTH), 2);
    CHECK(nhd_stack_frames(id, f, 1) == 1, "max 1 copies one", nhd_stack_frames(id, f, 1), 1);
    /* a depth above the limit is cut to it, and depth 0 is no stack */
    CHECK(nhd_stack_capture(0, 1000) != 0, "depth 1000 is cut", 0, 0);
    CHECK(nhd_stack_capture(0, 0) == 0, "depth 0 is no stack", 0, 0);
    printf("ok frames\n");
}

/* ---- dedup ---- */

static void check_dedup(void)
{
    uintptr_t a, b;
    uint32_t ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = mid(0, 16, &a, &b); /* one call site: one stack */
    CHECK(ids[0] == ids[1] && ids[1] == ids[2], "the same stack, the same id", ids[0], ids[2]);
    uint32_t other = mid(0, 16, &a, &b); /* another call site */
    CHECK(other != 0 && other != ids[0], "another call site, another id", other, ids[0]);
    uint32_t shorter = mid(0, 15, &a, &b);
    CHECK(shorter != other, "a prefix is another stack", shorter, other);
    printf("ok dedup\n");
}

static void check_unknown_and_errno(void)
{
    uintptr_t f[4];
    CHECK(nhd_stack_frames(0, f, 4) == 0, "id 0 is unknown", 0, 0);
    CHECK(nhd_stack_frames(1u << 30, f, 4) == 0, "a huge id is unknown", 0, 0);
    CHECK(nhd_stack_frames(1u << 19, f, 4) == 0, "an id not given yet is unknown", 0, 0);
    errno = 4321;
    uintptr_t a, b;
    mid(0, 16, &a, &b);
    CHECK(errno == 4321, "errno is kept", errno, 4321);
    printf("ok unknown-ids errno\n");
}

/* ---- threads: the same stacks from 8 threads at once get the same ids ---- */

#define THREADS 8
#define DEPTHS 40
static pthread_barrier_t barrier;
static uint32_t thread_ids[THREADS][DEPTHS + 1];
static volatile long progress;

NOINLINE static uint32_t recurse(int d)
{
    uint32_t id = d == 0 ? nhd_stack_capture(0, NHD_MAX_DEPTH) : recurse(d - 1);
    sink++;
    return id;
}

static void *capture_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    pthread_barrier_wait(&barrier);
    for (int round = 0; round < 200; round++) {
        for (int d = 0; d <= DEPTHS; d++) {
            int k = (d + t * 5) % (DEPTHS + 1); /* each thread in its own order: new stacks race */
            uint32_t id = recurse(k);
            if (id == 0 || (round > 0 && id != thread_ids[t][k]))
                fail("a thread's stack keeps its id", id, thread_ids[t][k]);
            thread_ids[t][k] = id;
        }
        __atomic_add_fetch(&progress, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void check_threads(void)
{
    pthread_t th[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, capture_thread, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (int d = 0; d <= DEPTHS; d++) {
        for (int t = 1; t < THREADS; t++)
            CHECK(thread_ids[t][d] == thread_ids[0][d], "every thread, the same id for the same stack", thread_ids[t][d], thread_ids[0][d]);
        uintptr_t f[NHD_MAX_DEPTH];
        int32_t n = nhd_stack_frames(thread_ids[0][d], f, NHD_MAX_DEPTH);
        int32_t n0 = nhd_stack_frames(thread_ids[0][0], f, NHD_MAX_DEPTH);
        CHECK(n == n0 + d, "depth d: d more frames", n, n0 + d);
        for (int e = 0; e < d; e++)
            CHECK(thread_ids[0][e] != thread_ids[0][d], "different stacks, different ids", e, d);
    }
    printf("ok threads\n");
}

/* ---- the loader lock: captures in a dlopen'd library's constructor, under dl_iterate_phdr,
 * and beside them cache misses (every dlopen/dlclose empties the unwinder's rule cache) ---- */

static const char *library;
static volatile int stop;
/* Held around dlopen and dlclose in the fork phase, and by fork: glibc 2.36 leaves a child the
 * loader's write lock held if another thread had it at the fork (dlopen, dlclose,
 * dl_iterate_phdr), and the child's first dl_iterate_phdr hangs. That is glibc's, for any
 * program; what the depot must do is not add to it: its own walks in flight (the unwinder's
 * fork hooks wait for them). */
static pthread_mutex_t dl_guard = PTHREAD_MUTEX_INITIALIZER;
static volatile long dl_rounds, iterate_rounds, miss_rounds;

static void *churn_library(void *x)
{
    (void)x;
    while (!stop) {
        pthread_mutex_lock(&dl_guard);
        void *h = dlopen(library, RTLD_NOW);
        pthread_mutex_unlock(&dl_guard);
        if (h == NULL) {
            fprintf(stderr, "FAIL dlopen %s: %s\n", library, dlerror());
            _exit(1);
        }
        void (*result)(uint32_t *, uintptr_t *) = (void (*)(uint32_t *, uintptr_t *))dlsym(h, "stackdepot_dl_result");
        uint32_t id;
        uintptr_t ra, f[8];
        result(&id, &ra);
        CHECK(id != 0 && nhd_stack_frames(id, f, 8) >= 2 && f[1] == ra, "the constructor's stack, through its caller", id, ra);
        pthread_mutex_lock(&dl_guard);
        dlclose(h);
        pthread_mutex_unlock(&dl_guard);
        dl_rounds++;
    }
    return NULL;
}

static int iterate_callback(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)info;
    (void)size;
    *(uint32_t *)data |= nhd_stack_capture(0, 8) == 0;
    return 0;
}

static void *iterate(void *x)
{
    (void)x;
    while (!stop) {
        uint32_t failed = 0;
        dl_iterate_phdr(iterate_callback, &failed);
        CHECK(!failed, "a capture under dl_iterate_phdr", 0, 0);
        iterate_rounds++;
    }
    return NULL;
}

static void *misses(void *x)
{
    (void)x;
    for (int k = 0; !stop; k++) {
        CHECK(recurse(k % 20) != 0, "a capture beside dlopen", k, 0);
        miss_rounds++;
    }
    return NULL;
}

/* A child forked while the others capture, dlopen and iterate: it captures (from a new call
 * site: a cache miss, a module scan) and dlopens without hanging (the fork hooks). */
static void fork_children(int count)
{
    for (int i = 0; i < count; i++) {
        pthread_mutex_lock(&dl_guard);
        pid_t pid = fork();
        if (pid == 0) {
            uintptr_t a, b;
            uint32_t id = mid(0, 16, &a, &b);
            void *h = dlopen(library, RTLD_NOW);
            _exit(id != 0 && h != NULL ? 0 : 1);
        }
        pthread_mutex_unlock(&dl_guard);
        int status;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork", pid, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a forked child captures and dlopens", status, 0);
        usleep(20000);
    }
}

static void check_loader_lock(int seconds)
{
    pthread_t t[3];
    pthread_create(&t[0], NULL, churn_library, NULL);
    pthread_create(&t[1], NULL, iterate, NULL);
    pthread_create(&t[2], NULL, misses, NULL);
    sleep((unsigned)seconds);
    stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    CHECK(dl_rounds > 0 && iterate_rounds > 0 && miss_rounds > 0, "every thread got somewhere", dl_rounds, iterate_rounds);
    printf("ok loader-lock (%ld dlopens, %ld iterations, %ld captures)\n", dl_rounds, iterate_rounds, miss_rounds);
    fflush(stdout);
    /* fork while captures miss the rule cache (each dlopen/dlclose empties it) */
    stop = 0;
    long before = miss_rounds;
    pthread_create(&t[0], NULL, churn_library, NULL);
    pthread_create(&t[2], NULL, misses, NULL);
    fork_children(seconds * 10);
    stop = 1;
    pthread_join(t[0], NULL);
    pthread_join(t[2], NULL);
    printf("ok fork (%d children, %ld captures meanwhile)\n", seconds * 10, miss_rounds - before);
}

static void *watchdog(void *x)
{
    (void)x;
    long last = -1;
    for (int still = 0;; sleep(1)) {
        long now = progress + dl_rounds + iterate_rounds + miss_rounds;
        still = now == last ? still + 1 : 0;
        if (still >= 20) {
            fprintf(stderr, "HUNG: threads %ld, dlopens %ld, iterations %ld, captures %ld\n", progress, dl_rounds, iterate_rounds, miss_rounds);
            _exit(3);
        }
        last = now;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: stackdepot_test LIBSTACKDEPOT_DL [SECONDS]\n");
        return 2;
    }
    library = argv[1];
    int seconds = argc > 2 ? atoi(argv[2]) : 2;
    pthread_t w;
    pthread_create(&w, NULL, watchdog, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    check_unknown_and_errno();
    check_frames();
    check_dedup();
    check_threads();
    check_loader_lock(seconds);
    return 0;
}
