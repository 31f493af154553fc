/* The x86-64 unwinder described in unwind.h. */
#define _GNU_SOURCE

#include "unwind.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TLS __thread __attribute__((tls_model("initial-exec")))

/* ------------------------------------------------------------------ rules */

/* A rule, packed in 64 bits so that a cache entry is two words:
 *   bits 0-31   CFA offset (signed)
 *   bits 32-47  RBP's offset from the CFA when saved (signed)
 *   bit 48      CFA is RBP + offset (else RSP + offset)
 *   bits 49-50  RBP: 0 unchanged, 1 saved at CFA + offset, 2 lost
 *   bit 51      stop: the return address is undefined (outermost frame) */
#define R_CFA_RBP (1ull << 48)
#define R_BP_SAVED (1ull << 49)
#define R_BP_LOST (2ull << 49)
#define R_BP_MASK (3ull << 49)
#define R_STOP (1ull << 51)

static uint64_t make_rule(int cfa_rbp, int32_t cfa_off, int bp, int16_t bp_off)
{
    return (uint64_t)(uint32_t)cfa_off | ((uint64_t)(uint16_t)bp_off << 32)
           | (cfa_rbp ? R_CFA_RBP : 0) | ((uint64_t)bp << 49);
}

/* Frame pointers: CFA = RBP + 16, RA at CFA - 8, RBP saved at CFA - 16. */
#define FP_RULE make_rule(1, 16, 1, -16)

/* ------------------------------------------------------------------ state */

#define MAX_MODULES 4096
#define NAMES_BYTES (1u << 20)
#define CACHE_WAYS 4
#define CACHE_SETS (1u << 14) /* 64 Ki entries, 1 MiB of address space */

struct cache_entry {
    uintptr_t key; /* a return address, 0 = empty */
    uint64_t rule;
};

/*
 * Locks, and their order (take them only in this order; never the other way round):
 *
 *   1. glibc's loader lock (dl_load_write_lock, recursive): taken by dl_iterate_phdr, and
 *      held by dlopen/dlclose, which call malloc and free under it (so the recorder's
 *      wrappers, and through them nh_backtrace, run with it held);
 *   2. the recorder's lock (recorder.c), where there is one. It and ulock are nested only in
 *      the recorder's pthread_atfork prepare handler: nh_unwind_fork_prepare (which takes ulock
 *      once no walk is in flight, see walks and forking), then the recorder's lock. No thread
 *      holding the recorder's lock waits for ulock (nh_unwind_memory_bytes takes no lock);
 *   3. ulock, the unwinder's own mutex. It guards the module table (modules, n_modules,
 *      names, last_adds / last_subs, scan_gen, n_unloads), the writers of the rule cache and
 *      insert_clock. It is only ever taken inside a dl_iterate_phdr callback (so the loader
 *      lock is already held: order 1 -> 3), or by init before any scan and by the fork hooks
 *      (once no walk is in flight).
 *      While it is held nothing allocates, calls dl_iterate_phdr, or takes another lock
 *      (but for the recorder's fork prepare handler, above).
 *
 * The readers that take no lock: the rule cache (cache_get, see there), the module entries
 * below n_modules (appended only, published with release) and nh_unwind_memory_bytes, which
 * only measures mappings that are fixed once init made them.
 */
static pthread_mutex_t ulock = PTHREAD_MUTEX_INITIALIZER;
static struct nh_module *modules;
static size_t n_modules; /* published with release: entries below it are complete */
static char *names;
static size_t names_used;
static struct cache_entry *cache;
static unsigned long long last_adds = ~0ull, last_subs = ~0ull;
static unsigned scan_gen;
static unsigned n_unloads; /* modules found unloaded by a scan (nh_unwind_unloads) */
static uintptr_t own_lo, own_hi;
static int ready; /* 1: init succeeded */
static unsigned insert_clock;

static TLS uintptr_t stack_lo, stack_hi;
static TLS int stack_state; /* 0 unknown, 1 known, -1 unavailable */

static void *map_zero(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* ----------------------------------------------------------------- modules */

static const char *keep_name(const char *s)
{
    size_t n = strlen(s) + 1;
    if (names_used + n > NAMES_BYTES)
        return "?";
    char *d = names + names_used;
    memcpy(d, s, n);
    names_used += n;
    return d;
}

static void read_build_id(struct nh_module *m, const struct dl_phdr_info *info)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        const uint8_t *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            size_t name_sz = (nh->n_namesz + 3) & ~3u, desc_sz = (nh->n_descsz + 3) & ~3u;
            const uint8_t *name = p + sizeof *nh, *desc = name + name_sz;
            if (desc + desc_sz > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0
                && nh->n_descsz <= sizeof m->build_id) {
                memcpy(m->build_id, desc, nh->n_descsz);
                m->build_id_len = nh->n_descsz;
                return;
            }
            p = desc + desc_sz;
        }
    }
}

