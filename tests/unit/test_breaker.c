/* test_breaker.c — the circuit breaker's state machine on a fake clock:
 * it opens on the error rate over the rolling window only with enough
 * requests, forgets outcomes older than the window, refuses while open
 * with a Retry-After counted to the half-open moment, lets exactly
 * half_open_requests probes through, closes when all succeed (window
 * cleared), reopens on a failed probe, gives a probe's slot back when it
 * ends with no outcome, and is opened by exactly one of many racing
 * workers. A window whose size changes on a reload keeps counting: the
 * reload clears the buckets, and a bucket holding a slice of another size
 * (a "future" epoch) is reused, not left to block the window. */
#include "core/log.h"
#include "proxy/breaker.h"
#include "unit.h"

#include <pthread.h>

static struct pt_breaker_conf conf(void)
{
    return (struct pt_breaker_conf){.enabled = true,
                                    .error_rate = 0.5,
                                    .min_requests = 4,
                                    .window_ms = 1000,
                                    .open_for_ms = 2500,
                                    .half_open_requests = 2};
}

static void fail_n(struct pt_breaker_state *b, const struct pt_breaker_conf *c, uint64_t t, int n)
{
    for (int i = 0; i < n; i++)
        pt_breaker_record(b, c, "api", t, false, false);
}

static void ok_n(struct pt_breaker_state *b, const struct pt_breaker_conf *c, uint64_t t, int n)
{
    for (int i = 0; i < n; i++)
        pt_breaker_record(b, c, "api", t, true, false);
}

static void test_opens_on_rate_with_enough_requests(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf c = conf();
    uint32_t ra = 0;
    fail_n(&b, &c, 10000, 3); /* 3 of 3 failed, but fewer than min_requests */
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_CLOSED);
    CHECK(pt_breaker_admit(&b, &c, "api", 10000, &ra) == PT_BREAKER_PASS);
    fail_n(&b, &c, 10050, 1);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_OPEN);
    CHECK_EQ_INT(atomic_load(&b.opened), 1);
    CHECK(pt_breaker_admit(&b, &c, "api", 10050, &ra) == PT_BREAKER_REFUSE);
    CHECK_EQ_INT(ra, 3); /* 2.5 s to half-open, rounded up */
    CHECK(pt_breaker_admit(&b, &c, "api", 12000, &ra) == PT_BREAKER_REFUSE);
    CHECK_EQ_INT(ra, 1);

    /* Below the rate: 4 failures among 10 successes stay closed. */
    struct pt_breaker_state b2 = {0};
    ok_n(&b2, &c, 10000, 10);
    fail_n(&b2, &c, 10000, 4);
    CHECK(pt_breaker_phase(&b2) == PT_BREAKER_CLOSED);
    uint64_t req, fl;
    pt_breaker_window(&b2, &c, 10000, &req, &fl);
    CHECK_EQ_INT(req, 14);
    CHECK_EQ_INT(fl, 4);
    /* Exactly at the rate opens (≥). */
    fail_n(&b2, &c, 10000, 6);
    CHECK(pt_breaker_phase(&b2) == PT_BREAKER_OPEN);
}

static void test_window_forgets_old_outcomes(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf c = conf();
    fail_n(&b, &c, 10000, 3);
    uint64_t req, fl;
    pt_breaker_window(&b, &c, 10900, &req, &fl);
    CHECK_EQ_INT(req, 3); /* still in the window (10 slices of 100 ms) */
    pt_breaker_window(&b, &c, 11000, &req, &fl);
    CHECK_EQ_INT(req, 0);     /* its slice left the window */
    fail_n(&b, &c, 11000, 3); /* 3 in the window: under min_requests */
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_CLOSED);
    /* A bucket reused for a new slice starts from zero. */
    pt_breaker_window(&b, &c, 11000, &req, &fl);
    CHECK_EQ_INT(req, 3);
    CHECK_EQ_INT(fl, 3);
}

/* window 1 s → 10 s (slices 100 ms → 1 s): the old buckets hold epochs
 * ten times the new ones. */
static void test_window_grows_on_reload(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf c1 = conf(), c2 = conf();
    c2.window_ms = 10000;
    uint64_t req, fl;
    CHECK(!pt_breaker_reconf(&b, &c1)); /* a new cell: nothing to clear */
    for (uint64_t t = 10000; t < 11500; t += 100)
        ok_n(&b, &c1, t, 1);
    CHECK(pt_breaker_reconf(&b, &c2));
    CHECK(!pt_breaker_reconf(&b, &c2)); /* same window: kept */
    pt_breaker_window(&b, &c2, 11500, &req, &fl);
    CHECK_EQ_INT(req, 0);
    fail_n(&b, &c2, 11500, 3);
    pt_breaker_window(&b, &c2, 11600, &req, &fl);
    CHECK_EQ_INT(req, 3);
    CHECK_EQ_INT(fl, 3);
    fail_n(&b, &c2, 11600, 1);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_OPEN);
    /* The phase survives a window change. */
    CHECK(pt_breaker_reconf(&b, &c1));
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_OPEN);
}

/* A worker of the old generation still counting with the old (smaller)
 * slice after the clear: its buckets hold future epochs for the new
 * slice size, and must neither hide new outcomes nor be read. */
static void test_future_epochs_are_stale(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf small = conf(), big = conf();
    big.window_ms = 10000;
    uint64_t req, fl;
    CHECK(!pt_breaker_reconf(&b, &big));
    for (uint64_t t = 20000; t < 21000; t += 100)
        ok_n(&b, &small, t, 1); /* epochs 201..210 in every bucket */
    pt_breaker_window(&b, &big, 21000, &req, &fl);
    CHECK_EQ_INT(req, 0); /* big's epoch is 22: none of them is read */
    fail_n(&b, &big, 21000, 4);
    pt_breaker_window(&b, &big, 21000, &req, &fl);
    CHECK_EQ_INT(req, 4);
    CHECK_EQ_INT(fl, 4);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_OPEN);
}

