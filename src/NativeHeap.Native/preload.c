/* libnativeheap-preload.so: glibc's malloc names over libnativeheap.so's nh_* functions,
 * for LD_PRELOAD. NativeHeap runs on the .NET runtime inside libnativeheap.so, and that
 * runtime mallocs for itself: while it starts, while it attaches a thread, in the GC. Those
 * calls arrive here while a call is already inside NativeHeap (or before NativeHeap can be
 * called at all, or after this thread's runtime state is gone), and must not go back in.
 * They get a small boot allocator of their own; a NativeHeap block freed at such a time
 * waits on a list and is freed by the next call that can enter. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nativeheap.h"

#define EXPORT __attribute__((visibility("default")))
#define TLS __thread __attribute__((tls_model("initial-exec")))

enum { COLD, READY };
static int state; /* COLD until this library's constructor has started NativeHeap */

/* Per thread: inside a NativeHeap call; past this thread's exit hook; hook registered;
 * passed the fork gate; a thread the runtime made for itself (never enters). */
enum { INSIDE = 1, EXITING = 2, HOOKED = 4, GATED = 8, RUNTIME = 16 };
static TLS int tstate;

static inline int can_enter(void)
{
    return __atomic_load_n(&state, __ATOMIC_ACQUIRE) == READY && (tstate & (INSIDE | EXITING | RUNTIME)) == 0;
}

/* ---- the boot allocator: power-of-two blocks from one reserved range, a free list per size ---- */

#define BOOT_RESERVE ((size_t)1 << 30) /* address space only (MAP_NORESERVE); pages come on use */
#define BOOT_MAGIC 0x6e68626fu
#define BOOT_MIN_CLASS 5

struct boot_head { /* the 16 bytes before every boot pointer */
    char *block;
    uint32_t cls;
    uint32_t magic;
};

static char *boot_base;
static size_t boot_top;
static void *boot_free_list[64];
static int boot_lock;

static void boot_acquire(void)
{
    while (__atomic_exchange_n(&boot_lock, 1, __ATOMIC_ACQUIRE)) sched_yield();
}

static void boot_release(void) { __atomic_store_n(&boot_lock, 0, __ATOMIC_RELEASE); }

static inline int is_boot(const void *p)
{
    char *base = __atomic_load_n(&boot_base, __ATOMIC_ACQUIRE);
    return base != NULL && (size_t)((const char *)p - base) < BOOT_RESERVE;
}

static void boot_die(const char *message)
{
    (void)!write(2, message, strlen(message));
    abort();
}

