/*
 * threads: a deterministic multi-threaded allocation pattern, for recording
 * with librecorder and replaying with build/replay (see
 * traces/recorded/README.md).
 *
 * The main thread and workers A, B, C, D take turns by a fixed script: a
 * mutex and condvar baton lets exactly one of them run at a time, so the
 * calls come in the same order on every run. A, B and C are alive at once
 * (three arenas); A ends and is joined, then D starts and gets A's arena
 * from glibc's free list. Sizes mix small blocks and 64 KiB-ish ones (under
 * the mmap threshold), and some blocks are freed by another thread than
 * the one that allocated them.
 *
 * Prints nothing and exits 0 on success; checks that the arenas came out as
 * described (glibc 2.36 layout: a non-main heap is 64 MiB-aligned and its
 * first word is its arena).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { MAIN, A, B, C, D, NTHREADS };

static void *blk[32];   /* blocks handed between threads */
static void *own[NTHREADS][8];
static pthread_t th[NTHREADS];
static uintptr_t arena_seen[NTHREADS];

static void die(const char *what)
{
    fprintf(stderr, "threads: %s\n", what);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        die("out of memory");
    return p;
}

/* The arena of a block: the main arena's blocks have no NON_MAIN_ARENA bit
 * (0 here); a non-main arena's heap starts with its heap_info. */
static uintptr_t arena_of(void *p)
{
    size_t size_word = ((size_t *)p)[-1];
    if ((size_word & 2) || !(size_word & 4))
        return 0;
    return *(uintptr_t *)((uintptr_t)p & ~(((uintptr_t)64 << 20) - 1));
}

static void *worker(void *arg);

static void start(int who)
{
    if (pthread_create(&th[who], NULL, worker, (void *)(intptr_t)who) != 0)
        die("pthread_create failed");
}

static void join(int who)
{
    if (pthread_join(th[who], NULL) != 0)
        die("pthread_join failed");
}

/* ------------------------------------------------------------ the steps */

static void main_1(void)
{
    blk[0] = xmalloc(100);
    blk[1] = xmalloc(65536);
    blk[2] = calloc(10, 40);
    if (blk[2] == NULL)
        die("out of memory");
    free(blk[0]);
    start(A);
    start(B);
    start(C);
}

static void a_1(void)
{
    static const size_t sizes[] = { 24, 200, 1000, 65536, 70000, 500 };
    for (int i = 0; i < 6; i++)
        own[A][i] = xmalloc(sizes[i]);
    arena_seen[A] = arena_of(own[A][0]);
    free(own[A][1]);
    own[A][1] = NULL;
    blk[10] = xmalloc(300);   /* freed by B */
    blk[11] = xmalloc(60000); /* freed by D, after A has ended */
}

static void b_1(void)
{
    static const size_t sizes[] = { 40, 400, 65536, 65544, 32 };
    for (int i = 0; i < 5; i++)
        own[B][i] = xmalloc(sizes[i]);
    arena_seen[B] = arena_of(own[B][0]);
    free(blk[10]);
    blk[12] = xmalloc(5000); /* freed by C */
    own[B][0] = realloc(own[B][0], 2000);
    if (own[B][0] == NULL)
        die("out of memory");
}

static void c_1(void)
{
    static const size_t sizes[] = { 72, 720, 65536, 100, 3000 };
    for (int i = 0; i < 5; i++)
        own[C][i] = xmalloc(sizes[i]);
    arena_seen[C] = arena_of(own[C][0]);
    free(blk[12]);
    free(blk[1]); /* main's 64 KiB */
    blk[13] = xmalloc(128); /* freed by D */
}

static void a_2(void)
{
    free(own[A][0]);
    free(own[A][3]);
    own[A][0] = own[A][3] = NULL;
    own[A][6] = xmalloc(65536);
    own[A][7] = xmalloc(48);
}

/* A worker's last step: frees what it still owns. */
static void free_own(int who)
{
    for (int i = 0; i < 8; i++) {
        free(own[who][i]);
        own[who][i] = NULL;
    }
}

static void a_end(void) { free_own(A); }

static void main_2(void)
{
    join(A); /* A's arena is on the free list now */
    start(D);
    free(blk[2]);
    blk[3] = xmalloc(800);
}

static void d_1(void)
{
    static const size_t sizes[] = { 64, 65536, 256, 2048 };
    for (int i = 0; i < 4; i++)
        own[D][i] = xmalloc(sizes[i]);
    arena_seen[D] = arena_of(own[D][0]);
    free(blk[11]); /* A's block, in the arena D took over */
    free(blk[13]);
}

static void b_2(void)
{
    free(own[B][1]);
    free(own[B][2]);
    own[B][1] = NULL;
    own[B][2] = xmalloc(65536);
    own[B][5] = xmalloc(160);
}

static void c_2(void)
{
    free(own[C][0]);
    own[C][0] = NULL;
    own[C][1] = realloc(own[C][1], 66000);
    if (own[C][1] == NULL)
        die("out of memory");
    free(own[C][2]);
    own[C][2] = xmalloc(24);
}

static void main_3(void)
{
    free(blk[3]);
    blk[3] = NULL;
}

static void b_end(void) { free_own(B); }
static void c_end(void) { free_own(C); }
static void d_end(void) { free_own(D); }
static void main_join_b(void) { join(B); }
static void main_join_c(void) { join(C); }
static void main_join_d(void) { join(D); }

/* A worker's "end" step is its last: it returns right after, while the
 * main thread's next step joins it (no other thread runs meanwhile). */
static const struct step {
    int who;
    void (*fn)(void);
    int end;
} script[] = {
    { MAIN, main_1, 0 },
    { A, a_1, 0 },
    { B, b_1, 0 },
    { C, c_1, 0 },
    { A, a_2, 0 },
    { A, a_end, 1 },
    { MAIN, main_2, 0 },
    { D, d_1, 0 },
    { B, b_2, 0 },
    { C, c_2, 0 },
    { MAIN, main_3, 0 },
    { B, b_end, 1 },
    { MAIN, main_join_b, 0 },
    { C, c_end, 1 },
    { MAIN, main_join_c, 0 },
    { D, d_end, 1 },
    { MAIN, main_join_d, 0 },
};
#define NSTEPS (sizeof script / sizeof script[0])

static pthread_mutex_t baton = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn = PTHREAD_COND_INITIALIZER;
static size_t pos; /* the script step that may run */

/* Runs who's steps in script order; returns after its end step (or, for
 * the main thread, after the script). */
static void run_steps(int who)
{
    pthread_mutex_lock(&baton);
    for (;;) {
        while (pos < NSTEPS && script[pos].who != who)
            pthread_cond_wait(&turn, &baton);
        if (pos == NSTEPS)
            break;
        const struct step *s = &script[pos];
        pthread_mutex_unlock(&baton);
        s->fn();
        pthread_mutex_lock(&baton);
        pos++;
        pthread_cond_broadcast(&turn);
        if (s->end)
            break;
    }
    pthread_mutex_unlock(&baton);
}

static void *worker(void *arg)
{
    run_steps((int)(intptr_t)arg);
    return NULL;
}

int main(void)
{
    run_steps(MAIN);
    if (arena_seen[A] == 0 || arena_seen[B] == 0 || arena_seen[C] == 0)
        die("a worker's block is in the main arena");
    if (arena_seen[A] == arena_seen[B] || arena_seen[A] == arena_seen[C]
        || arena_seen[B] == arena_seen[C])
        die("workers A, B and C share an arena");
    if (arena_seen[D] != arena_seen[A])
        die("D did not take over A's arena");
    return 0;
}
