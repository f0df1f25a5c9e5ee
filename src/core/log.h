/*
 * log.h — the gateway's own diagnostics (not the access log): one line per
 * event on stderr, "2026-11-27T18:00:00.123Z level message". Used at
 * start-up, reload and on rare errors; never on the per-request path.
 */
#ifndef PT_CORE_LOG_H
#define PT_CORE_LOG_H

enum pt_log_level { PT_LOG_DEBUG, PT_LOG_INFO, PT_LOG_WARN, PT_LOG_ERROR };

extern enum pt_log_level pt_log_min_level;

void pt_log(enum pt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pt_info(...) pt_log(PT_LOG_INFO, __VA_ARGS__)
#define pt_warn(...) pt_log(PT_LOG_WARN, __VA_ARGS__)
#define pt_error(...) pt_log(PT_LOG_ERROR, __VA_ARGS__)

#endif
