/*
 * test_filters_async.c — the filters that suspend: fault and ext_auth.
 *
 * The gateway's services are faked: the timer and the outbound call only
 * record what they were asked, and the test completes them by calling the
 * recorded callback, as the gateway's loop would. resume() records the
 * result. Configs are built as the generic loader builds them: a zeroed
 * def->config_size block, each YAML key written through the def's field
 * table (nested `a.b` keys through PT_F_OBJECT's .sub), then compile.
 */
#include "core/log.h"
#include "filters/filter.h"
#include "filters/registry.h"
#include "unit.h"

#include <errno.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* Fake services.                                                      */

static struct {
    /* timer */
    int ntimer;
    uint64_t timer_ms;
    pt_filter_timer_cb timer_cb;
    int timer_rc;
    /* call */
    int ncall;
    struct pt_filter_call_req req;
    pt_filter_call_cb call_cb;
    int call_rc;
    /* random: returns rnd[i++], then the last value again */
    uint64_t rnd[4];
    int nrnd, rnd_pos, nrandom;
    /* resume */
    int nresume;
    enum pt_filter_result resumed;
} fake;

/* PRNG outputs: ROLL_HIT hits any percent above 0, ROLL_MISS misses any
 * below 100, ROLL_HALF hits only a percent above 50. */
#define ROLL_HIT 0ULL
#define ROLL_MISS UINT64_MAX
#define ROLL_HALF (1ULL << 63)

static int fake_timer(struct pt_filter_ctx *ctx, uint64_t delay_ms, pt_filter_timer_cb cb)
{
    fake.ntimer++;
    fake.timer_ms = delay_ms;
    fake.timer_cb = fake.timer_rc == 0 ? cb : NULL;
    return fake.timer_rc;
}

static int fake_call(struct pt_filter_ctx *ctx, const struct pt_filter_call_req *req,
                     pt_filter_call_cb cb)
{
    fake.ncall++;
    fake.req = *req; /* the headers it points at live in the request arena */
    fake.call_cb = fake.call_rc == 0 ? cb : NULL;
    return fake.call_rc;
}

static uint64_t fake_now(struct pt_filter_ctx *ctx)
{
    return 1000;
}

static uint64_t fake_random(struct pt_filter_ctx *ctx)
{
    fake.nrandom++;
    if (fake.nrnd == 0)
        return ROLL_MISS;
    uint64_t v = fake.rnd[fake.rnd_pos < fake.nrnd ? fake.rnd_pos : fake.nrnd - 1];
    fake.rnd_pos++;
    return v;
}

static void fake_resume(struct pt_filter_ctx *ctx, enum pt_filter_result r)
{
    fake.nresume++;
    fake.resumed = r;
}

static const struct pt_filter_services fake_svc = {
    .timer = fake_timer, .call = fake_call, .now_ms = fake_now, .random = fake_random};

static void fake_reset(void)
{
    memset(&fake, 0, sizeof(fake));
    fake.resumed = -1;
}

static void fake_rolls(uint64_t a, uint64_t b)
{
    fake.rnd[0] = a;
    fake.rnd[1] = b;
    fake.nrnd = 2;
}

/* ------------------------------------------------------------------ */
/* Requests.                                                           */

static struct pt_identity ident;

/* Header list from "Name: value" strings (NULL-terminated), as parsed. */
static void make_headers(struct pt_headers *h, struct pt_arena *req, const char *const *lines)
{
    memset(h, 0, sizeof(*h));
    for (size_t i = 0; lines && lines[i]; i++) {
        const char *colon = strchr(lines[i], ':');
        pt_slice name = {lines[i], (size_t)(colon - lines[i])};
        pt_slice value = {colon + 2, strlen(colon + 2)};
        CHECK(pt_headers_add(h, req, name, value) == 0);
    }
}

/* Live headers as "Name: value|Name: value" (a static buffer per slot). */
static const char *dump(const struct pt_headers *h, int slot)
{
    static char out[4][2048];
    char *o = out[slot];
    o[0] = '\0';
    for (uint32_t i = 0; h && i < h->n; i++) {
        if (h->f[i].dead)
            continue;
        size_t l = strlen(o);
        snprintf(o + l, sizeof(out[0]) - l, "%s%.*s: %.*s", l ? "|" : "", (int)h->f[i].name.len,
                 h->f[i].name.p, (int)h->f[i].value.len, h->f[i].value.p);
    }
    return o;
}

static struct pt_filter_ctx make_ctx(struct pt_arena *req, struct pt_headers *reqh,
                                     struct pt_headers *resph)
{
    memset(&ident, 0, sizeof(ident));
    memset(resph, 0, sizeof(*resph));
    return (struct pt_filter_ctx){
        .arena = req,
        .req_headers = reqh,
        .resp_headers = resph,
        .method = PT_SLICE("POST"),
        .path = PT_SLICE("/v1/items"),
        .query = PT_SLICE("page=2"),
        .uri = PT_SLICE("/api/v1/items?page=2"),
        .scheme = PT_SLICE("https"),
        .authority = PT_SLICE("api.example.com"),
        .request_id = PT_SLICE("rid-0001"),
        .remote_addr = PT_SLICE("192.0.2.7"),
        .identity = &ident,
        .svc = &fake_svc,
        .resume = fake_resume,
    };
}

static bool slice_is(pt_slice s, const char *want)
{
    return s.len == strlen(want) && (s.len == 0 || memcmp(s.p, want, s.len) == 0);
}

#define CHECK_SLICE(s, want)                                                                       \
    CHECK_MSG(slice_is((s), (want)), "\"%.*s\" != \"%s\"", (int)(s).len, (s).p ? (s).p : "", (want))

