/*
 * config.h — YAML file → immutable generation (DESIGN.md §3).
 *
 * Runs on the main thread only (it reads files and may resolve names).
 * Every problem found is reported as "file:line:col: message", with a
 * "did you mean" where a known key is close; the load fails as a whole if
 * there is any error, so a half-valid file never becomes a generation.
 */
#ifndef PT_CONTROL_CONFIG_H
#define PT_CONTROL_CONFIG_H

#include "gateway/generation.h"

#include <stdio.h>

/* Collected diagnostics of one load. */
struct pt_diag {
    char **lines; /* "file:line:col: message" (malloc'd) */
    size_t n, cap;
};

void pt_diag_init(struct pt_diag *d);
void pt_diag_add(struct pt_diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void pt_diag_print(const struct pt_diag *d, FILE *out);
void pt_diag_free(struct pt_diag *d);

/* Loads and validates `path`. On success returns a generation with id `id`
 * (router built, filter chains compiled, addresses resolved). On failure
 * returns NULL and fills `diag` (at least one line). */
struct pt_generation *pt_config_load(const char *path, uint64_t id, struct pt_diag *diag);

struct pt_resolver;

/* pt_config_load with the host names of targets and URLs expanded from
 * `dns`'s last good answers (a name without one has no address yet), and
 * from `text` (the source of a running generation, `len` bytes) instead of
 * the file when text is not NULL: what the runtime uses at start-up, on
 * reload and when an answer changes. pt_config_load (validate, tests) is
 * this with neither: it never needs DNS. */
struct pt_generation *pt_config_load_with(const char *path, const char *text, size_t len,
                                          const struct pt_resolver *dns, uint64_t id,
                                          struct pt_diag *diag);

/* What one load reads: the config (`text`, or the file at `path` when
 * text is NULL) and its consumers file (`consumers_file`, resolved beside
 * the config): read from disk unless `consumers_given`, in which case
 * `consumers_text` is its content (NULL: there is no such file). The
 * admin API loads submitted text this way without touching the disk. */
struct pt_config_src {
    const char *path;
    const char *text;
    size_t len;
    bool consumers_given;
    const char *consumers_text;
    size_t consumers_len;
};

/* Why a raw API key could never be sent by a client (empty, too long,
 * surrounding spaces, control characters), or NULL when it is fine. */
const char *pt_config_key_problem(const char *key);

struct pt_generation *pt_config_load_src(const struct pt_config_src *src,
                                         const struct pt_resolver *dns, uint64_t id,
                                         struct pt_diag *diag);

#endif
