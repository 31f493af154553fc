/*
 * workloads: the benchmark workloads of benchmarks/NativeHeap.Benchmarks/Workloads.cs (the
 * allocator world's published descriptions), in C, on whatever malloc the process has: run
 * it under LD_PRELOAD to measure another allocator.
 *   workloads NAME      NAME: simple thread1 thread2 larson xmalloc mstress large
 * Prints "NAME seconds=S allocations=N peak_kib=P retained_kib=R": wall time of the
 * workload, VmHWM over VmRSS before it, and the anonymous RSS left after every block is
 * freed over the anonymous RSS before it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "workloads: malloc(%zu) failed\n", n);
        exit(2);
    }
    return p;
}

/* xorshift64*: a small deterministic generator, one per thread. */
static uint64_t next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static size_t below(uint64_t *s, size_t n) { return (size_t)(next(s) % n); }

static long run_threads(int n, void *(*body)(void *))
{
    pthread_t t[16];
    long ids[16], total = 0;
    for (int i = 0; i < n; i++) {
        ids[i] = i;
        pthread_create(&t[i], NULL, body, &ids[i]);
    }
    for (int i = 0; i < n; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long)(intptr_t)r;
    }
    return total;
}

/* glibc's bench-malloc-simple: n blocks of 16/32/64 bytes, the first half freed in order, the rest in reverse. */
static long simple(void)
{
    static void *blocks[1600];
    static const int sizes[] = {16, 32, 64}, counts[] = {25, 100, 400, 1600};
    long count = 0;
    for (int s = 0; s < 3; s++)
        for (int c = 0; c < 4; c++) {
            int n = counts[c];
            for (int rep = 0; rep < 1600 / n * 4; rep++) {
                for (int i = 0; i < n; i++) blocks[i] = xmalloc((size_t)sizes[s]);
                for (int i = 0; i < n / 2; i++) free(blocks[i]);
                for (int i = n - 1; i >= n / 2; i--) free(blocks[i]);
                count += n;
            }
        }
    return count;
}

/* glibc's bench-malloc-thread: a 1024-slot working set per thread, sizes 4..32768 with inverse-square weight. */
static void *thread_body(void *arg)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull * (uint64_t)(*(long *)arg + 1);
    void *slots[1024] = {0};
    const int steps = 200000;
    for (int i = 0; i < steps; i++) {
        size_t k = below(&rng, 1024);
        free(slots[k]);
        double u = (double)(next(&rng) >> 11) / 9007199254740992.0;
        size_t size = (size_t)(1 / (1 / 4.0 - u * (1 / 4.0 - 1 / 32768.0)));
        slots[k] = xmalloc(size);
    }
    for (int k = 0; k < 1024; k++) free(slots[k]);
    return (void *)(intptr_t)steps;
}

/* larson: threads churn 5000 slots of 8..1000 bytes; each round's new threads take over the old ones' slots. */
static void *larson_sets[2][5000];
static int larson_round;

static void *larson_body(void *arg)
{
    long t = *(long *)arg;
    uint64_t rng = 0x2545f4914f6cdd1dull * (uint64_t)(larson_round * 31 + t + 1);
    void **slots = larson_sets[(t + larson_round) % 2];
    const int steps = 50000;
    for (int i = 0; i < steps; i++) {
        size_t k = below(&rng, 5000);
        free(slots[k]);
        slots[k] = xmalloc(8 + below(&rng, 993));
    }
    return (void *)(intptr_t)steps;
}

static long larson(void)
{
    long total = 0;
    for (larson_round = 0; larson_round < 4; larson_round++) total += run_threads(2, larson_body);
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 5000; k++) free(larson_sets[s][k]);
    return total;
}

/* xmalloc-test: a producer allocates batches of 4096 x 64 bytes; a consumer thread frees them. */
enum { BATCHES = 100, BATCH = 4096, QUEUE = 4 };
static void **queue[QUEUE];
static int head, tail;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;

