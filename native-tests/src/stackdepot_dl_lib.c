/* stackdepot_test's library: its constructor captures a stack while dlopen holds the loader lock. */
#include <stdint.h>

#include "stackdepot.h"

static uint32_t captured_id;
static uintptr_t captured_ra;
static volatile int sink;

__attribute__((noinline, noclone, noipa)) static void capture(void)
{
    captured_id = nhd_stack_capture(0, 8);
    captured_ra = (uintptr_t)__builtin_return_address(0);
    sink++;
}

__attribute__((constructor)) static void on_load(void)
{
    capture();
    sink++;
}

void stackdepot_dl_result(uint32_t *id, uintptr_t *ra)
{
    *id = captured_id;
    *ra = captured_ra;
}
