/* test_state.c — the shared per-target state registry: cells keyed by
 * (upstream, address as written), refcounted by the generations that
 * reference them, so a reload that keeps a target keeps its health and
 * counts, a new target starts healthy and fresh, and a removed target's
 * cell goes with the last generation that referenced it. Also health
 * changes, the checker's thresholds, growth, and active counts under
 * concurrent workers. */
#include "core/log.h"
#include "proxy/state.h"
#include "unit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* A generation's upstream table, as far as the registry sees it. */
struct fake_gen {
    struct pt_upstream ups[2];
    struct pt_target targets[2][4];
};

static void fake_upstream(struct fake_gen *g, uint32_t i, const char *name, const char **addrs,
                          uint32_t n)
{
    struct pt_upstream *u = &g->ups[i];
    memset(u, 0, sizeof(*u));
    u->name = name;
    u->index = i;
    u->targets = g->targets[i];
    u->ntargets = n;
    for (uint32_t t = 0; t < n; t++) {
        memset(&g->targets[i][t], 0, sizeof(g->targets[i][t]));
        g->targets[i][t].address = addrs[t];
        g->targets[i][t].index = t;
    }
}

static void test_get_put(void)
{
    struct pt_state_registry *reg = pt_state_registry_new();
    bool created = false;
    struct pt_target_state *a = pt_state_target_get(reg, "api", "127.0.0.1:9001", &created);
    CHECK(a && created);
    CHECK(pt_state_healthy(a));
    CHECK(atomic_load(&a->fresh));
    CHECK_EQ_INT(a->refs, 1);
    struct pt_target_state *b = pt_state_target_get(reg, "api", "127.0.0.1:9001", &created);
    CHECK(b == a && !created);
    CHECK_EQ_INT(a->refs, 2);
    /* The key is the address as written and the upstream's name. */
    struct pt_target_state *c = pt_state_target_get(reg, "api", "localhost:9001", &created);
    CHECK(c != a && created);
    struct pt_target_state *d = pt_state_target_get(reg, "web", "127.0.0.1:9001", &created);
    CHECK(d != a && created);
    /* "ap"+"i127..." must not collide with "api"+"127...". */
    struct pt_target_state *e = pt_state_target_get(reg, "ap", "i127.0.0.1:9001", &created);
    CHECK(e != a && created);
    CHECK_EQ_INT(pt_state_registry_count(reg), 4);
    CHECK(pt_state_target_find(reg, "api", "127.0.0.1:9001") == a);
    pt_state_target_put(b);
    CHECK(pt_state_target_find(reg, "api", "127.0.0.1:9001") == a);
    pt_state_target_put(a);
    CHECK(pt_state_target_find(reg, "api", "127.0.0.1:9001") == NULL);
    pt_state_target_put(c);
    pt_state_target_put(d);
    pt_state_target_put(e);
    CHECK_EQ_INT(pt_state_registry_count(reg), 0);
    pt_state_target_put(NULL); /* no-op */
    pt_state_registry_free(reg);
}

/* Generation 1: api {A, B}. Generation 2 (reload): api {B, C}, web {A}.
 * B keeps its cell (health, counts); C is new; A under api lives until
 * generation 1 is freed; A under web is another key. */