static void *boot_alloc(size_t size, size_t align)
{
    if (align < 16) align = 16;
    size_t need = size + align + sizeof(struct boot_head);
    if (need < size || need > BOOT_RESERVE) {
        errno = ENOMEM;
        return NULL;
    }
    uint32_t cls = BOOT_MIN_CLASS;
    while (((size_t)1 << cls) < need) cls++;
    size_t bytes = (size_t)1 << cls;

    char *block = NULL;
    boot_acquire();
    if (boot_base == NULL) {
        void *m = mmap(NULL, BOOT_RESERVE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m != MAP_FAILED) __atomic_store_n(&boot_base, (char *)m, __ATOMIC_RELEASE);
    }
    if (boot_free_list[cls] != NULL) {
        block = boot_free_list[cls];
        boot_free_list[cls] = *(void **)block;
    } else if (boot_base != NULL && BOOT_RESERVE - boot_top >= bytes) {
        block = boot_base + boot_top;
        boot_top += bytes;
    }
    boot_release();
    if (block == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    char *user = (char *)(((uintptr_t)block + sizeof(struct boot_head) + align - 1) & ~(uintptr_t)(align - 1));
    struct boot_head *h = (struct boot_head *)user - 1;
    h->block = block;
    h->cls = cls;
    h->magic = BOOT_MAGIC;
    return user;
}

static struct boot_head *boot_head_of(void *p)
{
    struct boot_head *h = (struct boot_head *)p - 1;
    if (((uintptr_t)p & 15) != 0 || h->magic != BOOT_MAGIC) boot_die("free(): invalid pointer\n");
    return h;
}

static size_t boot_usable(void *p)
{
    struct boot_head *h = boot_head_of(p);
    return ((size_t)1 << h->cls) - (size_t)((char *)p - h->block);
}

static void boot_free(void *p)
{
    struct boot_head *h = boot_head_of(p);
    char *block = h->block;
    uint32_t cls = h->cls;
    h->magic = 0;
    boot_acquire();
    *(void **)block = boot_free_list[cls];
    boot_free_list[cls] = block;
    boot_release();
}

/* ---- NativeHeap blocks freed while no call could enter ---- */

static void *deferred;

/* A NativeHeap chunk's usable size from its header (glibc's layout), without calling in. */
static size_t chunk_usable(void *p)
{
    size_t head = ((size_t *)p)[-1];
    return (head & ~(size_t)7) - ((head & 2) ? 2 : 1) * sizeof(size_t);
}

static void defer_free(void *p)
{
    void *old = __atomic_load_n(&deferred, __ATOMIC_RELAXED);
    do *(void **)p = old;
    while (!__atomic_compare_exchange_n(&deferred, &old, p, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

static void thread_exit_hook(void *unused);
extern void *__dso_handle;
extern int __cxa_thread_atexit_impl(void (*fn)(void *), void *arg, void *dso);

/* The .NET runtime's GC is not fork-safe: a fork while another thread holds the GC's
 * allocation lock leaves that lock held in the child for ever. NativeHeap allocates managed
 * objects only in a thread's first call (its thread statics and cache) and in the rare calls
 * (mallopt, malloc_stats, malloc_info, malloc_trim, mallinfo), so those pass a gate that
 * fork closes until no such call is in progress. */
static int gate_users, gate_closed;

static void gate_pass(void)
{
    for (;;) {
        while (__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) sched_yield();
        __atomic_fetch_add(&gate_users, 1, __ATOMIC_ACQ_REL);
        if (!__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE)) return;
        __atomic_fetch_sub(&gate_users, 1, __ATOMIC_ACQ_REL);
    }
}

static void gate_close(void)
{
    while (__atomic_exchange_n(&gate_closed, 1, __ATOMIC_ACQ_REL)) sched_yield();
    while (__atomic_load_n(&gate_users, __ATOMIC_ACQUIRE) != 0) sched_yield();
}

static inline void enter_gated(int rare)
{
    if (__builtin_expect(rare || !(tstate & HOOKED), 0)) {
        gate_pass();
        tstate |= GATED;
    }
    tstate |= INSIDE;
    if (__builtin_expect(__atomic_load_n(&deferred, __ATOMIC_RELAXED) != NULL, 0)) {
        void *list = __atomic_exchange_n(&deferred, NULL, __ATOMIC_ACQUIRE);
        while (list != NULL) {
            void *next = *(void **)list;
            nh_free(list);
            list = next;
        }
    }
}

static inline void enter(void) { enter_gated(0); }

static inline void leave(void)
{
    tstate &= ~INSIDE;
    if (__builtin_expect(tstate & GATED, 0)) {
        tstate &= ~GATED;
        __atomic_fetch_sub(&gate_users, 1, __ATOMIC_ACQ_REL);
    }
    if (__builtin_expect(!(tstate & HOOKED), 0)) {
        /* After the thread's first call, so after the runtime attached the thread: this hook
         * runs before the runtime's own, which detaches it. */
        tstate |= HOOKED;
        __cxa_thread_atexit_impl(thread_exit_hook, NULL, &__dso_handle);
    }
}

static void thread_exit_hook(void *unused)
{
    (void)unused;
    if (can_enter()) {
        tstate |= INSIDE;
        nh_thread_exit();
    }
    tstate = EXITING | HOOKED;
}

/* ---- fork: NativeHeap's locks, then the boot allocator's (NativeHeap's prepare may still allocate) ---- */

static void fork_prepare(void)
{
    gate_close();
    if (can_enter()) {
        tstate |= INSIDE;
        nh_fork_prepare();
        tstate &= ~INSIDE;
    }
    boot_acquire();
}

static void fork_parent(void)
{
    boot_release();
    __atomic_store_n(&gate_closed, 0, __ATOMIC_RELEASE);
    if (can_enter()) {
        tstate |= INSIDE;
        nh_fork_parent();
        tstate &= ~INSIDE;
    }
}

static void fork_child(void)
{
    boot_lock = 0;
    gate_users = 0; /* the threads that were waiting at the gate are not in the child */
    gate_closed = 0;
    if (can_enter()) {
        tstate |= INSIDE;
        nh_fork_child();
        tstate &= ~INSIDE;
    }
}

/* ---- the runtime's own threads (the finalizer): made while inside, they never enter ---- */

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static pthread_create_fn real_pthread_create;

struct runtime_start {
    void *(*fn)(void *);
    void *arg;
};

static void *runtime_thread_start(void *p)
{
    struct runtime_start start = *(struct runtime_start *)p;
    boot_free(p);
    tstate = RUNTIME;
    return start.fn(start.arg);
}

EXPORT int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    if (!(tstate & INSIDE)) return real_pthread_create(thread, attr, fn, arg);
    struct runtime_start *start = boot_alloc(sizeof *start, 16);
    if (start == NULL) return EAGAIN;
    start->fn = fn;
    start->arg = arg;
    int r = real_pthread_create(thread, attr, runtime_thread_start, start);
    if (r != 0) boot_free(start);
    return r;
}

__attribute__((constructor)) static void start(void)
{
    tstate |= INSIDE;
    real_pthread_create = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
    if (real_pthread_create == NULL) boot_die("libnativeheap-preload: pthread_create not found\n");
    /* The first call starts the runtime (its own mallocs go to boot) and tells NativeHeap that
     * thread exit and fork come from here, where they are marked as inside the allocator. */
    nh_preload_init();
    tstate &= ~INSIDE;
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    __atomic_store_n(&state, READY, __ATOMIC_RELEASE);
}

/* ---- glibc's names ---- */

EXPORT void *malloc(size_t size)
{
    if (!can_enter()) return boot_alloc(size, 16);
    enter();
    void *p = nh_malloc(size);
    leave();
    return p;
}

EXPORT void free(void *ptr)
{
    if (ptr == NULL) return;
    if (is_boot(ptr)) {
        int saved = errno;
        boot_free(ptr);
        errno = saved;
        return;
    }
    if (!can_enter()) {
        defer_free(ptr);
        return;
    }
    enter();
    nh_free(ptr);
    leave();
}

EXPORT void *calloc(size_t count, size_t size)
{
    if (!can_enter()) {
        size_t bytes;
        if (__builtin_mul_overflow(count, size, &bytes)) {
            errno = ENOMEM;
            return NULL;
        }
        void *p = boot_alloc(bytes, 16);
        if (p != NULL) memset(p, 0, bytes);
        return p;
    }
    enter();
    void *p = nh_calloc(count, size);
    leave();
    return p;
}

/* Moves a block to a new one from malloc (the boot allocator or NativeHeap, whichever may be used now). */
static void *move_block(void *old, size_t old_usable, size_t size)
{
    void *p = malloc(size);
    if (p != NULL) {
        memcpy(p, old, old_usable < size ? old_usable : size);
        free(old);
    }
    return p;
}

EXPORT void *realloc(void *ptr, size_t size)
{
    if (ptr != NULL && is_boot(ptr)) {
        if (size == 0) {
            boot_free(ptr);
            return NULL;
        }
        return move_block(ptr, boot_usable(ptr), size);
    }
    if (!can_enter()) {
        if (ptr == NULL) return boot_alloc(size, 16);
        if (size == 0) {
            defer_free(ptr);
            return NULL;
        }
        return move_block(ptr, chunk_usable(ptr), size);
    }
    enter();
    void *p = nh_realloc(ptr, size);
    leave();
    return p;
}

EXPORT void *reallocarray(void *ptr, size_t count, size_t size)
{
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(ptr, bytes);
}

EXPORT void *memalign(size_t alignment, size_t size)
{
    if (!can_enter()) return boot_alloc(size, alignment);
    enter();
    void *p = nh_memalign(alignment, size);
    leave();
    return p;
}

EXPORT int posix_memalign(void **result, size_t alignment, size_t size)
{
    if (!can_enter()) {
        if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0 || alignment == 0) return EINVAL;
        int saved = errno;
        void *p = boot_alloc(size, alignment);
        errno = saved;
        if (p == NULL) return ENOMEM;
        *result = p;
        return 0;
    }
    enter();
    int r = nh_posix_memalign(result, alignment, size);
    leave();
    return r;
}

EXPORT void *aligned_alloc(size_t alignment, size_t size)
{
    if (!can_enter()) return boot_alloc(size, alignment);
    enter();
    void *p = nh_aligned_alloc(alignment, size);
    leave();
    return p;
}

EXPORT void *valloc(size_t size)
{
    if (!can_enter()) return boot_alloc(size, (size_t)sysconf(_SC_PAGESIZE));
    enter();
    void *p = nh_valloc(size);
    leave();
    return p;
}

EXPORT void *pvalloc(size_t size)
{
    if (!can_enter()) return boot_alloc(size, (size_t)sysconf(_SC_PAGESIZE));
    enter();
    void *p = nh_pvalloc(size);
    leave();
    return p;
}

EXPORT size_t malloc_usable_size(void *ptr)
{
    if (ptr == NULL) return 0;
    if (is_boot(ptr)) return boot_usable(ptr);
    if (!can_enter()) return chunk_usable(ptr);
    enter();
    size_t n = nh_malloc_usable_size(ptr);
    leave();
    return n;
}

EXPORT int malloc_trim(size_t pad)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nh_malloc_trim(pad);
    leave();
    return r;
}

EXPORT int mallopt(int param, int value)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nh_mallopt(param, value);
    leave();
    return r;
}

EXPORT struct mallinfo2 mallinfo2(void)
{
    struct mallinfo2 m = {0};
    if (!can_enter()) return m;
    enter_gated(1);
    m = nh_mallinfo2();
    leave();
    return m;
}

/* The old interface, as glibc 2.36 keeps it: mallinfo2's figures cut to int. */
EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo m = {
        .arena = (int)m2.arena, .ordblks = (int)m2.ordblks, .smblks = (int)m2.smblks,
        .hblks = (int)m2.hblks, .hblkhd = (int)m2.hblkhd, .usmblks = (int)m2.usmblks,
        .fsmblks = (int)m2.fsmblks, .uordblks = (int)m2.uordblks, .fordblks = (int)m2.fordblks,
        .keepcost = (int)m2.keepcost,
    };
    return m;
}

EXPORT void malloc_stats(void)
{
    if (!can_enter()) return;
    enter_gated(1);
    nh_malloc_stats();
    leave();
}

EXPORT int malloc_info(int options, FILE *stream)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nh_malloc_info(options, stream);
    leave();
    return r;
}
