/*
 * The stack depot when it is full, built with small bounds (-DNHD_MAX_STACKS, -DNHD_FRAME_WORDS,
 * with stackdepot.c and unwind.c compiled in): distinct stacks get ids until the ids or the
 * frames run out, then 0; the stacks added before keep their ids and frames, and capturing one
 * of them again still finds it. Prints "ok full: N ids"; a failed check prints "FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>

#include "stackdepot.h"

static volatile int sink;

__attribute__((noinline, noclone, noipa)) static uint32_t recurse(int d)
{
    uint32_t id = d == 0 ? nhd_stack_capture(0, NHD_MAX_DEPTH) : recurse(d - 1);
    sink++;
    return id;
}

int main(void)
{
    enum { STACKS = 50 }; /* depths 0..49: distinct stacks */
    uint32_t ids[STACKS];
    uintptr_t f[NHD_MAX_DEPTH];
    int given = 0;
    for (int pass = 0; pass < 2; pass++) /* one call site: pass 1 captures pass 0's stacks again */
        for (int d = 0; d < STACKS; d++) {
            uint32_t id = recurse(d);
            if (pass == 0) {
                ids[d] = id;
                continue;
            }
            if (ids[d] != 0) {
                given++;
                if (id != ids[d] || nhd_stack_frames(ids[d], f, NHD_MAX_DEPTH) == 0) {
                    fprintf(stderr, "FAIL depth %d: id %u, again %u\n", d, ids[d], id);
                    return 1;
                }
            } else if (id != 0) {
                fprintf(stderr, "FAIL depth %d: 0 when full, then %u\n", d, id);
                return 1;
            }
            if (d > 0 && ids[d] != 0 && ids[d - 1] == 0) {
                fprintf(stderr, "FAIL depth %d: an id after the depot was full\n", d);
                return 1;
            }
        }
#ifdef NHD_MAX_STACKS
    int most = NHD_MAX_STACKS - 1; /* id 0 is none */
#else
    int most = STACKS - 1;
#endif
    if (given == 0 || given == STACKS || given > most) {
        fprintf(stderr, "FAIL %d ids given, at most %d\n", given, most);
        return 1;
    }
    printf("ok full: %d ids\n", given);
    return 0;
}
