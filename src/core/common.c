/* common.c — slice helpers and clocks shared by every floor. */
#include "core/common.h"

#include <time.h>

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

bool pt_slice_ieq(pt_slice a, pt_slice b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return false;
    return true;
}

bool pt_slice_ieq_cstr(pt_slice a, const char *s)
{
    return pt_slice_ieq(a, (pt_slice){s, strlen(s)});
}

uint64_t pt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t pt_now_ms(void)
{
    return pt_now_ns() / 1000000ull;
}
