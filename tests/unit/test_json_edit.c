/*
 * test_json_edit.c — the JSON body edits (filters/json_edit.c): dotted
 * paths, what is skipped (missing or non-object intermediates, arrays),
 * the parents add and rename create (and when they create nothing),
 * the order remove → rename → add, typed and templated add values, the
 * serialisation (compact, member order kept, reals as written), invalid
 * input, a body in several parts; and the content-type test of
 * body_transform.c.
 */
#include "unit.h"

#include "filters/body_transform.h"
#include "filters/json_edit.h"

struct errs {
    struct pt_filter_errs e;
    char text[2048];
};

static void report(struct pt_filter_errs *e, const char *field, const char *entry, bool in_value,
                   const char *msg)
{
    struct errs *x = (struct errs *)e;
    size_t n = strlen(x->text);
    snprintf(x->text + n, sizeof(x->text) - n, "%s[%s]%s: %s\n", field ? field : "-",
             entry ? entry : "-", in_value ? "=" : "", msg);
}

struct rules {
    const char *remove[9]; /* NULL-terminated, as the others */
    const char *rename[9][2];
    const char *add[9][2];
    bool add_plain[9];
};

static int compile(struct pt_json_edits *e, const struct rules *r, struct pt_arena *a,
                   struct errs *er)
{
    static const char *rv[8], *rk[8], *rt[8], *ak[8], *av[8];
    struct pt_strlist rm = {rv, 0};
    struct pt_strmap rn = {rk, rt, 0};
    struct pt_jsonmap ad = {ak, av, r->add_plain, 0};
    for (; r->remove[rm.n]; rm.n++)
        rv[rm.n] = r->remove[rm.n];
    for (; r->rename[rn.n][0]; rn.n++) {
        rk[rn.n] = r->rename[rn.n][0];
        rt[rn.n] = r->rename[rn.n][1];
    }
    for (; r->add[ad.n][0]; ad.n++) {
        ak[ad.n] = r->add[ad.n][0];
        av[ad.n] = r->add[ad.n][1];
    }
    memset(er, 0, sizeof(*er));
    er->e.report = report;
    return pt_json_edits_compile(e, &rm, &rn, &ad, a, &er->e);
}

/* ${path} as check() renders it (a test may set bytes that are not UTF-8). */
static pt_slice check_path = {"/v1/x", 5};

/* Edits `in` with the rules; checks the result kind and the output. */
static void check(const struct rules *r, const char *in, enum pt_json_result want_res,
                  const char *want)
{
    struct pt_arena gen, req;
    pt_arena_init(&gen, 0);
    pt_arena_init(&req, 0);
    struct pt_json_edits e;
    struct errs er;
    CHECK_MSG(compile(&e, r, &gen, &er) == 0, "compile: %s", er.text);
    struct pt_identity id = {.consumer = PT_SLICE("mobile-app")};
    struct pt_filter_ctx ctx = {.arena = &req,
                                .method = PT_SLICE("POST"),
                                .request_id = PT_SLICE("rid-1"),
                                .path = check_path,
                                .identity = &id};
    /* the body in three parts, as a chunked response arrives */
    size_t n = strlen(in), a = n / 3, b = 2 * n / 3;
    struct pt_body_part p3 = {{in + b, n - b}, NULL};
    struct pt_body_part p2 = {{in + a, b - a}, &p3};
    struct pt_body_part p1 = {{in, a}, &p2};
    pt_slice out = {0};
    enum pt_json_result res = pt_json_edit_body(&e, &ctx, &p1, n, &out);
    CHECK_MSG(res == want_res, "%s: result %d, want %d", in, res, want_res);
    if (want && res == PT_JSON_EDITED)
        CHECK_MSG(out.len == strlen(want) && memcmp(out.p, want, out.len) == 0,
                  "%s:\n  got  %.*s\n  want %s", in, (int)out.len, out.p, want);
    pt_arena_destroy(&req);
    pt_arena_destroy(&gen);
}

