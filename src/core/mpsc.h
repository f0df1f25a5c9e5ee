/*
 * mpsc.h — a multi-producer, single-consumer queue of intrusive nodes: a
 * Treiber stack that the consumer empties in one exchange and reverses, so
 * it hands out nodes in the order they were pushed (per producer exactly;
 * across producers in the order their pushes landed).
 *
 * Any thread may push; one thread (the owner) takes. No locks; a push is one
 * CAS loop, a take one exchange. There is no single-node pop, so the stack
 * has no ABA problem. A queue can be closed by its consumer: later pushes
 * fail, so a message can never be stranded in a queue nobody reads.
 *
 * Ownership: a pushed node belongs to the queue until the consumer takes
 * it; the queue never allocates or frees. A producer wakes the consumer
 * (eventfd, ...) itself: pt_mpsc_push says when the queue was empty, which
 * is the only time a wake is needed.
 */
#ifndef PT_CORE_MPSC_H
#define PT_CORE_MPSC_H

#include <stdatomic.h>
#include <stdbool.h>

struct pt_mpsc_node {
    struct pt_mpsc_node *next;
};

struct pt_mpsc {
    _Atomic(struct pt_mpsc_node *) head; /* newest first; a private mark once closed */
};

void pt_mpsc_init(struct pt_mpsc *q);

/* Pushes n (any thread). 1: the queue was empty (wake the consumer);
 * 0: it was not (a wake is already due); -EPIPE: the queue is closed and n
 * still belongs to the caller. */
int pt_mpsc_push(struct pt_mpsc *q, struct pt_mpsc_node *n);

/* Consumer only: takes every node queued, oldest first (a list linked by
 * `next`, NULL-terminated), or NULL when there is none. */
struct pt_mpsc_node *pt_mpsc_take(struct pt_mpsc *q);

/* Consumer only: closes the queue and takes what is left, as pt_mpsc_take.
 * Every later push fails. */
struct pt_mpsc_node *pt_mpsc_close(struct pt_mpsc *q);

bool pt_mpsc_closed(struct pt_mpsc *q);

#endif
