/*
 * test_filters.c — the filter chain runner and registry, header-value
 * templates, and the request_transform / response_transform filters.
 *
 * Filter configs are built the way the generic loader builds them: a
 * zeroed def->config_size block, each YAML key written through the def's
 * field table (pt_strmap / pt_strlist at the field's offset), then the
 * def's compile hook.
 */
#include "filters/filter.h"
#include "filters/registry.h"
#include "filters/template.h"
#include "unit.h"

#include <stdint.h>

/* ------------------------------------------------------------------ */
/* Chain: fake filters that record what ran.                           */

static char trace[256]; /* "name,name,..." of hooks run, in order */
static void *seen_state[8];

static void trace_add(const char *what)
{
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof(trace) - n, "%s%s", n ? "," : "", what);
}

/* A fake filter's conf: its label and what its hook returns. The result
 * can change between calls to model a filter that suspends once. */
struct fake_conf {
    const char *label;
    int result;
    int slot; /* where to record the state pointer it was given */
};

static int fake_request(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    const struct fake_conf *fc = conf;
    trace_add(fc->label);
    seen_state[fc->slot] = state;
    return fc->result;
}

static int fake_head(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    const struct fake_conf *fc = conf;
    trace_add(fc->label);
    return fc->result;
}

static int fake_body(struct pt_filter_ctx *ctx, const void *conf, void *state, pt_slice *chunk,
                     bool eos)
{
    return PT_FILTER_CONTINUE;
}

static void fake_log(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    const struct fake_conf *fc = conf;
    trace_add(fc->label);
    seen_state[fc->slot] = state;
}

/* priority 200 "zeta": request + log, 24 bytes of state */
static const struct pt_filter_def def_zeta = {
    .name = "zeta",
    .priority = 200,
    .state_size = 24,
    .on_request = fake_request,
    .on_log = fake_log,
};
/* priority 100 "beta": request + response head */
static const struct pt_filter_def def_beta = {
    .name = "beta",
    .priority = 100,
    .on_request = fake_request,
    .on_response_head = fake_head,
};
/* priority 100 "alpha": request + response head + log, 1 byte of state */
static const struct pt_filter_def def_alpha = {
    .name = "alpha",
    .priority = 100,
    .state_size = 1,
    .on_request = fake_request,
    .on_response_head = fake_head,
    .on_log = fake_log,
};
/* priority 50 "aaa": response body + log, 100 bytes of state */
static const struct pt_filter_def def_aaa = {
    .name = "aaa",
    .priority = 50,
    .state_size = 100,
    .on_response_body = fake_body,
    .on_log = fake_log,
};
/* priority -10 "last": request only */
static const struct pt_filter_def def_last = {
    .name = "last",
    .priority = -10,
    .on_request = fake_request,
};

static struct fake_conf fc_zeta = {"zeta", PT_FILTER_CONTINUE, 0};
static struct fake_conf fc_beta = {"beta", PT_FILTER_CONTINUE, 1};
static struct fake_conf fc_alpha = {"alpha", PT_FILTER_CONTINUE, 2};
static struct fake_conf fc_aaa = {"aaa", PT_FILTER_CONTINUE, 3};
static struct fake_conf fc_last = {"last", PT_FILTER_CONTINUE, 4};

static void reset_fakes(void)
{
    trace[0] = '\0';
    memset(seen_state, 0, sizeof(seen_state));
    fc_zeta.result = fc_beta.result = fc_alpha.result = fc_aaa.result = fc_last.result =
        PT_FILTER_CONTINUE;
}

/* Builds the five fakes, listed deliberately out of order. */
static int build_fake_chain(struct pt_chain *c, struct pt_arena *a)
{
    struct pt_filter_inst inst[] = {
        {&def_aaa, &fc_aaa, 99},   {&def_beta, &fc_beta, 99},   {&def_last, &fc_last, 99},
        {&def_zeta, &fc_zeta, 99}, {&def_alpha, &fc_alpha, 99},
    };
    int rc = pt_chain_build(c, inst, 5, a);
    /* The chain copies: the caller's array is neither sorted nor renumbered. */
    CHECK(inst[0].def == &def_aaa && inst[4].def == &def_alpha && inst[0].state_index == 99);
    return rc;
}

static void names_of(char *out, size_t outlen, const struct pt_filter_inst *const *arr, uint32_t n)
{
    out[0] = '\0';
    for (uint32_t i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, outlen - l, "%s%s", i ? "," : "", arr[i]->def->name);
    }
}

