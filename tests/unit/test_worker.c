/* test_worker.c — a worker's cross-thread plumbing without its thread:
 * messages posted from other threads run on the loop that owns the
 * worker, once each, in order per poster, with a wake only when the queue
 * was empty; a stopping worker runs what is queued and refuses later
 * posts. Generation pins: no cap on how many generations a worker pins,
 * and the control thread's question "may worker W still use generation
 * g?" (pt_worker_holds) follows seen_gen and the per-worker counts. */
#include "gateway/worker.c"

#include "unit.h"

#define POSTERS 3
#define PER_POSTER 5000

struct test_msg {
    struct pt_wmsg m;
    int poster;
    int seq;
};

static pthread_t loop_thread;
static int ran, wrong_thread, out_of_order;
static int next_seq[POSTERS];

static void run_msg(struct pt_worker *w, struct pt_wmsg *m)
{
    struct test_msg *t = pt_container_of(m, struct test_msg, m);
    (void)w;
    if (!pthread_equal(pthread_self(), loop_thread))
        wrong_thread++;
    if (t->seq != next_seq[t->poster])
        out_of_order++;
    next_seq[t->poster] = t->seq + 1;
    ran++;
    free(t);
}

static struct test_msg *new_msg(int poster, int seq)
{
    struct test_msg *t = calloc(1, sizeof(*t));
    t->m.kind = 1;
    t->m.run = run_msg;
    t->poster = poster;
    t->seq = seq;
    return t;
}

struct poster {
    struct pt_worker *w;
    int id;
    int refused;
};

static void *post_many(void *arg)
{
    struct poster *p = arg;
    for (int i = 0; i < PER_POSTER; i++) {
        struct test_msg *t = new_msg(p->id, i);
        if (pt_worker_post(p->w, &t->m) < 0) {
            p->refused++;
            free(t);
        }
    }
    return NULL;
}

static struct pt_worker *bare_worker(int id)
{
    struct pt_worker *w = calloc(1, sizeof(*w));
    w->id = id;
    if (pt_loop_init(&w->loop) < 0 || wake_init(w) < 0)
        abort();
    return w;
}

static void free_worker(struct pt_worker *w)
{
    close(w->wake_io.fd);
    pt_loop_destroy(&w->loop);
    free(w);
}

static void test_messages(void)
{
    struct pt_worker *w = bare_worker(0);
    loop_thread = pthread_self();
    pthread_t th[POSTERS];
    struct poster ps[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        ps[i] = (struct poster){.w = w, .id = i};
        pthread_create(&th[i], NULL, post_many, &ps[i]);
    }
    uint64_t deadline = pt_now_ms() + 20000;
    int turns = 0;
    while (ran < POSTERS * PER_POSTER && pt_now_ms() < deadline) {
        pt_loop_run_once(&w->loop, 100);
        turns++;
    }
    for (int i = 0; i < POSTERS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(ps[i].refused, 0);
    }
    CHECK_EQ_INT(ran, POSTERS * PER_POSTER);
    CHECK_EQ_INT(wrong_thread, 0);
    CHECK_EQ_INT(out_of_order, 0);
    CHECK(turns < POSTERS * PER_POSTER); /* drained in batches */

    /* Queued while the worker stops: run by the stop, on its thread. */
    ran = 0;
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(pt_worker_post(w, &new_msg(0, next_seq[0] + i)->m), 0);
    CHECK_EQ_INT(ran, 0);
    inbox_close(w);
    CHECK_EQ_INT(ran, 3);
    CHECK_EQ_INT(out_of_order, 0);
    /* After the stop: refused, and the message is still the caller's. */
    struct test_msg *late = new_msg(0, 0);
    CHECK_EQ_INT(pt_worker_post(w, &late->m), -EPIPE);
    free(late);
    pt_loop_run_once(&w->loop, 0);
    CHECK_EQ_INT(ran, 3);
    free_worker(w);
}

static struct pt_generation *fake_gen(uint64_t id, uint32_t nworkers)
{
    struct pt_generation *g = calloc(1, sizeof(*g));
    g->id = id;
    if (pt_generation_init_pins(g, nworkers) < 0)
        abort();
    return g;
}

static void test_pins(void)
{
    struct pt_worker *w = bare_worker(1);
    struct pt_worker *other = bare_worker(0);
    enum { GENS = 100 };
    struct pt_generation *g[GENS + 1];
    for (int i = 1; i <= GENS; i++)
        g[i] = fake_gen((uint64_t)i, 2);

    /* Nothing pinned: held while it is the generation the worker saw (it
     * may still pick it up), released once the worker has seen a newer one. */
    atomic_store(&w->seen_gen, 1);
    CHECK(pt_worker_holds(w, g[1]));
    atomic_store(&w->seen_gen, 2);
    CHECK(!pt_worker_holds(w, g[1]));

    /* One long request on each of 99 generations (more than any fixed
     * slot count): every one stays held, whatever the worker has seen. */
    for (int i = 1; i < GENS; i++) {
        atomic_store(&w->seen_gen, (uint64_t)i);
        pt_worker_pin(w, g[i]);
        pt_worker_pin(w, g[i]); /* two requests on it */
    }
    atomic_store(&w->seen_gen, GENS);
    int held = 0;
    for (int i = 1; i < GENS; i++)
        held += pt_worker_holds(w, g[i]);
    CHECK_EQ_INT(held, GENS - 1);
    /* The other worker's counts are its own. */
    atomic_store(&other->seen_gen, GENS);
    CHECK(!pt_worker_holds(other, g[5]));
    /* One request ends: still held; the second ends: released. Only that
     * generation, not the ones after it. */
    pt_worker_unpin(w, g[5]);
    CHECK(pt_worker_holds(w, g[5]));
    pt_worker_unpin(w, g[5]);
    CHECK(!pt_worker_holds(w, g[5]));
    CHECK(pt_worker_holds(w, g[6]));
    CHECK(pt_worker_holds(w, g[4]));
    /* A stopped worker holds nothing. */
    atomic_store(&w->seen_gen, UINT64_MAX);
    CHECK(!pt_worker_holds(w, g[6]));
    /* A generation without a counter for this worker is not pinned by it. */
    struct pt_generation *small = fake_gen(1, 1);
    atomic_store(&w->seen_gen, 5);
    CHECK(!pt_worker_holds(w, small));
    pt_generation_free(small);

    for (int i = 1; i <= GENS; i++)
        pt_generation_free(g[i]);
    free_worker(w);
    free_worker(other);
}

int main(void)
{
    test_messages();
    test_pins();
    return unit_report("worker");
}
