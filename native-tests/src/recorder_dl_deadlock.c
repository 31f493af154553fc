/*
 * The recorder's lock order against glibc's loader lock (run under librecorder.so with
 * NH_TRACE_EVERY=1, so that every call writes a k line, which measures the unwinder's memory).
 * Three threads for SECONDS: one calls dl_iterate_phdr with a callback that mallocs (malloc
 * under the loader lock), one mallocs and frees from a function of its own (unwinder cache
 * misses), one dlopens and dlcloses LIBRARY (frees under the loader lock). With the unwinder
 * taking its mutex before the loader lock, this deadlocked within a second or two.
 * A watchdog: if no thread gets anywhere for 5 s, "HUNG" and exit status 3.
 *   recorder_dl_deadlock LIBRARY [SECONDS]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *library;
static volatile int stop;
static volatile long a_iters, b_iters, c_iters;

static int callback(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)info;
    (void)size;
    (void)data;
    void *volatile p = malloc(32);
    free(p);
    return 0;
}

static void *iterate(void *x)
{
    (void)x;
    while (!stop) {
        dl_iterate_phdr(callback, NULL);
        a_iters++;
    }
    return NULL;
}

__attribute__((noinline)) static void *work(int k)
{
    return malloc(16 + (size_t)k);
}

static void *churn_heap(void *x)
{
    (void)x;
    for (int k = 0; !stop; k++) {
        free(work(k & 63));
        b_iters++;
    }
    return NULL;
}

static void *churn_library(void *x)
{
    (void)x;
    while (!stop) {
        void *h = dlopen(library, RTLD_NOW);
        if (h == NULL) {
            fprintf(stderr, "dlopen %s: %s\n", library, dlerror());
            _exit(2);
        }
        dlclose(h);
        c_iters++;
    }
    return NULL;
}

/* Exits with 3 if no thread gets anywhere for 5 s (until main has joined them all). */
static volatile int joined;

static void *watchdog(void *x)
{
    (void)x;
    long pa = -1, pb = -1, pc = -1;
    int still = 0;
    while (!joined) {
        sleep(1);
        if (a_iters == pa && b_iters == pb && c_iters == pc && !joined) {
            if (++still >= 5) {
                fprintf(stderr, "HUNG: a=%ld b=%ld c=%ld\n", a_iters, b_iters, c_iters);
                _exit(3);
            }
        } else {
            still = 0;
        }
        pa = a_iters;
        pb = b_iters;
        pc = c_iters;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: recorder_dl_deadlock LIBRARY [SECONDS]\n");
        return 2;
    }
    library = argv[1];
    int seconds = argc > 2 ? atoi(argv[2]) : 3;
    pthread_t t[3], w;
    pthread_create(&w, NULL, watchdog, NULL);
    pthread_create(&t[0], NULL, iterate, NULL);
    pthread_create(&t[1], NULL, churn_heap, NULL);
    pthread_create(&t[2], NULL, churn_library, NULL);
    sleep((unsigned)seconds);
    stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    joined = 1;
    pthread_join(w, NULL);
    printf("ok a=%ld b=%ld c=%ld\n", a_iters, b_iters, c_iters);
    return 0;
}