/* ------------------------------------------------------------------ */
/* Configs through the field table.                                    */

/* The field `path` ("a" or "a.b") of a config, with its type. */
static void *field_at(const struct pt_field *fields, void *conf, const char *path,
                      enum pt_field_type *type)
{
    const char *dot = strchr(path, '.');
    size_t n = dot ? (size_t)(dot - path) : strlen(path);
    for (const struct pt_field *f = fields; f->name; f++) {
        if (strlen(f->name) != n || memcmp(f->name, path, n) != 0)
            continue;
        void *at = (char *)conf + f->offset;
        if (dot) {
            CHECK_MSG(f->type == PT_F_OBJECT && f->sub, "%s is not an object", f->name);
            return field_at(f->sub, at, dot + 1, type);
        }
        *type = f->type;
        return at;
    }
    CHECK_MSG(0, "no field %s", path);
    return NULL;
}

/* One YAML key: strings (PT_F_STRING / PT_F_UPSTREAM), numbers (INT,
 * DURATION in ms), bools, lists. */
struct kv {
    const char *key;
    const char *str;
    int64_t num;
    const char *const *list; /* NULL-terminated; a list of just NULL is [] */
};

static void *make_conf(const struct pt_filter_def *def, const struct kv *kvs, struct pt_arena *gen)
{
    void *conf = pt_arena_zalloc(gen, def->config_size);
    for (const struct kv *kv = kvs; kv && kv->key; kv++) {
        enum pt_field_type type;
        void *at = field_at(def->fields, conf, kv->key, &type);
        if (!at)
            continue;
        switch (type) {
        case PT_F_STRING:
        case PT_F_UPSTREAM:
            *(const char **)at = kv->str;
            break;
        case PT_F_INT:
            *(int64_t *)at = kv->num;
            break;
        case PT_F_DURATION:
            *(uint64_t *)at = (uint64_t)kv->num;
            break;
        case PT_F_BOOL:
            *(bool *)at = kv->num != 0;
            break;
        case PT_F_STRING_LIST: {
            struct pt_strlist *l = at;
            uint32_t n = 0;
            while (kv->list[n])
                n++;
            l->v = pt_arena_zalloc(gen, sizeof(*l->v) * (n + 1));
            for (uint32_t i = 0; i < n; i++)
                l->v[i] = kv->list[i];
            l->n = n;
            break;
        }
        default:
            CHECK_MSG(0, "field %s: type %d not handled by the test", kv->key, (int)type);
        }
    }
    return conf;
}

/* Every compile report, "field/entry: message\n". */
static char errbuf[4096];
static int nerrs;

static void collect(struct pt_filter_errs *e, const char *field, const char *entry, bool in_value,
                    const char *msg)
{
    size_t l = strlen(errbuf);
    snprintf(errbuf + l, sizeof(errbuf) - l, "%s/%s: %s\n", field ? field : "-",
             entry ? entry : "-", msg);
    nerrs++;
}

/* Builds and compiles; the config, or NULL with the reports in errbuf. */
static void *compile(const struct pt_filter_def *def, const struct kv *kvs, struct pt_arena *gen)
{
    errbuf[0] = '\0';
    nerrs = 0;
    void *conf = make_conf(def, kvs, gen);
    struct pt_filter_errs e = {collect, false};
    int rc = def->compile(conf, gen, &e);
    CHECK_MSG((rc == 0) == (nerrs == 0), "rc %d with %d reports", rc, nerrs);
    return rc == 0 ? conf : NULL;
}

static void check_rejected(const struct pt_filter_def *def, const struct kv *kvs, const char *want)
{
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    void *conf = compile(def, kvs, &gen);
    CHECK_MSG(conf == NULL, "%s: config accepted (want \"%s\")", def->name, want);
    CHECK_MSG(strstr(errbuf, want) != NULL, "errors \"%s\" lack \"%s\"", errbuf, want);
    pt_arena_destroy(&gen);
}

/* ------------------------------------------------------------------ */
/* fault                                                               */

/* Runs fault's on_request on a fresh request with these headers. */
struct run {
    struct pt_arena req;
    struct pt_headers reqh, resph;
    struct pt_filter_ctx ctx;
    char state[64];
    int rc;
};

static void run_request(struct run *r, const struct pt_filter_def *def, const void *conf,
                        const char *const *headers)
{
    pt_arena_init(&r->req, 0);
    make_headers(&r->reqh, &r->req, headers);
    r->ctx = make_ctx(&r->req, &r->reqh, &r->resph);
    CHECK((size_t)def->state_size <= sizeof(r->state));
    memset(r->state, 0, sizeof(r->state));
    r->rc = def->on_request(&r->ctx, conf, r->state);
}

static void run_done(struct run *r)
{
    pt_arena_destroy(&r->req);
}

/* Fires the recorded timer, as the gateway's loop would. */
static void fire_timer(struct run *r)
{
    CHECK(fake.timer_cb != NULL);
    if (fake.timer_cb)
        fake.timer_cb(&r->ctx, r->state);
}

/* What a fault config does to one request, given the PRNG's two rolls
 * (delay's, then abort's): the hook's result, the delay armed (0: none),
 * then what the request ends with (CONTINUE upstream, or RESPOND with a
 * status). Checks the suspension contract on the way. */
struct outcome {
    int rc;
    uint64_t delay_ms;
    int final, status;
};

