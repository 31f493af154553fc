/* libnativeheap's C layer, linked into libnativeheap.so with the allocator (NativeAOT):
 * the nh_* functions of include/nativeheap.h. NativeHeap itself is managed code (the
 * nhm_* entry points of Exports.cs) on a .NET runtime, and that runtime mallocs for itself:
 * while it starts, while it attaches a thread, in the GC. Linked beside glibc, those calls
 * go to glibc; under libnativeheap-preload.so they come back here, while a call is already
 * inside NativeHeap (or before NativeHeap can be called at all, on the runtime's own
 * threads, or after this thread's runtime state is gone), and must not go back in. They get
 * a small boot allocator; a NativeHeap block freed at such a time waits on a list and is
 * freed by the next call that can enter. This layer also owns what C needs around the
 * allocator: the thread-exit hook, fork handlers, and a gate that keeps fork out of the
 * .NET allocations a thread's first call makes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nativeheap.h"
#include "nativeheap-managed.h"

#define EXPORT __attribute__((visibility("default")))
#define TLS __thread __attribute__((tls_model("initial-exec")))

/* The runtime starts at the first call that needs it, not before: a program that never
 * allocates (/bin/true) never pays for it. Preloaded, not before libnativeheap-preload.so's
 * constructor has allowed it (nh_start): calls made while other libraries start, before this
 * one's runtime has run its own static constructors, must not start it (they go to boot). */
enum { COLD, STARTING, READY };
static int state;
static int start_allowed; /* preloaded: set by nh_start */
extern const int nh_preload_marker __attribute__((weak)); /* defined by libnativeheap-preload.so */

/* Per thread: inside a NativeHeap call; past this thread's exit hook; hook registered;
 * passed the fork gate; a thread the runtime made for itself (never enters); the exit
 * gate's release registered; passed the gate for the thread's exit. */
enum { INSIDE = 1, EXITING = 2, HOOKED = 4, GATED = 8, RUNTIME = 16, EXIT_GATE = 32, EXIT_GATED = 64 };
static TLS int tstate;

/* The thread's allocator state (the managed ThreadLocals: its tcache and arena), given to every
 * call that needs it. It lives here, not in a managed thread static: those are GC objects,
 * and a C thread that made one left it, and its allocation context, in gen 0 until the next
 * collection, so short-lived threads kept the whole gen 0 budget resident. Zero in each new thread. */
#define THREAD_LOCALS_SIZE 64
static TLS _Alignas(16) unsigned char thread_locals[THREAD_LOCALS_SIZE];
#define TS ((void *)thread_locals)

/* ---- the fast paths: a tcache hit and a free into a bin with room, without entering .NET ----
 * The same steps and checks as the managed fast paths (Heap.Calls.cs: TcacheGetFast,
 * TcachePutFast, CallocFast; Tcache.Put and Tcache.Take), on the tcache the managed side made
 * for this thread, whose pointer is the first field of the thread state above (ThreadLocals):
 * set when the managed side makes the tcache, cleared when it gives it back at thread exit
 * (an option change drains the bins and refreshes `fast`; a fork child keeps its thread's
 * tcache, as glibc's does). Anything else, a bad entry included, enters .NET, which
 * reports it. The layout is nativeheap-managed.h's. Not while this thread is inside a
 * NativeHeap call: the runtime's own mallocs then must not touch a tcache being changed. */
static struct nhm_fast_path fast; /* kept current by the managed side (Heap.FastPath) */

#define TCACHE (((struct nhm_thread_locals *)thread_locals)->tcache)

static inline struct nhm_tcache_entry *reveal(struct nhm_tcache_entry **pos)
{
    return (struct nhm_tcache_entry *)(((uintptr_t)pos >> 12) ^ (uintptr_t)*pos);
}

/* Whether chunk p is in one of the heaps' 64 MiB slots (Ownership.HoldsHeapSlot): before any header is read. */
static inline int in_heap_slot(const void *p)
{
    const uint64_t *slots = fast.heap_slots;
    uintptr_t slot = (uintptr_t)p >> NHM_SLOT_SHIFT;
    return slots != NULL && slot < NHM_SLOTS && ((slots[slot >> 6] >> (slot & 63)) & 1) != 0;
}

static inline void *tcache_get_fast(size_t size)
{
    struct nhm_tcache *tc = TCACHE;
    if (__builtin_expect(tc == NULL || size >= __atomic_load_n(&fast.request_limit, __ATOMIC_ACQUIRE) || (tstate & INSIDE), 0))
        return NULL;
    size_t idx = nhm_tcache_index(size);
    if (tc->counts[idx] == 0) return NULL;
    struct nhm_tcache_entry *e = tc->entries[idx];
    if ((uintptr_t)e & 15) return NULL; /* "malloc(): unaligned tcache chunk detected", said by .NET */
    tc->entries[idx] = reveal(&e->next);
    tc->counts[idx]--;
    tc->bytes -= nhm_tcache_chunk_size(idx);
    e->key = 0;
    return e;
}

