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

/* A config as a reload gives it: an address, a database. No connection
 * is made (connections connect on first use). */
static void redis_gen(struct pt_generation *g, uint16_t port, uint32_t db)
{
    memset(g, 0, sizeof(*g));
    g->has_redis = true;
    struct sockaddr_in *sin = (struct sockaddr_in *)&g->redis.addr;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g->redis.addrlen = sizeof(*sin);
    g->redis.db = db;
    g->redis.url = "redis://127.0.0.1/0";
}

/* A reload that changes cluster.redis, with requests of the old and the
 * new generation alternating: two connections, each kept for its config
 * (no new one at every switch); a third config is a third connection;
 * unused ones go after PT_WORKER_REDIS_IDLE_MS; the cap holds. */
static void test_redis_kept_per_config(void)
{
    struct pt_worker *w = bare_worker(0);
    static struct pt_generation old, cur, third, same_as_old;
    redis_gen(&old, 6379, 0);
    redis_gen(&cur, 6380, 0);
    redis_gen(&third, 6379, 2);
    redis_gen(&same_as_old, 6379, 0);
    w->gen = &old;
    struct pt_redis *a = pt_worker_redis(w, &old);
    CHECK(a != NULL && w->redis == a);
    w->gen = &cur; /* the reload */
    struct pt_redis *b = pt_worker_redis(w, &cur);
    CHECK(b != NULL && b != a && w->redis == b);
    for (int i = 0; i < 10; i++) {
        CHECK(pt_worker_redis(w, &old) == a);
        CHECK(pt_worker_redis(w, &cur) == b);
    }
    CHECK_EQ_INT(w->nredis_retired, 1);
    /* an older generation first seen after the reload: parked, not current */
    CHECK(pt_worker_redis(w, &third) != NULL);
    CHECK_EQ_INT(w->nredis_retired, 2);
    CHECK(w->redis == b);
    /* a reload back to the old config takes the kept connection back */
    w->gen = &same_as_old;
    CHECK(pt_worker_redis(w, &same_as_old) == a);
    CHECK(w->redis == a);
    CHECK(pt_worker_redis(w, &cur) == b);
    CHECK_EQ_INT(w->nredis_retired, 2);
    /* used just now: kept; idle long enough (nobody waits): freed */
    redis_reap(w, false);
    CHECK_EQ_INT(w->nredis_retired, 2);
    for (uint32_t i = 0; i < w->nredis_retired; i++)
        w->redis_retired[i].used_ms -= PT_WORKER_REDIS_IDLE_MS;
    redis_reap(w, false);
    CHECK_EQ_INT(w->nredis_retired, 0);
    CHECK(w->redis == a);
    /* bounded: at most PT_WORKER_MAX_REDIS besides the current one */
    static struct pt_generation many[PT_WORKER_MAX_REDIS + 1];
    for (uint32_t i = 0; i <= PT_WORKER_MAX_REDIS; i++) {
        redis_gen(&many[i], (uint16_t)(7000 + i), 0);
        struct pt_redis *r = pt_worker_redis(w, &many[i]);
        CHECK(i < PT_WORKER_MAX_REDIS ? r != NULL : r == NULL);
    }
    CHECK_EQ_INT(w->nredis_retired, PT_WORKER_MAX_REDIS);
    redis_reap(w, true);
    CHECK(w->redis == NULL && w->nredis_retired == 0);
    free_worker(w);
}

int main(void)
{
    test_redis_kept_per_config();
    test_messages();
    test_pins();
    return unit_report("worker");
}
