/* The debug heap's guard-page fault handler: guard.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "guard.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static struct nhg_slot *g_table;   /* written once before the handler is installed */
static uint64_t g_capacity;
static uint64_t g_page;            /* the guard page is a mapping's last */
static nhg_stack_text_fn g_stack_text;
static struct sigaction g_before;  /* the SIGSEGV action ours replaced */
static int g_installed;
static char g_report[64 * 1024];   /* the report is built here: the handler may run on a small alternate stack */
static char g_lines[32 * 1024];    /* a stack's lines, before they are numbered */
static int g_reporting;            /* one report at a time; a second faulting thread waits for the crash */

/* Report text, appended without malloc or stdio (async-signal-safe). */
struct gtext { char *p; size_t n, cap; };

static void gput(struct gtext *t, const char *s, size_t n)
{
    if (n > t->cap - t->n) n = t->cap - t->n;
    memcpy(t->p + t->n, s, n);
    t->n += n;
}
static void gputs(struct gtext *t, const char *s) { gput(t, s, strlen(s)); }
static void gput_hex(struct gtext *t, uint64_t v)
{
    char b[18];
    int i = 18;
    do { b[--i] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v != 0);
    b[--i] = 'x';
    b[--i] = '0';
    gput(t, b + i, (size_t)(18 - i));
}
static void gput_dec(struct gtext *t, uint64_t v)
{
    char b[20];
    int i = 20;
    do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v != 0);
    gput(t, b + i, (size_t)(20 - i));
}

/* "title at:" and the stack's lines, each as "  #i line", from a slot's text (.NET callers) or
 * from g_stack_text (C callers; id 0: the faulting thread's stack at pc). */
static void gput_stack(struct gtext *t, const char *title, uint32_t id, uint64_t text, uintptr_t pc, uintptr_t sp, uintptr_t bp)
{
    const char *lines = (const char *)(uintptr_t)text;
    if (lines == NULL && g_stack_text != NULL && (id != 0 || pc != 0)) {
        int32_t n = g_stack_text(id, pc, sp, bp, g_lines, (int32_t)sizeof g_lines - 1);
        if (n > 0) {
            g_lines[n] = 0;
            lines = g_lines;
        }
    }
    gputs(t, title);
    if (lines == NULL || *lines == 0) {
        gputs(t, " at: (no stack was recorded)\n");
        return;
    }
    gputs(t, " at:\n");
    for (uint64_t i = 0; *lines != 0; i++) {
        const char *nl = strchr(lines, '\n');
        size_t len = nl != NULL ? (size_t)(nl - lines) : strlen(lines);
        gputs(t, "  #");
        gput_dec(t, i);
        gputs(t, " ");
        gput(t, lines, len);
        gputs(t, "\n");
        lines += len + (nl != NULL);
    }
}

/* The slot whose mapping holds a; the table is read without a lock (the managed side keeps a
 * slot's fields written before its state says so; a race with a free only changes which words
 * a crash report uses). */
static const struct nhg_slot *guard_find(uintptr_t a)
{
    for (uint64_t i = 0; i < g_capacity; i++) {
        const struct nhg_slot *s = &g_table[i];
        uint32_t state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
        if (state != NHG_EMPTY && a >= s->start && a - s->start < s->length) return s;
    }
    return NULL;
}

