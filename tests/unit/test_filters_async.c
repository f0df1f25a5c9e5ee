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

static const struct pt_filter_services fake_svc = {fake_timer, fake_call, fake_now, fake_random};

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
    struct pt_filter_errs e = {collect};
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

static void test_fault_delay(void)
{
    const struct pt_filter_def *def = &pt_filter_fault;
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    struct run r;

    /* delay without percent: every request, suspended on the timer. */
    const struct kv always[] = {{"delay.duration", .num = 200}, {NULL}};
    const void *conf = compile(def, always, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    fake_reset();
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_SUSPEND);
    CHECK_EQ_INT(fake.ntimer, 1);
    CHECK_EQ_INT(fake.timer_ms, 200);
    /* The gateway's deadline never cuts the delay short. */
    CHECK_MSG(r.ctx.suspend_deadline_ms >= 200 + 500, "deadline %llu",
              (unsigned long long)r.ctx.suspend_deadline_ms);
    CHECK_EQ_INT(fake.nresume, 0); /* nothing resumes before the timer */
    fire_timer(&r);
    CHECK_EQ_INT(fake.nresume, 1);
    CHECK_EQ_INT(fake.resumed, PT_FILTER_CONTINUE);
    run_done(&r);

    /* percent 10: a roll above 10% misses, one below hits. */
    const struct kv some[] = {
        {"delay.duration", .num = 300}, {"delay.percent", .str = "10"}, {NULL}};
    conf = compile(def, some, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    fake_reset();
    fake_rolls(ROLL_HALF, ROLL_HALF);
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_CONTINUE);
    CHECK_EQ_INT(fake.ntimer, 0);
    CHECK_EQ_INT(fake.nrandom, 1);
    run_done(&r);
    fake_reset();
    fake_rolls(ROLL_HIT, ROLL_HIT);
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_SUSPEND);
    CHECK_EQ_INT(fake.timer_ms, 300);
    run_done(&r);

    /* percent 0 never delays; "60%" hits a half roll. */
    const struct kv none[] = {
        {"delay.duration", .num = 300}, {"delay.percent", .str = "0"}, {NULL}};
    conf = compile(def, none, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    fake_reset();
    fake_rolls(ROLL_HIT, ROLL_HIT);
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_CONTINUE);
    CHECK_EQ_INT(fake.ntimer, 0);
    run_done(&r);
    const struct kv pct[] = {
        {"delay.duration", .num = 300}, {"delay.percent", .str = "60%"}, {NULL}};
    conf = compile(def, pct, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    fake_reset();
    fake_rolls(ROLL_HALF, ROLL_HALF);
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_SUSPEND);
    run_done(&r);

    /* A timer that cannot be armed skips the delay instead of failing. */
    conf = compile(def, always, &gen);
    fake_reset();
    fake.timer_rc = -ENOMEM;
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_CONTINUE);
    CHECK_EQ_INT(fake.ntimer, 1);
    run_done(&r);

    pt_arena_destroy(&gen);
}

static void test_fault_abort(void)
{
    const struct pt_filter_def *def = &pt_filter_fault;
    struct pt_arena gen;
    pt_arena_init(&gen, 0);
    struct run r;

    /* percent 100 (the default): answered at once, standard error body. */
    const struct kv always[] = {{"abort.status", .num = 503}, {NULL}};
    const void *conf = compile(def, always, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    fake_reset();
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 503);
    CHECK(r.ctx.respond_body.len == 0);
    CHECK_EQ_INT(fake.ntimer, 0);
    run_done(&r);

    /* percent 0: never. */
    const struct kv never[] = {{"abort.status", .num = 503}, {"abort.percent", .str = "0"}, {NULL}};
    conf = compile(def, never, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    fake_reset();
    fake_rolls(ROLL_HIT, ROLL_HIT);
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_CONTINUE);
    CHECK_EQ_INT(r.ctx.respond_status, 0);
    run_done(&r);

    /* delay then abort, each rolled on its own: delay first. */
    const struct kv both[] = {{"delay.duration", .num = 100},
                              {"delay.percent", .str = "50"},
                              {"abort.status", .num = 429},
                              {"abort.percent", .str = "50"},
                              {NULL}};
    conf = compile(def, both, &gen);
    CHECK_MSG(conf != NULL, "%s", errbuf);
    /* both hit: suspended, then the abort once the delay is over */
    fake_reset();
    fake_rolls(ROLL_HIT, ROLL_HIT);
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_SUSPEND);
    CHECK_EQ_INT(r.ctx.respond_status, 0); /* not answered yet */
    fire_timer(&r);
    CHECK_EQ_INT(fake.resumed, PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 429);
    CHECK(r.ctx.respond_body.len == 0);
    run_done(&r);
    /* delay misses, abort hits: answered at once */
    fake_reset();
    fake_rolls(ROLL_MISS, ROLL_HIT);
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 429);
    CHECK_EQ_INT(fake.ntimer, 0);
    CHECK_EQ_INT(fake.nrandom, 2);
    run_done(&r);
    /* delay hits, abort misses: delayed, then on upstream */
    fake_reset();
    fake_rolls(ROLL_HIT, ROLL_MISS);
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_SUSPEND);
    fire_timer(&r);
    CHECK_EQ_INT(fake.resumed, PT_FILTER_CONTINUE);
    run_done(&r);
    /* a delay that cannot be armed still aborts */
    fake_reset();
    fake_rolls(ROLL_HIT, ROLL_HIT);
    fake.timer_rc = -ENOMEM;
    run_request(&r, def, conf, NULL);
    CHECK_EQ_INT(r.rc, PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 429);
    run_done(&r);

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

int main(void)
{
    pt_log_min_level = PT_LOG_ERROR; /* ext_auth's failure warnings */
    test_fault_delay();
    test_fault_abort();
    test_fault_header_trigger();
    test_fault_headers_removed();
    test_fault_compile();
    return unit_report("filters_async");
}
