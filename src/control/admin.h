/*
 * admin.h — the admin API listener, run from the main thread's poll loop
 * (see admin.c for the endpoints). The runtime supplies hooks for what
 * only it knows: the current generation, counters, and reload.
 */
#ifndef PT_CONTROL_ADMIN_H
#define PT_CONTROL_ADMIN_H

#include "gateway/generation.h"

#include <poll.h>

struct pt_admin_status {
    const char *version;
    int workers;
    uint64_t uptime_s;
    uint64_t connections;
    uint64_t requests;
    uint64_t reloads_ok, reloads_failed;
};

struct pt_admin_hooks {
    const struct pt_generation *(*current)(void *ctx);
    void (*status)(void *ctx, struct pt_admin_status *out);
    /* Reloads the config file; 0 and the new id, or -1 and a malloc'd
     * newline-separated error text. */
    int (*reload)(void *ctx, uint64_t *new_id, char **errors);
};

struct pt_admin;

/* Opens the admin listener of `g` (none when g has no admin block).
 * NULL on failure (address in use, ...). */
struct pt_admin *pt_admin_open(const struct pt_generation *g, const struct pt_admin_hooks *hooks,
                               void *ctx);
/* After a reload: moves the listener when the admin address changed. */
int pt_admin_sync(struct pt_admin *a, const struct pt_generation *g);
/* Fills poll entries for the listener and clients; returns how many. */
int pt_admin_pollfds(struct pt_admin *a, struct pollfd *fds, int max);
/* Serves whatever poll reported ready. */
void pt_admin_handle(struct pt_admin *a, const struct pollfd *fds, int n, uint64_t now_ms);
void pt_admin_close(struct pt_admin *a);

#endif