static void guard_report(const struct nhg_slot *s, uintptr_t a, int is_write, const ucontext_t *uc)
{
    struct gtext t = {g_report, 0, sizeof g_report};
    uintptr_t end = (uintptr_t)(s->user + s->asked);
    int freed = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == NHG_FREED;
    gputs(&t, "guard page: ");
    if (freed) gputs(&t, is_write ? "write after free detected: " : "read after free detected: ");
    else if (a >= end) gputs(&t, "heap buffer overflow detected: ");
    else gputs(&t, "heap buffer underflow detected: ");
    gput_hex(&t, a);
    gputs(&t, "\nblock ");
    gput_hex(&t, s->user);
    gputs(&t, ": ");
    gput_dec(&t, s->asked);
    gputs(&t, " bytes asked, on pages of its own before the guard page at ");
    gput_hex(&t, s->start + s->length - g_page);
    gputs(&t, "\na ");
    gputs(&t, is_write ? "write" : "read");
    if (freed) {
        gputs(&t, " at offset ");
        gput_dec(&t, a - (uintptr_t)s->user);
        gputs(&t, " of the block after it was freed");
    } else if (a >= end) {
        gputs(&t, " at offset ");
        gput_dec(&t, a - (uintptr_t)s->user);
        gputs(&t, " (");
        gput_dec(&t, a - end);
        gputs(&t, " past the end)");
    } else {
        gput_dec(&t, (uintptr_t)s->user - a);
        gputs(&t, " bytes before the start");
    }
    gputs(&t, "\n");
    uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP], sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP],
              bp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP];
    if (g_stack_text != NULL) gput_stack(&t, "accessed", 0, 0, pc, sp, bp);
    gput_stack(&t, "allocated", s->alloc_stack, s->alloc_text, 0, 0, 0);
    if (freed) gput_stack(&t, "freed", s->free_stack, s->free_text, 0, 0, 0);
    for (size_t done = 0; done < t.n;) {
        ssize_t w = write(2, t.p + done, t.n - done);
        if (w <= 0 && errno != EINTR) break;
        if (w > 0) done += (size_t)w;
    }
}

/* Runs the action that was there before, as the kernel would have. A fault (si_code > 0)
 * happens again when the handler returns, so the default only needs to be in place; a
 * signal sent by kill or raise (si_code <= 0) does not, and is sent again. */
static void guard_chain(int sig, siginfo_t *info, void *uc)
{
    if (g_before.sa_flags & SA_SIGINFO) {
        if (g_before.sa_sigaction != NULL) {
            g_before.sa_sigaction(sig, info, uc);
            return;
        }
    } else if (g_before.sa_handler == SIG_IGN) {
        if (info->si_code <= 0) return; /* a sent SIGSEGV is ignored; a fault cannot be */
    } else if (g_before.sa_handler != SIG_DFL) {
        g_before.sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    if (info->si_code <= 0) raise(sig); /* pending until this handler returns, then the default */
}

static void guard_on_fault(int sig, siginfo_t *info, void *ucv)
{
    int saved_errno = errno;
    ucontext_t *uc = ucv;
    const struct nhg_slot *s = info->si_code == SEGV_ACCERR ? guard_find((uintptr_t)info->si_addr) : NULL;
    if (s != NULL) {
        if (__atomic_exchange_n(&g_reporting, 1, __ATOMIC_ACQ_REL) == 0)
            guard_report(s, (uintptr_t)info->si_addr, (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0, uc);
        /* From here the fault is the previous handler's: the .NET runtime's reports an access
         * violation and ends the process; the default dumps core. */
        sigaction(SIGSEGV, &g_before, NULL);
        if (!(g_before.sa_flags & SA_SIGINFO) && (g_before.sa_handler == SIG_DFL || g_before.sa_handler == SIG_IGN))
            guard_chain(sig, info, ucv); /* the default, even where SIGSEGV was ignored: a fault cannot be */
        errno = saved_errno;
        return; /* the access runs again, and faults into that handler */
    }
    errno = saved_errno;
    guard_chain(sig, info, ucv);
}

int32_t nhg_install(struct nhg_slot *table, uint64_t capacity, nhg_stack_text_fn stack_text)
{
    g_table = table;
    g_capacity = capacity;
    g_stack_text = stack_text;
    g_page = (uint64_t)sysconf(_SC_PAGESIZE);
    if (__atomic_exchange_n(&g_installed, 1, __ATOMIC_ACQ_REL)) return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &g_before) != 0) {
        int e = errno;
        __atomic_store_n(&g_installed, 0, __ATOMIC_RELEASE);
        return e;
    }
    return 0;
}