static void test_paths(void)
{
    struct rules r = {
        .remove = {"secret", "user.tags", "a.b.c", "items.x"},
        .rename = {{"user_name", "username"},
                   {"user.address.zip", "postcode"},
                   {"user.address.city", "user.town"},
                   {"nope.zip", "x"}},
    };
    check(&r,
          "{\"id\": 1, \"user_name\": \"ann\", \"secret\": 2, \"user\": {\"address\": "
          "{\"zip\": \"123\", \"city\": \"Oslo\"}, \"tags\": [1]}, \"items\": [{\"x\": 1}], "
          "\"a\": 5}",
          PT_JSON_EDITED,
          "{\"id\":1,\"user\":{\"address\":{\"postcode\":\"123\"},\"town\":\"Oslo\"},"
          "\"items\":[{\"x\":1}],\"a\":5,\"username\":\"ann\"}");
    /* nothing applies: unchanged (the caller sends the input as it was) */
    check(&r, "{\"other\": 1}", PT_JSON_UNCHANGED, NULL);
    /* not an object at the top: nothing to edit, not invalid */
    check(&r, "[{\"secret\": 1}]", PT_JSON_UNCHANGED, NULL);
    check(&r, "42", PT_JSON_UNCHANGED, NULL);
    check(&r, "{\"secret\": 1,", PT_JSON_INVALID, NULL);
    check(&r, "{\"secret\": 1} trailing", PT_JSON_INVALID, NULL);
    check(&r, "", PT_JSON_INVALID, NULL);
}

static void test_order_and_values(void)
{
    /* remove before rename: a rename never brings back a removed field;
     * add last, replacing a value that came in */
    struct rules r = {
        .remove = {"b"},
        .rename = {{"a", "b"}},
        .add = {{"n", "2"},
                {"f", "0.5"},
                {"t", "true"},
                {"z", "null"},
                {"s", "2"},
                {"who", "${consumer}/${request_id}"},
                {"a", "replaced"},
                {"deep.x", "created"}},
        .add_plain = {true, true, true, true, false, false, false, false},
    };
    check(&r, "{\"a\": 1, \"b\": 2, \"p\": 1.1, \"e\": 1e300}", PT_JSON_EDITED,
          "{\"p\":1.1,\"e\":1e300,\"b\":1,\"n\":2,\"f\":0.5,\"t\":true,"
          "\"z\":null,\"s\":\"2\",\"who\":\"mobile-app/rid-1\",\"a\":\"replaced\","
          "\"deep\":{\"x\":\"created\"}}");
    /* one precision for every real, enough for the one that needs most:
     * never a different double */
    check(&r, "{\"p\": 1.5, \"q\": 0.30000000000000004}", PT_JSON_EDITED,
          "{\"p\":1.5,\"q\":0.30000000000000004,\"n\":2,\"f\":0.5,\"t\":true,"
          "\"z\":null,\"s\":\"2\",\"who\":\"mobile-app/rid-1\",\"a\":\"replaced\","
          "\"deep\":{\"x\":\"created\"}}");
    /* unicode and escapes survive the round trip */
    struct rules r2 = {.remove = {"x"}};
    check(&r2, "{\"x\":1,\"name\":\"Zo\\u00eb \\\"q\\\" \\/ \xe2\x82\xac\"}", PT_JSON_EDITED,
          "{\"name\":\"Zo\xc3\xab \\\"q\\\" / \xe2\x82\xac\"}");
}

/* add and rename write through missing parents (created as empty
 * objects); a parent that exists but is not an object skips the rule and
 * creates nothing; rename's missing source creates nothing. */
