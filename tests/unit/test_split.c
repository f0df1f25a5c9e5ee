/* test_split.c — the canary split's pure parts: the sticky hash is fixed
 * (same value in every process, so a reload or a restart keeps users on
 * their side), keys and random numbers land on the sides in proportion to
 * the weights, a weight-0 side gets nothing, shifting weight between two
 * sides moves only users towards the side that gained, override names
 * resolve exactly; and Cookie parsing (several fields, `; ` pairs, quotes,
 * look-alike names). */
#include "http/cookie.h"
#include "http/tokens.h"
#include "proxy/split.h"
#include "unit.h"

#include <stdio.h>

static struct pt_upstream ups[3] = {{.name = "a"}, {.name = "b"}, {.name = "c"}};

static struct pt_route_split make(struct pt_split_side *sides, uint32_t n)
{
    struct pt_route_split s = {.sides = sides, .nsides = n};
    for (uint32_t i = 0; i < n; i++)
        s.total += sides[i].weight;
    return s;
}

static pt_slice key_of(char *buf, size_t cap, int i)
{
    int n = snprintf(buf, cap, "user-%d", i);
    return (pt_slice){buf, (size_t)n};
}

static void test_hash_is_fixed(void)
{
    /* Pinned values: a change here moves every sticky user to another
     * side on upgrade, which operations.md promises does not happen. */
    CHECK(pt_split_hash(PT_SLICE("")) == pt_split_hash((pt_slice){"", 0}));
    uint64_t h1 = pt_split_hash(PT_SLICE("user-1"));
    uint64_t h2 = pt_split_hash(PT_SLICE("user-2"));
    CHECK(h1 != h2);
    CHECK(h1 == pt_split_hash(PT_SLICE("user-1")));
    CHECK_MSG(h1 == 0x41a2fca5c68401c5ull, "%llx", (unsigned long long)h1);
    CHECK(pt_split_hash(PT_SLICE("")) == 0xefd01f60ba992926ull);
}

static void test_proportions(void)
{
    struct pt_split_side sides[] = {{&ups[0], 10}, {&ups[1], 90}};
    struct pt_route_split s = make(sides, 2);
    char buf[32];
    int on_a = 0, n = 100000;
    for (int i = 0; i < n; i++)
        on_a += pt_split_side_at(&s, pt_split_hash(key_of(buf, sizeof(buf), i))) == &ups[0];
    CHECK_MSG(on_a > n * 9 / 100 && on_a < n * 11 / 100, "%d of %d keys on the 10%% side", on_a, n);
    /* Uniform random numbers the same way. */
    uint64_t rng = 42;
    on_a = 0;
    for (int i = 0; i < n; i++)
        on_a += pt_split_side_at(&s, pt_xorshift64s(&rng)) == &ups[0];
    CHECK_MSG(on_a > n * 9 / 100 && on_a < n * 11 / 100, "%d of %d draws on the 10%% side", on_a,
              n);
    /* The edges of the range. */
    CHECK(pt_split_side_at(&s, 0) == &ups[0]);
    CHECK(pt_split_side_at(&s, UINT64_MAX) == &ups[1]);
}

static void test_weight_zero(void)
{
    struct pt_split_side sides[] = {{&ups[0], 0}, {&ups[1], 5}, {&ups[2], 0}};
    struct pt_route_split s = make(sides, 3);
    uint64_t rng = 7;
    int other = 0;
    for (int i = 0; i < 20000; i++)
        other += pt_split_side_at(&s, pt_xorshift64s(&rng)) != &ups[1];
    CHECK_EQ_INT(other, 0);
    CHECK(pt_split_side_at(&s, 0) == &ups[1]);
    CHECK(pt_split_side_at(&s, UINT64_MAX) == &ups[1]);
}

