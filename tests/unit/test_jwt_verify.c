/*
 * test_jwt_verify.c — the jwt filter's claim checks and the outcome it
 * caches (filters/jwt_verify.c, included for its statics): a cached
 * outcome decodes to exactly what was verified, a damaged one is refused,
 * and exp / nbf / iss / aud / scopes hold at their boundaries.
 */
#include "filters/jwt_verify.c"
#include "unit.h"

static struct pt_arena arena;

static json_t *j(const char *text)
{
    json_t *v = json_loads(text, 0, NULL);
    if (!v) {
        fprintf(stderr, "bad JSON in test: %s\n", text);
        exit(2);
    }
    return v;
}

static void test_outcome_round_trip(void)
{
    static const char *keys[] = {"email", "roles", "missing", "n"};
    static const char *vals[] = {"X-Email", "X-Roles", "X-Missing", "X-N"};
    pt_slice names[4];
    for (int i = 0; i < 4; i++)
        names[i] = (pt_slice){vals[i], strlen(vals[i])};
    struct jwt_provider pv = {.claims_to_headers = {keys, vals, 4},
                              .groups_claim = "groups",
                              .hdr_names = names,
                              .nhdr = 4};
    json_t *c = j("{\"sub\":\"alice\",\"email\":\"a@x\",\"roles\":[\"r1\",2,true],"
                  "\"groups\":[\"g1\",\"g,2\",\"g3\"],\"n\":1.5}");
    struct outcome o, back;
    CHECK(build_outcome(&arena, &pv, c, &o) == 0);
    CHECK(o.consumer.len == 5 && memcmp(o.consumer.p, "alice", 5) == 0);
    CHECK_EQ_INT(o.ngroups, 2); /* "g,2" could not be told apart in a list */
    pt_slice blob = outcome_blob(&arena, &o);
    CHECK(blob.p != NULL);
    CHECK(outcome_from_blob(&arena, &pv, blob, &back) == 0);
    CHECK(pt_slice_eq(back.consumer, o.consumer));
    CHECK_EQ_INT(back.ngroups, 2);
    CHECK(pt_slice_eq(back.groups[0], PT_SLICE("g1")) &&
          pt_slice_eq(back.groups[1], PT_SLICE("g3")));
    CHECK(pt_slice_eq(back.hvals[0], PT_SLICE("a@x")));
    CHECK(pt_slice_eq(back.hvals[1], PT_SLICE("r1,2,true")));
    CHECK(back.hvals[2].p == NULL);
    CHECK(pt_slice_eq(back.hvals[3], PT_SLICE("1.5")));
    /* Every truncation of the blob is refused, none crashes. */
    for (size_t cut = 0; cut < blob.len; cut++)
        CHECK(outcome_from_blob(&arena, &pv, (pt_slice){blob.p, cut}, &back) < 0);
    json_decref(c);

    /* An empty claim is present: a cached outcome forwards it too. */
    c = j("{\"sub\":\"bob\",\"email\":\"\",\"roles\":[]}");
    CHECK(build_outcome(&arena, &pv, c, &o) == 0);
    CHECK(o.hvals[0].p && o.hvals[0].len == 0);
    CHECK(outcome_from_blob(&arena, &pv, outcome_blob(&arena, &o), &back) == 0);
    CHECK(back.hvals[0].p != NULL && back.hvals[0].len == 0);
    CHECK(back.hvals[1].p != NULL && back.hvals[1].len == 0);
    CHECK(back.hvals[2].p == NULL); /* absent stays absent */
    json_decref(c);

    /* A claim with a line break never becomes a header value. */
    c = j("{\"sub\":\"a\\r\\nX-Evil: 1\",\"email\":\"x\\ny\"}");
    CHECK(build_outcome(&arena, &pv, c, &o) == 0);
    CHECK(o.consumer.len == 0);
    CHECK(o.hvals[0].p == NULL);
    json_decref(c);
}

static void test_claim_boundaries(void)
{
    static const char *aud[] = {"api", "web"};
    static const char *scopes[] = {"read", "write"};
    struct jwt_provider pv = {.skew_s = 60, .issuer = "iss", .audiences = {aud, 2}};
    struct pt_jwt_cached w;
    char buf[256];
    int64_t now = 1000000;
#define CLAIMS(...) (snprintf(buf, sizeof(buf), __VA_ARGS__), j(buf))
    json_t *c;
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":\"web\",\"exp\":%lld}", (long long)(now - 59));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_OK);
    CHECK_EQ_INT(w.expire_at, now + 1);
    json_decref(c);
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":\"web\",\"exp\":%lld}", (long long)(now - 60));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_FAIL);
    json_decref(c);
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":[\"x\",\"api\"],\"exp\":%lld,\"nbf\":%lld}",
               (long long)(now + 100), (long long)(now + 60));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_OK);
    CHECK_EQ_INT(w.not_before, now);
    json_decref(c);
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":\"api\",\"exp\":%lld,\"nbf\":%lld}",
               (long long)(now + 100), (long long)(now + 61));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_FAIL);
    json_decref(c);
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":\"api\",\"exp\":\"%lld\"}", (long long)(now + 100));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_FAIL); /* exp as a string */
    json_decref(c);
    c = CLAIMS("{\"iss\":\"ISS\",\"aud\":\"api\",\"exp\":%lld}", (long long)(now + 100));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_FAIL);
    json_decref(c);
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":[\"apix\"],\"exp\":%lld}", (long long)(now + 100));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_FAIL);
    json_decref(c);

    /* NumericDates far out of range are clamped, not cast (UB). */
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":\"api\",\"exp\":1e300,\"nbf\":-1e300}");
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_OK);
    CHECK(w.not_before == (int64_t)-1e15 - 60 && w.expire_at == (int64_t)1e15 + 60);
    json_decref(c);
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":\"api\",\"exp\":-1e300}");
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_FAIL);
    json_decref(c);

    pv.required_scopes = (struct pt_strlist){scopes, 2};
    c = CLAIMS("{\"iss\":\"iss\",\"aud\":\"api\",\"exp\":%lld,\"scope\":\"readwrite\"}",
               (long long)(now + 100));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_SCOPE);
    json_decref(c);
    c = CLAIMS(
        "{\"iss\":\"iss\",\"aud\":\"api\",\"exp\":%lld,\"scope\":\"read\",\"scp\":[\"write\"]}",
        (long long)(now + 100));
    CHECK_EQ_INT(claims_ok(&pv, c, now, &w), V_OK);
    json_decref(c);
#undef CLAIMS
}

int main(void)
{
    pt_arena_init(&arena, 4096);
    test_outcome_round_trip();
    test_claim_boundaries();
    pt_arena_destroy(&arena);
    return unit_report("jwt_verify");
}