static inline int tcache_put_fast(void *ptr)
{
    struct nhm_tcache *tc = TCACHE;
    char *p = (char *)ptr - NHM_CHUNK_HEADER;
    if (tc == NULL || __atomic_load_n(&fast.request_limit, __ATOMIC_ACQUIRE) == 0 || (tstate & INSIDE)
        || ((uintptr_t)p & 15) != 0 || !in_heap_slot(p))
        return 0;
    size_t head = ((size_t *)p)[NHM_SIZE_WORD];
    size_t idx = (head - NHM_MIN_CHUNK) >> 4; /* huge when the size is below MINSIZE */
    if (idx >= fast.bins || (head & (NHM_IS_MMAPPED | 8)) != 0 /* mmapped, or not a size */
        || tc->counts[idx] >= fast.count || tc->bytes + nhm_tcache_chunk_size(idx) > fast.bytes)
        return 0;
    struct nhm_tcache_entry *e = ptr;
    if (e->key == fast.key) return 0; /* maybe a double free: .NET walks the bin */
    e->key = fast.key;
    e->next = (struct nhm_tcache_entry *)(((uintptr_t)&e->next >> 12) ^ (uintptr_t)tc->entries[idx]);
    tc->entries[idx] = e;
    tc->counts[idx]++;
    tc->bytes += nhm_tcache_chunk_size(idx);
    return 1;
}

static void start(void);

static inline int can_enter(void)
{
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (__builtin_expect(s != READY, 0)) {
        if (s != COLD || (&nh_preload_marker != NULL && !__atomic_load_n(&start_allowed, __ATOMIC_ACQUIRE))
            || (tstate & (INSIDE | RUNTIME)))
            return 0;
        start();
        if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != READY) return 0;
    }
    return (tstate & (INSIDE | EXITING | RUNTIME)) == 0;
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
    if (align & (align - 1)) { /* memalign's way: raised to a power of two, EINVAL past SIZE_MAX/2+1 */
        if (align > SIZE_MAX / 2 + 1) {
            errno = EINVAL;
            return NULL;
        }
        align = (size_t)1 << (64 - __builtin_clzl(align));
    }
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
static void exit_gate_release(void *unused);
static pthread_key_t exit_gate_key;
extern void *__dso_handle;
extern int __cxa_thread_atexit_impl(void (*fn)(void *), void *arg, void *dso);

