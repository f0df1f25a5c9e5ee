/*
 * units.h — the config value syntaxes of CONFIG.md: durations ("250ms",
 * "5s", "2m", "1h", "1d"), sizes ("512", "16KiB", "1MiB", "1GiB", also
 * "KB"/"MB" as powers of 1000) and rates ("100/s", "1000/m", "50000/h",
 * "1000000/d"). Pure functions; 0 on success, -EINVAL on bad syntax,
 * -ERANGE on overflow.
 */
#ifndef PT_CORE_UNITS_H
#define PT_CORE_UNITS_H

#include <stdint.h>

int pt_parse_duration_ms(const char *s, uint64_t *out_ms);
int pt_parse_size(const char *s, uint64_t *out_bytes);
int pt_parse_rate(const char *s, uint64_t *count, uint64_t *period_ms);

#endif
