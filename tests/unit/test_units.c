/*
 * test_units.c — durations, sizes and rates as CONFIG.md writes them:
 * every accepted form, the rejected look-alikes a user might type, and
 * overflow at the edges of uint64_t.
 */
#include "core/units.h"
#include "unit.h"

#include <errno.h>

static void dur_ok(const char *s, uint64_t want)
{
    uint64_t v = 12345;
    int rc = pt_parse_duration_ms(s, &v);
    CHECK_MSG(rc == 0 && v == want, "duration \"%s\": rc %d value %llu, want %llu", s, rc,
              (unsigned long long)v, (unsigned long long)want);
}

static void dur_bad(const char *s, int want_rc)
{
    uint64_t v = 12345;
    int rc = pt_parse_duration_ms(s, &v);
    CHECK_MSG(rc == want_rc && v == 12345, "duration \"%s\": rc %d, want %d", s ? s : "(null)", rc,
              want_rc);
}

static void size_ok(const char *s, uint64_t want)
{
    uint64_t v = 12345;
    int rc = pt_parse_size(s, &v);
    CHECK_MSG(rc == 0 && v == want, "size \"%s\": rc %d value %llu, want %llu", s, rc,
              (unsigned long long)v, (unsigned long long)want);
}

static void size_bad(const char *s, int want_rc)
{
    uint64_t v = 12345;
    int rc = pt_parse_size(s, &v);
    CHECK_MSG(rc == want_rc && v == 12345, "size \"%s\": rc %d, want %d", s ? s : "(null)", rc,
              want_rc);
}

static void rate_ok(const char *s, uint64_t want_n, uint64_t want_ms)
{
    uint64_t n = 0, ms = 0;
    int rc = pt_parse_rate(s, &n, &ms);
    CHECK_MSG(rc == 0 && n == want_n && ms == want_ms, "rate \"%s\": rc %d %llu/%llums", s, rc,
              (unsigned long long)n, (unsigned long long)ms);
}

static void rate_bad(const char *s, int want_rc)
{
    uint64_t n = 7, ms = 7;
    int rc = pt_parse_rate(s, &n, &ms);
    CHECK_MSG(rc == want_rc && n == 7 && ms == 7, "rate \"%s\": rc %d, want %d", s ? s : "(null)",
              rc, want_rc);
}

static void test_durations(void)
{
    dur_ok("250ms", 250);
    dur_ok("0ms", 0);
    dur_ok("0s", 0);
    dur_ok("5s", 5000);
    dur_ok("2m", 120000);
    dur_ok("1h", 3600000);
    dur_ok("1d", 86400000);
    dur_ok("1.5s", 1500);
    dur_ok("0.25s", 250);
    dur_ok("1.5m", 90000);
    dur_ok("0.001s", 1);
    dur_ok("007s", 7000);
    dur_ok("18446744073709551615ms", UINT64_MAX);

    /* A unit is required: "5" could mean seconds or milliseconds. */
    dur_bad("5", -EINVAL);
    dur_bad("0", -EINVAL);
    dur_bad("", -EINVAL);
    dur_bad(NULL, -EINVAL);
    dur_bad("5 seconds", -EINVAL);
    dur_bad("5 s", -EINVAL);
    dur_bad(" 5s", -EINVAL);
    dur_bad("5s ", -EINVAL);
    dur_bad("5S", -EINVAL);
    dur_bad("5sec", -EINVAL);
    dur_bad("5us", -EINVAL);
    dur_bad("-5s", -EINVAL);
    dur_bad("+5s", -EINVAL);
    dur_bad("s", -EINVAL);
    dur_bad("1.s", -EINVAL);
    dur_bad(".5s", -EINVAL);
    dur_bad("1..5s", -EINVAL);
    dur_bad("1h30m", -EINVAL);
    dur_bad("0.5ms", -EINVAL);   /* not a whole millisecond */
    dur_bad("1.0001s", -EINVAL); /* likewise */
    dur_bad("0x10s", -EINVAL);

    dur_bad("18446744073709551616ms", -ERANGE);
    dur_bad("18446744073709552s", -ERANGE);
    dur_bad("99999999999999999999999d", -ERANGE);
    dur_bad("213503982335d", -ERANGE);
    dur_ok("213503982334d", 213503982334ull * 86400000ull);
}

static void test_sizes(void)
{
    size_ok("512", 512);
    size_ok("0", 0);
    size_ok("512B", 512);
    size_ok("16KiB", 16384);
    size_ok("1MiB", 1048576);
    size_ok("8MiB", 8388608);
    size_ok("1GiB", 1073741824);
    size_ok("1TiB", 1099511627776ull);
    size_ok("1KB", 1000);
    size_ok("2MB", 2000000);
    size_ok("1GB", 1000000000);
    size_ok("1.5KiB", 1536);
    size_ok("0.5MiB", 524288);
    size_ok("1.1KB", 1100);
    size_ok("18446744073709551615", UINT64_MAX);

    size_bad("", -EINVAL);
    size_bad(NULL, -EINVAL);
    size_bad("16 KiB", -EINVAL);
    size_bad("16kib", -EINVAL);
    size_bad("16k", -EINVAL);
    size_bad("16K", -EINVAL);
    size_bad("16kb", -EINVAL);
    size_bad("KiB", -EINVAL);
    size_bad("-1", -EINVAL);
    size_bad("1.5", -EINVAL); /* half a byte */
    size_bad("0.1KiB", -EINVAL);
    size_bad("1e3", -EINVAL);

    size_bad("18446744073709551616", -ERANGE);
    size_bad("16777216TiB", -ERANGE);
    size_bad("17179869184GiB", -ERANGE);
    size_ok("17179869183GiB", 17179869183ull << 30);
}

static void test_rates(void)
{
    rate_ok("100/s", 100, 1000);
    rate_ok("1000/m", 1000, 60000);
    rate_ok("50000/h", 50000, 3600000);
    rate_ok("1000000/d", 1000000, 86400000);
    rate_ok("1/s", 1, 1000);

    rate_bad("0/s", -EINVAL);
    rate_bad("100", -EINVAL);
    rate_bad("/s", -EINVAL);
    rate_bad("100/", -EINVAL);
    rate_bad("100/sec", -EINVAL);
    rate_bad("100/second", -EINVAL);
    rate_bad("100/ms", -EINVAL);
    rate_bad("100 /s", -EINVAL);
    rate_bad("1.5/s", -EINVAL);
    rate_bad("-1/s", -EINVAL);
    rate_bad("", -EINVAL);
    rate_bad(NULL, -EINVAL);
    rate_bad("18446744073709551616/s", -ERANGE);
}

int main(void)
{
    test_durations();
    test_sizes();
    test_rates();
    return unit_report("units");
}
