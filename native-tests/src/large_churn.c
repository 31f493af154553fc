/* mimalloc-bench's malloc-large shape: 20 live calloc'd blocks of 5-25 MiB, a random one
 * replaced 400 times, every page touched. Prints "ok" or the failing call; a correct
 * allocator on this machine never runs out. usage: large_churn SEED */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    srand(argc > 1 ? (unsigned)atoi(argv[1]) : 7);
    enum { LIVE = 20, ROUNDS = 400 };
    char *blocks[LIVE] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        int k = rand() % LIVE;
        free(blocks[k]);
        size_t size = (size_t)(5 + rand() % 21) << 20;
        blocks[k] = calloc(1, size);
        if (blocks[k] == NULL) {
            printf("calloc(%zu) failed at round %d: %s\n", size, i, strerror(errno));
            return 1;
        }
        for (size_t o = 0; o < size; o += 4096) blocks[k][o] = 1;
    }
    for (int k = 0; k < LIVE; k++) free(blocks[k]);
    puts("ok");
    return 0;
}
