/*
 * access_log.h — JSON-lines access log, written off the request path.
 *
 * A worker formats a line into its own single-producer ring; one logger
 * thread drains every ring and does the blocking write(2) to the file or
 * stdout. A full ring drops the line and counts the drop rather than stall
 * a worker. With `access_log: {path: off}` nothing is formatted at all.
 */
#ifndef PT_GATEWAY_ACCESS_LOG_H
#define PT_GATEWAY_ACCESS_LOG_H

#include "core/common.h"

#include <stdatomic.h>

#define PT_ALOG_RING_SIZE (1u << 20)

struct pt_alog_ring {
    char *buf;                /* PT_ALOG_RING_SIZE bytes */
    _Atomic uint64_t head;    /* total bytes written (producer) */
    _Atomic uint64_t tail;    /* total bytes consumed (logger) */
    _Atomic uint64_t dropped; /* lines dropped on a full ring */
};

int pt_alog_ring_init(struct pt_alog_ring *r);
void pt_alog_ring_free(struct pt_alog_ring *r);
/* Appends one line (including its '\n'); drops it when the ring is full. */
void pt_alog_push(struct pt_alog_ring *r, const char *line, size_t len);

/* The logger thread: drains `rings` every few ms into the destination of
 * the current generation (reopened when it changes). */
struct pt_alog_logger;
struct pt_alog_logger *pt_alog_start(struct pt_alog_ring **rings, int n);
/* Final drain, then stop. */
void pt_alog_stop(struct pt_alog_logger *lg);
/* Called by the control thread at start-up and on every reload: (re)opens
 * the destination, so a reload after a log rotation (mv, then SIGHUP)
 * writes to a new file. Returns 0, or -errno with the current destination
 * kept. */
int pt_alog_set_target(struct pt_alog_logger *lg, int mode, const char *path);

#endif