static void open_it(struct pt_breaker_state *b, const struct pt_breaker_conf *c, uint64_t t)
{
    fail_n(b, c, t, 4);
    CHECK(pt_breaker_phase(b) == PT_BREAKER_OPEN);
}

static void test_half_open_probes_close_it(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf c = conf();
    uint32_t ra = 0;
    open_it(&b, &c, 10000);
    /* open_for passed: the first admission turns it half-open. */
    CHECK(pt_breaker_admit(&b, &c, "api", 12500, &ra) == PT_BREAKER_PROBE);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_HALF_OPEN);
    CHECK(pt_breaker_admit(&b, &c, "api", 12500, &ra) == PT_BREAKER_PROBE);
    /* Exactly half_open_requests probes. */
    CHECK(pt_breaker_admit(&b, &c, "api", 12501, &ra) == PT_BREAKER_REFUSE);
    CHECK_EQ_INT(ra, 1);
    /* A late outcome of a request admitted while closed changes nothing. */
    pt_breaker_record(&b, &c, "api", 12600, false, false);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_HALF_OPEN);
    pt_breaker_record(&b, &c, "api", 12600, true, true);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_HALF_OPEN); /* one of two */
    pt_breaker_record(&b, &c, "api", 12700, true, true);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_CLOSED);
    CHECK_EQ_INT(atomic_load(&b.since_ms), 12700);
    uint64_t req, fl;
    pt_breaker_window(&b, &c, 12700, &req, &fl);
    CHECK_EQ_INT(req, 0); /* the failures that opened it are forgotten */
    CHECK(pt_breaker_admit(&b, &c, "api", 12700, &ra) == PT_BREAKER_PASS);
}

static void test_failed_probe_reopens(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf c = conf();
    uint32_t ra = 0;
    open_it(&b, &c, 10000);
    CHECK(pt_breaker_admit(&b, &c, "api", 13000, &ra) == PT_BREAKER_PROBE);
    CHECK(pt_breaker_admit(&b, &c, "api", 13000, &ra) == PT_BREAKER_PROBE);
    pt_breaker_record(&b, &c, "api", 13100, true, true);
    pt_breaker_record(&b, &c, "api", 13200, false, true);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_OPEN);
    CHECK_EQ_INT(atomic_load(&b.opened), 2);
    CHECK(pt_breaker_admit(&b, &c, "api", 13200, &ra) == PT_BREAKER_REFUSE);
    CHECK_EQ_INT(ra, 3);
    /* The next half-open phase has its full set of probes again. */
    CHECK(pt_breaker_admit(&b, &c, "api", 15700, &ra) == PT_BREAKER_PROBE);
    CHECK(pt_breaker_admit(&b, &c, "api", 15700, &ra) == PT_BREAKER_PROBE);
    CHECK(pt_breaker_admit(&b, &c, "api", 15700, &ra) == PT_BREAKER_REFUSE);
}

static void test_released_probe_frees_its_slot(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf c = conf();
    c.half_open_requests = 1;
    uint32_t ra = 0;
    open_it(&b, &c, 10000);
    CHECK(pt_breaker_admit(&b, &c, "api", 12500, &ra) == PT_BREAKER_PROBE);
    CHECK(pt_breaker_admit(&b, &c, "api", 12500, &ra) == PT_BREAKER_REFUSE);
    pt_breaker_release_probe(&b); /* the client left before an answer */
    CHECK(pt_breaker_admit(&b, &c, "api", 12600, &ra) == PT_BREAKER_PROBE);
    pt_breaker_record(&b, &c, "api", 12700, true, true);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_CLOSED);
    /* Released while closed: nothing to give back, nothing goes negative. */
    pt_breaker_release_probe(&b);
    CHECK_EQ_INT(atomic_load(&b.probes), 1);
}

static void test_tick_turns_half_open(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf c = conf();
    open_it(&b, &c, 10000);
    pt_breaker_tick(&b, &c, "api", 12499);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_OPEN);
    pt_breaker_tick(&b, &c, "api", 12500);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_HALF_OPEN);
    CHECK_EQ_INT(atomic_load(&b.since_ms), 12500);
}

struct racer {
    struct pt_breaker_state *b;
    struct pt_breaker_conf *c;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 20000; i++)
        pt_breaker_record(r->b, r->c, "api", 10000 + (uint64_t)(i / 1000), false, false);
    return NULL;
}

/* Four workers failing at once: it opens once, and once only. */
static void test_one_opener(void)
{
    struct pt_breaker_state b = {0};
    struct pt_breaker_conf c = conf();
    c.min_requests = 100;
    struct racer r = {&b, &c};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, race, &r);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK(pt_breaker_phase(&b) == PT_BREAKER_OPEN);
    CHECK_EQ_INT(atomic_load(&b.opened), 1);
    uint64_t req, fl;
    pt_breaker_window(&b, &c, 10019, &req, &fl);
    CHECK_EQ_INT(req, 80000); /* no bucket roll here: nothing lost */
    CHECK_EQ_INT(fl, 80000);
}

int main(void)
{
    pt_log_min_level = PT_LOG_ERROR; /* every change is logged at info or warn */
    test_opens_on_rate_with_enough_requests();
    test_window_forgets_old_outcomes();
    test_window_grows_on_reload();
    test_future_epochs_are_stale();
    test_half_open_probes_close_it();
    test_failed_probe_reopens();
    test_released_probe_frees_its_slot();
    test_tick_turns_half_open();
    test_one_opener();
    return unit_report("breaker");
}