static void test_chain_order_and_phases(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 0);
    struct pt_chain c;
    CHECK_EQ_INT(build_fake_chain(&c, &a), 0);

    char buf[128];
    /* all: priority descending, ties (beta/alpha at 100) by name */
    CHECK_EQ_INT(c.n_all, 5);
    const struct pt_filter_inst *allp[5];
    for (uint32_t i = 0; i < c.n_all; i++) {
        allp[i] = &c.all[i];
        CHECK_EQ_INT(c.all[i].state_index, i);
    }
    names_of(buf, sizeof(buf), allp, c.n_all);
    CHECK_STR(buf, "zeta,alpha,beta,aaa,last");

    names_of(buf, sizeof(buf), c.request, c.n_request);
    CHECK_STR(buf, "zeta,alpha,beta,last");
    names_of(buf, sizeof(buf), c.response_head, c.n_response_head);
    CHECK_STR(buf, "alpha,beta");
    names_of(buf, sizeof(buf), c.response_body, c.n_response_body);
    CHECK_STR(buf, "aaa");
    names_of(buf, sizeof(buf), c.log, c.n_log);
    CHECK_STR(buf, "zeta,alpha,aaa");

    /* Phase arrays point into `all`, so conf and state index travel along. */
    CHECK(c.request[0] == &c.all[0] && c.request[0]->conf == &fc_zeta);

    /* A phase nobody hooks is empty; an empty chain is all zeros. */
    struct pt_filter_inst only_last[] = {{&def_last, &fc_last, 0}};
    struct pt_chain c1;
    CHECK_EQ_INT(pt_chain_build(&c1, only_last, 1, &a), 0);
    CHECK(c1.n_response_head == 0 && c1.response_head == NULL && c1.n_log == 0);
    struct pt_chain c0;
    memset(&c0, 0xab, sizeof(c0));
    CHECK_EQ_INT(pt_chain_build(&c0, NULL, 0, &a), 0);
    CHECK(c0.n_all == 0 && c0.all == NULL && c0.request == NULL && c0.n_request == 0);
    uint32_t cur = 0;
    CHECK_EQ_INT(pt_chain_run_request(&c0, NULL, NULL, &cur), PT_FILTER_CONTINUE);
    CHECK_EQ_INT(pt_chain_run_response_head(&c0, NULL, NULL), PT_FILTER_CONTINUE);
    CHECK(pt_chain_states(&c0, &a) == NULL);

    pt_arena_destroy(&a);
}

static void test_chain_run(void)
{
    struct pt_arena a, req;
    pt_arena_init(&a, 0);
    pt_arena_init(&req, 0);
    struct pt_chain c;
    CHECK_EQ_INT(build_fake_chain(&c, &a), 0);
    struct pt_filter_ctx ctx = {.arena = &req};
    void **states = pt_chain_states(&c, &req);
    CHECK(states != NULL);

    /* All CONTINUE: every request filter runs once, cursor ends at n. */
    reset_fakes();
    uint32_t cur = 0;
    CHECK_EQ_INT(pt_chain_run_request(&c, &ctx, states, &cur), PT_FILTER_CONTINUE);
    CHECK_STR(trace, "zeta,alpha,beta,last");
    CHECK_EQ_INT(cur, c.n_request);

    /* SUSPEND: stops after alpha with the cursor past it; the resume runs
     * beta and last, never alpha again. */
    reset_fakes();
    fc_alpha.result = PT_FILTER_SUSPEND;
    cur = 0;
    CHECK_EQ_INT(pt_chain_run_request(&c, &ctx, states, &cur), PT_FILTER_SUSPEND);
    CHECK_STR(trace, "zeta,alpha");
    CHECK_EQ_INT(cur, 2);
    trace[0] = '\0';
    CHECK_EQ_INT(pt_chain_run_request(&c, &ctx, states, &cur), PT_FILTER_CONTINUE);
    CHECK_STR(trace, "beta,last");
    CHECK_EQ_INT(cur, 4);

    /* SUSPEND by the last filter: resume has nothing left to run. */
    reset_fakes();
    fc_last.result = PT_FILTER_SUSPEND;
    cur = 0;
    CHECK_EQ_INT(pt_chain_run_request(&c, &ctx, states, &cur), PT_FILTER_SUSPEND);
    CHECK_EQ_INT(cur, 4);
    trace[0] = '\0';
    CHECK_EQ_INT(pt_chain_run_request(&c, &ctx, states, &cur), PT_FILTER_CONTINUE);
    CHECK_STR(trace, "");

    /* RESPOND stops the chain; the cursor stays on the filter. */
    reset_fakes();
    fc_beta.result = PT_FILTER_RESPOND;
    cur = 0;
    CHECK_EQ_INT(pt_chain_run_request(&c, &ctx, states, &cur), PT_FILTER_RESPOND);
    CHECK_STR(trace, "zeta,alpha,beta");
    CHECK_EQ_INT(cur, 2);

    /* ERROR likewise; and a result outside the enum is an ERROR. */
    reset_fakes();
    fc_zeta.result = PT_FILTER_ERROR;
    cur = 0;
    CHECK_EQ_INT(pt_chain_run_request(&c, &ctx, states, &cur), PT_FILTER_ERROR);
    CHECK_STR(trace, "zeta");
    CHECK_EQ_INT(cur, 0);
    reset_fakes();
    fc_alpha.result = 42;
    cur = 0;
    CHECK_EQ_INT(pt_chain_run_request(&c, &ctx, states, &cur), PT_FILTER_ERROR);
    CHECK_STR(trace, "zeta,alpha");
    CHECK_EQ_INT(cur, 1);

    /* Response head: RESPOND stops; SUSPEND cannot be resumed → ERROR. */
    reset_fakes();
    CHECK_EQ_INT(pt_chain_run_response_head(&c, &ctx, states), PT_FILTER_CONTINUE);
    CHECK_STR(trace, "alpha,beta");
    reset_fakes();
    fc_alpha.result = PT_FILTER_RESPOND;
    CHECK_EQ_INT(pt_chain_run_response_head(&c, &ctx, states), PT_FILTER_RESPOND);
    CHECK_STR(trace, "alpha");
    reset_fakes();
    fc_alpha.result = PT_FILTER_SUSPEND;
    CHECK_EQ_INT(pt_chain_run_response_head(&c, &ctx, states), PT_FILTER_ERROR);

    /* Log: every log hook, in order. */
    reset_fakes();
    pt_chain_run_log(&c, &ctx, states);
    CHECK_STR(trace, "zeta,alpha,aaa");

    pt_arena_destroy(&req);
    pt_arena_destroy(&a);
}

