/*
 * mpsc.c — see mpsc.h.
 */
#include "core/mpsc.h"

#include <errno.h>
#include <stddef.h>

/* A head no node can have: marks a closed queue. */
static struct pt_mpsc_node closed_mark;
#define PT_MPSC_CLOSED (&closed_mark)

void pt_mpsc_init(struct pt_mpsc *q)
{
    atomic_init(&q->head, NULL);
}

int pt_mpsc_push(struct pt_mpsc *q, struct pt_mpsc_node *n)
{
    struct pt_mpsc_node *head = atomic_load_explicit(&q->head, memory_order_relaxed);
    do {
        if (head == PT_MPSC_CLOSED)
            return -EPIPE;
        n->next = head;
        /* Release: the consumer that takes n sees everything the producer
         * wrote into the message before pushing it. */
    } while (!atomic_compare_exchange_weak_explicit(&q->head, &head, n, memory_order_release,
                                                    memory_order_relaxed));
    return head == NULL;
}

/* Newest-first list → oldest-first list. */
static struct pt_mpsc_node *reverse(struct pt_mpsc_node *n)
{
    struct pt_mpsc_node *out = NULL;
    while (n) {
        struct pt_mpsc_node *next = n->next;
        n->next = out;
        out = n;
        n = next;
    }
    return out;
}

struct pt_mpsc_node *pt_mpsc_take(struct pt_mpsc *q)
{
    /* Cheap check first: a wake with nothing queued costs no locked op. */
    struct pt_mpsc_node *head = atomic_load_explicit(&q->head, memory_order_relaxed);
    if (head == NULL || head == PT_MPSC_CLOSED)
        return NULL;
    head = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
    return reverse(head);
}

struct pt_mpsc_node *pt_mpsc_close(struct pt_mpsc *q)
{
    struct pt_mpsc_node *head =
        atomic_exchange_explicit(&q->head, PT_MPSC_CLOSED, memory_order_acquire);
    return head == PT_MPSC_CLOSED ? NULL : reverse(head);
}

bool pt_mpsc_closed(struct pt_mpsc *q)
{
    return atomic_load_explicit(&q->head, memory_order_acquire) == PT_MPSC_CLOSED;
}