/* The eh_frame_hdr's binary-search table, if it has one in the usual encoding. */
static void read_eh_hdr(struct nh_module *m, const uint8_t *hdr)
{
    /* version 1, eh_frame_ptr encoding, fde_count encoding, table encoding */
    if (hdr[0] != 1 || hdr[3] != 0x3b)
        return;
    const uint8_t *p = hdr + 4;
    uint8_t ptr_enc = hdr[1], count_enc = hdr[2];
    /* eh_frame_ptr: skip by its size */
    switch (ptr_enc & 0x0f) {
    case 0x03: case 0x0b: p += 4; break;
    case 0x04: case 0x0c: case 0x00: p += 8; break;
    default: return;
    }
    size_t count;
    switch (count_enc & 0x0f) {
    case 0x03: count = *(const uint32_t *)p; p += 4; break;
    case 0x0b: count = (size_t)*(const int32_t *)p; p += 4; break;
    case 0x04: case 0x0c: case 0x00: count = (size_t)*(const uint64_t *)p; p += 8; break;
    default: return;
    }
    m->eh_hdr = hdr;
    m->table = (const int32_t *)p;
    m->fde_count = count;
}

/* Under ulock, inside dl_iterate_phdr: records info's module (if new) and returns it, or NULL
 * (no PT_LOAD, or the table is full). is_first: the loader's first entry, the main program. */
static struct nh_module *scan_entry(struct dl_phdr_info *info, int is_first)
{
    last_adds = info->dlpi_adds;
    last_subs = info->dlpi_subs;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    const uint8_t *eh = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD) {
            uintptr_t a = info->dlpi_addr + ph->p_vaddr;
            if (a < lo)
                lo = a;
            if (a + ph->p_memsz > hi)
                hi = a + ph->p_memsz;
        } else if (ph->p_type == PT_GNU_EH_FRAME) {
            eh = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        }
    }
    if (hi == 0)
        return NULL;
    const char *name = info->dlpi_name;
    for (size_t i = 0; i < n_modules; i++) {
        struct nh_module *m = &modules[i];
        /* the same span and name: the same module (another one loaded in its place
         * after it was unloaded has at least another name or build-id; the name will do) */
        if (m->alive && m->lo == lo && m->hi == hi && m->bias == info->dlpi_addr
            && (is_first || strcmp(m->path, name == NULL ? "" : name) == 0)) {
            m->seen = scan_gen;
            return m;
        }
    }
    if (n_modules == MAX_MODULES)
        return NULL;
    struct nh_module *m = &modules[n_modules];
    memset(m, 0, sizeof *m);
    m->lo = lo;
    m->hi = hi;
    m->bias = info->dlpi_addr;
    if ((name == NULL || name[0] == '\0') && is_first) {
        static char exe[4096]; /* under ulock; static: a thread's stack may be small */
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        m->path = keep_name(exe);
    } else {
        m->path = keep_name(name == NULL ? "" : name);
    }
    read_build_id(m, info);
    if (eh != NULL)
        read_eh_hdr(m, eh);
    m->alive = 1;
    m->seen = scan_gen;
    __atomic_store_n(&n_modules, n_modules + 1, __ATOMIC_RELEASE);
    return m;
}

static void clear_cache(void)
{
    for (size_t i = 0; i < (size_t)CACHE_SETS * CACHE_WAYS; i++)
        __atomic_store_n(&cache[i].key, 0, __ATOMIC_RELAXED);
}

static const struct nh_module *find_module(uintptr_t a)
{
    for (size_t i = 0; i < n_modules; i++)
        if (modules[i].alive && a >= modules[i].lo && a < modules[i].hi)
            return &modules[i];
    return NULL;
}

static uint64_t rule_from_cfi(const struct nh_module *m, uintptr_t ra);
static int cache_get_rule(uintptr_t ra, uint64_t *rule);

/*
 * Every look at the module list is one dl_iterate_phdr call whose callback takes ulock at the
 * loader's first entry (lock order: loader lock, then ulock) and keeps it until the call has
 * returned. While the loader lock is held no module can be unloaded, so the .eh_frame a rule
 * is read from stays mapped. The loader's adds/subs counters (on every entry) say whether the
 * list changed since the last scan; only then is it scanned whole (scan: 1 forces it).
 */
struct walk {
    int scan;           /* in: scan even if the counters did not change */
    uintptr_t ra;       /* in: 0, or a return address whose rule is wanted */
    int locked;         /* out: ulock is held (released by walk_end) */
    int scanning;       /* out: this walk rescans */
    size_t before;      /* n_modules when the scan began */
    int have_rule;
    uint64_t rule;
};