static void test_chain_states(void)
{
    struct pt_arena a, req;
    pt_arena_init(&a, 0);
    pt_arena_init(&req, 256); /* small blocks: states must still fit */
    struct pt_chain c;
    CHECK_EQ_INT(build_fake_chain(&c, &a), 0);

    /* Dirty the arena first so "zeroed" is not luck. */
    memset(pt_arena_alloc(&req, 200), 0x5a, 200);
    pt_arena_reset(&req);

    void **s = pt_chain_states(&c, &req);
    CHECK(s != NULL);
    if (!s)
        return;
    /* run order: zeta(24) alpha(1) beta(0) aaa(100) last(0) */
    CHECK(s[0] && s[1] && !s[2] && s[3] && !s[4]);
    const size_t sizes[5] = {24, 1, 0, 100, 0};
    for (int i = 0; i < 5; i++) {
        if (!sizes[i])
            continue;
        CHECK_EQ_INT((uintptr_t)s[i] % 16, 0);
        bool zero = true;
        for (size_t k = 0; k < sizes[i]; k++)
            zero &= ((unsigned char *)s[i])[k] == 0;
        CHECK_MSG(zero, "state %d not zeroed", i);
        /* distinct, non-overlapping */
        for (int j = 0; j < 5; j++) {
            if (j == i || !sizes[j])
                continue;
            char *x = s[i], *y = s[j];
            CHECK_MSG(x + sizes[i] <= y || y + sizes[j] <= x, "states %d and %d overlap", i, j);
        }
    }
    /* Writing every state fully does not disturb the pointer array. */
    for (int i = 0; i < 5; i++)
        if (sizes[i])
            memset(s[i], 0xee, sizes[i]);
    CHECK(s[0] && s[1] && !s[2] && s[3] && !s[4]);

    /* Hooks get their own slot. */
    reset_fakes();
    struct pt_filter_ctx ctx = {.arena = &req};
    uint32_t cur = 0;
    pt_chain_run_request(&c, &ctx, s, &cur);
    CHECK(seen_state[0] == s[0]); /* zeta */
    CHECK(seen_state[2] == s[1]); /* alpha */
    CHECK(seen_state[1] == NULL); /* beta has no state */
    pt_chain_run_log(&c, &ctx, s);
    CHECK(seen_state[3] == s[3]); /* aaa */

    /* A second request's states are fresh and zeroed again. */
    void **s2 = pt_chain_states(&c, &req);
    CHECK(s2 && s2 != s && s2[0] != s[0] && ((unsigned char *)s2[0])[0] == 0);

    pt_arena_destroy(&req);
    pt_arena_destroy(&a);
}

static void test_registry(void)
{
    CHECK_EQ_INT(pt_filter_registry_len, 14);
    CHECK(pt_filter_find("aggregate") == &pt_filter_aggregate);
    CHECK(pt_filter_find("cors") == &pt_filter_cors);
    CHECK(pt_filter_find("cache") == &pt_filter_cache);
    CHECK(pt_filter_find("mtls_auth") == &pt_filter_mtls_auth);
    CHECK(pt_filter_find("key_auth") == &pt_filter_key_auth);
    CHECK(pt_filter_find("rate_limit") == &pt_filter_rate_limit);
    CHECK(pt_filter_find("acl") == &pt_filter_acl);
    CHECK(pt_filter_find("introspection") == &pt_filter_introspection);
    CHECK(pt_filter_find("jwt") == &pt_filter_jwt);
    CHECK(pt_filter_find("ip_restriction") == &pt_filter_ip_restriction);
    CHECK(pt_filter_find("jwt") == &pt_filter_jwt);
    CHECK(pt_filter_find("request_transform") == &pt_filter_request_transform);
    CHECK(pt_filter_find("response_transform") == &pt_filter_response_transform);
    CHECK(pt_filter_find("Request_Transform") == NULL); /* exact names */
    CHECK(pt_filter_find("request_transfor") == NULL);
    CHECK(pt_filter_find("nope") == NULL);
    CHECK(pt_filter_find(NULL) == NULL);
    for (size_t i = 0; i < pt_filter_registry_len; i++) {
        const struct pt_filter_def *d = pt_filter_registry[i];
        CHECK(d->name && d->fields && d->config_size > 0);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(d->name, pt_filter_registry[j]->name) != 0);
    }
    CHECK_EQ_INT(pt_filter_request_transform.priority, 800);
    CHECK(pt_filter_request_transform.on_request && !pt_filter_request_transform.on_response_head);
    CHECK(pt_filter_response_transform.on_response_head &&
          !pt_filter_response_transform.on_request);
}