static struct outcome fault_outcome(const struct kv *cfg, uint64_t delay_roll, uint64_t abort_roll)
{
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    struct outcome o = {-1, 0, -1, 0};
    const void *conf = compile(&pt_filter_fault, cfg, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    if (!conf) {
        pt_arena_destroy(&gen);
        return o;
    }
    struct run r;
    fake_reset();
    fake_rolls(delay_roll, abort_roll);
    run_request(&r, &pt_filter_fault, conf, NULL);
    o.rc = r.rc;
    o.final = r.rc;
    if (r.rc == PT_FILTER_SUSPEND) {
        o.delay_ms = fake.timer_ms;
        CHECK_EQ_INT(fake.ntimer, 1);
        /* The gateway's deadline never cuts the delay short. */
        CHECK_MSG(r.ctx.suspend_deadline_ms >= fake.timer_ms + 500, "deadline %llu for %llu ms",
                  (unsigned long long)r.ctx.suspend_deadline_ms, (unsigned long long)fake.timer_ms);
        CHECK_EQ_INT(fake.nresume, 0); /* nothing resumes before the timer */
        CHECK_EQ_INT(r.ctx.respond_status, 0);
        fire_timer(&r);
        CHECK_EQ_INT(fake.nresume, 1);
        o.final = fake.resumed;
    }
    if (o.final == PT_FILTER_RESPOND) {
        o.status = r.ctx.respond_status;
        CHECK(r.ctx.respond_body.len == 0); /* the standard JSON error */
    }
    run_done(&r);
    pt_arena_destroy(&gen);
    return o;
}

#define CHECK_OUTCOME(cfg, r1, r2, rc_, delay_, final_, status_)                                   \
    do {                                                                                           \
        struct outcome o_ = fault_outcome((cfg), (r1), (r2));                                      \
        CHECK_MSG(o_.rc == (rc_) && o_.delay_ms == (delay_) && o_.final == (final_) &&             \
                      o_.status == (status_),                                                      \
                  "got rc %d delay %llu final %d status %d", o_.rc,                                \
                  (unsigned long long)o_.delay_ms, o_.final, o_.status);                           \
    } while (0)

static void test_fault_rolls(void)
{
    enum { CONT = PT_FILTER_CONTINUE, SUSP = PT_FILTER_SUSPEND, RESP = PT_FILTER_RESPOND };

    /* delay without percent: every request, then on upstream */
    const struct kv delay[] = {{"delay.duration", .num = 200}, {NULL}};
    CHECK_OUTCOME(delay, ROLL_MISS, ROLL_MISS, SUSP, 200, CONT, 0);
    /* percent 10: a roll above 10% misses, one below hits */
    const struct kv d10[] = {
        {"delay.duration", .num = 300}, {"delay.percent", .str = "10"}, {NULL}};
    CHECK_OUTCOME(d10, ROLL_HALF, ROLL_HALF, CONT, 0, CONT, 0);
    CHECK_EQ_INT(fake.nrandom, 1);
    CHECK_OUTCOME(d10, ROLL_HIT, ROLL_HIT, SUSP, 300, CONT, 0);
    /* percent 0 never; "60%" hits a half roll */
    const struct kv d0[] = {{"delay.duration", .num = 300}, {"delay.percent", .str = "0"}, {NULL}};
    CHECK_OUTCOME(d0, ROLL_HIT, ROLL_HIT, CONT, 0, CONT, 0);
    const struct kv d60[] = {
        {"delay.duration", .num = 300}, {"delay.percent", .str = "60%"}, {NULL}};
    CHECK_OUTCOME(d60, ROLL_HALF, ROLL_HALF, SUSP, 300, CONT, 0);

    /* abort without percent: answered at once */
    const struct kv abort[] = {{"abort.status", .num = 503}, {NULL}};
    CHECK_OUTCOME(abort, ROLL_MISS, ROLL_MISS, RESP, 0, RESP, 503);
    const struct kv a0[] = {{"abort.status", .num = 503}, {"abort.percent", .str = "0"}, {NULL}};
    CHECK_OUTCOME(a0, ROLL_HIT, ROLL_HIT, CONT, 0, CONT, 0);

    /* both, each rolled on its own, delay first (Envoy's order) */
    const struct kv both[] = {{"delay.duration", .num = 100},
                              {"delay.percent", .str = "50"},
                              {"abort.status", .num = 429},
                              {"abort.percent", .str = "50"},
                              {NULL}};
    CHECK_OUTCOME(both, ROLL_HIT, ROLL_HIT, SUSP, 100, RESP, 429);
    CHECK_OUTCOME(both, ROLL_MISS, ROLL_HIT, RESP, 0, RESP, 429);
    CHECK_EQ_INT(fake.nrandom, 2);
    CHECK_OUTCOME(both, ROLL_HIT, ROLL_MISS, SUSP, 100, CONT, 0);
    CHECK_OUTCOME(both, ROLL_MISS, ROLL_MISS, CONT, 0, CONT, 0);

    /* A timer that cannot be armed skips the delay, not the abort. */
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    const struct kv *cfgs[] = {delay, both};
    for (size_t i = 0; i < 2; i++) {
        const void *conf = compile(&pt_filter_fault, cfgs[i], &gen);
        struct run r;
        fake_reset();
        fake_rolls(ROLL_HIT, ROLL_HIT);
        fake.timer_rc = -ENOMEM;
        run_request(&r, &pt_filter_fault, conf, NULL);
        CHECK_EQ_INT(fake.ntimer, 1);
        CHECK_EQ_INT(r.rc, i == 0 ? PT_FILTER_CONTINUE : PT_FILTER_RESPOND);
        CHECK_EQ_INT(r.ctx.respond_status, i == 0 ? 0 : 429);
        run_done(&r);
    }
    pt_arena_destroy(&gen);
}

/* The delay a request asking with `value` gets (0: none asked / ignored). */
static uint64_t header_delay(const void *conf, const char *line)
{
    const char *hdrs[] = {line, NULL};
    struct run r;
    fake_reset();
    run_request(&r, &pt_filter_fault, conf, hdrs);
    uint64_t ms = r.rc == PT_FILTER_SUSPEND ? fake.timer_ms : 0;
    CHECK(r.rc == PT_FILTER_SUSPEND || r.rc == PT_FILTER_CONTINUE);
    run_done(&r);
    return ms;
}

/* The status a request asking with `line` is answered (0: none). */
static int header_abort(const void *conf, const char *line)
{
    const char *hdrs[] = {line, NULL};
    struct run r;
    fake_reset();
    run_request(&r, &pt_filter_fault, conf, hdrs);
    int st = r.rc == PT_FILTER_RESPOND ? r.ctx.respond_status : 0;
    run_done(&r);
    return st;
}

static void test_fault_header_trigger(void)
{
    const struct pt_filter_def *def = &pt_filter_fault;
    struct pt_arena gen;
    pt_arena_init(&gen, 0);

    const struct kv on[] = {{"header_trigger", .num = 1}, {"max_delay", .num = 2000}, {NULL}};
    const void *conf = compile(def, on, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 300ms"), 300);
    CHECK_EQ_INT(header_delay(conf, "x-portico-fault-delay: 150"), 150); /* plain ms */
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 1s"), 1000);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 10s"), 2000); /* capped */
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 99999999"), 2000);
    /* invalid values are ignored */
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: abc"), 0);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: -5"), 0);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 5 ms"), 0);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 200xs"), 0);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: "), 0);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 99999999999999999999999"), 0);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 0"), 0);

    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: 503"), 503);
    CHECK_EQ_INT(header_abort(conf, "x-portico-fault-abort: 418"), 418);
    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: 599"), 599);
    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: 200"), 0);
    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: 600"), 0);
    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: 5030"), 0);
    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: 50x"), 0);
    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: "), 0);

    /* Both asked: delayed, then aborted. */
    {
        const char *hdrs[] = {"X-Portico-Fault-Delay: 40ms", "X-Portico-Fault-Abort: 504", NULL};
        struct run r;
        fake_reset();
        run_request(&r, def, conf, hdrs);
        CHECK_EQ_INT(r.rc, PT_FILTER_SUSPEND);
        CHECK_EQ_INT(fake.timer_ms, 40);
        fire_timer(&r);
        CHECK_EQ_INT(fake.resumed, PT_FILTER_RESPOND);
        CHECK_EQ_INT(r.ctx.respond_status, 504);
        run_done(&r);
    }

    /* The default cap is 5s. */
    const struct kv dflt[] = {{"header_trigger", .num = 1}, {NULL}};
    conf = compile(def, dflt, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 1m"), 5000);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 4999"), 4999);

    /* A header replaces the configured value for its request. */
    const struct kv cfg[] = {{"header_trigger", .num = 1},
                             {"delay.duration", .num = 700},
                             {"abort.status", .num = 503},
                             {NULL}};
    conf = compile(def, cfg, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 20"), 20);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: junk"), 700);
    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: 429"), 0); /* delayed first */

    /* Without header_trigger the headers do nothing. */
    const struct kv off[] = {{"max_delay", .num = 2000}, {NULL}};
    conf = compile(def, off, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    CHECK_EQ_INT(header_delay(conf, "X-Portico-Fault-Delay: 300ms"), 0);
    CHECK_EQ_INT(header_abort(conf, "X-Portico-Fault-Abort: 503"), 0);
    CHECK_EQ_INT(fake.ntimer, 0);

    pt_arena_destroy(&gen);
}

