/* ---- The debug heap's symbolizer: libnativeheap-symbols.so, beside this library, loaded at the first report ----
 * A library of its own (src/NativeHeap.Symbols.Native): compiled into libnativeheap.so it made
 * every process 1.3 MiB larger, and locating and loading it from .NET pulled file streams and
 * the type loader into the image (0.4 MiB more). Called from .NET (Debugging/StackText.cs)
 * inside a call, so the loader's own mallocs go to the boot allocator. */
#include "nh_internal.h"
#include <dlfcn.h>

typedef int32_t (*format_stack_fn)(const uint64_t *ips, int32_t count, char *out, int32_t capacity);
static format_stack_fn format_stack_impl; /* set once, by the first report that finds the library */

/* Writes stack ips as report lines into out (symbols.so's nhs_format_stack); -2: the library is not beside this one. */
static int32_t format_stack(const uint64_t *ips, int32_t count, char *out, int32_t capacity)
{
    format_stack_fn fn = __atomic_load_n(&format_stack_impl, __ATOMIC_ACQUIRE);
    if (fn == NULL) {
        Dl_info self;
        static const char name[] = "libnativeheap-symbols.so";
        char path[4096];
        if (!dladdr((void *)&format_stack, &self) || self.dli_fname == NULL) return -2;
        const char *slash = strrchr(self.dli_fname, '/');
        size_t dir = slash != NULL ? (size_t)(slash - self.dli_fname) + 1 : 0;
        if (dir + sizeof name > sizeof path) return -2;
        memcpy(path, self.dli_fname, dir);
        memcpy(path + dir, name, sizeof name);
        void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (lib == NULL) return -2;
        fn = (format_stack_fn)dlsym(lib, "nhs_format_stack");
        if (fn == NULL) return -2;
        __atomic_store_n(&format_stack_impl, fn, __ATOMIC_RELEASE);
    }
    return fn(ips, count, out, capacity);
}

/* The guard-page handler's stacks (src/NativeHeap/native/guard.h), in a fault handler: a depot
 * stack, or (id 0) the faulting thread's from its context. The symbolizer's loading mallocs:
 * INSIDE sends that to the boot allocator, whatever the interrupted code was doing. */
static int32_t guard_stack_text(uint32_t id, uintptr_t pc, uintptr_t sp, uintptr_t bp, char *out, int32_t capacity)
{
    uint64_t ips[NHM_DEBUG_STACK_DEPTH];
    int32_t n = id != 0 ? nhd_stack_frames(id, (uintptr_t *)ips, NHM_DEBUG_STACK_DEPTH)
                        : (int32_t)nh_backtrace_from((uintptr_t *)ips, NHM_DEBUG_STACK_DEPTH, pc, sp, bp);
    if (n <= 0) return -1;
    int inside = tstate & INSIDE;
    tstate |= INSIDE;
    int32_t written = format_stack(ips, n, out, capacity);
    if (!inside) tstate &= ~INSIDE;
    return written;
}
