/*
 * The recorder's stack test (tests/NativeHeap.Tests/Tool/RecorderStackTests.cs): allocations at
 * known depths, built -O2 -g -fomit-frame-pointer so that only the DWARF CFI can unwind it.
 *   main -> load_config -> remember_setting -> malloc(80)      (frames with big buffers)
 *   main -> realloc(that, 800), then free(it)                 (an ID kept, then freed)
 *   a thread: worker_main -> worker_alloc -> calloc(3, 48)
 *   a forked child: child_work -> malloc(96), then exit
 * Sizes 80, 800, 48 and 96 are used by nothing else the program does.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile keep[4];
volatile char sink;

NOINLINE int remember_setting(int key)
{
    char big[12000]; /* a large frame: CFA = RSP + more than 12000 */
    memset(big, key, sizeof big);
    keep[0] = malloc(80);
    sink = big[key % sizeof big];
    return keep[0] != NULL;
}

NOINLINE int load_config(int n)
{
    char lines[3000];
    memset(lines, n, sizeof lines);
    int r = remember_setting(n + lines[n % 7]);
    sink = lines[r];
    return r + 1;
}

NOINLINE void worker_alloc(void)
{
    keep[1] = calloc(3, 48);
    sink = 1;
}

NOINLINE void *worker_main(void *arg)
{
    worker_alloc();
    sink = 2;
    return arg;
}

NOINLINE void child_work(void)
{
    keep[2] = malloc(96);
    sink = 3;
}

int main(void)
{
    int r = load_config(5);
    keep[0] = realloc(keep[0], 800);
    free(keep[0]);
    pthread_t t;
    if (pthread_create(&t, NULL, worker_main, NULL) != 0 || pthread_join(t, NULL) != 0)
        return 2;
    pid_t pid = fork();
    if (pid < 0)
        return 3;
    if (pid == 0) {
        child_work();
        exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 4;
    return r == 2 ? 0 : 1;
}
