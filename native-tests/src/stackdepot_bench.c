/*
 * What a capture costs (nhd_stack_capture of a stack seen before: the unwind, the hash and the
 * table lookup), at depths 8, 16 and 32 from a stack 40 frames deep; each figure the median
 * of RUNS runs of CALLS captures. Prints "depth D: N ns per capture (runs: ...)". Then a
 * thread's first capture, which reads the thread's stack bounds from /proc/self/maps (median
 * of RUNS new threads): "first capture in a thread: N us".
 *   stackdepot_bench [CALLS] [RUNS]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "stackdepot.h"

static volatile int sink;
static long calls = 200000;
static double results[3][32];

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

__attribute__((noinline, noclone, noipa)) static double measure(uint32_t depth)
{
    uint32_t first = 0;
    double t0 = 0;
    for (long i = -1; i < calls; i++) { /* i = -1: adds the stack, untimed */
        uint32_t id = nhd_stack_capture(0, depth);
        if (i < 0) {
            first = id;
            t0 = now_ns();
        } else if (id != first || id == 0) {
            abort();
        }
    }
    return (now_ns() - t0) / (double)calls;
}

__attribute__((noinline, noclone, noipa)) static double deep(int d, uint32_t depth)
{
    double r = d == 0 ? measure(depth) : deep(d - 1, depth);
    sink++;
    return r;
}

static void *first_capture(void *out)
{
    double t0 = now_ns();
    if (nhd_stack_capture(0, 16) == 0)
        abort();
    *(double *)out = (now_ns() - t0) / 1000;
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        calls = atol(argv[1]);
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    if (runs < 1 || runs > 32 || calls < 1) {
        fprintf(stderr, "usage: stackdepot_bench [CALLS] [RUNS (1-32)]\n");
        return 2;
    }
    const uint32_t depths[3] = {8, 16, 32};
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < 3; k++)
            results[k][r] = deep(40, depths[k]);
    for (int k = 0; k < 3; k++) {
        printf("depth %u: ", depths[k]);
        double sorted[32];
        for (int r = 0; r < runs; r++)
            sorted[r] = results[k][r];
        qsort(sorted, (size_t)runs, sizeof sorted[0], cmp);
        printf("%.1f ns per capture (runs:", sorted[runs / 2]);
        for (int r = 0; r < runs; r++)
            printf(" %.1f", results[k][r]);
        printf(")\n");
    }
    double first[32];
    for (int r = 0; r < runs; r++) {
        pthread_t t;
        pthread_create(&t, NULL, first_capture, &first[r]);
        pthread_join(t, NULL);
    }
    qsort(first, (size_t)runs, sizeof first[0], cmp);
    printf("first capture in a thread: %.1f us (median of %d threads; %.1f to %.1f)\n", first[runs / 2], runs, first[0], first[runs - 1]);
    return 0;
}