/* ------------------------------------------------------------------ */
/* Templates.                                                          */

static const pt_slice param_names[] = {PT_SLICE("id"), PT_SLICE("org")};
static const pt_slice param_values[] = {PT_SLICE("42"), PT_SLICE("acme")};

static struct pt_filter_ctx make_ctx(struct pt_arena *req)
{
    return (struct pt_filter_ctx){
        .arena = req,
        .method = PT_SLICE("GET"),
        .path = PT_SLICE("/v1/orgs/acme/users/42"),
        .request_id = PT_SLICE("rid-0001"),
        .remote_addr = PT_SLICE("192.0.2.7"),
        .param_names = param_names,
        .param_values = param_values,
        .nparams = 2,
    };
}

/* Renders `src` and compares with `want`. */
static void check_render(struct pt_arena *gen, const struct pt_filter_ctx *ctx, const char *src,
                         const char *want)
{
    char err[256] = "";
    struct pt_template *t = NULL;
    int rc = pt_template_compile(&t, src, gen, err, sizeof(err));
    CHECK_MSG(rc == 0, "compile \"%s\": %s", src, err);
    if (rc)
        return;
    pt_slice v = pt_template_render(t, ctx);
    CHECK_MSG(v.p != NULL && v.len == strlen(want) && memcmp(v.p, want, v.len) == 0,
              "render \"%s\" = \"%.*s\", want \"%s\"", src, (int)v.len, v.p ? v.p : "", want);
}

static void check_compile_error(struct pt_arena *gen, const char *src, const char *want)
{
    char err[256] = "";
    struct pt_template *t = NULL;
    int rc = pt_template_compile(&t, src, gen, err, sizeof(err));
    CHECK_MSG(rc < 0, "\"%s\" compiled", src);
    CHECK_MSG(strstr(err, want) != NULL, "\"%s\": error \"%s\" lacks \"%s\"", src, err, want);
}

static void test_template(void)
{
    struct pt_arena gen, req;
    pt_arena_init(&gen, 0);
    pt_arena_init(&req, 0);
    struct pt_filter_ctx ctx = make_ctx(&req);

    check_render(&gen, &ctx, "portico", "portico");
    check_render(&gen, &ctx, "", "");
    check_render(&gen, &ctx, "${request_id}", "rid-0001");
    check_render(&gen, &ctx, "user-${path.id}@${path.org}", "user-42@acme");
    check_render(&gen, &ctx, "${method} ${path} from ${remote_addr}",
                 "GET /v1/orgs/acme/users/42 from 192.0.2.7");
    check_render(&gen, &ctx, "cost: $$5 ($${request_id})", "cost: $5 (${request_id})");
    check_render(&gen, &ctx, "$$$$", "$$");
    check_render(&gen, &ctx, "$${path.id}=${path.id}", "${path.id}=42");
    check_render(&gen, &ctx, "a $ b $", "a $ b $"); /* a lone $ is literal */
    check_render(&gen, &ctx, "[${path.missing}]", "[]");
    check_render(&gen, &ctx, "${path.missing}", "");
    check_render(&gen, &ctx, "${path.ID}", ""); /* parameter names are exact */

    /* Missing request data renders empty, not garbage. */
    struct pt_filter_ctx bare = {.arena = &req};
    check_render(&gen, &bare, "<${request_id}${remote_addr}${path.id}>", "<>");

    /* Constant templates render without allocating, to the same bytes. */
    struct pt_template *t;
    char err[256];
    CHECK_EQ_INT(pt_template_compile(&t, "X-$$-lit", &gen, err, sizeof(err)), 0);
    CHECK(pt_template_is_constant(t));
    void *probe = pt_arena_alloc(&req, 1);
    pt_slice v1 = pt_template_render(t, &ctx);
    pt_slice v2 = pt_template_render(t, &ctx);
    CHECK(v1.p == v2.p && v1.len == 7 && memcmp(v1.p, "X-$-lit", 7) == 0);
    CHECK(pt_arena_alloc(&req, 1) == (char *)probe + 16); /* nothing allocated in between */
    CHECK_EQ_INT(pt_template_compile(&t, "${path.id}", &gen, err, sizeof(err)), 0);
    CHECK(!pt_template_is_constant(t));

    /* The template owns its text: the source may go away after compile. */
    char src[] = "id=${path.id};rid=${request_id}";
    CHECK_EQ_INT(pt_template_compile(&t, src, &gen, err, sizeof(err)), 0);
    memset(src, 'Z', sizeof(src) - 1);
    pt_slice v = pt_template_render(t, &ctx);
    CHECK(v.len == strlen("id=42;rid=rid-0001") && memcmp(v.p, "id=42;rid=rid-0001", v.len) == 0);

    check_compile_error(&gen, "${foo}",
                        "unknown variable ${foo} (known: request_id, remote_addr, path.<param>, "
                        "method, path, consumer)");
    check_compile_error(&gen, "x ${Request_Id} y", "unknown variable ${Request_Id}");
    check_compile_error(&gen, "${}", "unknown variable ${}");
    check_compile_error(&gen, "${path.}", "empty parameter name");
    check_compile_error(&gen, "${request_id", "unterminated ${");
    check_compile_error(&gen, "ok ${path.id} ${", "unterminated ${");

    pt_arena_destroy(&req);
    pt_arena_destroy(&gen);
}