static int walk_callback(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct walk *w = data;
    if (!w->locked) { /* the first entry */
        pthread_mutex_lock(&ulock);
        w->locked = 1;
        if (w->ra != 0 && cache_get_rule(w->ra, &w->rule)) {
            w->have_rule = 1;
            return 1;
        }
        if (!w->scan && info->dlpi_adds == last_adds && info->dlpi_subs == last_subs) {
            if (w->ra != 0) {
                const struct nh_module *m = find_module(w->ra - 1);
                w->rule = m == NULL ? FP_RULE : rule_from_cfi(m, w->ra);
                w->have_rule = 1;
            }
            return 1;
        }
        w->scanning = 1;
        w->before = n_modules;
        scan_gen++;
        const struct nh_module *m = scan_entry(info, 1);
        if (w->ra != 0 && m != NULL && w->ra - 1 >= m->lo && w->ra - 1 < m->hi) {
            w->rule = rule_from_cfi(m, w->ra);
            w->have_rule = 1;
        }
        return 0;
    }
    const struct nh_module *m = scan_entry(info, 0);
    if (w->ra != 0 && !w->have_rule && m != NULL && w->ra - 1 >= m->lo && w->ra - 1 < m->hi) {
        w->rule = rule_from_cfi(m, w->ra);
        w->have_rule = 1;
    }
    return 0;
}

/* After dl_iterate_phdr(walk_callback, w) returned, still under ulock: a scan's modules that
 * were not seen are unloaded; any change empties the cache. Returns 1 if any was unloaded. */
static int walk_finish_locked(struct walk *w)
{
    if (!w->scanning)
        return 0;
    int changed = n_modules != w->before, gone = 0;
    for (size_t i = 0; i < n_modules; i++) {
        if (modules[i].alive && modules[i].seen != scan_gen) {
            modules[i].alive = 0;
            changed = 1;
            gone = 1;
        }
    }
    if (gone)
        __atomic_add_fetch(&n_unloads, 1, __ATOMIC_RELEASE);
    if (changed && w->before != 0)
        clear_cache();
    return gone;
}

/* ---------------------------------------------------------------- DWARF */

static uint64_t read_uleb(const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    unsigned shift = 0;
    while (p < end) {
        uint8_t b = *p++;
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
        if (!(b & 0x80))
            break;
    }
    *pp = p;
    return v;
}

static int64_t read_sleb(const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    int64_t v = 0;
    unsigned shift = 0;
    uint8_t b = 0;
    while (p < end) {
        b = *p++;
        if (shift < 64)
            v |= (int64_t)((uint64_t)(b & 0x7f) << shift);
        shift += 7;
        if (!(b & 0x80))
            break;
    }
    if (shift < 64 && (b & 0x40))
        v |= -((int64_t)1 << shift);
    *pp = p;
    return v;
}

/* Reads a pointer in encoding enc (DW_EH_PE_*); 0 for encodings it does not know, which
 * sets *bad. Only pcrel and absolute applications occur in .eh_frame on x86-64. */
static uintptr_t read_encoded(const uint8_t **pp, const uint8_t *end, uint8_t enc, int *bad)
{
    const uint8_t *p = *pp;
    uintptr_t base = (uintptr_t)p, v;
    if (enc == 0xff) /* omit */
        return 0;
    switch (enc & 0x0f) {
    case 0x00: case 0x04: case 0x0c: memcpy(&v, p, 8); p += 8; break;
    case 0x01: v = (uintptr_t)read_uleb(&p, end); break;
    case 0x09: v = (uintptr_t)read_sleb(&p, end); break;
    case 0x02: { uint16_t x; memcpy(&x, p, 2); v = x; p += 2; break; }
    case 0x0a: { int16_t x; memcpy(&x, p, 2); v = (uintptr_t)(intptr_t)x; p += 2; break; }
    case 0x03: { uint32_t x; memcpy(&x, p, 4); v = x; p += 4; break; }
    case 0x0b: { int32_t x; memcpy(&x, p, 4); v = (uintptr_t)(intptr_t)x; p += 4; break; }
    default: *bad = 1; return 0;
    }
    switch (enc & 0x70) {
    case 0x00: break;
    case 0x10: v += base; break;
    default: *bad = 1; return 0;
    }
    if (enc & 0x80) /* indirect */
        v = *(const uintptr_t *)v;
    *pp = p;
    return v;
}

/* The registers the interpreter tracks. */
enum { DW_RBP = 6, DW_RSP = 7, DW_RA = 16 };
enum { RULE_SAME, RULE_OFFSET, RULE_UNDEF, RULE_OTHER };

struct row {
    int cfa_reg; /* DW_RSP, DW_RBP, or -1: something this interpreter does not follow */
    int64_t cfa_off;
    int bp_rule, ra_rule;
    int64_t bp_off, ra_off;
};

struct cie {
    uint64_t code_align;
    int64_t data_align;
    uint64_t ra_reg;
    uint8_t fde_enc;
    int has_z;
    const uint8_t *insns, *end;
};

