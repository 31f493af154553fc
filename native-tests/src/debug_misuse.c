/* The debug heap's misuse cases from C (DebugHeapPreloadTests), run with libnativeheap-preload.so
 * and NATIVEHEAP_TUNABLES=debug=1: each must end in an abort whose report names the block and
 * the functions that allocated and freed it. Built with -g and without frame pointers, so
 * that the names come from DWARF CFI and the symbol table as a user's program's would.
 *   debug_misuse overflow|underflow|write-after-free|double-free|clean SIZE
 * Under guard_sample=1 the accesses that fault (a guard page, a freed block's pages) end in
 * SIGSEGV instead, after the fault handler's report:
 *   debug_misuse read-past|write-past|read-after-free|write-after-free-now SIZE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

__attribute__((noinline)) static char *allocate_victim(size_t size)
{
    char *p = malloc(size);
    memset(p, 7, size);
    return p;
}

__attribute__((noinline)) static void free_victim(char *p)
{
    free(p);
    __asm__ volatile("" ::: "memory"); /* not a tail call: free_victim stays on the stack */
}

/* A byte unlike the one there (the canary is random: it may hold 0x41), said on stderr, which abort does not lose. */
static void overwrite(char *at)
{
    unsigned char v = (unsigned char)*at == 0x41 ? 0x42 : 0x41;
    *at = (char)v;
    fprintf(stderr, "wrote %02x\n", v);
}

int main(int argc, char **argv)
{
    if (argc < 3) return 2;
    size_t size = strtoul(argv[2], NULL, 0);
    const char *what = argv[1];
    char *p = allocate_victim(size);
    if (!strcmp(what, "overflow")) {
        overwrite(p + size); /* one byte past the end */
        free_victim(p);
    } else if (!strcmp(what, "underflow")) {
        overwrite(p - 1); /* one byte before the start */
        free_victim(p);
    } else if (!strcmp(what, "write-after-free")) {
        free_victim(p);
        p[size / 2] = 0x41;
        for (int i = 0; i < 100000; i++) free(malloc(size)); /* push it out of the quarantine */
    } else if (!strcmp(what, "double-free")) {
        free_victim(p);
        for (int i = 0; i < 100; i++) free(malloc(size)); /* past where the tcache would have kept it */
        free(p);
    } else if (!strcmp(what, "read-past")) {
        fprintf(stderr, "read %d\n", *(volatile char *)(p + size)); /* one byte past the end */
    } else if (!strcmp(what, "write-past")) {
        *(volatile char *)(p + size) = 0x41;
    } else if (!strcmp(what, "read-after-free")) {
        free_victim(p);
        fprintf(stderr, "read %d\n", *(volatile char *)p);
    } else if (!strcmp(what, "write-after-free-now")) {
        free_victim(p);
        *(volatile char *)(p + size / 2) = 0x41;
    } else if (!strcmp(what, "clean")) {
        printf("usable=%zu\n", malloc_usable_size(p));
        p = realloc(p, size * 3);
        memset(p, 1, size * 3);
        free(p);
    } else {
        return 2;
    }
    printf("no report\n");
    return 0;
}
