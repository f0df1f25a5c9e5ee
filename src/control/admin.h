/*
 * admin.h — the admin API listener, run on the control thread's event loop
 * (see admin.c for the endpoints). The runtime supplies hooks for what
 * only it knows: the current generation, counters, and reload.
 */
#ifndef PT_CONTROL_ADMIN_H
#define PT_CONTROL_ADMIN_H

#include "control/config.h"
#include "core/loop.h"
#include "gateway/generation.h"

struct pt_admin_status {
    const char *version;
    int workers;
    uint64_t uptime_s;
    uint64_t connections;
    uint64_t requests;
    uint64_t reloads_ok, reloads_failed;
};

#define PT_ADMIN_HEADROOM 256

struct pt_admin_hooks {
    const struct pt_generation *(*current)(void *ctx);
    void (*status)(void *ctx, struct pt_admin_status *out);
    /* Reloads the config file; 0 and the new id, or -1 and a malloc'd
     * newline-separated error text. */
    int (*reload)(void *ctx, uint64_t *new_id, char **errors);
    /* Loads `src` (its path is the runtime's config file) and publishes
     * it: 0 and the new id; -1 when it does not load (its messages in
     * *diag, which the caller frees); -2 when it loaded but could not be
     * put in place (a malloc'd reason in *errors). Writes no file. */
    int (*apply)(void *ctx, const struct pt_config_src *src, uint64_t *new_id, struct pt_diag *diag,
                 char **errors);
    /* Serving a generation and not draining (/readyz). */
    bool (*ready)(void *ctx);
    /* The Prometheus text of GET /metrics (control/metrics_text.h): a
     * malloc'd block whose first PT_ADMIN_HEADROOM bytes are left free for
     * the response head, then *len bytes of text; NULL when out of memory.
     * The admin API sends it in place (a big scrape is not copied). */
    char *(*metrics)(void *ctx, size_t *len);
};

struct pt_admin;

/* Opens the admin listener of `g` (none when g has no admin block) on
 * `loop`, which serves it and its clients from then on. NULL on failure
 * (address in use, ...). */
struct pt_admin *pt_admin_open(struct pt_loop *loop, const struct pt_generation *g,
                               const struct pt_admin_hooks *hooks, void *ctx);
/* After a reload: moves the listener when the admin address changed. */
int pt_admin_sync(struct pt_admin *a, const struct pt_generation *g);
/* Frees clients closed during the loop turn; call after each turn. */
void pt_admin_reap(struct pt_admin *a);
void pt_admin_close(struct pt_admin *a);

#endif