static int parse_cie(const uint8_t *p, struct cie *c)
{
    uint64_t len = *(const uint32_t *)p;
    p += 4;
    if (len == 0xffffffffu) {
        len = *(const uint64_t *)p;
        p += 8;
        if (*(const uint64_t *)p != 0)
            return 0;
        c->end = p + len;
        p += 8;
    } else {
        c->end = p + len;
        if (*(const uint32_t *)p != 0)
            return 0;
        p += 4;
    }
    uint8_t version = *p++;
    const char *aug = (const char *)p;
    p += strlen(aug) + 1;
    if (version >= 4)
        p += 2; /* address size, segment size */
    c->code_align = read_uleb(&p, c->end);
    c->data_align = read_sleb(&p, c->end);
    c->ra_reg = version == 1 ? *p++ : read_uleb(&p, c->end);
    c->fde_enc = 0; /* absptr */
    c->has_z = aug[0] == 'z';
    if (c->has_z) {
        uint64_t alen = read_uleb(&p, c->end);
        const uint8_t *q = p, *aend = p + alen;
        for (const char *a = aug + 1; *a != '\0'; a++) {
            if (*a == 'R') {
                c->fde_enc = *q++;
            } else if (*a == 'L') {
                q++;
            } else if (*a == 'P') {
                int bad = 0;
                uint8_t enc = *q++;
                read_encoded(&q, aend, enc & 0x7f, &bad); /* do not follow indirect */
                if (bad)
                    return 0;
            } else if (*a == 'S' || *a == 'B' || *a == 'G') {
                /* signal frame, ARM / MTE flags: no data */
            } else {
                return 0;
            }
        }
        p = aend;
    } else if (aug[0] != '\0') {
        return 0; /* an augmentation without 'z' cannot be skipped */
    }
    c->insns = p;
    return 1;
}

#define STATE_DEPTH 16

/* Runs CFI instructions from p to end until the location passes target. Returns 0 when the
 * instructions say something this interpreter cannot follow for the CFA. */
static int run_cfi(const uint8_t *p, const uint8_t *end, const struct cie *c, uintptr_t loc, uintptr_t target,
                   struct row *r, const struct row *initial)
{
    struct row stack[STATE_DEPTH];
    int depth = 0;
    while (p < end) {
        uint8_t op = *p++;
        uint64_t reg;
        int64_t off;
        uintptr_t delta = (uintptr_t)-1;
        switch (op >> 6) {
        case 1:
            delta = (uintptr_t)(op & 0x3f) * c->code_align;
            break;
        case 2:
            reg = op & 0x3f;
            off = (int64_t)read_uleb(&p, end) * c->data_align;
            goto set_offset;
        case 3:
            reg = op & 0x3f;
            goto restore;
        default:
            break;
        }
        if (delta != (uintptr_t)-1) {
            loc += delta;
            if (loc > target)
                return 1;
            continue;
        }
        switch (op) {
        case 0x00: /* nop */
            break;
        case 0x01: { /* set_loc */
            int bad = 0;
            loc = read_encoded(&p, end, c->fde_enc, &bad);
            if (bad)
                return 0;
            if (loc > target)
                return 1;
            break;
        }
        case 0x02:
            loc += (uintptr_t)p[0] * c->code_align;
            p += 1;
            if (loc > target)
                return 1;
            break;
        case 0x03: {
            uint16_t d;
            memcpy(&d, p, 2);
            p += 2;
            loc += (uintptr_t)d * c->code_align;
            if (loc > target)
                return 1;
            break;
        }
        case 0x04: {
            uint32_t d;
            memcpy(&d, p, 4);
            p += 4;
            loc += (uintptr_t)d * c->code_align;
            if (loc > target)
                return 1;
            break;
        }
        case 0x05: /* offset_extended */
            reg = read_uleb(&p, end);
            off = (int64_t)read_uleb(&p, end) * c->data_align;
            goto set_offset;
        case 0x11: /* offset_extended_sf */
            reg = read_uleb(&p, end);
            off = read_sleb(&p, end) * c->data_align;
            goto set_offset;
        case 0x2f: /* GNU_negative_offset_extended */
            reg = read_uleb(&p, end);
            off = -(int64_t)read_uleb(&p, end) * c->data_align;
            goto set_offset;
        case 0x06: /* restore_extended */
            reg = read_uleb(&p, end);
            goto restore;
        case 0x07: /* undefined */
            reg = read_uleb(&p, end);
            if (reg == DW_RBP)
                r->bp_rule = RULE_UNDEF;
            else if (reg == c->ra_reg)
                r->ra_rule = RULE_UNDEF;
            break;
        case 0x08: /* same_value */
            reg = read_uleb(&p, end);
            if (reg == DW_RBP)
                r->bp_rule = RULE_SAME;
            else if (reg == c->ra_reg)
                r->ra_rule = RULE_OTHER;
            break;
        case 0x09: /* register */
            reg = read_uleb(&p, end);
            read_uleb(&p, end);
            if (reg == DW_RBP)
                r->bp_rule = RULE_OTHER;
            else if (reg == c->ra_reg)
                r->ra_rule = RULE_OTHER;
            break;
        case 0x0a: /* remember_state */
            if (depth == STATE_DEPTH)
                return 0;
            stack[depth++] = *r;
            break;
        case 0x0b: /* restore_state */
            if (depth == 0)
                return 0;
            *r = stack[--depth];
            break;
        case 0x0c: /* def_cfa */
            r->cfa_reg = (int)read_uleb(&p, end);
            r->cfa_off = (int64_t)read_uleb(&p, end);
            break;
        case 0x12: /* def_cfa_sf */
            r->cfa_reg = (int)read_uleb(&p, end);
            r->cfa_off = read_sleb(&p, end) * c->data_align;
            break;
        case 0x0d: /* def_cfa_register */
            r->cfa_reg = (int)read_uleb(&p, end);
            break;
        case 0x0e: /* def_cfa_offset */
            r->cfa_off = (int64_t)read_uleb(&p, end);
            break;
        case 0x13: /* def_cfa_offset_sf */
            r->cfa_off = read_sleb(&p, end) * c->data_align;
            break;
        case 0x0f: { /* def_cfa_expression */
            uint64_t n = read_uleb(&p, end);
            p += n;
            r->cfa_reg = -1;
            break;
        }
        case 0x10: /* expression */
        case 0x16: { /* val_expression */
            reg = read_uleb(&p, end);
            uint64_t n = read_uleb(&p, end);
            p += n;
            if (reg == DW_RBP)
                r->bp_rule = RULE_OTHER;
            else if (reg == c->ra_reg)
                r->ra_rule = RULE_OTHER;
            break;
        }
        case 0x14: /* val_offset */
            reg = read_uleb(&p, end);
            read_uleb(&p, end);
            goto other;
        case 0x15: /* val_offset_sf */
            reg = read_uleb(&p, end);
            read_sleb(&p, end);
            goto other;
        case 0x2e: /* GNU_args_size */
            read_uleb(&p, end);
            break;
        default:
            return 0;
        }
        continue;
    set_offset:
        if (reg == DW_RBP) {
            r->bp_rule = RULE_OFFSET;
            r->bp_off = off;
        } else if (reg == c->ra_reg) {
            r->ra_rule = RULE_OFFSET;
            r->ra_off = off;
        }
        continue;
    restore:
        if (initial == NULL)
            return 0; /* restore inside the CIE's own instructions */
        if (reg == DW_RBP) {
            r->bp_rule = initial->bp_rule;
            r->bp_off = initial->bp_off;
        } else if (reg == c->ra_reg) {
            r->ra_rule = initial->ra_rule;
            r->ra_off = initial->ra_off;
        }
        continue;
    other:
        if (reg == DW_RBP)
            r->bp_rule = RULE_OTHER;
        else if (reg == c->ra_reg)
            r->ra_rule = RULE_OTHER;
    }
    return 1;
}

