/*
 * usable_size: print glibc's malloc_usable_size(malloc(n)) for a fixed set
 * of sizes, one "n usable" line each ("n null" if malloc fails).
 *
 *   usage: usable_size
 *
 * Sizes: 0..4096, 4097..70000 in steps of 61, then a few larger ones around
 * the mmap threshold and beyond. Each block is freed right after measuring.
 *
 * Order matters above the mmap threshold: freeing an mmapped chunk raises
 * glibc's dynamic mmap threshold to that chunk's size, so whether a later
 * request is served from the heap or by mmap depends on what came before.
 * The list below is therefore printed in exactly this order.
 */

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

static void measure(size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        printf("%zu null\n", n);
        return;
    }
    printf("%zu %zu\n", n, malloc_usable_size(p));
    free(p);
}

int main(void)
{
    static const size_t large[] = {
        131072 - 24, 131072 - 16, 131072 - 8, 131072, 131072 + 8,
        200000, 262144, 1048576, 1048576 + 1, 4194304,
        16777216, 33554432, 67108864, 67108864 - 8,
    };

    for (size_t n = 0; n <= 4096; n++)
        measure(n);
    for (size_t n = 4097; n <= 70000; n += 61)
        measure(n);
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
        measure(large[i]);
    return 0;
}