static void test_fault_headers_removed(void)
{
    const struct pt_filter_def *def = &pt_filter_fault;
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    const char *hdrs[] = {"Host: api.example.com",
                          "X-Portico-Fault-Delay: 10",
                          "x-portico-fault-abort: 503",
                          "X-PORTICO-FAULT-Anything: 1",
                          "X-Portico-Faulty: stays",
                          "X-Portico-Fault: stays",
                          "Accept: */*",
                          NULL};
    const char *want = "Host: api.example.com|X-Portico-Faulty: stays|X-Portico-Fault: "
                       "stays|Accept: */*";
    /* trigger off and on, and on a route whose filter does nothing else */
    const struct kv off[] = {{NULL}};
    const struct kv on[] = {{"header_trigger", .num = 1}, {NULL}};
    const struct kv *cfgs[] = {off, on};
    for (size_t i = 0; i < 2; i++) {
        const void *conf = compile(def, cfgs[i], &gen);
        CHECK_MSG(conf != NULL, "%s", errbuf);
        struct run r;
        fake_reset();
        run_request(&r, def, conf, hdrs);
        CHECK_STR(dump(&r.reqh, 0), want);
        if (r.rc == PT_FILTER_SUSPEND)
            fire_timer(&r);
        run_done(&r);
    }
    pt_arena_destroy(&gen);
}

