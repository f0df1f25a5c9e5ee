/* test_passive.c — passive health on the shared target cells, with a fake
 * clock: a failure streak of consecutive_failures ejects the target (a
 * success in between resets the streak), the ejection ends by time, repeat
 * ejections double up to 10 × eject_for and start over after a healthy
 * stretch, max_ejected_percent and the last usable target (active health
 * counted) hold ejection back (logged once per streak, even when the
 * failure at the threshold lost the upstream's `ejecting` try-lock), calls
 * reported without an upstream never eject, and the control thread's sweep
 * notices the return. */
#include "core/log.h"
#include "proxy/state.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct fixture {
    struct pt_state_registry *reg;
    struct pt_upstream u;
    struct pt_target targets[4];
};

static const char *const addrs[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"};

static void setup(struct fixture *f, uint32_t n, uint32_t max_pct)
{
    memset(f, 0, sizeof(*f));
    f->reg = pt_state_registry_new();
    f->u.name = "api";
    f->u.targets = f->targets;
    f->u.ntargets = n;
    f->u.passive = (struct pt_health_passive){true, 3, 1000, max_pct};
    for (uint32_t i = 0; i < n; i++) {
        f->targets[i].address = addrs[i];
        f->targets[i].index = i;
        f->targets[i].weight = 1;
    }
    CHECK(pt_state_attach_upstreams(f->reg, &f->u, 1) == 0);
}

static void teardown(struct fixture *f)
{
    pt_state_detach_upstreams(&f->u, 1);
    pt_state_registry_free(f->reg);
}

static struct pt_target_state *cell(struct fixture *f, uint32_t i)
{
    return f->targets[i].state;
}

static void fail_n(struct fixture *f, uint32_t i, uint64_t t, int n)
{
    for (int k = 0; k < n; k++)
        pt_state_record_call(cell(f, i), false, &f->u, t);
}

static uint64_t until(struct fixture *f, uint32_t i)
{
    return atomic_load(&cell(f, i)->ejected_until_ms);
}

static void test_streak_ejects_and_time_returns(void)
{
    struct fixture f;
    setup(&f, 4, 50);
    fail_n(&f, 0, 10000, 2);
    pt_state_record_call(cell(&f, 0), true, &f.u, 10000); /* the streak ends */
    fail_n(&f, 0, 10000, 2);
    CHECK(pt_state_usable(cell(&f, 0), 10000));
    fail_n(&f, 0, 10000, 1); /* the third in a row */
    CHECK(!pt_state_usable(cell(&f, 0), 10000));
    CHECK_EQ_INT(until(&f, 0), 11000);
    CHECK_EQ_INT(atomic_load(&cell(&f, 0)->ejections), 1);
    CHECK_EQ_INT(atomic_load(&cell(&f, 0)->ejections_total), 1);
    CHECK_EQ_INT(atomic_load(&cell(&f, 0)->traffic_fails), 0); /* a fresh streak after */
    CHECK(pt_state_healthy(cell(&f, 0)));                      /* active health untouched */
    CHECK(!pt_state_usable(cell(&f, 0), 10999));
    CHECK(pt_state_usable(cell(&f, 0), 11000));
    /* The sweep notices the return once. */
    CHECK(atomic_load(&cell(&f, 0)->ejected));
    pt_passive_sweep(&f.u, 10999);
    CHECK(atomic_load(&cell(&f, 0)->ejected));
    pt_passive_sweep(&f.u, 11000);
    CHECK(!atomic_load(&cell(&f, 0)->ejected));
    teardown(&f);
}

static void test_repeat_ejections_double_up_to_10x(void)
{
    struct fixture f;
    setup(&f, 4, 50);
    /* Ejected again at once each time it returns: 1, 2, 4, 8, 10, 10 s. */
    static const uint64_t want[] = {1000, 2000, 4000, 8000, 10000, 10000};
    uint64_t t = 10000;
    for (int k = 0; k < 6; k++) {
        fail_n(&f, 0, t, 3);
        CHECK_MSG(until(&f, 0) - t == want[k], "ejection %d lasted %llu", k + 1,
                  (unsigned long long)(until(&f, 0) - t));
        CHECK_EQ_INT(atomic_load(&cell(&f, 0)->ejections), k + 1);
        t = until(&f, 0);
    }
    /* A healthy stretch of 10 × eject_for after the return starts over. */
    pt_passive_sweep(&f.u, t + 9999);
    CHECK_EQ_INT(atomic_load(&cell(&f, 0)->ejections), 6);
    pt_passive_sweep(&f.u, t + 10000);
    CHECK_EQ_INT(atomic_load(&cell(&f, 0)->ejections), 0);
    t += 10000;
    fail_n(&f, 0, t, 3);
    CHECK_EQ_INT(until(&f, 0) - t, 1000);
    /* Also without the sweep: the ejecting worker decides the same. */
    uint64_t t2 = until(&f, 0) + 10000;
    fail_n(&f, 0, t2, 3);
    CHECK_EQ_INT(until(&f, 0) - t2, 1000);
    CHECK_EQ_INT(atomic_load(&cell(&f, 0)->ejections_total), 8);
    teardown(&f);
}

static void test_percent_cap(void)
{
    struct fixture f;
    setup(&f, 4, 50);
    fail_n(&f, 0, 10000, 3);
    fail_n(&f, 1, 10000, 3);
    CHECK(!pt_state_usable(cell(&f, 0), 10000) && !pt_state_usable(cell(&f, 1), 10000));
    /* A third of four would be 75% out. */
    fail_n(&f, 2, 10000, 5);
    CHECK(pt_state_usable(cell(&f, 2), 10000));
    CHECK_EQ_INT(atomic_load(&cell(&f, 2)->traffic_fails), 5); /* the streak goes on */
    /* Once the first two are back, its next failure ejects it. */
    fail_n(&f, 2, 11000, 1);
    CHECK(!pt_state_usable(cell(&f, 2), 11000));
    teardown(&f);

    /* 0% never ejects. */
    setup(&f, 4, 0);
    fail_n(&f, 0, 10000, 10);
    CHECK(pt_state_usable(cell(&f, 0), 10000));
    teardown(&f);
}

/* The log (stderr, one write per line) while `fn` runs, at warn level. */
static void capture_log(void (*fn)(struct fixture *), struct fixture *f, char *out, size_t cap)
{
    FILE *tmp = tmpfile();
    CHECK(tmp != NULL);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    enum pt_log_level lvl = pt_log_min_level;
    pt_log_min_level = PT_LOG_WARN;
    fn(f);
    pt_log_min_level = lvl;
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = 0;
    fclose(tmp);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Target 2 of 4 with two out already (50%): held back. Its threshold
 * failure finds the try-lock taken (another worker counting), the next
 * ones get through: logged once, at the first failure that checked. A
 * success ends the streak; the next streak is logged again. */
static void held_back_streaks(struct fixture *f)
{
    fail_n(f, 0, 10000, 3);
    fail_n(f, 1, 10000, 3);
    atomic_store(&f->u.state->ejecting, true);
    fail_n(f, 2, 10000, 3);
    atomic_store(&f->u.state->ejecting, false);
    fail_n(f, 2, 10000, 3);
    pt_state_record_call(cell(f, 2), true, &f->u, 10000);
    fail_n(f, 2, 10000, 5);
}

static void test_held_back_logged_once_per_streak(void)
{
    struct fixture f;
    char log[4096];
    setup(&f, 4, 50);
    capture_log(held_back_streaks, &f, log, sizeof(log));
    CHECK(pt_state_usable(cell(&f, 2), 10000));
    CHECK_EQ_INT(count_of(log, "target 10.0.0.3:80 not ejected after 4 consecutive failures"), 1);
    CHECK_EQ_INT(count_of(log, "target 10.0.0.3:80 not ejected after 3 consecutive failures"), 1);
    CHECK_EQ_INT(count_of(log, "not ejected"), 2);
    teardown(&f);
}

static void test_last_usable_target_stays(void)
{
    struct fixture f;
    setup(&f, 2, 100);
    fail_n(&f, 0, 10000, 3);
    CHECK(!pt_state_usable(cell(&f, 0), 10000));
    fail_n(&f, 1, 10000, 10); /* 100% allowed, but it is the last one */
    CHECK(pt_state_usable(cell(&f, 1), 10000));
    teardown(&f);

    /* Active health counts: the other target is down by its checks. */
    setup(&f, 2, 100);
    pt_state_set_health(cell(&f, 1), PT_UNHEALTHY, "test");
    fail_n(&f, 0, 10000, 10);
    CHECK(pt_state_usable(cell(&f, 0), 10000));
    teardown(&f);

    /* One target: never ejected. */
    setup(&f, 1, 100);
    fail_n(&f, 0, 10000, 10);
    CHECK(pt_state_usable(cell(&f, 0), 10000));
    teardown(&f);
}

static void test_no_ejection_without_passive_or_for_probes(void)
{
    struct fixture f;
    setup(&f, 4, 50);
    for (int k = 0; k < 10; k++) /* calls reported without their upstream */
        pt_state_record_call(cell(&f, 0), false, NULL, 10000);
    CHECK(pt_state_usable(cell(&f, 0), 10000));
    CHECK_EQ_INT(atomic_load(&cell(&f, 0)->call_failures), 10);
    f.u.passive.enabled = false;
    fail_n(&f, 1, 10000, 10);
    CHECK(pt_state_usable(cell(&f, 1), 10000));
    teardown(&f);
}

int main(void)
{
    pt_log_min_level = PT_LOG_ERROR; /* ejections and returns are logged at warn and info */
    test_streak_ejects_and_time_returns();
    test_repeat_ejections_double_up_to_10x();
    test_percent_cap();
    test_held_back_logged_once_per_streak();
    test_last_usable_target_stays();
    test_no_ejection_without_passive_or_for_probes();
    return unit_report("passive");
}