/* ------------------------------------------------------------------ */
/* Transforms: configs filled through the field table, as the loader.   */

struct kv {
    const char *k, *v;
};

static const struct pt_field *field_named(const struct pt_filter_def *def, const char *name)
{
    for (const struct pt_field *f = def->fields; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* Sets a PT_F_STRING_MAP or PT_F_TEMPLATE_MAP field from a
 * {NULL}-terminated kv list. */
static void set_map(const struct pt_filter_def *def, void *conf, const char *key,
                    const struct kv *kvs, struct pt_arena *a)
{
    const struct pt_field *f = field_named(def, key);
    bool map = f && (f->type == PT_F_STRING_MAP || f->type == PT_F_TEMPLATE_MAP);
    CHECK_MSG(map, "%s: no map field %s", def->name, key);
    if (!map)
        return;
    uint32_t n = 0;
    while (kvs[n].k)
        n++;
    struct pt_strmap *m = (struct pt_strmap *)((char *)conf + f->offset);
    m->keys = pt_arena_alloc(a, sizeof(char *) * n);
    m->values = pt_arena_alloc(a, sizeof(char *) * n);
    for (uint32_t i = 0; i < n; i++) {
        m->keys[i] = pt_arena_strdup(a, kvs[i].k);
        m->values[i] = kvs[i].v ? pt_arena_strdup(a, kvs[i].v) : NULL;
    }
    m->n = n;
}

/* Sets a PT_F_STRING_LIST field from a NULL-terminated list. */
static void set_list(const struct pt_filter_def *def, void *conf, const char *key,
                     const char *const *items, struct pt_arena *a)
{
    const struct pt_field *f = field_named(def, key);
    CHECK_MSG(f && f->type == PT_F_STRING_LIST, "%s: no list field %s", def->name, key);
    if (!f || f->type != PT_F_STRING_LIST)
        return;
    uint32_t n = 0;
    while (items[n])
        n++;
    struct pt_strlist *l = (struct pt_strlist *)((char *)conf + f->offset);
    l->v = pt_arena_alloc(a, sizeof(char *) * n);
    for (uint32_t i = 0; i < n; i++)
        l->v[i] = pt_arena_strdup(a, items[i]);
    l->n = n;
}

struct tcfg {
    const char *const *remove;
    const struct kv *rename, *set, *add;
};

/* Parses and compiles one transform config; returns the conf or NULL
 * (with the compile error in err). */
/* Keeps the first reported message (every one is counted). */
struct first_err {
    struct pt_filter_errs e;
    char *buf;
    size_t len;
    int count;
};

static void keep_first(struct pt_filter_errs *e, const char *field, const char *entry,
                       bool in_value, const char *msg)
{
    struct first_err *fe = (struct first_err *)e;
    if (fe->count++ == 0)
        snprintf(fe->buf, fe->len, "%s", msg);
}

static void *make_conf(const struct pt_filter_def *def, const struct tcfg *cfg,
                       struct pt_arena *gen, char *err, size_t errlen)
{
    void *conf = pt_arena_zalloc(gen, def->config_size);
    if (cfg->remove)
        set_list(def, conf, "remove_headers", cfg->remove, gen);
    if (cfg->rename)
        set_map(def, conf, "rename_headers", cfg->rename, gen);
    if (cfg->set)
        set_map(def, conf, "set_headers", cfg->set, gen);
    if (cfg->add)
        set_map(def, conf, "add_headers", cfg->add, gen);
    err[0] = '\0';
    struct first_err fe = {{keep_first, false}, err, errlen, 0};
    return def->compile(conf, gen, &fe.e) == 0 ? conf : NULL;
}

/* Header list from "Name: value" strings, as the parser would give it. */
static void make_headers(struct pt_headers *h, struct pt_arena *req, const char *const *lines)
{
    size_t n = 0;
    while (lines[n])
        n++;
    struct pt_h1_header *src = pt_arena_zalloc(req, sizeof(*src) * (n + 1));
    struct pt_hfield *storage = pt_arena_zalloc(req, sizeof(*storage) * (n + 1));
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(lines[i], ':');
        src[i].name = (pt_slice){lines[i], (size_t)(colon - lines[i])};
        src[i].value = (pt_slice){colon + 2, strlen(colon + 2)};
        src[i].token = pt_token_lookup(src[i].name.p, src[i].name.len);
    }
    /* capacity == n so that additions exercise growth into the arena */
    pt_headers_from_h1(h, storage, (uint32_t)n, src, n);
}

/* Live headers as "Name: value|Name: value". */
static const char *dump(const struct pt_headers *h)
{
    static char out[1024];
    out[0] = '\0';
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->f[i].dead)
            continue;
        size_t l = strlen(out);
        snprintf(out + l, sizeof(out) - l, "%s%.*s: %.*s", l ? "|" : "", (int)h->f[i].name.len,
                 h->f[i].name.p, (int)h->f[i].value.len, h->f[i].value.p);
    }
    return out;
}

