/*
 * Output for programs that must not call malloc (the replayer, the recorder): plain write(2)
 * and hand-made decimal formatting, no stdio.
 */
#ifndef RAWIO_H
#define RAWIO_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* Writes all of p, retrying on EINTR. Returns 0 when a write failed (disk full, closed pipe). */
static inline int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

/* Formats v in decimal so that it ends just before end; returns its first digit. */
static inline char *fmt_u64(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

/* Appends p[0..n) to buf (capacity cap, *len bytes used), calling flush() whenever it is full;
 * flush must empty it (set *len to 0). */
static inline void append_buffered(char *buf, size_t cap, size_t *len, const char *p, size_t n, void (*flush)(void))
{
    while (n > 0) {
        if (*len == cap)
            flush();
        size_t room = cap - *len;
        size_t k = n < room ? n : room;
        memcpy(buf + *len, p, k);
        *len += k;
        p += k;
        n -= k;
    }
}

#endif