static void test_created_parents(void)
{
    struct rules add = {
        .add = {{"meta.request_id", "${request_id}"}, {"meta.version", "2"}, {"a.b.c", "x"}},
        .add_plain = {false, true, false},
    };
    check(&add, "{\"a\": 1}", PT_JSON_EDITED,
          "{\"a\":1,\"meta\":{\"request_id\":\"rid-1\",\"version\":2}}");
    check(&add, "{\"a\": {}}", PT_JSON_EDITED,
          "{\"a\":{\"b\":{\"c\":\"x\"}},\"meta\":{\"request_id\":\"rid-1\",\"version\":2}}");
    /* an existing object is added to, not replaced */
    check(&add, "{\"meta\": {\"k\": 1}, \"a\": {\"b\": {\"d\": 0}}}", PT_JSON_EDITED,
          "{\"meta\":{\"k\":1,\"request_id\":\"rid-1\",\"version\":2},"
          "\"a\":{\"b\":{\"d\":0,\"c\":\"x\"}}}");
    /* not objects: left as they are, nothing created below or beside */
    check(&add, "{\"meta\": \"s\", \"a\": [1]}", PT_JSON_UNCHANGED, NULL);
    check(&add, "{\"meta\": null, \"a\": {\"b\": 3}}", PT_JSON_UNCHANGED, NULL);
    /* the top level stays the only kind of document edited */
    check(&add, "[]", PT_JSON_UNCHANGED, NULL);

    struct rules ren = {.rename = {{"id", "ids.primary"}, {"nope", "made.up"}, {"x.y", "s.t"}}};
    check(&ren, "{\"id\": 7, \"x\": {\"y\": 1}}", PT_JSON_EDITED,
          "{\"x\":{},\"ids\":{\"primary\":7},\"s\":{\"t\":1}}");
    /* a missing source: no destination parent appears */
    check(&ren, "{\"k\": 1}", PT_JSON_UNCHANGED, NULL);
    /* a destination parent that is not an object: the source stays */
    check(&ren, "{\"id\": 7, \"ids\": 3}", PT_JSON_UNCHANGED, NULL);

    /* a value that renders no JSON string (not UTF-8) skips its rule
     * before any parent is created */
    struct rules bad = {.add = {{"made.p", "${path}"}, {"k", "1"}}, .add_plain = {false, true}};
    check_path = (pt_slice){"/\xff", 2};
    check(&bad, "{}", PT_JSON_EDITED, "{\"k\":1}");
    check_path = PT_SLICE("/v1/x");
    check(&bad, "{}", PT_JSON_EDITED, "{\"made\":{\"p\":\"/v1/x\"},\"k\":1}");
}

static void test_compile_errors(void)
{
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    struct pt_json_edits e;
    struct errs er;
    struct rules bad = {.remove = {"a..b", ".a", "a."},
                        .rename = {{"ok", "x..y"}},
                        .add = {{"n", "1e999"}, {"t", "${nope}"}},
                        .add_plain = {true, false}};
    CHECK(compile(&e, &bad, &gen, &er) == -1);
    CHECK_MSG(strstr(er.text, "remove_body_fields[a..b]: `a..b` is not a field path") != NULL, "%s",
              er.text);
    CHECK_MSG(strstr(er.text, "remove_body_fields[.a]") &&
                  strstr(er.text, "remove_body_fields[a.]"),
              "%s", er.text);
    CHECK_MSG(strstr(er.text, "rename_body_fields[ok]=") != NULL, "%s", er.text);
    CHECK_MSG(strstr(er.text, "add_body_fields[n]=: number 1e999 is out of range") != NULL, "%s",
              er.text);
    CHECK_MSG(strstr(er.text, "add_body_fields[t]=: unknown variable ${nope}") != NULL, "%s",
              er.text);
    /* YAML's own number spellings are not JSON numbers: strings */
    struct rules ok = {.add = {{"h", "0x1F"}, {"p", "+1"}, {"d", ".5"}},
                       .add_plain = {true, true, true}};
    CHECK(compile(&e, &ok, &gen, &er) == 0);
    check(&ok, "{}", PT_JSON_EDITED, "{\"h\":\"0x1F\",\"p\":\"+1\",\"d\":\".5\"}");
    pt_arena_destroy(&gen);
}

static void test_content_types(void)
{
    static const char *const yes[] = {"application/json", "Application/JSON; charset=utf-8",
                                      "application/vnd.api+json", "application/problem+json ",
                                      " text/x+json;v=1"};
    static const char *const no[] = {"text/plain",
                                     "application/jsonp",
                                     "application/json-seq",
                                     "+json",
                                     "/+json",
                                     "application/+json",
                                     "",
                                     "json"};
    for (size_t i = 0; i < PT_ARRAY_LEN(yes); i++)
        CHECK_MSG(pt_transform_is_json((pt_slice){yes[i], strlen(yes[i])}), "%s", yes[i]);
    for (size_t i = 0; i < PT_ARRAY_LEN(no); i++)
        CHECK_MSG(!pt_transform_is_json((pt_slice){no[i], strlen(no[i])}), "%s", no[i]);
}

int main(void)
{
    test_paths();
    test_order_and_values();
    test_created_parents();
    test_compile_errors();
    test_content_types();
    return unit_report("json_edit");
}