/* The FDE covering pc in m, or NULL. */
static const uint8_t *find_fde(const struct nh_module *m, uintptr_t pc)
{
    if (m->table == NULL || m->fde_count == 0)
        return NULL;
    intptr_t rel = (intptr_t)(pc - (uintptr_t)m->eh_hdr);
    size_t lo = 0, hi = m->fde_count;
    while (hi - lo > 1) { /* last entry whose start <= pc */
        size_t mid = lo + (hi - lo) / 2;
        if ((intptr_t)m->table[2 * mid] <= rel)
            lo = mid;
        else
            hi = mid;
    }
    if ((intptr_t)m->table[2 * lo] > rel)
        return NULL;
    return m->eh_hdr + m->table[2 * lo + 1];
}

/* The rule for return address ra (looked up at ra - 1) from the CFI; FP_RULE where it has
 * none this interpreter can follow. */
static uint64_t rule_from_cfi(const struct nh_module *m, uintptr_t ra)
{
    uintptr_t pc = ra - 1;
    const uint8_t *fde = find_fde(m, pc);
    if (fde == NULL)
        return FP_RULE;
    const uint8_t *p = fde, *end;
    uint64_t len = *(const uint32_t *)p;
    p += 4;
    if (len == 0xffffffffu) {
        len = *(const uint64_t *)p;
        p += 8;
        end = p + len;
        p += 8; /* 64-bit CIE pointers do not occur in .eh_frame */
        return FP_RULE;
    }
    end = p + len;
    uint32_t cie_off = *(const uint32_t *)p;
    const uint8_t *cie_ptr = p - cie_off;
    p += 4;
    struct cie c;
    if (cie_off == 0 || !parse_cie(cie_ptr, &c))
        return FP_RULE;
    int bad = 0;
    uintptr_t start = read_encoded(&p, end, c.fde_enc, &bad);
    uintptr_t range = read_encoded(&p, end, c.fde_enc & 0x0f, &bad);
    if (bad || pc < start || pc - start >= range)
        return FP_RULE;
    if (c.has_z) { /* the FDE's augmentation data, after its length */
        uint64_t alen = read_uleb(&p, end);
        p += alen;
    }
    /* The CIE's instructions set the initial rules (they hold no advances that matter). */
    struct row r = {DW_RSP, 8, RULE_SAME, RULE_OFFSET, 0, -8};
    if (!run_cfi(c.insns, c.end, &c, 0, UINTPTR_MAX, &r, NULL))
        return FP_RULE;
    struct row initial = r;
    if (!run_cfi(p, end, &c, start, pc, &r, &initial))
        return FP_RULE;
    if (r.ra_rule == RULE_UNDEF)
        return R_STOP;
    if (r.ra_rule != RULE_OFFSET || r.ra_off != -8)
        return FP_RULE;
    if ((r.cfa_reg != DW_RSP && r.cfa_reg != DW_RBP) || r.cfa_off < 16 || r.cfa_off > INT32_MAX)
        return FP_RULE;
    int bp;
    int16_t bp_off = 0;
    if (r.bp_rule == RULE_SAME || r.bp_rule == RULE_UNDEF) {
        bp = 0;
    } else if (r.bp_rule == RULE_OFFSET && r.bp_off >= INT16_MIN && r.bp_off <= INT16_MAX) {
        bp = 1;
        bp_off = (int16_t)r.bp_off;
    } else {
        bp = 2;
    }
    return make_rule(r.cfa_reg == DW_RBP, (int32_t)r.cfa_off, bp, bp_off);
}