static void test_reload_keeps_state(void)
{
    struct pt_state_registry *reg = pt_state_registry_new();
    const char *g1_api[] = {"10.0.0.1:80", "10.0.0.2:80"};
    const char *g2_api[] = {"10.0.0.2:80", "10.0.0.3:80"};
    const char *g2_web[] = {"10.0.0.1:80"};
    struct fake_gen *g1 = calloc(1, sizeof(*g1)), *g2 = calloc(1, sizeof(*g2));
    fake_upstream(g1, 0, "api", g1_api, 2);
    fake_upstream(g2, 0, "api", g2_api, 2);
    fake_upstream(g2, 1, "web", g2_web, 1);

    CHECK_EQ_INT(pt_state_attach_upstreams(reg, g1->ups, 1), 0);
    struct pt_target_state *a1 = g1->targets[0][0].state, *b1 = g1->targets[0][1].state;
    CHECK(a1 && b1 && a1 != b1);
    CHECK(atomic_load(&b1->fresh));
    /* Generation 1 serves: B turns unhealthy, a request is in flight. */
    CHECK(pt_state_record_check(b1, false, 2, 1, "connect refused"));
    CHECK(!atomic_load(&b1->fresh));
    pt_state_active_inc(b1);

    CHECK_EQ_INT(pt_state_attach_upstreams(reg, g2->ups, 2), 0);
    struct pt_target_state *b2 = g2->targets[0][0].state, *c2 = g2->targets[0][1].state;
    struct pt_target_state *a_web = g2->targets[1][0].state;
    CHECK(b2 == b1);
    CHECK(!pt_state_healthy(b2));
    CHECK_EQ_INT(pt_state_active(b2), 1);
    CHECK(!atomic_load(&b2->fresh));
    CHECK(c2 && c2 != a1 && c2 != b1 && pt_state_healthy(c2) && atomic_load(&c2->fresh));
    CHECK(a_web && a_web != a1);
    CHECK_EQ_INT(pt_state_registry_count(reg), 4);
    /* Attaching twice takes no second reference. */
    CHECK_EQ_INT(pt_state_attach_upstreams(reg, g2->ups, 2), 0);
    CHECK_EQ_INT(b2->refs, 2);

    /* The request on generation 1 ends; generation 1 is freed. */
    pt_state_active_dec(g1->targets[0][1].state);
    pt_state_detach_upstreams(g1->ups, 1);
    CHECK(g1->targets[0][0].state == NULL);
    CHECK(pt_state_target_find(reg, "api", "10.0.0.1:80") == NULL); /* A under api: gone */
    CHECK(pt_state_target_find(reg, "api", "10.0.0.2:80") == b2);
    CHECK_EQ_INT(b2->refs, 1);
    CHECK_EQ_INT(pt_state_active(b2), 0);
    CHECK_EQ_INT(pt_state_registry_count(reg), 3);
    pt_state_detach_upstreams(g1->ups, 1); /* idempotent */
    pt_state_detach_upstreams(g2->ups, 2);
    CHECK_EQ_INT(pt_state_registry_count(reg), 0);
    free(g1);
    free(g2);
    pt_state_registry_free(reg);
}

/* A reload that changes an upstream's circuit_breaker window clears the
 * window's counts in the kept cell (their epochs were made with the old
 * slice size) before the generation is published; the same window keeps
 * them. */
static void test_reload_new_breaker_window(void)
{
    struct pt_state_registry *reg = pt_state_registry_new();
    const char *addrs[] = {"10.0.0.1:80"};
    struct fake_gen *g1 = calloc(1, sizeof(*g1)), *g2 = calloc(1, sizeof(*g2)),
                    *g3 = calloc(1, sizeof(*g3));
    struct fake_gen *gens[] = {g1, g2, g3};
    uint64_t windows[] = {1000, 1000, 10000};
    for (int i = 0; i < 3; i++) {
        fake_upstream(gens[i], 0, "api", addrs, 1);
        gens[i]->ups[0].breaker = (struct pt_breaker_conf){true, 0.5, 5, windows[i], 5000, 1, 0};
    }
    uint64_t req, fl;
    CHECK_EQ_INT(pt_state_attach_upstreams(reg, g1->ups, 1), 0);
    struct pt_breaker_state *b = &g1->ups[0].state->breaker;
    pt_breaker_record(b, &g1->ups[0].breaker, "api", 50000, false, false);
    CHECK_EQ_INT(pt_state_attach_upstreams(reg, g2->ups, 1), 0);
    CHECK(&g2->ups[0].state->breaker == b);
    pt_breaker_window(b, &g2->ups[0].breaker, 50000, &req, &fl);
    CHECK_EQ_INT(fl, 1); /* same window: kept */
    CHECK_EQ_INT(pt_state_attach_upstreams(reg, g3->ups, 1), 0);
    pt_breaker_window(b, &g3->ups[0].breaker, 50000, &req, &fl);
    CHECK_EQ_INT(req, 0);
    pt_log_min_level = PT_LOG_ERROR; /* the opening is a warning */
    for (int i = 0; i < 5; i++)
        pt_breaker_record(b, &g3->ups[0].breaker, "api", 50100, false, false);
    pt_log_min_level = PT_LOG_WARN;
    CHECK(pt_breaker_phase(b) == PT_BREAKER_OPEN);
    for (int i = 0; i < 3; i++)
        pt_state_detach_upstreams(gens[i]->ups, 1);
    CHECK_EQ_INT(pt_state_registry_count(reg), 0);
    free(g1);
    free(g2);
    free(g3);
    pt_state_registry_free(reg);
}

