/*
 * Output for programs that must not call malloc (the replayer, the recorder): plain write(2)
 * and hand-made decimal formatting, no stdio.
 */
#ifndef RAWIO_H
#define RAWIO_H

#include <errno.h>
#include <fcntl.h>
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

/* Reads up to cap bytes of a small file (/proc) with open and read only.
 * Returns the length read, or -1 when the file cannot be opened. */
static inline ssize_t read_small_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == cap)
            break;
    }
    close(fd);
    return (ssize_t)len;
}

/* Reads size, resident and shared (in pages) from /proc/self/statm with open and read only.
 * Returns 1, or 0 when the file cannot be opened, -1 when it cannot be parsed. */
static inline int read_statm_pages(uint64_t v[3])
{
    char buf[256];
    ssize_t got = read_small_file("/proc/self/statm", buf, sizeof buf);
    if (got < 0)
        return 0;
    size_t len = (size_t)got;

    size_t i = 0;
    for (int f = 0; f < 3; f++) {
        while (i < len && buf[i] == ' ')
            i++;
        if (i == len || buf[i] < '0' || buf[i] > '9')
            return -1;
        v[f] = 0;
        while (i < len && buf[i] >= '0' && buf[i] <= '9')
            v[f] = v[f] * 10 + (uint64_t)(buf[i++] - '0');
    }
    return 1;
}

#endif
