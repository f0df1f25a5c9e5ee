/*
 * units.c — parsers for the value syntaxes of CONFIG.md (see units.h).
 *
 * All three share one shape: a decimal number, then a unit from a short
 * table. They are strict on purpose: no spaces, no signs, no unit-less
 * durations, no guessing whether "k" means 1000 or 1024. A config value
 * that parses is one whose meaning nobody has to look up. Arithmetic is
 * checked, so a huge value is -ERANGE rather than a silently wrapped one.
 */
#include "core/units.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct unit {
    const char *suffix;
    uint64_t mult;
};

static int parse_scaled(const char *s, const struct unit *units, size_t nunits, bool unit_required,
                        uint64_t *out);

/* Suffixes are compared whole (strcmp), so table order does not matter;
 * smallest unit first reads best. */
static const struct unit duration_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60ull * 1000}, {"h", 3600ull * 1000}, {"d", 86400ull * 1000},
};

static const struct unit size_units[] = {
    {"", 1},
    {"B", 1},
    {"KiB", 1ull << 10},
    {"MiB", 1ull << 20},
    {"GiB", 1ull << 30},
    {"TiB", 1ull << 40},
    {"KB", 1000ull},
    {"MB", 1000ull * 1000},
    {"GB", 1000ull * 1000 * 1000},
    {"TB", 1000ull * 1000 * 1000 * 1000},
};

static const struct unit rate_periods[] = {
    {"s", 1000},
    {"m", 60ull * 1000},
    {"h", 3600ull * 1000},
    {"d", 86400ull * 1000},
};

int pt_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    return parse_scaled(s, duration_units, sizeof(duration_units) / sizeof(duration_units[0]), true,
                        out_ms);
}

int pt_parse_size(const char *s, uint64_t *out_bytes)
{
    return parse_scaled(s, size_units, sizeof(size_units) / sizeof(size_units[0]), false,
                        out_bytes);
}

/* "N/unit": N is a whole number of requests ≥ 1 (a rate of zero admits
 * nothing and is always a mistake), the unit one letter. */
int pt_parse_rate(const char *s, uint64_t *count, uint64_t *period_ms)
{
    if (!s)
        return -EINVAL;
    const char *slash = strchr(s, '/');
    if (!slash || slash == s)
        return -EINVAL;
    uint64_t n = 0;
    for (const char *p = s; p < slash; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -ERANGE;
        n = n * 10 + d;
    }
    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(rate_periods) / sizeof(rate_periods[0]); i++) {
        if (strcmp(slash + 1, rate_periods[i].suffix) == 0) {
            *count = n;
            *period_ms = rate_periods[i].mult;
            return 0;
        }
    }
    return -EINVAL;
}

/*
 * Parses "<digits>[.<digits>]<suffix>" where suffix is one of `units`
 * (the empty suffix only when the table lists it and !unit_required).
 * A fraction is accepted only when it yields a whole number of the base
 * unit ("1.5s" = 1500 ms, "1.5KiB" = 1536 bytes; "0.5ms" is rejected):
 * rounding a config value behind the user's back would be a surprise.
 */
static int parse_scaled(const char *s, const struct unit *units, size_t nunits, bool unit_required,
                        uint64_t *out)
{
    if (!s)
        return -EINVAL;
    const char *p = s;
    uint64_t whole = 0;
    bool overflow = false;
    const char *digits = p;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (whole > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            whole = whole * 10 + d;
        p++;
    }
    if (p == digits)
        return -EINVAL;

    /* Fraction kept as numerator/denominator; 18 digits keep the
     * denominator within uint64_t. */
    uint64_t frac = 0, denom = 1;
    if (*p == '.') {
        p++;
        const char *fd = p;
        while (*p >= '0' && *p <= '9') {
            if (p - fd >= 18)
                return -EINVAL;
            frac = frac * 10 + (uint64_t)(*p - '0');
            denom *= 10;
            p++;
        }
        if (p == fd)
            return -EINVAL;
    }

    const struct unit *u = NULL;
    for (size_t i = 0; i < nunits; i++) {
        if (strcmp(p, units[i].suffix) == 0) {
            u = &units[i];
            break;
        }
    }
    if (!u || (unit_required && *u->suffix == '\0'))
        return -EINVAL;
    if (overflow)
        return -ERANGE;

    uint64_t v;
    if (__builtin_mul_overflow(whole, u->mult, &v))
        return -ERANGE;
    if (frac) {
        /* frac/denom * mult must be whole: frac * mult % denom == 0. */
        unsigned __int128 f = (unsigned __int128)frac * u->mult;
        if (f % denom != 0)
            return -EINVAL;
        uint64_t add = (uint64_t)(f / denom);
        if (__builtin_add_overflow(v, add, &v))
            return -ERANGE;
    }
    *out = v;
    return 0;
}
