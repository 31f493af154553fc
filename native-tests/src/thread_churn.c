/* mimalloc-bench's mleak shape: threads that each allocate a little and end, one after
 * another, THREADS times. Prints the process's peak resident KiB (VmHWM): a thread that has
 * ended should leave nothing behind. usage: thread_churn [THREADS] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *body(void *arg)
{
    size_t n = 16 + (size_t)(uintptr_t)arg % 2000;
    void *p[8];
    for (int i = 0; i < 8; i++) p[i] = malloc(n * (size_t)(i + 1));
    for (int i = 0; i < 8; i++) free(p[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 20000;
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, body, (void *)(uintptr_t)i) != 0) return 1;
        pthread_join(t, NULL);
    }
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0) printf("peak_kib %ld\n", strtol(line + 6, NULL, 10));
    if (f != NULL) fclose(f);
    return 0;
}