/* ----------------------------------------------------------------- cache */

static inline size_t cache_set(uintptr_t ra)
{
    uint64_t h = (uint64_t)ra * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 40) & (CACHE_SETS - 1);
}

/* A reader checks the key again after reading the rule: a writer empties the key first, so a
 * rule read while it changes is never taken for ra's. */
static inline int cache_get(uintptr_t ra, uint64_t *rule)
{
    struct cache_entry *e = &cache[cache_set(ra) * CACHE_WAYS];
    for (int w = 0; w < CACHE_WAYS; w++) {
        if (__atomic_load_n(&e[w].key, __ATOMIC_ACQUIRE) == ra) {
            uint64_t v = __atomic_load_n(&e[w].rule, __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&e[w].key, __ATOMIC_RELAXED) == ra) {
                *rule = v;
                return 1;
            }
        }
    }
    return 0;
}

/* Under ulock. */
static void cache_put(uintptr_t ra, uint64_t rule)
{
    struct cache_entry *e = &cache[cache_set(ra) * CACHE_WAYS];
    int w = 0;
    for (; w < CACHE_WAYS; w++)
        if (e[w].key == 0 || e[w].key == ra)
            break;
    if (w == CACHE_WAYS)
        w = (int)(insert_clock++ % CACHE_WAYS);
    __atomic_store_n(&e[w].key, 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&e[w].rule, rule, __ATOMIC_RELAXED);
    __atomic_store_n(&e[w].key, ra, __ATOMIC_RELEASE);
}

static int cache_get_rule(uintptr_t ra, uint64_t *rule)
{
    return cache_get(ra, rule);
}

/* A cache miss: the rule is computed (and the module list checked) inside dl_iterate_phdr,
 * under the loader lock and then ulock (see walk_callback). */
/*
 * Walks in flight, and fork: glibc 2.36's fork does not take the loader lock, so a child forked
 * while another thread is inside dl_iterate_phdr inherits that lock held and hangs at its first
 * dl_iterate_phdr. nh_unwind_fork_prepare sets forking and waits (bounded) for the walks in
 * flight to end; a walk that would start while forking is set does not start (the frame gets
 * the frame-pointer rule, uncached; nh_unwind_refresh is skipped: the next miss rescans).
 * Waiting instead could deadlock: a walk may wait for the loader lock of a thread in dlopen
 * whose malloc waits for the fork.
 */
static int walks, forking;

