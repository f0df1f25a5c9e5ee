/* test_mpsc.c — the multi-producer single-consumer queue behind a worker's
 * wake eventfd: several threads push while a bare event loop drains on
 * wake-ups (every message arrives once, each producer's in order, and a
 * push that finds the queue non-empty needs no wake); closing hands back
 * what is left and refuses later pushes. */
#include "core/loop.h"
#include "core/mpsc.h"
#include "unit.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>

#define PRODUCERS 4
#define PER_PRODUCER 20000

struct msg {
    struct pt_mpsc_node node;
    int producer;
    int seq;
};

struct consumer {
    struct pt_io wake;
    struct pt_mpsc q;
    int next_seq[PRODUCERS]; /* the seq each producer's next message must carry */
    long received;
    long out_of_order;
    long wakes;
};

struct producer {
    struct consumer *c;
    int id;
    long wakes_sent;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        struct msg *m = malloc(sizeof(*m));
        m->producer = p->id;
        m->seq = i;
        if (pt_mpsc_push(&p->c->q, &m->node) == 1) {
            uint64_t one = 1;
            if (write(p->c->wake.fd, &one, sizeof(one)) != sizeof(one))
                abort();
            p->wakes_sent++;
        }
    }
    return NULL;
}

static void on_wake(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct consumer *c = pt_container_of(io, struct consumer, wake);
    uint64_t v;
    while (read(io->fd, &v, sizeof(v)) > 0)
        ;
    c->wakes++;
    for (struct pt_mpsc_node *n = pt_mpsc_take(&c->q), *next; n; n = next) {
        next = n->next;
        struct msg *m = pt_container_of(n, struct msg, node);
        if (m->seq != c->next_seq[m->producer])
            c->out_of_order++;
        c->next_seq[m->producer] = m->seq + 1;
        c->received++;
        free(m);
    }
    (void)loop;
    (void)events;
}

static void test_threads(void)
{
    struct pt_loop loop;
    CHECK_EQ_INT(pt_loop_init(&loop), 0);
    struct consumer c = {0};
    pt_mpsc_init(&c.q);
    c.wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c.wake.cb = on_wake;
    CHECK_EQ_INT(pt_loop_add(&loop, &c.wake, EPOLLIN), 0);

    pthread_t th[PRODUCERS];
    struct producer ps[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        ps[i] = (struct producer){.c = &c, .id = i};
        pthread_create(&th[i], NULL, produce, &ps[i]);
    }
    uint64_t deadline = pt_now_ms() + 20000;
    while (c.received < (long)PRODUCERS * PER_PRODUCER && pt_now_ms() < deadline)
        pt_loop_run_once(&loop, 100);
    long sent_wakes = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        sent_wakes += ps[i].wakes_sent;
    }
    CHECK_EQ_INT(c.received, (long)PRODUCERS * PER_PRODUCER);
    CHECK_EQ_INT(c.out_of_order, 0);
    /* A wake only when a push found the queue empty: far fewer wakes than
     * messages (the consumer takes batches). */
    CHECK(sent_wakes >= 1);
    CHECK_MSG(sent_wakes < (long)PRODUCERS * PER_PRODUCER, "%ld wakes", sent_wakes);
    CHECK(c.wakes >= 1);
    CHECK(pt_mpsc_take(&c.q) == NULL);
    close(c.wake.fd);
    pt_loop_destroy(&loop);
}

static void test_order_and_close(void)
{
    struct pt_mpsc q;
    pt_mpsc_init(&q);
    struct msg m[4] = {{.seq = 0}, {.seq = 1}, {.seq = 2}, {.seq = 3}};
    CHECK_EQ_INT(pt_mpsc_push(&q, &m[0].node), 1); /* empty → wake */
    CHECK_EQ_INT(pt_mpsc_push(&q, &m[1].node), 0);
    struct pt_mpsc_node *n = pt_mpsc_take(&q);
    CHECK(n == &m[0].node && n->next == &m[1].node && m[1].node.next == NULL);
    CHECK(pt_mpsc_take(&q) == NULL);
    CHECK_EQ_INT(pt_mpsc_push(&q, &m[2].node), 1); /* empty again after the take */
    CHECK(!pt_mpsc_closed(&q));
    n = pt_mpsc_close(&q);
    CHECK(n == &m[2].node && n->next == NULL);
    CHECK(pt_mpsc_closed(&q));
    CHECK_EQ_INT(pt_mpsc_push(&q, &m[3].node), -EPIPE); /* stays the caller's */
    CHECK(pt_mpsc_take(&q) == NULL);
    CHECK(pt_mpsc_close(&q) == NULL);
}

int main(void)
{
    test_order_and_close();
    test_threads();
    return unit_report("mpsc");
}
