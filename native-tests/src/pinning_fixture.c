/*
 * The allocation-site test (tests/NativeHeap.Tests/Tool/AllocationSiteTests.cs): seeds/002 with
 * names. load_config takes 100,000-byte buffers, each followed by an 80-byte setting that
 * remember_setting keeps; the buffers are freed and the settings pin them. Built -O2 -g
 * -fomit-frame-pointer: only DWARF CFI unwinds it, and explain must name remember_setting
 * and the line marked SITE.
 */
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
#define N 200

void *volatile settings[N];
void *volatile buffers[N];

NOINLINE void *remember_setting(int i)
{
    char *s = malloc(80); /* SITE */
    if (s)
        memset(s, i, 80);
    return s;
}

NOINLINE void load_config(int n)
{
    for (int i = 0; i < n; i++) {
        buffers[i] = malloc(100000);
        if (buffers[i])
            memset(buffers[i], 1, 100000);
        settings[i] = remember_setting(i);
    }
}

int main(void)
{
    load_config(N);
    for (int i = 0; i < N; i++)
        free(buffers[i]);
    return 0;
}