static int walk_begin(void)
{
    __atomic_add_fetch(&walks, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&forking, __ATOMIC_SEQ_CST)) {
        __atomic_sub_fetch(&walks, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    return 1;
}

static void walk_end(void)
{
    __atomic_sub_fetch(&walks, 1, __ATOMIC_RELEASE);
}

static uint64_t rule_slow(uintptr_t ra)
{
    if (!walk_begin())
        return FP_RULE;
    struct walk w = {0, ra, 0, 0, 0, 0, FP_RULE};
    dl_iterate_phdr(walk_callback, &w);
    if (!w.locked) {
        walk_end();
        return FP_RULE; /* no entry at all: cannot happen */
    }
    if (w.scanning) {
        walk_finish_locked(&w);
        cache_put(ra, w.have_rule ? w.rule : FP_RULE);
    } else if (w.have_rule) {
        cache_put(ra, w.rule);
    }
    pthread_mutex_unlock(&ulock);
    walk_end();
    return w.have_rule ? w.rule : FP_RULE;
}

/* ------------------------------------------------------------- the walk */

#ifdef NH_UNWIND_NO_MALLOC
/* The mapping that holds sp, from /proc/self/maps read with plain system calls into a buffer
 * on the stack: pthread_getattr_np mallocs (its CPU set, and for the main thread stdio), and
 * inside an allocator that malloc would come back to the caller. Once per thread. For the
 * main thread's growing [stack], the bottom is where glibc's pthread_getattr_np puts it: the
 * stack limit below the top, or the mapping below, whichever is higher. */
static int thread_bounds(uintptr_t sp)
{
    if (stack_state != 0)
        return stack_state > 0;
    stack_state = -1;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[512];
    size_t have = 0;
    int skip_line = 0; /* the rest of a line longer than buf */
    uintptr_t prev_end = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
        char *line = buf, *end = buf + have, *nl;
        while ((nl = memchr(line, '\n', (size_t)(end - line))) != NULL) {
            if (skip_line) {
                skip_line = 0;
                line = nl + 1;
                continue;
            }
            const char *p = line;
            uintptr_t lo = 0, hi = 0;
            int digits = 0;
            for (; p < nl && *p != '-'; p++, digits++)
                lo = lo * 16 + (uintptr_t)(*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
            for (p++; p < nl && *p != ' '; p++, digits++)
                hi = hi * 16 + (uintptr_t)(*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
            if (digits > 1 && sp >= lo && sp < hi) {
                stack_hi = hi;
                stack_lo = lo;
                if ((size_t)(nl - line) >= 7 && memcmp(nl - 7, "[stack]", 7) == 0) {
                    struct rlimit rl;
                    uintptr_t limit = getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                                              && rl.rlim_cur < hi ? hi - rl.rlim_cur : 0;
                    stack_lo = limit > prev_end ? limit : prev_end;
                }
                stack_state = 1;
                close(fd);
                return 1;
            }
            prev_end = hi;
            line = nl + 1;
        }
        have = (size_t)(end - line);
        memmove(buf, line, have);
        if (have == sizeof buf) { /* a line longer than buf: its start is parsed already or not at all */
            have = 0;
            skip_line = 1;
        }
    }
    close(fd);
    return 0;
}
#else
static int thread_bounds(uintptr_t sp)
{
    (void)sp;
    if (stack_state != 0)
        return stack_state > 0;
    pthread_attr_t attr;
    stack_state = -1;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr;
        size_t size;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0 && size != 0) {
            stack_lo = (uintptr_t)addr;
            stack_hi = (uintptr_t)addr + size;
            stack_state = 1;
        }
        pthread_attr_destroy(&attr);
    }
    return stack_state > 0;
}
#endif

/* From a frame's state (its return address, and the caller's RSP and RBP once it returns):
 * skip_own drops the frames in the unwinder's module up to the first outside it, then skip
 * more are dropped, then up to max are written. Nothing is read below sp, the lowest stack
 * address in use, or outside the thread's stack. */
static inline __attribute__((always_inline)) size_t walk_stack(uintptr_t *out, size_t max, size_t skip, int skip_own,
                                                               uintptr_t ra, uintptr_t sp, uintptr_t bp)
{
    uintptr_t lo = stack_lo > sp ? stack_lo : sp, hi = stack_hi;
    size_t n = 0;
    for (size_t steps = 0; steps < 64 + skip + max; steps++) {
        if (skip_own && ra >= own_lo && ra < own_hi) {
            /* the unwinder's module: the recorder's (or allocator's) own frames */
        } else if (skip != 0) {
            skip_own = 0;
            skip--;
        } else {
            skip_own = 0;
            out[n++] = ra;
            if (n == max)
                break;
        }
        uint64_t rule;
        if (!cache_get(ra, &rule))
            rule = rule_slow(ra);
        if (rule & R_STOP)
            break;
        uintptr_t cfa = ((rule & R_CFA_RBP) ? bp : sp) + (uintptr_t)(intptr_t)(int32_t)(uint32_t)rule;
        if (cfa <= sp || cfa > hi || cfa - 8 < lo)
            break;
        uint64_t bpr = rule & R_BP_MASK;
        if (bpr == R_BP_SAVED) {
            uintptr_t a = cfa + (uintptr_t)(intptr_t)(int16_t)(uint16_t)(rule >> 32);
            if (a < lo || a + 8 > hi)
                break;
            bp = *(const uintptr_t *)a;
        } else if (bpr == R_BP_LOST) {
            bp = 0;
        }
        ra = *(const uintptr_t *)(cfa - 8);
        sp = cfa;
        if (ra == 0)
            break;
    }
    return n;
}

__attribute__((noinline)) size_t nh_backtrace(uintptr_t *out, size_t max)
{
    /* __builtin_frame_address makes this function keep an RBP frame: its caller's state. */
    const uintptr_t *fp = __builtin_frame_address(0);
    if (max == 0 || !__atomic_load_n(&ready, __ATOMIC_ACQUIRE) || !thread_bounds((uintptr_t)fp))
        return 0;
    return walk_stack(out, max, 0, 1, (uintptr_t)__builtin_return_address(0), (uintptr_t)fp + 16, fp[0]);
}

