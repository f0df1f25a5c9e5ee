/*
 * test_balance.c — the load-aware and hashing policies of balance.c:
 *   - consistent_hash: adding a 6th target to 5 moves about 1/6 of 10k
 *     keys, every one of them to the new target; an unusable target's keys
 *     move and no other key does; weights shape the shares; a retry takes
 *     the next untried target on the ring; no key is round robin;
 *   - least_conn: the fewest in flight per weight wins; ties spread by
 *     weight;
 *   - p2c_ewma: the lower peak-EWMA × load wins; under a steady load a
 *     slow target gets little; a target never sampled gets tried once at a
 *     time; the EWMA takes peaks at once and decays below them;
 *   - the 64-bit hash spreads bits evenly;
 *   - cookie:NAME's key: found among pairs, across Cookie fields, exact
 *     name only.
 * Cells are real (pt_target_state), set by hand.
 */
#include "core/arena.h"
#include "http/cookie.h"
#include "http/tokens.h"
#include "proxy/balance.h"
#include "proxy/hash_ring.h"
#include "unit.h"

#include <math.h>
#include <stdio.h>

#define MAXT 8

struct fixture {
    struct pt_upstream u;
    struct pt_target t[MAXT];
    struct pt_target_state s[MAXT];
    char addr[MAXT][32];
};

