/* test_retry_budget.c — the per-upstream retry budget (Finagle's model):
 * the floor of 10 retries a second, the ratio over a 10 s window of
 * one-second buckets, buckets of old seconds forgotten (lazily reset),
 * and exactness under workers racing for the same retries. */
#include "proxy/retry_budget.h"
#include "unit.h"

#include <pthread.h>

static uint32_t take_all(struct pt_retry_budget *b, double ratio, uint64_t sec, uint32_t tries)
{
    uint32_t got = 0;
    for (uint32_t i = 0; i < tries; i++)
        got += pt_retry_budget_take(b, ratio, sec);
    return got;
}

/* With no requests at all, 10 retries a second and no more. */
static void test_floor_per_second(void)
{
    struct pt_retry_budget b = {0};
    CHECK_EQ_INT(take_all(&b, 0.2, 1000, 50), PT_RETRY_MIN_PER_S);
    /* The next second has its own 10. */
    CHECK_EQ_INT(take_all(&b, 0.2, 1001, 50), PT_RETRY_MIN_PER_S);
    uint64_t req, ret;
    pt_retry_budget_window(&b, 1001, &req, &ret);
    CHECK_EQ_INT(req, 0);
    CHECK_EQ_INT(ret, 2 * PT_RETRY_MIN_PER_S); /* refused ones are not counted */
}

/* 1000 requests at 20%: 200 retries in the window (the floor's first 10
 * of the second count toward them too). */
static void test_ratio_over_window(void)
{
    struct pt_retry_budget b = {0};
    for (int i = 0; i < 1000; i++)
        pt_retry_budget_request(&b, 500);
    CHECK_EQ_INT(take_all(&b, 0.2, 500, 1000), 200);
    /* Seconds later in the window: the same requests, only the floor left. */
    CHECK_EQ_INT(take_all(&b, 0.2, 505, 100), PT_RETRY_MIN_PER_S);
    /* 10 s on, the old second left the window: nothing but the floor, and
     * the requests seen then no longer buy retries. */
    uint64_t req, ret;
    pt_retry_budget_window(&b, 510, &req, &ret);
    CHECK_EQ_INT(req, 0);
    CHECK_EQ_INT(ret, PT_RETRY_MIN_PER_S); /* second 505's, still in the window */
    CHECK_EQ_INT(take_all(&b, 0.2, 510, 100), PT_RETRY_MIN_PER_S);
}

/* A bucket reused ten seconds later starts from zero. */
static void test_bucket_reset(void)
{
    struct pt_retry_budget b = {0};
    for (int i = 0; i < 30; i++)
        pt_retry_budget_request(&b, 7);
    for (int i = 0; i < 5; i++)
        pt_retry_budget_request(&b, 17); /* same bucket, 10 s later */
    uint64_t req, ret;
    pt_retry_budget_window(&b, 17, &req, &ret);
    CHECK_EQ_INT(req, 5);
    pt_retry_budget_window(&b, 8, &req, &ret); /* an old view: second 17 is in its future */
    CHECK_EQ_INT(req, 0);
}

/* Budget 0%: the floor alone. */
static void test_zero_budget(void)
{
    struct pt_retry_budget b = {0};
    for (int i = 0; i < 10000; i++)
        pt_retry_budget_request(&b, 42);
    CHECK_EQ_INT(take_all(&b, 0.0, 42, 100), PT_RETRY_MIN_PER_S);
}

struct racer {
    struct pt_retry_budget *b;
    uint32_t got;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 20000; i++)
        pt_retry_budget_request(r->b, 99);
    r->got = take_all(r->b, 0.1, 99, 20000);
    return NULL;
}

/* Four workers, 80k requests at 10%: the retries granted never pass
 * 8000, however the reservations interleave. */
static void test_concurrent_take(void)
{
    struct pt_retry_budget b = {0};
    struct racer r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){&b, 0};
        pthread_create(&t[i], NULL, race, &r[i]);
    }
    uint32_t total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += r[i].got;
    }
    CHECK_MSG(total <= 8000, "granted %u", total);
    CHECK_MSG(total >= PT_RETRY_MIN_PER_S, "granted %u", total);
    uint64_t req, ret;
    pt_retry_budget_window(&b, 99, &req, &ret);
    CHECK_EQ_INT(req, 80000);
    CHECK_EQ_INT(ret, total);
}

int main(void)
{
    test_floor_per_second();
    test_ratio_over_window();
    test_bucket_reset();
    test_zero_budget();
    test_concurrent_take();
    return unit_report("retry_budget");
}