__attribute__((noinline)) size_t nh_backtrace_skip(uintptr_t *out, size_t max, size_t skip)
{
    const uintptr_t *fp = __builtin_frame_address(0);
    if (max == 0 || !__atomic_load_n(&ready, __ATOMIC_ACQUIRE) || !thread_bounds((uintptr_t)fp))
        return 0;
    return walk_stack(out, max, skip, 0, (uintptr_t)__builtin_return_address(0), (uintptr_t)fp + 16, fp[0]);
}

size_t nh_backtrace_from(uintptr_t *out, size_t max, uintptr_t pc, uintptr_t sp, uintptr_t bp)
{
    if (max == 0 || !__atomic_load_n(&ready, __ATOMIC_ACQUIRE) || !thread_bounds(sp))
        return 0;
    return walk_stack(out, max, 0, 0, pc + 1, sp, bp);
}

/* ------------------------------------------------------------- the rest */

int nh_unwind_init(void)
{
    /* The mappings, under ulock alone (no loader lock is needed for them). */
    pthread_mutex_lock(&ulock);
    int ok = 1;
    if (modules == NULL)
        modules = map_zero(MAX_MODULES * sizeof *modules);
    if (names == NULL)
        names = map_zero(NAMES_BYTES);
    if (cache == NULL)
        cache = map_zero((size_t)CACHE_SETS * CACHE_WAYS * sizeof *cache);
    if (modules == NULL || names == NULL || cache == NULL)
        ok = 0;
    int done = __atomic_load_n(&ready, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&ulock);
    if (!ok || done)
        return ok ? 0 : -1;
    /* The scan: loader lock, then ulock (walk_callback). */
    struct walk w = {1, 0, 0, 0, 0, 0, 0};
    dl_iterate_phdr(walk_callback, &w);
    if (!w.locked)
        return -1;
    walk_finish_locked(&w);
    if (!ready) {
        const struct nh_module *own = find_module((uintptr_t)&nh_backtrace);
        if (own != NULL) {
            own_lo = own->lo;
            own_hi = own->hi;
        }
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&ulock);
    return 0;
}

int nh_unwind_refresh(void)
{
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
        return 0;
    /* Rescans only if the loader's counters changed since the last look (a dlclose that
     * unloaded nothing, or dlopen(NULL), leaves them as they were). */
    if (!walk_begin())
        return 0;
    struct walk w = {0, 0, 0, 0, 0, 0, 0};
    dl_iterate_phdr(walk_callback, &w);
    int gone = 0;
    if (w.locked) {
        gone = walk_finish_locked(&w);
        pthread_mutex_unlock(&ulock);
    }
    walk_end();
    return gone;
}

unsigned nh_unwind_unloads(void)
{
    return __atomic_load_n(&n_unloads, __ATOMIC_ACQUIRE);
}

size_t nh_unwind_module_count(void)
{
    return __atomic_load_n(&n_modules, __ATOMIC_ACQUIRE);
}

const struct nh_module *nh_unwind_module(size_t i)
{
    return &modules[i];
}

/* Resident bytes of one mapping (its untouched pages cost nothing). No lock: the mappings are
 * made once by init and never change; the vector is the caller's (this runs under the
 * recorder's lock, which must not wait for ulock: see the lock order above). */
static size_t resident(const void *p, size_t bytes)
{
    unsigned char vec[256];
    size_t page = (size_t)getpagesize(), pages = (bytes + page - 1) / page, total = 0;
    for (size_t i = 0; i < pages; i += sizeof vec) {
        size_t k = pages - i < sizeof vec ? pages - i : sizeof vec;
        if (mincore((char *)p + i * page, k * page, vec) != 0)
            return bytes;
        for (size_t j = 0; j < k; j++)
            total += vec[j] & 1;
    }
    return total * page;
}

size_t nh_unwind_memory_bytes(void)
{
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
        return 0;
    return resident(modules, MAX_MODULES * sizeof *modules) + resident(names, NAMES_BYTES)
           + resident(cache, (size_t)CACHE_SETS * CACHE_WAYS * sizeof *cache);
}

/* Not under any lock of the caller's: a walk in flight may need the loader lock of a thread
 * that waits for it. The wait is bounded (a fork from inside a dl_iterate_phdr callback holds
 * the loader lock that a walk waits for): after ~1 s the fork goes ahead. */
void nh_unwind_fork_prepare(void)
{
    __atomic_store_n(&forking, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 1000 && __atomic_load_n(&walks, __ATOMIC_SEQ_CST) != 0; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    /* no walk holds ulock now (unless the wait timed out): only init could */
    pthread_mutex_lock(&ulock);
}

void nh_unwind_fork_parent(void)
{
    pthread_mutex_unlock(&ulock);
    __atomic_store_n(&forking, 0, __ATOMIC_SEQ_CST);
}

void nh_unwind_fork_child(void)
{
    pthread_mutex_init(&ulock, NULL);
    __atomic_store_n(&walks, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&forking, 0, __ATOMIC_SEQ_CST);
}
