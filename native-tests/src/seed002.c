/*
 * seeds/002: the program from ../shared/seeds/002, with its endless sleep replaced by
 * printing anonymous RSS (KiB, /proc/self/statm) where its text looks at it: after the
 * mallocs, after the frees, after its commented-out malloc(2000)+free, and after
 * malloc_trim(0). Built against glibc and against libnativeheap (-include nh_names.h).
 * Its own output allocates nothing (a static stdout buffer, statm read with read(2)): in the
 * libnativeheap build stdio's blocks would come from glibc, in the glibc build from the heap
 * under study, and a FILE above the blocks pins glibc's top.
 */
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long anon_kib(void)
{
    char text[256];
    long size, resident, shared;
    int fd = open("/proc/self/statm", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (n <= 0) exit(2);
    close(fd);
    text[n] = 0;
    if (sscanf(text, "%ld %ld %ld", &size, &resident, &shared) != 3) exit(2);
    return (resident - shared) * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(void)
{
    enum { alloc_time = 4000 };
    static char *a[alloc_time], *b[alloc_time];
    static char out[4096];
    setvbuf(stdout, out, _IOLBF, sizeof out);
    long start = anon_kib();
    for (int i = 0; i < alloc_time; i++) {
        a[i] = (char *)malloc(52722);
        memset(a[i], 1, 52722);
        b[i] = (char *)malloc(1);
        memset(b[i], 1, 1);
    }
    printf("malloc finished %ld\n", anon_kib() - start);
    for (int i = alloc_time - 1; i >= 0; i--) {
        free(a[i]);
        free(b[i]);
    }
    printf("free finished %ld\n", anon_kib() - start);
    char *p = (char *)malloc(2000);
    free(p);
    printf("malloc(2000)+free %ld\n", anon_kib() - start);
    malloc_trim(0);
    printf("malloc_trim(0) %ld\n", anon_kib() - start);
    return 0;
}