/* The .NET runtime's GC is not fork-safe: a fork while another thread holds the GC's
 * allocation lock leaves that lock held in the child for ever. NativeHeap allocates managed
 * objects only in the process's first call (its options) and in the rare calls (mallopt,
 * malloc_stats, malloc_info, malloc_trim, mallinfo); a thread's first call attaches the thread
 * to the runtime. Those pass a gate that fork closes until no such call is in progress. */
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
        tstate |= GATED | INSIDE; /* INSIDE: a malloc from pthread_setspecific goes to boot */
        if (!(tstate & EXIT_GATE)) {
            tstate |= EXIT_GATE;
            pthread_setspecific(exit_gate_key, &exit_gate_key); /* exit_gate_release at exit */
        }
    }
    tstate |= INSIDE;
    if (__builtin_expect(__atomic_load_n(&deferred, __ATOMIC_RELAXED) != NULL, 0)) {
        void *list = __atomic_exchange_n(&deferred, NULL, __ATOMIC_ACQUIRE);
        while (list != NULL) {
            void *next = *(void **)list;
            nhm_free(TS, list);
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

/* A thread's exit passes the fork gate too, from here until the runtime has detached the
 * thread: that detach takes the runtime's thread-store lock, and a fork meanwhile left it held
 * in the child, whose next new thread then hung attaching (seen in glibc_tests'
 * fork-thread-start, about 1 run in 20). The detach is a pthread key destructor of the
 * runtime's; those run after this hook, in the order the keys were made, and start() makes
 * exit_gate_key after the runtime has made its own, so exit_gate_release comes after it. */
static void thread_exit_hook(void *unused)
{
    (void)unused;
    gate_pass();
    tstate |= EXIT_GATED;
    if (can_enter()) {
        tstate |= INSIDE;
        nhm_thread_exit(TS);
    }
    tstate = EXITING | HOOKED | EXIT_GATE | EXIT_GATED;
}

static void exit_gate_release(void *unused)
{
    (void)unused;
    if (tstate & EXIT_GATED) {
        tstate &= ~EXIT_GATED;
        __atomic_fetch_sub(&gate_users, 1, __ATOMIC_ACQ_REL);
    }
}

/* ---- fork: NativeHeap's locks, then the boot allocator's (NativeHeap's prepare may still allocate) ---- */

static void fork_prepare(void)
{
    gate_close();
    if (can_enter()) {
        tstate |= INSIDE;
        nhm_fork_prepare();
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
        nhm_fork_parent();
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
        nhm_fork_child(TS);
        tstate &= ~INSIDE;
    }
}

/* ---- the runtime's own threads (the finalizer): they never enter ----
 * libnativeheap.so is linked with --wrap=pthread_create, so this sees exactly the threads the
 * runtime inside it creates, and no one else's. */

extern int __real_pthread_create(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

struct runtime_start {
    void *(*fn)(void *);
    void *arg;
};

static void *runtime_thread_start(void *p)
{
    struct runtime_start start = *(struct runtime_start *)p;
    boot_free(p);
    tstate = RUNTIME;
    /* A signal sent to the process goes to any thread that does not block it: not to the
     * runtime's (the finalizer would take a SIGUSR1 that the program blocked in its own threads
     * to keep it pending; Python's test_signal saw that). They keep the runtime's own real-time
     * signal (thread suspension) and the faults, which are the thread's own. */
    sigset_t async;
    sigfillset(&async);
    for (int sig = SIGRTMIN; sig <= SIGRTMIN + 1; sig++) sigdelset(&async, sig);
    const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&async, faults[i]);
    pthread_sigmask(SIG_BLOCK, &async, NULL);
    return start.fn(start.arg);
}

int __wrap_pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    struct runtime_start *start = boot_alloc(sizeof *start, 16);
    if (start == NULL) return EAGAIN;
    start->fn = fn;
    start->arg = arg;
    int r = __real_pthread_create(thread, attr, runtime_thread_start, start);
    if (r != 0) boot_free(start);
    return r;
}

static void start(void)
{
    int expected = COLD;
    if (!__atomic_compare_exchange_n(&state, &expected, STARTING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return;
    /* The runtime installs handlers for SIGSEGV and its kin (managed null references) that
     * swallow a raised SIGSEGV: a C program's signals are its own, so they get back what they
     * had. The runtime's real-time signal (thread suspension) stays. Managed code that faults
     * in here is a bug either way, and a crash is the answer. */
    int saved_errno = errno; /* started inside the program's first call, whose errno is the program's */
    struct sigaction before[SIGRTMIN];
    for (int sig = 1; sig < SIGRTMIN; sig++) sigaction(sig, NULL, &before[sig]);
    tstate |= INSIDE;
    size_t need = nhm_start(&fast); /* starts the runtime; its own mallocs, if they come back here, go to boot */
    if (need > THREAD_LOCALS_SIZE) boot_die("nativeheap: the thread state does not fit its C thread-local\n");
    tstate &= ~INSIDE;
    for (int sig = 1; sig < SIGRTMIN; sig++) {
        struct sigaction now;
        if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &now) == 0 && now.sa_handler != before[sig].sa_handler)
            sigaction(sig, &before[sig], NULL);
    }
    pthread_key_create(&exit_gate_key, exit_gate_release); /* after the runtime's keys: see thread_exit_hook */
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    __atomic_store_n(&state, READY, __ATOMIC_RELEASE);
    errno = saved_errno;
}

/* Preloaded, libnativeheap-preload.so's constructor calls it once this library is initialized:
 * from then on the first call that needs the runtime starts it. Linked, it starts the runtime
 * now (nh_names.h's constructor: before main, so that the runtime's own start-up, which
 * mallocs from glibc, does not move the break in the middle of the program). */
EXPORT void nh_start(void)
{
    __atomic_store_n(&start_allowed, 1, __ATOMIC_RELEASE);
    if (&nh_preload_marker == NULL) start();
}

/* ---- the C ABI ---- */

EXPORT void *nh_malloc(size_t size)
{
    void *hit = tcache_get_fast(size);
    if (hit != NULL) return hit;
    if (!can_enter()) return boot_alloc(size, 16);
    enter();
    void *p = nhm_malloc(TS, size);
    leave();
    return p;
}

EXPORT void nh_free(void *ptr)
{
    if (ptr == NULL || tcache_put_fast(ptr)) return;
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
    nhm_free(TS, ptr);
    leave();
}

EXPORT void *nh_calloc(size_t count, size_t size)
{
    size_t bytes;
    int overflow = __builtin_mul_overflow(count, size, &bytes);
    if (fast.calloc_tcache && !overflow) { /* glibc 2.41's calloc from the tcache */
        void *hit = tcache_get_fast(bytes);
        if (hit != NULL) return memset(hit, 0, chunk_usable(hit)); /* all of it: the chunk held someone's data */
    }
    if (!can_enter()) {
        if (overflow) {
            errno = ENOMEM;
            return NULL;
        }
        void *p = boot_alloc(bytes, 16);
        if (p != NULL) memset(p, 0, bytes);
        return p;
    }
    enter();
    void *p = nhm_calloc(TS, count, size);
    leave();
    return p;
}

/* Moves a block to a new one from malloc (the boot allocator or NativeHeap, whichever may be used now). */
static void *move_block(void *old, size_t old_usable, size_t size)
{
    void *p = nh_malloc(size);
    if (p != NULL) {
        memcpy(p, old, old_usable < size ? old_usable : size);
        nh_free(old);
    }
    return p;
}

EXPORT void *nh_realloc(void *ptr, size_t size)
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
    void *p = nhm_realloc(TS, ptr, size);
    leave();
    return p;
}