static void test_fault_compile(void)
{
    const struct pt_filter_def *def = &pt_filter_fault;
    check_rejected(def, (const struct kv[]){{"abort.status", .num = 200}, {NULL}},
                   "abort/status: abort.status: 200 is not an error status (use 400-599)");
    check_rejected(def, (const struct kv[]){{"abort.status", .num = 600}, {NULL}},
                   "600 is not an error status");
    check_rejected(def, (const struct kv[]){{"abort.status", .num = 399}, {NULL}},
                   "399 is not an error status");
    check_rejected(
        def,
        (const struct kv[]){{"delay.duration", .num = 10}, {"delay.percent", .str = "110"}, {NULL}},
        "delay/percent: delay.percent: expected a percentage");
    check_rejected(
        def,
        (const struct kv[]){{"abort.status", .num = 503}, {"abort.percent", .str = "-1"}, {NULL}},
        "abort/percent: abort.percent: expected a percentage");
    check_rejected(
        def,
        (const struct kv[]){{"abort.status", .num = 503}, {"abort.percent", .str = "ten"}, {NULL}},
        "got \"ten\"");
    check_rejected(
        def,
        (const struct kv[]){{"abort.status", .num = 503}, {"abort.percent", .str = "5%%"}, {NULL}},
        "got \"5%%\"");
    check_rejected(def, (const struct kv[]){{"delay.duration", .num = 3600001}, {NULL}},
                   "delay/duration: delay.duration: at most 1h");
    check_rejected(def, (const struct kv[]){{"max_delay", .num = 3600001}, {NULL}},
                   "max_delay/-: max_delay: at most 1h");
    check_rejected(def, (const struct kv[]){{"delay.percent", .str = "10"}, {NULL}},
                   "delay/-: delay: `duration` is required");
    check_rejected(def, (const struct kv[]){{"abort.percent", .str = "10"}, {NULL}},
                   "abort/-: abort: `status` is required");
    /* every problem is reported, not only the first */
    check_rejected(
        def,
        (const struct kv[]){{"abort.status", .num = 200}, {"max_delay", .num = 1 << 30}, {NULL}},
        "max_delay");
    CHECK_EQ_INT(nerrs, 2);

    /* Accepted: limits inclusive, percent forms, an empty config. */
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    CHECK(compile(def, (const struct kv[]){{NULL}}, &gen) != NULL);
    CHECK(compile(def,
                  (const struct kv[]){{"delay.duration", .num = 3600000},
                                      {"delay.percent", .str = "12.5%"},
                                      {"abort.status", .num = 400},
                                      {"abort.percent", .str = "100"},
                                      {"max_delay", .num = 3600000},
                                      {NULL}},
                  &gen) != NULL);
    CHECK(compile(def, (const struct kv[]){{"abort.status", .num = 599}, {NULL}}, &gen) != NULL);
    pt_arena_destroy(&gen);

    CHECK_EQ_INT(def->priority, 900);
    CHECK(pt_filter_find("fault") == def);
}

/* ------------------------------------------------------------------ */
/* ext_auth                                                            */

static const char *const client_headers[] = {
    "Host: api.example.com",
    "Authorization: Bearer t0k",
    "Cookie: a=1",
    "Cookie: b=2",
    "X-User-ID: spoofed",
    "x-user-groups: admin",
    "X-Other: kept",
    "X-Forwarded-For: 203.0.113.9, 192.0.2.7",
    NULL,
};

static const char *const full_conf_copy[] = {"X-User-ID", "X-User-Groups", NULL};

static const struct kv full_conf[] = {
    {"upstream", .str = "authz"},
    {"path", .str = "/check?v=1"},
    {"timeout", .num = 250},
    {"copy_headers", .list = full_conf_copy},
    {"consumer_header", .str = "X-User-ID"},
    {NULL},
};

/* Completes the recorded call with `res`, as the gateway's loop would. */
static void complete_call(struct run *r, const struct pt_filter_call_res *res)
{
    CHECK(fake.call_cb != NULL);
    if (fake.call_cb)
        fake.call_cb(&r->ctx, r->state, res);
}

/* Starts a check of a request with client_headers under `conf`. */
static void start_check(struct run *r, const void *conf)
{
    fake_reset();
    run_request(r, &pt_filter_ext_auth, conf, client_headers);
    CHECK_EQ_INT(r->rc, PT_FILTER_SUSPEND);
}

/* full_conf, compiled once into a generation arena that lives as long as
 * the test process. */
static const void *full_auth_conf(void)
{
    static struct pt_arena gen;
    static const void *conf;
    if (!conf) {
        pt_arena_init(&gen, 0);
        conf = compile(&pt_filter_ext_auth, full_conf, &gen);
        CHECK_MSG(conf != NULL, "%s", errbuf);
    }
    return conf;
}

/* An answer of the auth service, headers from "Name: value" lines. */
static struct pt_filter_call_res answer(struct run *r, int status, const char *const *headers,
                                        const char *body)
{
    struct pt_filter_call_res res = {.error = PT_CALL_OK, .status = status};
    make_headers(&res.headers, &r->req, headers);
    res.body = body ? (pt_slice){body, strlen(body)} : (pt_slice){NULL, 0};
    return res;
}