static void test_health(void)
{
    struct pt_state_registry *reg = pt_state_registry_new();
    struct pt_target_state *s = pt_state_target_get(reg, "api", "10.0.0.1:80", NULL);
    CHECK_EQ_INT(atomic_load(&s->changed_ms), 0);
    CHECK(!pt_state_set_health(s, PT_HEALTHY, "already"));
    CHECK(pt_state_set_health(s, PT_UNHEALTHY, "test"));
    CHECK(atomic_load(&s->changed_ms) > 0);
    CHECK(!pt_state_healthy(s));
    CHECK(!pt_state_set_health(s, PT_UNHEALTHY, NULL));
    CHECK(pt_state_set_health(s, PT_HEALTHY, NULL));

    /* fall 3: two failures change nothing, the third does, the fourth
     * reports no change. A pass in between restarts the count. */
    CHECK(!pt_state_record_check(s, false, 2, 3, "timeout"));
    CHECK(!pt_state_record_check(s, false, 2, 3, "timeout"));
    CHECK(!pt_state_record_check(s, true, 2, 3, NULL));
    CHECK(!pt_state_record_check(s, false, 2, 3, "timeout"));
    CHECK(!pt_state_record_check(s, false, 2, 3, "timeout"));
    CHECK(pt_state_healthy(s));
    CHECK(pt_state_record_check(s, false, 2, 3, "timeout"));
    CHECK(!pt_state_healthy(s));
    CHECK_EQ_INT(atomic_load(&s->fails), 3);
    CHECK(!pt_state_record_check(s, false, 2, 3, "timeout"));
    /* rise 2 */
    CHECK(!pt_state_record_check(s, true, 2, 3, NULL));
    CHECK_EQ_INT(atomic_load(&s->fails), 0);
    CHECK(pt_state_record_check(s, true, 2, 3, "200 OK"));
    CHECK(pt_state_healthy(s));
    CHECK_EQ_INT(atomic_load(&s->checks), 9);
    pt_state_target_put(s);
    pt_state_registry_free(reg);
}

/* The table grows past its first size and still finds every cell. */
static void test_growth(void)
{
    struct pt_state_registry *reg = pt_state_registry_new();
    enum { N = 2000 };
    static char names[N][32];
    static struct pt_target_state *cells[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "10.%d.%d.1:80", i / 256, i % 256);
        cells[i] = pt_state_target_get(reg, i % 2 ? "odd" : "even", names[i], NULL);
    }
    CHECK_EQ_INT(pt_state_registry_count(reg), N);
    int found = 0;
    for (int i = 0; i < N; i++)
        found += pt_state_target_find(reg, i % 2 ? "odd" : "even", names[i]) == cells[i];
    CHECK_EQ_INT(found, N);
    for (int i = 0; i < N; i += 2)
        pt_state_target_put(cells[i]);
    CHECK_EQ_INT(pt_state_registry_count(reg), N / 2);
    CHECK(pt_state_target_find(reg, "odd", names[1]) == cells[1]);
    CHECK(pt_state_target_find(reg, "even", names[0]) == NULL);
    for (int i = 1; i < N; i += 2)
        pt_state_target_put(cells[i]);
    pt_state_registry_free(reg);
}

#define THREADS 4
#define ROUNDS 200000

static void *busy_worker(void *arg)
{
    struct pt_target_state *s = arg;
    for (int i = 0; i < ROUNDS; i++) {
        pt_state_active_inc(s);
        if (i % 2)
            pt_state_active_dec(s);
    }
    return NULL;
}

/* Workers count requests in and out at once; the count stays exact. */
static void test_active_threads(void)
{
    struct pt_state_registry *reg = pt_state_registry_new();
    struct pt_target_state *s = pt_state_target_get(reg, "api", "10.0.0.1:80", NULL);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, busy_worker, s);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(pt_state_active(s), THREADS * ROUNDS / 2);
    /* NULL (a generation never attached): healthy, counts nothing. */
    pt_state_active_inc(NULL);
    pt_state_active_dec(NULL);
    CHECK(pt_state_healthy(NULL));
    CHECK_EQ_INT(pt_state_active(NULL), 0);
    pt_state_target_put(s);
    pt_state_registry_free(reg);
}

int main(void)
{
    pt_log_min_level = PT_LOG_WARN; /* health changes are logged at info */
    test_get_put();
    test_reload_keeps_state();
    test_reload_new_breaker_window();
    test_health();
    test_growth();
    test_active_threads();
    return unit_report("state");
}
