/* test_pool.c — smooth weighted round-robin: exact shares per cycle and
 * spread (no bursts), single target, equal weights; the stateless weighted
 * pick: exact shares over every residue of the total weight. */
#include "proxy/balance.h"
#include "unit.h"

static void setup(struct pt_upstream *u, struct pt_target *t, const int *w, uint32_t n)
{
    memset(u, 0, sizeof(*u));
    for (uint32_t i = 0; i < n; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].weight = w[i];
        t[i].index = i;
    }
    u->targets = t;
    u->ntargets = n;
}

static void test_three_to_one(void)
{
    struct pt_upstream u;
    struct pt_target t[2];
    int w[] = {3, 1};
    setup(&u, t, w, 2);
    int cur[2] = {0};
    struct pt_rr_state st = {cur, 2};
    char seq[9] = {0};
    for (int i = 0; i < 8; i++)
        seq[i] = (char)('a' + pt_rr_pick(&st, &u, 0));
    /* Smooth: b never twice in a row, a never more than three. */
    CHECK_STR(seq, "aabaaaba");
    int counts[2] = {0};
    for (int i = 0; i < 4000; i++)
        counts[pt_rr_pick(&st, &u, 0)]++;
    CHECK_EQ_INT(counts[0], 3000);
    CHECK_EQ_INT(counts[1], 1000);
}

static void test_weighted_pick(void)
{
    struct pt_upstream u;
    struct pt_target t[3];
    int w[] = {5, 1, 2};
    setup(&u, t, w, 3);
    int exact[3] = {0};
    for (uint64_t r = 1000; r < 1008; r++) /* each residue mod 8 once */
        exact[pt_weighted_pick(&u, r, 0)]++;
    CHECK_EQ_INT(exact[0], 5);
    CHECK_EQ_INT(exact[1], 1);
    CHECK_EQ_INT(exact[2], 2);
    setup(&u, t, w, 1);
    CHECK_EQ_INT((int)pt_weighted_pick(&u, 12345, 0), 0);
}

static void test_spread(void)
{
    struct pt_upstream u;
    struct pt_target t[3];
    int w[] = {5, 1, 1};
    setup(&u, t, w, 3);
    int cur[3] = {0};
    struct pt_rr_state st = {cur, 3};
    int run = 0, longest = 0, last = -1, counts[3] = {0};
    for (int i = 0; i < 7000; i++) {
        int k = (int)pt_rr_pick(&st, &u, 0);
        counts[k]++;
        run = k == last ? run + 1 : 1;
        last = k;
        if (run > longest)
            longest = run;
    }
    CHECK_EQ_INT(counts[0], 5000);
    CHECK_EQ_INT(counts[1], 1000);
    CHECK_EQ_INT(counts[2], 1000);
    /* Interleaved: the cycle is a a b a c a a, so at most 4 in a row across
     * cycle boundaries; plain weighted RR sends a a a a a b c (runs of 5). */
    CHECK(longest <= 4);
    int cur2[3] = {0};
    struct pt_rr_state st2 = {cur2, 3};
    char seq[8] = {0};
    for (int i = 0; i < 7; i++)
        seq[i] = (char)('a' + pt_rr_pick(&st2, &u, 0));
    CHECK_STR(seq, "aabacaa");
}

static void test_single_and_equal(void)
{
    struct pt_upstream u;
    struct pt_target t[4];
    int one[] = {7};
    setup(&u, t, one, 1);
    int cur[4] = {0};
    struct pt_rr_state st = {cur, 1};
    CHECK_EQ_INT(pt_rr_pick(&st, &u, 0), 0);
    int eq[] = {1, 1, 1, 1};
    setup(&u, t, eq, 4);
    memset(cur, 0, sizeof(cur));
    st.n = 4;
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(pt_rr_pick(&st, &u, 0), i % 4);
}

int main(void)
{
    test_three_to_one();
    test_spread();
    test_single_and_equal();
    test_weighted_pick();
    return unit_report("pool");
}