static void test_request_transform(void)
{
    const struct pt_filter_def *def = &pt_filter_request_transform;
    struct pt_arena gen, req;
    pt_arena_init(&gen, 0);
    pt_arena_init(&req, 0);
    char err[512];
    struct pt_headers h, resp;

    /* Order of operations: remove, rename, set, add. Listed in the config
     * struct in another order on purpose; the filter decides. */
    {
        static const char *const rm[] = {"X-Secret", NULL};
        static const struct kv ren[] = {{"X-Legacy", "X-Secret"}, {"x-old", "X-New"}, {NULL, NULL}};
        static const struct kv set[] = {{"X-Mode", "strict"}, {"X-Added", "first"}, {NULL, NULL}};
        static const struct kv add[] = {
            {"X-Added", "second"}, {"X-Gateway", "portico"}, {NULL, NULL}};
        struct tcfg cfg = {rm, ren, set, add};
        void *conf = make_conf(def, &cfg, &gen, err, sizeof(err));
        CHECK_MSG(conf != NULL, "%s", err);
        static const char *const in[] = {"Host: api.example.com",
                                         "X-Secret: s3cr3t",
                                         "X-Legacy: kept",
                                         "X-OLD: 1",
                                         "X-Mode: lax",
                                         "X-Mode: lax2",
                                         NULL};
        make_headers(&h, &req, in);
        make_headers(&resp, &req, (const char *const[]){"Server: x", NULL});
        struct pt_filter_ctx ctx = make_ctx(&req);
        ctx.req_headers = &h;
        ctx.resp_headers = &resp;
        CHECK_EQ_INT(def->on_request(&ctx, conf, NULL), PT_FILTER_CONTINUE);
        /* X-Secret's own value is gone (removed before the rename), the
         * renamed X-Legacy carries its value; a renamed field moves to the
         * end (the field as it arrived is retired in place); set replaced
         * both X-Mode; add appended after set. */
        CHECK_STR(dump(&h), "Host: api.example.com|X-Mode: strict|X-Secret: kept|X-New: 1|"
                            "X-Added: first|X-Added: second|X-Gateway: portico");
        CHECK_STR(dump(&resp), "Server: x"); /* the request filter leaves responses alone */
    }

    /* A rename never resurrects a removed header. */
    {
        static const char *const rm[] = {"X-Old", NULL};
        static const struct kv ren[] = {{"X-Old", "X-New"}, {NULL, NULL}};
        struct tcfg cfg = {rm, ren, NULL, NULL};
        void *conf = make_conf(def, &cfg, &gen, err, sizeof(err));
        CHECK_MSG(conf != NULL, "%s", err);
        make_headers(&h, &req, (const char *const[]){"X-Old: v", "Accept: */*", NULL});
        struct pt_filter_ctx ctx = make_ctx(&req);
        ctx.req_headers = &h;
        CHECK_EQ_INT(def->on_request(&ctx, conf, NULL), PT_FILTER_CONTINUE);
        CHECK_STR(dump(&h), "Accept: */*");
    }

    /* Case-insensitive names, for interned and unknown headers alike. */
    {
        static const char *const rm[] = {"x-internal-debug", "USER-AGENT", NULL};
        static const struct kv set[] = {
            {"content-type", "application/json"}, {"x-tenant", "t1"}, {NULL, NULL}};
        struct tcfg cfg = {rm, NULL, set, NULL};
        void *conf = make_conf(def, &cfg, &gen, err, sizeof(err));
        CHECK_MSG(conf != NULL, "%s", err);
        make_headers(&h, &req,
                     (const char *const[]){"X-Internal-Debug: 1", "User-Agent: curl",
                                           "Content-Type: text/plain", "X-TENANT: t0",
                                           "X-Internal-DEBUG: 2", NULL});
        struct pt_filter_ctx ctx = make_ctx(&req);
        ctx.req_headers = &h;
        CHECK_EQ_INT(def->on_request(&ctx, conf, NULL), PT_FILTER_CONTINUE);
        CHECK_STR(dump(&h), "Content-Type: application/json|X-TENANT: t1");
    }

    /* Templated values, rendered per request. */
    {
        static const struct kv set[] = {{"X-User-ID", "${path.id}"}, {NULL, NULL}};
        static const struct kv add[] = {{"X-Request-ID", "${request_id}"},
                                        {"X-Forwarded-Route", "${method} ${path}"},
                                        {"X-Price", "$$${path.id}"},
                                        {"X-Nothing", "${path.nope}"},
                                        {NULL, NULL}};
        struct tcfg cfg = {NULL, NULL, set, add};
        void *conf = make_conf(def, &cfg, &gen, err, sizeof(err));
        CHECK_MSG(conf != NULL, "%s", err);
        make_headers(&h, &req, (const char *const[]){"X-User-ID: spoofed", NULL});
        struct pt_filter_ctx ctx = make_ctx(&req);
        ctx.req_headers = &h;
        CHECK_EQ_INT(def->on_request(&ctx, conf, NULL), PT_FILTER_CONTINUE);
        CHECK_STR(dump(&h), "X-User-ID: 42|X-Request-ID: rid-0001|"
                            "X-Forwarded-Route: GET /v1/orgs/acme/users/42|X-Price: $42|"
                            "X-Nothing: ");

        /* Request data that would split the message is refused. */
        make_headers(&h, &req, (const char *const[]){"Accept: */*", NULL});
        ctx.req_headers = &h;
        static const pt_slice evil[] = {PT_SLICE("42\r\nX-Injected: 1"), PT_SLICE("acme")};
        ctx.param_values = evil;
        CHECK_EQ_INT(def->on_request(&ctx, conf, NULL), PT_FILTER_ERROR);
        CHECK(strstr(dump(&h), "X-Injected") == NULL);
    }

    /* An empty config compiles and does nothing. */
    {
        struct tcfg cfg = {NULL, NULL, NULL, NULL};
        void *conf = make_conf(def, &cfg, &gen, err, sizeof(err));
        CHECK_MSG(conf != NULL, "%s", err);
        make_headers(&h, &req, (const char *const[]){"Accept: */*", NULL});
        struct pt_filter_ctx ctx = make_ctx(&req);
        ctx.req_headers = &h;
        CHECK_EQ_INT(def->on_request(&ctx, conf, NULL), PT_FILTER_CONTINUE);
        CHECK_STR(dump(&h), "Accept: */*");
    }

    pt_arena_destroy(&req);
    pt_arena_destroy(&gen);
}

