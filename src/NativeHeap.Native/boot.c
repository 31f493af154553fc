/* ---- The boot allocator: for the calls that may not enter NativeHeap (can_enter) ----
 * Those made while this thread is INSIDE a call (the runtime's own mallocs), before the
 * runtime may start, on the runtime's own threads, or after the thread's exit hook.
 * Power-of-two blocks from one reserved range, a free list per size; is_boot tells its
 * pointers from NativeHeap's by address alone. */
#include "nh_internal.h"

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
static int boot_lock; /* held across fork (fork.c): the child's copy is then consistent */

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