static void test_ext_auth_request(void)
{
    const struct pt_filter_def *def = &pt_filter_ext_auth;
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    struct run r;

    const void *conf = compile(def, full_conf, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    start_check(&r, conf);
    CHECK_EQ_INT(r.rc, PT_FILTER_SUSPEND);
    CHECK_EQ_INT(fake.ncall, 1);
    CHECK_STR(fake.req.upstream, "authz");
    CHECK_SLICE(fake.req.method, "GET");
    CHECK_SLICE(fake.req.path, "/check?v=1");
    CHECK(fake.req.body.len == 0);
    CHECK_EQ_INT(fake.req.timeout_ms, 250);
    CHECK_EQ_INT(fake.req.max_body, 64 * 1024);
    CHECK_MSG(r.ctx.suspend_deadline_ms > 250, "deadline %llu",
              (unsigned long long)r.ctx.suspend_deadline_ms);
    /* forward_headers default: Authorization and every Cookie, as sent;
     * then what the auth service learns about the request. */
    CHECK_STR(dump(fake.req.headers, 0),
              "Authorization: Bearer t0k|Cookie: a=1|Cookie: b=2|X-Forwarded-Method: POST|"
              "X-Forwarded-Uri: /api/v1/items?page=2|X-Forwarded-Proto: https|"
              "X-Forwarded-Host: api.example.com|X-Forwarded-For: 203.0.113.9, 192.0.2.7|"
              "X-Request-ID: rid-0001");
    /* Spoofed identity fields are gone before the call, whatever comes. */
    CHECK_STR(dump(&r.reqh, 1), "Host: api.example.com|Authorization: Bearer t0k|Cookie: a=1|"
                                "Cookie: b=2|X-Other: kept|X-Forwarded-For: 203.0.113.9, "
                                "192.0.2.7");
    CHECK_EQ_INT(fake.nresume, 0);
    run_done(&r);

    /* Defaults: path /, timeout 500ms. forward_headers: [] sends none;
     * no X-Forwarded-For in the request: the client address; no original
     * target: path?query; two X-Forwarded-For fields: one joined value. */
    static const char *const empty[] = {NULL};
    static const struct kv minimal[] = {
        {"upstream", .str = "authz"}, {"forward_headers", .list = empty}, {NULL}};
    conf = compile(def, minimal, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    fake_reset();
    static const char *const plain[] = {"Authorization: x", NULL};
    pt_arena_init(&r.req, 0);
    make_headers(&r.reqh, &r.req, plain);
    r.ctx = make_ctx(&r.req, &r.reqh, &r.resph);
    r.ctx.uri = (pt_slice){NULL, 0};
    r.ctx.scheme = PT_SLICE("http");
    r.rc = def->on_request(&r.ctx, conf, r.state);
    CHECK_EQ_INT(r.rc, PT_FILTER_SUSPEND);
    CHECK_SLICE(fake.req.path, "/");
    CHECK_EQ_INT(fake.req.timeout_ms, 500);
    CHECK_STR(dump(fake.req.headers, 0),
              "X-Forwarded-Method: POST|X-Forwarded-Uri: /v1/items?page=2|X-Forwarded-Proto: "
              "http|X-Forwarded-Host: api.example.com|X-Forwarded-For: 192.0.2.7|X-Request-ID: "
              "rid-0001");
    run_done(&r);

    static const char *const two_xff[] = {"X-Forwarded-For: 198.51.100.1",
                                          "x-forwarded-for: 192.0.2.7", NULL};
    fake_reset();
    run_request(&r, def, conf, two_xff);
    CHECK(strstr(dump(fake.req.headers, 0), "X-Forwarded-For: 198.51.100.1, 192.0.2.7|") != NULL);
    run_done(&r);

    /* Listed forward_headers in any case; absent ones are not invented. */
    static const char *const fwd[] = {"cookie", "X-Tenant", "X-Missing", NULL};
    static const struct kv listed[] = {
        {"upstream", .str = "authz"}, {"forward_headers", .list = fwd}, {NULL}};
    conf = compile(def, listed, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    static const char *const tenant[] = {"X-Tenant: t1", "Authorization: no", "COOKIE: c=3", NULL};
    fake_reset();
    run_request(&r, def, conf, tenant);
    CHECK(strncmp(dump(fake.req.headers, 0), "COOKIE: c=3|X-Tenant: t1|X-Forwarded-Method:",
                  strlen("COOKIE: c=3|X-Tenant: t1|X-Forwarded-Method:")) == 0);
    run_done(&r);

    pt_arena_destroy(&gen);
}

static void test_ext_auth_allow(void)
{
    const void *conf = full_auth_conf();
    struct run r;

    for (int status = 200; status <= 204; status += 4) {
        start_check(&r, conf);
        static const char *const hdrs[] = {"X-User-ID: alice",        "X-User-Groups: dev",
                                           "x-user-groups: ops",      "X-Secret: not copied",
                                           "WWW-Authenticate: Basic", NULL};
        struct pt_filter_call_res res = answer(&r, status, hdrs, "ignored");
        complete_call(&r, &res);
        CHECK_EQ_INT(fake.nresume, 1);
        CHECK_EQ_INT(fake.resumed, PT_FILTER_CONTINUE);
        CHECK_STR(dump(&r.reqh, 0),
                  "Host: api.example.com|Authorization: Bearer t0k|Cookie: a=1|Cookie: b=2|"
                  "X-Other: kept|X-Forwarded-For: 203.0.113.9, 192.0.2.7|X-User-ID: alice|"
                  "X-User-Groups: dev|X-User-Groups: ops|X-Consumer-Name: alice");
        CHECK_SLICE(ident.consumer, "alice");
        CHECK(ident.source && strcmp(ident.source, "ext_auth") == 0);
        CHECK_STR(dump(&r.resph, 1), ""); /* nothing for the client */
        run_done(&r);
    }

    /* A 2xx without the consumer field: no identity, and no spoof left. */
    start_check(&r, conf);
    struct pt_filter_call_res res = answer(&r, 200, NULL, NULL);
    complete_call(&r, &res);
    CHECK_EQ_INT(fake.resumed, PT_FILTER_CONTINUE);
    CHECK(ident.consumer.len == 0 && ident.source == NULL);
    CHECK(strstr(dump(&r.reqh, 0), "X-User") == NULL && strstr(dump(&r.reqh, 0), "x-user") == NULL);
    run_done(&r);
}

static void test_ext_auth_deny(void)
{
    const void *conf = full_auth_conf();
    struct run r;

    /* 401: status, challenges, cookies and body as the auth service sent. */
    start_check(&r, conf);
    static const char *const h401[] = {"WWW-Authenticate: Bearer realm=\"api\"",
                                       "Content-Type: text/plain; charset=utf-8",
                                       "Set-Cookie: s=1",
                                       "X-User-ID: mallory",
                                       "www-authenticate: Basic",
                                       "set-cookie: t=2",
                                       "X-Internal: no",
                                       NULL};
    struct pt_filter_call_res res = answer(&r, 401, h401, "log in first\n");
    complete_call(&r, &res);
    CHECK_EQ_INT(fake.nresume, 1);
    CHECK_EQ_INT(fake.resumed, PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    CHECK_STR(dump(&r.resph, 0), "WWW-Authenticate: Bearer realm=\"api\"|www-authenticate: "
                                 "Basic|Set-Cookie: s=1|set-cookie: t=2");
    CHECK_SLICE(r.ctx.respond_body, "log in first\n");
    CHECK_SLICE(r.ctx.respond_content_type, "text/plain; charset=utf-8");
    CHECK(ident.consumer.len == 0);
    CHECK(strstr(dump(&r.reqh, 1), "mallory") == NULL);
    run_done(&r);

    /* 302 without a body: Location, and the gateway's own error body. */
    start_check(&r, conf);
    static const char *const h302[] = {"Location: https://login.example.com/?next=%2F",
                                       "Content-Type: text/html", NULL};
    res = answer(&r, 302, h302, NULL);
    complete_call(&r, &res);
    CHECK_EQ_INT(fake.resumed, PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 302);
    CHECK_STR(dump(&r.resph, 0), "Location: https://login.example.com/?next=%2F");
    CHECK(r.ctx.respond_body.len == 0 && r.ctx.respond_content_type.len == 0);
    run_done(&r);

    /* 403 with a body but no Content-Type; a cut body is not passed on. */
    start_check(&r, conf);
    res = answer(&r, 403, NULL, "no");
    complete_call(&r, &res);
    CHECK_EQ_INT(r.ctx.respond_status, 403);
    CHECK_SLICE(r.ctx.respond_body, "no");
    CHECK_SLICE(r.ctx.respond_content_type, "application/octet-stream");
    run_done(&r);
    start_check(&r, conf);
    static const char *const hjson[] = {"Content-Type: application/json", NULL};
    res = answer(&r, 403, hjson, "{\"error\":");
    res.truncated = true;
    complete_call(&r, &res);
    CHECK_EQ_INT(r.ctx.respond_status, 403);
    CHECK(r.ctx.respond_body.len == 0 && r.ctx.respond_content_type.len == 0);
    run_done(&r);
}

/* What the filter does when the auth service fails with `res`. */
static void check_failure(const void *conf, const struct pt_filter_call_res *proto, bool allow)
{
    struct run r;
    start_check(&r, conf);
    struct pt_filter_call_res res = *proto;
    if (res.error == PT_CALL_OK) {
        static const char *const hdrs[] = {"X-User-ID: eve", "WWW-Authenticate: Basic", NULL};
        make_headers(&res.headers, &r.req, hdrs);
        res.body = PT_SLICE("upstream broke");
    }
    complete_call(&r, &res);
    CHECK_EQ_INT(fake.nresume, 1);
    if (allow) {
        CHECK_EQ_INT(fake.resumed, PT_FILTER_CONTINUE);
    } else {
        CHECK_EQ_INT(fake.resumed, PT_FILTER_RESPOND);
        CHECK_EQ_INT(r.ctx.respond_status, 503);
        CHECK(r.ctx.respond_body.len == 0);
        CHECK(r.ctx.respond_content_type.len == 0);
    }
    CHECK_STR(dump(&r.resph, 0), ""); /* nothing of a failed answer reaches the client */
    CHECK(ident.consumer.len == 0);
    /* no spoofed and no copied identity goes upstream */
    CHECK(strstr(dump(&r.reqh, 1), "X-User") == NULL && strstr(dump(&r.reqh, 1), "eve") == NULL);
    run_done(&r);
}

static void test_ext_auth_errors(void)
{
    const struct pt_filter_def *def = &pt_filter_ext_auth;
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    const struct pt_filter_call_res failures[] = {
        {.error = PT_CALL_OK, .status = 500},
        {.error = PT_CALL_OK, .status = 503},
        {.error = PT_CALL_OK, .status = 599},
        {.error = PT_CALL_OK, .status = 101},
        {.error = PT_CALL_ERR_TIMEOUT, .error_text = "timed out"},
        {.error = PT_CALL_ERR_CONNECT, .error_text = "connection refused"},
        {.error = PT_CALL_ERR_RESET, .error_text = "reset"},
        {.error = PT_CALL_ERR_PROTOCOL, .error_text = "bad answer"},
        {.error = PT_CALL_ERR_NO_TARGET, .error_text = "no target"},
    };
    static const char *const copy[] = {"X-User-ID", NULL};
    const struct kv deny[] = {{"upstream", .str = "authz"},
                              {"copy_headers", .list = copy},
                              {"consumer_header", .str = "X-User-ID"},
                              {NULL}};
    const struct kv deny2[] = {{"upstream", .str = "authz"},
                               {"copy_headers", .list = copy},
                               {"consumer_header", .str = "X-User-ID"},
                               {"on_error", .str = "deny"},
                               {NULL}};
    const struct kv allow[] = {{"upstream", .str = "authz"},
                               {"copy_headers", .list = copy},
                               {"consumer_header", .str = "X-User-ID"},
                               {"on_error", .str = "allow"},
                               {NULL}};
    const void *cdeny = compile(def, deny, &gen);
    const void *cdeny2 = compile(def, deny2, &gen);
    const void *callow = compile(def, allow, &gen);
    CHECK(cdeny && cdeny2 && callow);
    for (size_t i = 0; cdeny && cdeny2 && callow && i < PT_ARRAY_LEN(failures); i++) {
        check_failure(cdeny, &failures[i], false);
        check_failure(cdeny2, &failures[i], false);
        check_failure(callow, &failures[i], true);
    }

    /* A call that cannot be started is decided at once, never resumed. */
    struct run r;
    for (int allowed = 0; allowed < 2; allowed++) {
        fake_reset();
        fake.call_rc = -EMFILE;
        run_request(&r, def, allowed ? callow : cdeny, client_headers);
        CHECK_EQ_INT(r.rc, allowed ? PT_FILTER_CONTINUE : PT_FILTER_RESPOND);
        if (!allowed)
            CHECK_EQ_INT(r.ctx.respond_status, 503);
        CHECK_EQ_INT(fake.ncall, 1);
        CHECK_EQ_INT(fake.nresume, 0);
        CHECK(strstr(dump(&r.reqh, 0), "X-User") == NULL);
        run_done(&r);
    }
    pt_arena_destroy(&gen);
}

static void test_ext_auth_compile(void)
{
    const struct pt_filter_def *def = &pt_filter_ext_auth;
    check_rejected(def, (const struct kv[]){{"path", .str = "/x"}, {NULL}},
                   "-/-: `upstream` is required");
    check_rejected(
        def, (const struct kv[]){{"upstream", .str = "a"}, {"on_error", .str = "open"}, {NULL}},
        "on_error/-: on_error: expected deny or allow, got \"open\"");
    check_rejected(def,
                   (const struct kv[]){{"upstream", .str = "a"}, {"path", .str = "check"}, {NULL}},
                   "path/-: path: \"check\" is not an origin-form path");
    check_rejected(def,
                   (const struct kv[]){{"upstream", .str = "a"}, {"path", .str = "/a b"}, {NULL}},
                   "not an origin-form path");
    check_rejected(def,
                   (const struct kv[]){{"upstream", .str = "a"}, {"path", .str = "/a#b"}, {NULL}},
                   "not an origin-form path");
    static const char *const bad_name[] = {"Authorization", "X Y", NULL};
    check_rejected(def,
                   (const struct kv[]){
                       {"upstream", .str = "a"}, {"forward_headers", .list = bad_name}, {NULL}},
                   "forward_headers/X Y: forward_headers: invalid header name \"X Y\"");
    static const char *const colon[] = {"X-User:ID", NULL};
    check_rejected(
        def, (const struct kv[]){{"upstream", .str = "a"}, {"copy_headers", .list = colon}, {NULL}},
        "copy_headers/X-User:ID: copy_headers: invalid header name");
    check_rejected(
        def,
        (const struct kv[]){{"upstream", .str = "a"}, {"consumer_header", .str = "X User"}, {NULL}},
        "consumer_header/-: consumer_header: invalid header name");
    static const char *const framing[] = {"Content-Length", NULL};
    check_rejected(
        def,
        (const struct kv[]){{"upstream", .str = "a"}, {"copy_headers", .list = framing}, {NULL}},
        "cannot be changed by a filter");
    check_rejected(
        def,
        (const struct kv[]){{"upstream", .str = "a"}, {"consumer_header", .str = "host"}, {NULL}},
        "cannot be changed by a filter");
    static const char *const hop[] = {"Upgrade", NULL};
    check_rejected(
        def, (const struct kv[]){{"upstream", .str = "a"}, {"copy_headers", .list = hop}, {NULL}},
        "hop-by-hop");
    static const char *const xff[] = {"x-forwarded-for", NULL};
    check_rejected(
        def,
        (const struct kv[]){{"upstream", .str = "a"}, {"forward_headers", .list = xff}, {NULL}},
        "forward_headers/x-forwarded-for: forward_headers: \"x-forwarded-for\" is "
        "set by the gateway");
    static const char *const rid[] = {"X-Request-ID", NULL};
    check_rejected(
        def, (const struct kv[]){{"upstream", .str = "a"}, {"copy_headers", .list = rid}, {NULL}},
        "is set by the gateway");
    /* every problem is reported */
    check_rejected(def, (const struct kv[]){{"on_error", .str = "x"}, {"path", .str = "x"}, {NULL}},
                   "upstream");
    CHECK_EQ_INT(nerrs, 3);

    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    CHECK(compile(def, full_conf, &gen) != NULL);
    CHECK(compile(def, (const struct kv[]){{"upstream", .str = "a"}, {NULL}}, &gen) != NULL);
    pt_arena_destroy(&gen);

    /* After the local auth filters (a request they refuse costs no call),
     * before acl, which reads the identity. */
    CHECK_EQ_INT(def->priority, 1240);
    CHECK(def->priority < pt_filter_key_auth.priority && def->priority > pt_filter_acl.priority);
    CHECK(def->auth);
    CHECK(pt_filter_find("ext_auth") == def);
}

int main(void)
{
    pt_log_min_level = PT_LOG_ERROR; /* ext_auth's failure warnings */
    test_fault_rolls();
    test_fault_header_trigger();
    test_fault_headers_removed();
    test_fault_compile();
    test_ext_auth_request();
    test_ext_auth_allow();
    test_ext_auth_deny();
    test_ext_auth_errors();
    test_ext_auth_compile();
    return unit_report("filters_async");
}