/* Expects compile to fail with every `wants` substring in the message. */
static void check_rejected(const struct pt_filter_def *def, const struct tcfg *cfg,
                           struct pt_arena *gen, const char *want1, const char *want2)
{
    char err[512];
    void *conf = make_conf(def, cfg, gen, err, sizeof(err));
    CHECK_MSG(conf == NULL, "%s: config accepted (want \"%s\")", def->name, want1);
    CHECK_MSG(strstr(err, want1) != NULL, "error \"%s\" lacks \"%s\"", err, want1);
    if (want2)
        CHECK_MSG(strstr(err, want2) != NULL, "error \"%s\" lacks \"%s\"", err, want2);
}

static void test_transform_rejects(const struct pt_filter_def *def)
{
    struct pt_arena gen;
    pt_arena_init(&gen, 0);

#define KV1(k, v) ((const struct kv[]){{k, v}, {NULL, NULL}})
#define L1(x) ((const char *const[]){x, NULL})
    /* bad names */
    check_rejected(def, &(struct tcfg){.set = KV1("X Foo", "v")}, &gen, "set_headers",
                   "invalid header name \"X Foo\"");
    check_rejected(def, &(struct tcfg){.add = KV1("X-Foo:", "v")}, &gen, "add_headers",
                   "':' is not allowed");
    check_rejected(def, &(struct tcfg){.add = KV1("X-Caf\xc3\xa9", "v")}, &gen,
                   "invalid header name", "byte 0xc3");
    check_rejected(def, &(struct tcfg){.remove = L1("")}, &gen, "remove_headers",
                   "empty header name");
    check_rejected(def, &(struct tcfg){.rename = KV1("X-A", "X(B)")}, &gen, "rename_headers",
                   "'(' is not allowed");
    check_rejected(def, &(struct tcfg){.rename = KV1("X/A", "X-B")}, &gen, "rename_headers",
                   "'/' is not allowed");
    /* framing headers, in any case, through every operation and side */
    check_rejected(def, &(struct tcfg){.set = KV1("Host", "evil.example")}, &gen,
                   "header \"Host\" cannot be changed", "managed by the gateway");
    check_rejected(def, &(struct tcfg){.add = KV1("content-length", "0")}, &gen, "add_headers",
                   "\"content-length\" cannot be changed");
    check_rejected(def, &(struct tcfg){.remove = L1("Transfer-Encoding")}, &gen, "remove_headers",
                   "cannot be changed");
    check_rejected(def, &(struct tcfg){.remove = L1("CONNECTION")}, &gen, "remove_headers",
                   "cannot be changed");
    check_rejected(def, &(struct tcfg){.rename = KV1("X-Len", "Content-Length")}, &gen,
                   "rename_headers", "cannot be changed");
    check_rejected(def, &(struct tcfg){.rename = KV1("Host", "X-Original-Host")}, &gen,
                   "rename_headers", "cannot be changed");
    /* bad values */
    check_rejected(def, &(struct tcfg){.set = KV1("X-A", "a\r\nX-B: b")}, &gen, "set_headers",
                   "control character");
    check_rejected(def, &(struct tcfg){.add = KV1("X-A", "a\nb")}, &gen, "add_headers",
                   "control character");
    check_rejected(def, &(struct tcfg){.add = KV1("X-A", NULL)}, &gen, "add_headers",
                   "has no value");
    check_rejected(def, &(struct tcfg){.set = KV1("X-A", "${foo}")}, &gen,
                   "set_headers: value of header \"X-A\": unknown variable ${foo}",
                   "(known: request_id, remote_addr, path.<param>, method, path, consumer)");
    /* one bad entry among good ones still fails the whole config */
    check_rejected(
        def,
        &(struct tcfg){.remove = L1("X-Fine"),
                       .set = (const struct kv[]){{"X-Ok", "1"}, {"Host", "h"}, {NULL, NULL}}},
        &gen, "\"Host\"", NULL);
#undef KV1
#undef L1

    /* Values may hold tabs, spaces and UTF-8 (obs-text). */
    char err[256];
    CHECK(make_conf(
              def,
              &(struct tcfg){.set = (const struct kv[]){{"X-A", "a\tb c \xc3\xa9"}, {NULL, NULL}}},
              &gen, err, sizeof(err)) != NULL);
    pt_arena_destroy(&gen);
}