static void *consumer(void *arg)
{
    (void)arg;
    for (int b = 0; b < BATCHES; b++) {
        pthread_mutex_lock(&qlock);
        while (head == tail) pthread_cond_wait(&qcond, &qlock);
        void **batch = queue[head % QUEUE];
        head++;
        pthread_cond_broadcast(&qcond);
        pthread_mutex_unlock(&qlock);
        for (int i = 0; i < BATCH; i++) free(batch[i]);
        free(batch);
    }
    return NULL;
}

static long xmalloc_test(void)
{
    pthread_t c;
    pthread_create(&c, NULL, consumer, NULL);
    for (int b = 0; b < BATCHES; b++) {
        void **batch = xmalloc(BATCH * sizeof(void *));
        for (int i = 0; i < BATCH; i++) batch[i] = xmalloc(64);
        pthread_mutex_lock(&qlock);
        while (tail - head == QUEUE) pthread_cond_wait(&qcond, &qlock);
        queue[tail % QUEUE] = batch;
        tail++;
        pthread_cond_broadcast(&qcond);
        pthread_mutex_unlock(&qlock);
    }
    pthread_join(c, NULL);
    return (long)BATCHES * BATCH;
}

/* mstress-like: mostly short lifetimes, some long, rare large blocks. */
static long mstress(void)
{
    static void *short_lived[256], *long_lived[4096];
    uint64_t rng = 5;
    const int steps = 300000;
    for (int i = 0; i < steps; i++) {
        size_t roll = below(&rng, 1000);
        size_t size = roll < 5 ? 100000 + below(&rng, 900000) : 8 + below(&rng, 2040);
        char *p = xmalloc(size);
        p[0] = 1;
        void **slot = roll % 10 == 0 ? &long_lived[below(&rng, 4096)] : &short_lived[below(&rng, 256)];
        free(*slot);
        *slot = p;
    }
    for (int k = 0; k < 256; k++) free(short_lived[k]);
    for (int k = 0; k < 4096; k++) free(long_lived[k]);
    return steps;
}

/* malloc-large: zeroed blocks of 5..25 MiB into 20 slots, a page in 16 touched. */
static long large(void)
{
    static void *slots[20];
    uint64_t rng = 9;
    for (int i = 0; i < 100; i++) {
        size_t k = below(&rng, 20);
        free(slots[k]);
        size_t size = (5u << 20) + below(&rng, 20u << 20);
        char *p = calloc(1, size);
        if (p == NULL) exit(2);
        for (size_t o = 0; o < size; o += 4096 * 16) p[o] = 1;
        slots[k] = p;
    }
    for (int k = 0; k < 20; k++) free(slots[k]);
    return 100;
}

/* /proc/self/status "NAME: N kB", read without allocating. */
static long status_kib(const char *name)
{
    char text[8192];
    int fd = open("/proc/self/status", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (fd >= 0) close(fd);
    if (n <= 0) return -1;
    text[n] = 0;
    char *at = strstr(text, name);
    return at == NULL ? -1 : strtol(at + strlen(name), NULL, 10);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: workloads simple|thread1|thread2|larson|xmalloc|mstress|large\n");
        return 2;
    }
    static char out[4096];
    setvbuf(stdout, out, _IOFBF, sizeof out);
    free(xmalloc(1)); /* the allocator's one-time start-up is not the workload's */
    const char *name = argv[1];
    long base_rss = status_kib("VmRSS:"), base_anon = status_kib("RssAnon:");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long n;
    if (strcmp(name, "simple") == 0) n = simple();
    else if (strcmp(name, "thread1") == 0) n = run_threads(1, thread_body);
    else if (strcmp(name, "thread2") == 0) n = run_threads(2, thread_body);
    else if (strcmp(name, "larson") == 0) n = larson();
    else if (strcmp(name, "xmalloc") == 0) n = xmalloc_test();
    else if (strcmp(name, "mstress") == 0) n = mstress();
    else if (strcmp(name, "large") == 0) n = large();
    else {
        fprintf(stderr, "workloads: unknown workload '%s'\n", name);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long peak = status_kib("VmHWM:"), retained = status_kib("RssAnon:");
    printf("%s seconds=%.6f allocations=%ld peak_kib=%ld retained_kib=%ld\n", name,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, n, peak - base_rss, retained - base_anon);
    return 0;
}