EXPORT void *nh_reallocarray(void *ptr, size_t count, size_t size)
{
    size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return nh_realloc(ptr, bytes);
}

EXPORT void *nh_memalign(size_t alignment, size_t size)
{
    if (!can_enter()) return boot_alloc(size, alignment);
    enter();
    void *p = nhm_memalign(TS, alignment, size);
    leave();
    return p;
}

EXPORT int nh_posix_memalign(void **result, size_t alignment, size_t size)
{
    if (!can_enter()) {
        if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0 || alignment == 0) return EINVAL;
        void *p = boot_alloc(size, alignment);
        if (p == NULL) return ENOMEM; /* errno ENOMEM too, as glibc and the managed path leave it */
        *result = p;
        return 0;
    }
    enter();
    int r = nhm_posix_memalign(TS, result, alignment, size);
    leave();
    return r;
}

EXPORT void *nh_aligned_alloc(size_t alignment, size_t size)
{
    if (!can_enter()) return boot_alloc(size, alignment);
    enter();
    void *p = nhm_aligned_alloc(TS, alignment, size);
    leave();
    return p;
}

EXPORT void *nh_valloc(size_t size)
{
    if (!can_enter()) return boot_alloc(size, (size_t)sysconf(_SC_PAGESIZE));
    enter();
    void *p = nhm_valloc(TS, size);
    leave();
    return p;
}

EXPORT void *nh_pvalloc(size_t size)
{
    if (!can_enter()) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE), rounded;
        if (__builtin_add_overflow(size, page - 1, &rounded)) {
            errno = ENOMEM;
            return NULL;
        }
        return boot_alloc(rounded & ~(page - 1), page);
    }
    enter();
    void *p = nhm_pvalloc(TS, size);
    leave();
    return p;
}

EXPORT size_t nh_malloc_usable_size(void *ptr)
{
    if (ptr == NULL) return 0;
    if (is_boot(ptr)) return boot_usable(ptr);
    char *p = (char *)ptr - NHM_CHUNK_HEADER;
    if (((uintptr_t)p & 15) == 0 && in_heap_slot(p)) { /* a heap chunk: its header, then the next one's */
        size_t head = ((size_t *)p)[NHM_SIZE_WORD], size = head & ~(size_t)7;
        if ((head & NHM_IS_MMAPPED) == 0 && size >= NHM_MIN_CHUNK && (((uintptr_t)p ^ ((uintptr_t)p + size)) >> NHM_SLOT_SHIFT) == 0)
            return (((size_t *)(p + size))[NHM_SIZE_WORD] & NHM_PREV_INUSE) ? size - 8 : 0; /* in use: glibc's musable */
    }
    if (!can_enter()) return chunk_usable(ptr);
    enter();
    size_t n = nhm_malloc_usable_size(ptr);
    leave();
    return n;
}

EXPORT int nh_malloc_trim(size_t pad)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nhm_malloc_trim(TS, pad);
    leave();
    return r;
}

EXPORT int nh_mallopt(int param, int value)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nhm_mallopt(TS, param, value);
    leave();
    return r;
}

EXPORT struct mallinfo2 nh_mallinfo2(void)
{
    struct mallinfo2 m = {0};
    if (!can_enter()) return m;
    enter_gated(1);
    m = nhm_mallinfo2();
    leave();
    return m;
}

EXPORT void nh_malloc_stats(void)
{
    if (!can_enter()) return;
    enter_gated(1);
    nhm_malloc_stats();
    leave();
}

EXPORT int nh_malloc_info(int options, FILE *stream)
{
    if (!can_enter()) return 0;
    enter_gated(1);
    int r = nhm_malloc_info(options, stream);
    leave();
    return r;
}

EXPORT void nh_thread_exit(void)
{
    if (!can_enter()) return;
    enter();
    nhm_thread_exit(TS);
    leave();
}