static void test_response_transform(void)
{
    const struct pt_filter_def *def = &pt_filter_response_transform;
    CHECK_STR(def->name, "response_transform");
    /* Same field table as request_transform: header and body rules. */
    const char *keys[] = {"add_headers",     "set_headers",        "remove_headers",
                          "rename_headers",  "rename_body_fields", "remove_body_fields",
                          "add_body_fields", "max_transform_bytes"};
    size_t nfields = 0;
    for (const struct pt_field *f = def->fields; f->name; f++)
        nfields++;
    CHECK_EQ_INT(nfields, 8);
    for (size_t i = 0; i < 8; i++)
        CHECK_MSG(field_named(def, keys[i]) != NULL, "no field %s", keys[i]);
    CHECK(def->fields == pt_filter_request_transform.fields);

    struct pt_arena gen, req;
    pt_arena_init(&gen, 0);
    pt_arena_init(&req, 0);
    char err[512];
    static const char *const rm[] = {"server", "X-Powered-By", NULL};
    static const struct kv ren[] = {{"X-Upstream-Time", "X-Backend-Time"}, {NULL, NULL}};
    static const struct kv set[] = {
        {"X-Request-ID", "${request_id}"}, {"Cache-Control", "no-store"}, {NULL, NULL}};
    static const struct kv add[] = {{"Vary", "Origin"}, {NULL, NULL}};
    struct tcfg cfg = {rm, ren, set, add};
    void *conf = make_conf(def, &cfg, &gen, err, sizeof(err));
    CHECK_MSG(conf != NULL, "%s", err);

    struct pt_headers reqh, resp;
    make_headers(&reqh, &req, (const char *const[]){"Server: client-side", NULL});
    make_headers(&resp, &req,
                 (const char *const[]){"Server: nginx", "Content-Length: 12", "X-Powered-By: PHP",
                                       "Cache-Control: max-age=60", "X-Upstream-Time: 3ms",
                                       "Vary: Accept", NULL});
    struct pt_filter_ctx ctx = make_ctx(&req);
    ctx.req_headers = &reqh;
    ctx.resp_headers = &resp;
    ctx.status = 200;
    CHECK_EQ_INT(def->on_response_head(&ctx, conf, NULL), PT_FILTER_CONTINUE);
    CHECK_STR(dump(&resp), "Content-Length: 12|Cache-Control: no-store|Vary: Accept|"
                           "X-Backend-Time: 3ms|X-Request-ID: rid-0001|Vary: Origin");
    CHECK_STR(dump(&reqh), "Server: client-side");

    /* Through a chain, the response filter runs in the response-head phase only. */
    struct pt_filter_inst inst[] = {{&pt_filter_response_transform, conf, 0},
                                    {&pt_filter_request_transform, conf, 0}};
    struct pt_chain c;
    CHECK_EQ_INT(pt_chain_build(&c, inst, 2, &gen), 0);
    CHECK(c.n_request == 1 && c.request[0]->def == &pt_filter_request_transform);
    CHECK(c.n_response_head == 1 && c.response_head[0]->def == &pt_filter_response_transform);
    /* equal priority 800: ties broken by name */
    CHECK(c.all[0].def == &pt_filter_request_transform);
    void **states = pt_chain_states(&c, &req);
    /* response_transform keeps per-request state for body rules */
    CHECK(states && !states[0] && states[1]);
    /* header rules only: no body phase at all (zero cost) */
    CHECK(c.n_response_body == 0 && c.n_request_body == 0);
    make_headers(&resp, &req, (const char *const[]){"Server: nginx", NULL});
    CHECK_EQ_INT(pt_chain_run_response_head(&c, &ctx, states), PT_FILTER_CONTINUE);
    CHECK_STR(dump(&resp), "X-Request-ID: rid-0001|Cache-Control: no-store|Vary: Origin");

    pt_arena_destroy(&req);
    pt_arena_destroy(&gen);
}

int main(void)
{
    test_chain_order_and_phases();
    test_chain_run();
    test_chain_states();
    test_registry();
    test_template();
    test_request_transform();
    test_transform_rejects(&pt_filter_request_transform);
    test_transform_rejects(&pt_filter_response_transform);
    test_response_transform();
    return unit_report("filters");
}