static void test_shift_moves_only_towards_gainer(void)
{
    struct pt_split_side before[] = {{&ups[0], 10}, {&ups[1], 90}};
    struct pt_split_side after[] = {{&ups[0], 25}, {&ups[1], 75}};
    struct pt_route_split s1 = make(before, 2), s2 = make(after, 2);
    char buf[32];
    int moved = 0, wrong = 0, n = 50000;
    for (int i = 0; i < n; i++) {
        uint64_t h = pt_split_hash(key_of(buf, sizeof(buf), i));
        const struct pt_upstream *x = pt_split_side_at(&s1, h), *y = pt_split_side_at(&s2, h);
        if (x != y) {
            moved++;
            wrong += !(x == &ups[1] && y == &ups[0]);
        }
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_MSG(moved > n * 13 / 100 && moved < n * 17 / 100, "%d of %d moved (want ~15%%)", moved,
              n);
    /* Same weights: nobody moves (a reload that keeps the split). */
    struct pt_split_side again[] = {{&ups[0], 10}, {&ups[1], 90}};
    struct pt_route_split s3 = make(again, 2);
    int changed = 0;
    for (int i = 0; i < n; i++) {
        uint64_t h = pt_split_hash(key_of(buf, sizeof(buf), i));
        changed += pt_split_side_at(&s1, h) != pt_split_side_at(&s3, h);
    }
    CHECK_EQ_INT(changed, 0);
}

static void test_named(void)
{
    struct pt_split_side sides[] = {{&ups[0], 1}, {&ups[1], 0}};
    struct pt_route_split s = make(sides, 2);
    CHECK(pt_split_named(&s, PT_SLICE("a")) == &ups[0]);
    CHECK(pt_split_named(&s, PT_SLICE("b")) == &ups[1]); /* weight 0 is still a side */
    CHECK(pt_split_named(&s, PT_SLICE("c")) == NULL);    /* an upstream outside the split */
    CHECK(pt_split_named(&s, PT_SLICE("A")) == NULL);
    CHECK(pt_split_named(&s, PT_SLICE("ab")) == NULL);
    CHECK(pt_split_named(&s, PT_SLICE("")) == NULL);
}

static bool cookie_is(const char *field, const char *name, const char *want)
{
    pt_slice v;
    bool found =
        pt_cookie_find_in((pt_slice){field, strlen(field)}, (pt_slice){name, strlen(name)}, &v);
    if (!want)
        return !found;
    return found && v.len == strlen(want) && memcmp(v.p, want, v.len) == 0;
}

static void test_cookie_field(void)
{
    CHECK(cookie_is("sid=abc", "sid", "abc"));
    CHECK(cookie_is("a=1; sid=abc; b=2", "sid", "abc"));
    CHECK(cookie_is("a=1;sid=abc", "sid", "abc"));
    CHECK(cookie_is("a=1;  sid = abc ;", "sid", "abc"));
    CHECK(cookie_is("sid=\"abc\"", "sid", "abc"));
    CHECK(cookie_is("sid=", "sid", ""));
    CHECK(cookie_is("sid=first; sid=second", "sid", "first"));
    CHECK(cookie_is("xsid=1; sidx=2; Sid=3", "sid", NULL)); /* names are exact */
    CHECK(cookie_is("a=sid=1", "sid", NULL));               /* `sid=` inside a value */
    CHECK(cookie_is("sid", "sid", NULL));                   /* no `=`: no cookie */
    CHECK(cookie_is("", "sid", NULL));
    CHECK(cookie_is("a=b=c; sid=x=y", "sid", "x=y"));
}

static void test_cookie_fields(void)
{
    struct pt_hfield f[] = {
        {PT_SLICE("Cookie"), PT_SLICE("a=1; b=2"), PT_TOK_COOKIE, false},
        {PT_SLICE("X-Other"), PT_SLICE("sid=nope"), PT_TOK_UNKNOWN, false},
        {PT_SLICE("Cookie"), PT_SLICE("sid=dead"), PT_TOK_COOKIE, true},
        {PT_SLICE("cookie"), PT_SLICE("c=3; sid=live"), PT_TOK_COOKIE, false},
    };
    struct pt_headers h = {f, 4, 4};
    pt_slice v;
    CHECK(pt_cookie_find(&h, PT_SLICE("sid"), &v) && pt_slice_eq(v, PT_SLICE("live")));
    CHECK(pt_cookie_find(&h, PT_SLICE("b"), &v) && pt_slice_eq(v, PT_SLICE("2")));
    CHECK(!pt_cookie_find(&h, PT_SLICE("d"), &v));
}

int main(void)
{
    test_hash_is_fixed();
    test_proportions();
    test_weight_zero();
    test_shift_moves_only_towards_gainer();
    test_named();
    test_cookie_field();
    test_cookie_fields();
    return unit_report("split");
}