static void setup(struct fixture *f, enum pt_balance b, const int *w, uint32_t n)
{
    memset(f, 0, sizeof(*f));
    for (uint32_t i = 0; i < n; i++) {
        snprintf(f->addr[i], sizeof(f->addr[i]), "10.0.0.%u:8080", i + 1);
        f->t[i].address = f->addr[i];
        f->t[i].weight = w ? w[i] : 1;
        f->t[i].index = i;
        f->t[i].state = &f->s[i];
    }
    f->u.targets = f->t;
    f->u.ntargets = n;
    f->u.balance = b;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint32_t pick_key(const struct fixture *f, const char *key)
{
    struct pt_pick p = {.rand = rnd(), .key = {key, strlen(key)}};
    return pt_balance_pick(&f->u, &p);
}

#define NKEYS 10000

static void test_ring_add_target(void)
{
    struct pt_arena ar, *a = &ar;
    pt_arena_init(a, 1 << 16);
    struct fixture five, six;
    setup(&five, PT_BALANCE_CONSISTENT_HASH, NULL, 5);
    setup(&six, PT_BALANCE_CONSISTENT_HASH, NULL, 6);
    five.u.ring = pt_hash_ring_build(a, &five.u);
    six.u.ring = pt_hash_ring_build(a, &six.u);
    CHECK(five.u.ring && five.u.ring->n == 5000 && six.u.ring && six.u.ring->n == 6000);
    uint32_t moved = 0, moved_elsewhere = 0, counts[6] = {0};
    for (int k = 0; k < NKEYS; k++) {
        char key[32];
        snprintf(key, sizeof(key), "user-%d", k);
        uint32_t before = pick_key(&five, key), after = pick_key(&six, key);
        counts[after]++;
        if (before != after) {
            moved++;
            moved_elsewhere += after != 5;
        }
    }
    /* 1/6 = 1667 of 10k; ±2% of the keys. */
    CHECK_MSG(moved > 1467 && moved < 1867, "moved %u of %d", moved, NKEYS);
    CHECK_EQ_INT(moved_elsewhere, 0);
    for (int i = 0; i < 6; i++)
        CHECK_MSG(counts[i] > 1367 && counts[i] < 1967, "target %d has %u keys", i, counts[i]);
    pt_arena_destroy(a);
}

static void test_ring_unusable_target(void)
{
    struct pt_arena ar, *a = &ar;
    pt_arena_init(a, 1 << 16);
    struct fixture f;
    setup(&f, PT_BALANCE_CONSISTENT_HASH, NULL, 5);
    f.u.ring = pt_hash_ring_build(a, &f.u);
    static uint32_t before[NKEYS];
    for (int k = 0; k < NKEYS; k++) {
        char key[32];
        snprintf(key, sizeof(key), "%d@example.com", k);
        before[k] = pick_key(&f, key);
    }
    atomic_store(&f.s[2].health, PT_UNHEALTHY);
    uint32_t moved = 0, others_moved = 0, to_sick = 0;
    for (int k = 0; k < NKEYS; k++) {
        char key[32];
        snprintf(key, sizeof(key), "%d@example.com", k);
        uint32_t now = pick_key(&f, key);
        to_sick += now == 2;
        if (before[k] == 2)
            moved += now != 2;
        else
            others_moved += now != before[k];
    }
    CHECK_EQ_INT(to_sick, 0);
    CHECK(moved > 1500);
    CHECK_EQ_INT(others_moved, 0);
    /* Ejected (passive health) is the same as unhealthy. */
    atomic_store(&f.s[2].health, PT_HEALTHY);
    atomic_store(&f.s[3].ejected_until_ms, 1000);
    uint32_t back = 0;
    for (int k = 0; k < NKEYS; k++) {
        char key[32];
        snprintf(key, sizeof(key), "%d@example.com", k);
        struct pt_pick p = {.rand = rnd(), .now_ms = 500, .key = {key, strlen(key)}};
        uint32_t now = pt_balance_pick(&f.u, &p);
        CHECK(now != 3);
        back += before[k] != 3 && now == before[k];
    }
    CHECK_MSG(back > 7000, "%u stayed", back);
    /* Nothing usable: no target. */
    for (int i = 0; i < 5; i++)
        atomic_store(&f.s[i].health, PT_UNHEALTHY);
    CHECK_EQ_INT(pick_key(&f, "x"), UINT32_MAX);
    pt_arena_destroy(a);
}

static void test_ring_weights_retry_and_no_key(void)
{
    struct pt_arena ar, *a = &ar;
    pt_arena_init(a, 1 << 16);
    struct fixture f;
    int w[] = {1, 3};
    setup(&f, PT_BALANCE_CONSISTENT_HASH, w, 2);
    f.u.ring = pt_hash_ring_build(a, &f.u);
    uint32_t c[2] = {0};
    for (int k = 0; k < NKEYS; k++) {
        char key[32];
        snprintf(key, sizeof(key), "k%d", k);
        c[pick_key(&f, key)]++;
    }
    CHECK_MSG(c[1] > 7000 && c[1] < 8000, "weight 3 of 4 got %u", c[1]);

    /* A retry goes to another target (the next on the ring), and falls
     * back to the tried one when it is the only one usable. */
    struct fixture g;
    setup(&g, PT_BALANCE_CONSISTENT_HASH, NULL, 4);
    g.u.ring = pt_hash_ring_build(a, &g.u);
    uint32_t first = pick_key(&g, "alice");
    uint32_t avoid[2] = {first};
    struct pt_pick p = {.rand = 1, .key = PT_SLICE("alice"), .avoid = avoid, .navoid = 1};
    uint32_t second = pt_balance_pick(&g.u, &p);
    CHECK(second != first && second < 4);
    p.rand = 99; /* the same whatever the randomness */
    CHECK_EQ_INT(pt_balance_pick(&g.u, &p), second);
    for (uint32_t i = 0; i < 4; i++)
        if (i != first)
            atomic_store(&g.s[i].health, PT_UNHEALTHY);
    CHECK_EQ_INT(pt_balance_pick(&g.u, &p), first);

    /* No key: round robin over the weights (3:1, exactly per cycle). */
    int cur[2] = {0};
    struct pt_rr_state rr = {cur, 2};
    uint32_t n[2] = {0};
    for (int i = 0; i < 400; i++) {
        struct pt_pick q = {.rr = &rr, .rand = rnd()};
        n[pt_balance_pick(&f.u, &q)]++;
    }
    CHECK(n[0] == 100 && n[1] == 300);
    pt_arena_destroy(a);
}

static void test_least_conn(void)
{
    struct fixture f;
    int w[] = {1, 1, 2};
    setup(&f, PT_BALANCE_LEAST_CONN, w, 3);
    /* Active 4, 1, 3: per weight 4, 1, 1.5 → target 1. */
    atomic_store(&f.s[0].active, 4);
    atomic_store(&f.s[1].active, 1);
    atomic_store(&f.s[2].active, 3);
    for (int i = 0; i < 100; i++) {
        struct pt_pick p = {.rand = rnd()};
        CHECK_EQ_INT(pt_balance_pick(&f.u, &p), 1);
    }
    /* Active 2, 2, 3: per weight 2, 2, 1.5 → target 2 (the weight). */
    atomic_store(&f.s[1].active, 2);
    atomic_store(&f.s[0].active, 2);
    struct pt_pick p = {.rand = rnd()};
    CHECK_EQ_INT(pt_balance_pick(&f.u, &p), 2);
    /* A retry avoids the tried one even when it has the fewest. */
    uint32_t tried = 2;
    p.avoid = &tried;
    p.navoid = 1;
    uint32_t r = pt_balance_pick(&f.u, &p);
    CHECK(r == 0 || r == 1);
    /* An unusable target is never chosen, however idle. */
    atomic_store(&f.s[1].active, 0);
    atomic_store(&f.s[1].health, PT_UNHEALTHY);
    for (int i = 0; i < 100; i++) {
        struct pt_pick q = {.rand = rnd()};
        CHECK(pt_balance_pick(&f.u, &q) != 1);
    }
    /* Ties (all idle) spread at random by weight: 1:1:2. */
    atomic_store(&f.s[1].health, PT_HEALTHY);
    for (int i = 0; i < 3; i++)
        atomic_store(&f.s[i].active, 0);
    uint32_t c[3] = {0};
    for (int i = 0; i < 40000; i++) {
        struct pt_pick q = {.rand = rnd()};
        c[pt_balance_pick(&f.u, &q)]++;
    }
    CHECK_MSG(c[0] > 9000 && c[0] < 11000 && c[1] > 9000 && c[1] < 11000 && c[2] > 19000 &&
                  c[2] < 21000,
              "%u %u %u", c[0], c[1], c[2]);
}

static void test_ewma_observe(void)
{
    struct pt_target_state s;
    memset(&s, 0, sizeof(s));
    const uint64_t ms = 1000000;
    pt_balance_observe(&s, 10 * ms, 1000 * ms);
    CHECK_EQ_INT(atomic_load(&s.ewma_ns), 10 * ms);
    /* A peak is taken at once. */
    pt_balance_observe(&s, 50 * ms, 1001 * ms);
    CHECK_EQ_INT(atomic_load(&s.ewma_ns), 50 * ms);
    /* Below it: decays with w = e^(-dt/10 s); after 10 s, w = 1/e. */
    pt_balance_observe(&s, 10 * ms, 11001 * ms);
    double want = 50e6 * exp(-1.0) + 10e6 * (1 - exp(-1.0));
    CHECK_MSG(fabs((double)atomic_load(&s.ewma_ns) - want) < 1e3, "%llu",
              (unsigned long long)atomic_load(&s.ewma_ns));
    /* Right after a sample, a lower one barely moves it. */
    uint64_t before = atomic_load(&s.ewma_ns);
    pt_balance_observe(&s, 1 * ms, 11002 * ms);
    CHECK(atomic_load(&s.ewma_ns) < before && atomic_load(&s.ewma_ns) > before * 99 / 100);
    pt_balance_observe(NULL, 1, 1); /* no cell: nothing */
}

static void test_p2c_prefers_low_cost(void)
{
    struct fixture f;
    setup(&f, PT_BALANCE_P2C_EWMA, NULL, 2);
    const uint64_t ms = 1000000, now = 5000 * ms;
    /* Two targets: both always drawn, the cheaper always wins. */
    atomic_store(&f.s[0].ewma_ns, 50 * ms);
    atomic_store(&f.s[1].ewma_ns, 1 * ms);
    atomic_store(&f.s[0].ewma_stamp_ns, now);
    atomic_store(&f.s[1].ewma_stamp_ns, now);
    for (int i = 0; i < 100; i++) {
        struct pt_pick p = {.rand = rnd(), .now_ms = now / ms};
        CHECK_EQ_INT(pt_balance_pick(&f.u, &p), 1);
    }
    /* Load counts: 1 ms × 60 in flight is worse than 50 ms × 1. */
    atomic_store(&f.s[1].active, 60);
    struct pt_pick p = {.rand = rnd(), .now_ms = now / ms};
    CHECK_EQ_INT(pt_balance_pick(&f.u, &p), 0);
    atomic_store(&f.s[1].active, 0);
    /* The slow target's cost decays while nobody sends to it: a minute
     * later 50 ms × e^-6 ≈ 0.12 ms is worth a try again. */
    p.now_ms = (now + 60000 * ms) / ms;
    atomic_store(&f.s[1].ewma_stamp_ns, now + 60000 * ms);
    CHECK_EQ_INT(pt_balance_pick(&f.u, &p), 0);
    /* Weight divides the cost: 50 ms / 100 beats 1 ms / 1. */
    f.t[0].weight = 100;
    p.now_ms = now / ms;
    atomic_store(&f.s[1].ewma_stamp_ns, now);
    CHECK_EQ_INT(pt_balance_pick(&f.u, &p), 0);
}

/* Three targets, one 50× slower, a steady 16 requests in flight that
 * finish in order of their latency: the slow one gets under 10%. The
 * client's part (sample per answer) is played by pt_balance_observe. */
static void test_p2c_slow_target_under_load(void)
{
    struct fixture f;
    setup(&f, PT_BALANCE_P2C_EWMA, NULL, 3);
    const uint64_t us = 1000, lat[3] = {1000 * us, 1000 * us, 50000 * us};
    struct {
        uint32_t t;
        uint64_t end;
    } fl[16];
    uint64_t now = 1000000 * us;
    uint32_t count[3] = {0}, total = 0;
    for (int i = 0; i < 16; i++) {
        struct pt_pick p = {.rand = rnd(), .now_ms = now / 1000000};
        fl[i].t = pt_balance_pick(&f.u, &p);
        atomic_fetch_add(&f.s[fl[i].t].active, 1);
        fl[i].end = now + lat[fl[i].t];
        count[fl[i].t]++;
        total++;
    }
    for (int step = 0; step < 20000; step++) {
        int k = 0;
        for (int i = 1; i < 16; i++)
            if (fl[i].end < fl[k].end)
                k = i;
        now = fl[k].end;
        atomic_fetch_sub(&f.s[fl[k].t].active, 1);
        pt_balance_observe(&f.s[fl[k].t], lat[fl[k].t], now);
        struct pt_pick p = {.rand = rnd(), .now_ms = now / 1000000};
        fl[k].t = pt_balance_pick(&f.u, &p);
        atomic_fetch_add(&f.s[fl[k].t].active, 1);
        fl[k].end = now + lat[fl[k].t];
        count[fl[k].t]++;
        total++;
    }
    CHECK_MSG(count[2] * 10 < total, "slow target got %u of %u", count[2], total);
    CHECK(count[2] >= 1); /* tried at first, not never */
    /* The fast ones share evenly. */
    CHECK_MSG(count[0] > total * 4 / 10 && count[1] > total * 4 / 10, "%u %u", count[0], count[1]);
}

static void test_p2c_unknown_target(void)
{
    struct fixture f;
    setup(&f, PT_BALANCE_P2C_EWMA, NULL, 2);
    const uint64_t ms = 1000000;
    atomic_store(&f.s[0].ewma_ns, 1 * ms);
    atomic_store(&f.s[0].ewma_stamp_ns, 1000 * ms);
    /* Never answered, nothing in flight: tried. */
    struct pt_pick p = {.rand = rnd(), .now_ms = 1000};
    CHECK_EQ_INT(pt_balance_pick(&f.u, &p), 1);
    /* One request in flight to it: wait for that answer. */
    atomic_store(&f.s[1].active, 1);
    atomic_store(&f.s[0].active, 30);
    CHECK_EQ_INT(pt_balance_pick(&f.u, &p), 0);
    CHECK(pt_balance_ewma_cost(&f.t[1], 1000 * ms) > 1e9);
}

static void test_hash_spread(void)
{
    /* Each output bit is set about half of the time over sequential keys. */
    uint32_t ones[64] = {0};
    for (int k = 0; k < 20000; k++) {
        char key[16];
        int n = snprintf(key, sizeof(key), "%d", k);
        uint64_t h = pt_hash64(key, (size_t)n, 0);
        for (int b = 0; b < 64; b++)
            ones[b] += (h >> b) & 1;
    }
    for (int b = 0; b < 64; b++)
        CHECK_MSG(ones[b] > 9500 && ones[b] < 10500, "bit %d: %u", b, ones[b]);
    CHECK(pt_hash64("a", 1, 0) != pt_hash64("a", 1, 1));
    CHECK(pt_hash64("abcdefgh", 8, 0) != pt_hash64("abcdefgh\0", 9, 0));
}

static pt_slice cookie(const char *const *fields, uint32_t n, const char *name, bool *found)
{
    static struct pt_hfield f[4];
    static struct pt_headers h;
    h = (struct pt_headers){f, n, 4};
    for (uint32_t i = 0; i < n; i++)
        f[i] = (struct pt_hfield){
            PT_SLICE("Cookie"), {fields[i], strlen(fields[i])}, PT_TOK_COOKIE, false};
    pt_slice v = {"", 0};
    *found = pt_cookie_find(&h, (pt_slice){name, strlen(name)}, &v);
    return v;
}

static bool cookie_is(const char *const *fields, uint32_t n, const char *name, const char *want)
{
    bool found;
    pt_slice v = cookie(fields, n, name, &found);
    if (!want)
        return !found && v.len == 0;
    return found && v.len == strlen(want) && memcmp(v.p, want, v.len) == 0;
}

static void test_cookie_key(void)
{
    const char *one[] = {"theme=dark; session=abc123 ;lang=en"};
    CHECK(cookie_is(one, 1, "session", "abc123"));
    CHECK(cookie_is(one, 1, "lang", "en"));
    CHECK(cookie_is(one, 1, "theme", "dark"));
    CHECK(cookie_is(one, 1, "Session", NULL)); /* names are case-sensitive */
    CHECK(cookie_is(one, 1, "sess", NULL));
    const char *two[] = {"a=1", "b = 2 ; sid=", "sid=late"};
    CHECK(cookie_is(two, 3, "b", "2"));
    CHECK(cookie_is(two, 3, "sid", "")); /* the first, even empty */
    const char *odd[] = {";;flag; x=y=z;"};
    CHECK(cookie_is(odd, 1, "flag", NULL)); /* no "=": not a pair */
    CHECK(cookie_is(odd, 1, "x", "y=z"));
}

int main(void)
{
    test_ring_add_target();
    test_ring_unusable_target();
    test_ring_weights_retry_and_no_key();
    test_least_conn();
    test_ewma_observe();
    test_p2c_prefers_low_cost();
    test_p2c_slow_target_under_load();
    test_p2c_unknown_target();
    test_hash_spread();
    test_cookie_key();
    return unit_report("balance");
}
