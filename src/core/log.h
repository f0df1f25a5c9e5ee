/*
 * log.h — the gateway's own diagnostics, the error log (not the access
 * log). One line per event, as text
 *   "2026-11-27T18:00:00.123Z warn message"
 * or, with `log_format: json`, one JSON object a line
 *   {"ts":"2026-11-27T18:00:00.123Z","level":"warn","msg":"message"}
 * to stderr or to the file `error_log` names. Used at start-up, reload,
 * by the control thread and on rare errors; never per request.
 *
 * Threads: any thread may log. The level, format and destination are
 * changed by the control thread only (pt_log_configure at load and
 * reload, pt_log_reopen on SIGUSR1) and read with relaxed atomics. The
 * destination is one stable file descriptor: a new file is dup'ed onto
 * it, so a line being written while the file changes lands whole in the
 * old file or the new one, never in a closed descriptor.
 */
#ifndef PT_CORE_LOG_H
#define PT_CORE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

enum pt_log_level { PT_LOG_DEBUG, PT_LOG_INFO, PT_LOG_WARN, PT_LOG_ERROR, PT_LOG_LEVELS };
enum pt_log_format { PT_LOG_TEXT, PT_LOG_JSON, PT_LOG_FORMATS };

/* "debug", "info", "warn", "error" / "text", "json" (config values). */
extern const char *const pt_log_level_names[PT_LOG_LEVELS];
extern const char *const pt_log_format_names[PT_LOG_FORMATS];

/* The least severe level written (an enum pt_log_level); tests set it
 * directly. Relaxed atomic: any thread reads it. */
extern _Atomic int pt_log_min_level;

void pt_log(enum pt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether a line at `level` would be written (to skip costly arguments). */
bool pt_log_enabled(enum pt_log_level level);

/* `--log-level NAME` on the command line: sets the level now and for
 * good (pt_log_configure no longer changes it). 0, or -1 for a bad name. */
int pt_log_pin_level(const char *name);

/*
 * Applies a configuration's `log_level` (unless pinned), `log_format` and
 * `error_log` (`path` NULL: stderr). A file is opened (append, created
 * 0644; again when it is the current one) before anything changes: on failure returns -errno and
 * the current destination, level and format stay. Control thread only.
 */
int pt_log_configure(enum pt_log_level level, enum pt_log_format format, const char *path);
/* Opens the error log file again at its path (logrotate: the old file was
 * renamed; SIGUSR1). 0 (also when logging to stderr), or -errno with the
 * old file kept. Control thread only. */
int pt_log_reopen(void);

#define pt_debug(...) pt_log(PT_LOG_DEBUG, __VA_ARGS__)
#define pt_info(...) pt_log(PT_LOG_INFO, __VA_ARGS__)
#define pt_warn(...) pt_log(PT_LOG_WARN, __VA_ARGS__)
#define pt_error(...) pt_log(PT_LOG_ERROR, __VA_ARGS__)

#endif
