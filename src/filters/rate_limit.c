/*
 * rate_limit.c — the rate_limit filter: its config, each request's keys,
 * the local decision over the process's cell table (rl_table.h), and the
 * answers: 429 with Retry-After, and the RateLimit-* fields on every
 * response of the route (rate_limit_int.h shows the config).
 *
 * Keys. A limit's key is one part or a list of parts: `consumer` (the
 * identity an auth filter set), `ip` (the real client address), `route`,
 * `header:NAME` (the first live field's whole value) and `jwt:CLAIM` (a
 * claim of the token the jwt filter verified). A part with no value is
 * the empty value: the request is limited under it, never let through.
 * The parts are percent-escaped (':' '%' and bytes outside 0x21..0x7e)
 * and joined by ':', so no two different requests share a text; the
 * local cell is the keyed hash of {route, limit id, text}, the cluster
 * key the same three in the clear.
 *
 * Decision. Every limit of the route is checked before any is charged
 * (pt_rl_table_take); a refusal costs nothing anywhere. GCRA reads the
 * monotonic clock and sliding windows the UTC clock, both fresh for each
 * request (not the loop's cached time: workers decide one after another
 * on the same cells, and a stale clock would shift charges between them).
 *
 * Priority 1000: after authentication and acl (registry.h), so a request
 * refused there costs no quota and `consumer` is known.
 *
 * Ownership: the compiled config is in the generation arena; the table
 * is the runtime's (ctx->rl_table). Per request: the state, the key texts
 * and the header values, in the request arena.
 */
#include "filters/rate_limit_int.h"
#include "filters/jose.h"
#include "filters/registry.h"
#include "filters/template.h"
#include "core/units.h"
#include "http/tokens.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define RL_DEFAULT_STORE_TIMEOUT_MS 50
#define RL_MAX_STORE_TIMEOUT_MS 10000
#define RL_MAX_NAME 64
/* scope: cluster, gcra: the script's interval T = period / N is whole
 * µs, rounded down; from 100 µs up that admits at most 1 % above the
 * rate (exact when period / N is a whole number of µs). */
#define RL_CLUSTER_MIN_INTERVAL_US 100

static const struct pt_field limit_fields[] = {
    {"name", PT_F_STRING, offsetof(struct rl_limit, name), NULL},
    {"key", PT_F_STRING_LIST, offsetof(struct rl_limit, key), NULL},
    {"rate", PT_F_STRING, offsetof(struct rl_limit, rate), NULL},
    {"burst", PT_F_INT, offsetof(struct rl_limit, burst), NULL},
    {"algorithm", PT_F_STRING, offsetof(struct rl_limit, algorithm), NULL},
    {NULL, 0, sizeof(struct rl_limit), NULL}, /* the item size (PT_F_OBJECT_LIST) */
};

static const struct pt_field rl_fields[] = {
    {"limits", PT_F_OBJECT_LIST, offsetof(struct rl_conf, limits), limit_fields},
    {"scope", PT_F_STRING, offsetof(struct rl_conf, scope), NULL},
    {"on_store_failure", PT_F_STRING, offsetof(struct rl_conf, on_store_failure), NULL},
    {"store_timeout", PT_F_STRING, offsetof(struct rl_conf, store_timeout), NULL},
    {"headers", PT_F_STRING, offsetof(struct rl_conf, headers), NULL},
    {NULL, 0, 0, NULL},
};

/* ---- keys ---- */

static bool needs_escape(unsigned char c)
{
    return c < 0x21 || c > 0x7e || c == ':' || c == '%';
}

/* Appends part `v`, escaped, to out at *n (out has room for 3 × len). */
static void put_escaped(char *out, size_t *n, pt_slice v)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (needs_escape(c)) {
            out[(*n)++] = '%';
            out[(*n)++] = hex[c >> 4];
            out[(*n)++] = hex[c & 15];
        } else {
            out[(*n)++] = (char)c;
        }
    }
}

/* The first live field's value: a field an earlier filter removed (the
 * client's X-Consumer-*, a hidden credential) is not the request's any
 * more. */
static pt_slice header_value(struct pt_filter_ctx *ctx, const struct rl_keypart *kp)
{
    if (kp->token != PT_TOK_UNKNOWN) {
        const struct pt_hfield *f = pt_headers_find_token(ctx->req_headers, kp->token);
        return f ? f->value : (pt_slice){"", 0};
    }
    const struct pt_headers *h = ctx->req_headers;
    for (uint32_t i = 0; i < h->n; i++)
        if (!h->f[i].dead && pt_slice_ieq(h->f[i].name, kp->name))
            return h->f[i].value;
    return (pt_slice){"", 0};
}

/* One part's value, unescaped; {NULL, 0} is the empty value, or (jwt)
 * out of memory. */
static pt_slice part_value(struct pt_filter_ctx *ctx, const struct rl_keypart *kp)
{
    const struct pt_identity *id = ctx->identity;
    switch (kp->kind) {
    case RLK_CONSUMER:
        return id ? id->consumer : (pt_slice){"", 0};
    case RLK_IP:
        return ctx->remote_addr;
    case RLK_ROUTE:
        return (pt_slice){ctx->route_name ? ctx->route_name : "",
                          ctx->route_name ? strlen(ctx->route_name) : 0};
    case RLK_HEADER:
        return header_value(ctx, kp);
    case RLK_JWT:
        if (!id || !id->token_claims.len)
            return (pt_slice){"", 0};
        return pt_jwt_claim_string(ctx->arena, id->token_claims, kp->name.p);
    }
    return (pt_slice){"", 0};
}

int pt_rl_key_text(struct pt_arena *a, const pt_slice *vals, uint32_t n, pt_slice *out)
{
    size_t cap = n;
    bool plain = n == 1;
    for (uint32_t i = 0; i < n; i++) {
        cap += vals[i].len * 3;
        for (size_t k = 0; plain && k < vals[i].len; k++)
            plain = !needs_escape((unsigned char)vals[i].p[k]);
    }
    if (plain) { /* the common case: one part with nothing to escape */
        *out = vals[0].len ? vals[0] : (pt_slice){"", 0};
        return 0;
    }
    char *buf = pt_arena_alloc(a, cap + 1);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            buf[len++] = ':';
        put_escaped(buf, &len, vals[i]);
    }
    buf[len] = 0;
    *out = (pt_slice){buf, len};
    return 0;
}

/* Every limit's key text into st->values. -ENOMEM. */
static int key_values(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st)
{
    for (uint32_t i = 0; i < conf->nlim; i++) {
        const struct rl_limit *l = &conf->lim[i];
        if (l->same_key_as >= 0) {
            st->values[i] = st->values[l->same_key_as];
            continue;
        }
        pt_slice vals[PT_RL_MAX_LIMITS];
        for (uint32_t k = 0; k < l->nparts; k++) {
            vals[k] = part_value(ctx, &l->parts[k]);
            if (!vals[k].p && l->parts[k].kind == RLK_JWT)
                return -ENOMEM;
            if (!vals[k].p) /* an empty slice without bytes: the empty value */
                vals[k] = (pt_slice){"", 0};
        }
        if (pt_rl_key_text(ctx->arena, vals, l->nparts, &st->values[i]) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* ---- the decision ---- */

int pt_rl_local_take(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st)
{
    const struct pt_rl_params *lims[PT_RL_MAX_LIMITS];
    uint64_t keys[PT_RL_MAX_LIMITS];
    const char *route = ctx->route_name ? ctx->route_name : "";
    size_t rlen = strlen(route);
    for (uint32_t i = 0; i < conf->nlim; i++) {
        const struct rl_limit *l = &conf->lim[i];
        pt_slice parts[3] = {{route, rlen}, l->id, st->values[i]};
        lims[i] = &l->params;
        keys[i] = pt_rl_key(ctx->rl_table, parts, 3);
    }
    uint64_t wall_ms = 0; /* no sliding window: GCRA needs only the monotonic clock */
    if (conf->needs_wall) {
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        wall_ms = (uint64_t)wall.tv_sec * 1000u + (uint64_t)wall.tv_nsec / 1000000u;
    }
    bool ok =
        pt_rl_table_take(ctx->rl_table, lims, keys, conf->nlim, pt_now_ns(), wall_ms, st->res);
    if (ok && !st->outcome)
        for (uint32_t i = 0; i < conf->nlim; i++)
            if (st->res[i].no_cell)
                st->outcome = "fail_open";
    return pt_rl_finish(ctx, conf, st, ok);
}

static uint64_t ceil_s(uint64_t ms)
{
    return ms / 1000u + (ms % 1000u != 0);
}

/* The limit the RateLimit-* fields describe: the most restrictive one
 * (the fewest remaining, then the longest reset); on a refusal, only a
 * refusing limit (the longest retry, then the longest reset), so the
 * fields agree with the 429. */
static uint32_t most_restrictive(const struct rl_conf *conf, const struct rl_state *st,
                                 bool admitted)
{
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < conf->nlim; i++) {
        const struct pt_rl_result *a = &st->res[i];
        if (!admitted && a->admitted)
            continue;
        if (best == UINT32_MAX) {
            best = i;
            continue;
        }
        const struct pt_rl_result *b = &st->res[best];
        bool better = admitted ? a->remaining < b->remaining ||
                                     (a->remaining == b->remaining && a->reset_ms > b->reset_ms)
                               : a->retry_ms > b->retry_ms ||
                                     (a->retry_ms == b->retry_ms && a->reset_ms > b->reset_ms);
        if (better)
            best = i;
    }
    return best == UINT32_MAX ? 0 : best;
}

/* v in decimal at p (room for 20 digits); returns the length. */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

static const pt_slice hdr_names[3] = {
    PT_SLICE("RateLimit-Limit"),
    PT_SLICE("RateLimit-Remaining"),
    PT_SLICE("RateLimit-Reset"),
};

/* The RateLimit-* fields into ctx->resp_headers, replacing any there: one
 * pass drops every RateLimit-* field (an upstream's, or the copies a
 * gateway answer got), then the four are appended. On the request path
 * the list is usually empty and the pass costs nothing. */
static int put_headers(struct pt_filter_ctx *ctx, const struct rl_conf *conf,
                       const struct rl_state *st)
{
    struct pt_headers *h = ctx->resp_headers;
    if (h->n)
        pt_headers_remove_prefix(h, PT_SLICE("RateLimit-"));
    for (int i = 0; i < 3; i++)
        if (pt_headers_add(h, ctx->arena, hdr_names[i], st->hdr[i]) < 0)
            return -ENOMEM;
    if (pt_headers_add(h, ctx->arena, PT_SLICE("RateLimit-Policy"), conf->policy) < 0)
        return -ENOMEM;
    return 0;
}

int pt_rl_finish(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st,
                 bool admitted)
{
    if (!st->outcome)
        st->outcome = admitted ? "admitted" : "refused";
    pt_filter_note(ctx, "rate_limit", st->outcome);
    st->decided = true;
    if (conf->send_headers) {
        const struct pt_rl_result *r = &st->res[most_restrictive(conf, st, admitted)];
        char *buf = pt_arena_alloc(ctx->arena, 60); /* three numbers of ≤ 20 digits */
        if (buf) {
            st->hdr[0] = (pt_slice){buf, put_u64(buf, r->limit)};
            st->hdr[1] = (pt_slice){buf + 20, put_u64(buf + 20, r->remaining)};
            st->hdr[2] = (pt_slice){buf + 40, put_u64(buf + 40, ceil_s(r->reset_ms))};
        }
        if (!buf || put_headers(ctx, conf, st) < 0) {
            st->decided = false;
            return PT_FILTER_ERROR;
        }
    }
    if (admitted)
        return PT_FILTER_CONTINUE;
    uint64_t retry_ms = 0;
    for (uint32_t i = 0; i < conf->nlim; i++)
        if (!st->res[i].admitted && st->res[i].retry_ms > retry_ms)
            retry_ms = st->res[i].retry_ms;
    uint64_t retry_s = ceil_s(retry_ms);
    char *ra = pt_arena_alloc(ctx->arena, 20);
    if (!ra || pt_headers_set(ctx->resp_headers, ctx->arena, PT_SLICE("Retry-After"),
                              (pt_slice){ra, put_u64(ra, retry_s ? retry_s : 1)}) < 0)
        return PT_FILTER_ERROR;
    ctx->respond_status = 429;
    ctx->respond_error = "rate limit exceeded";
    return PT_FILTER_RESPOND;
}

/* ---- hooks ---- */

static int rl_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state)
{
    const struct rl_conf *conf = conf_;
    struct rl_state *st = state;
    st->values = pt_arena_alloc(ctx->arena, conf->nlim * sizeof(*st->values));
    st->res = pt_arena_zalloc(ctx->arena, conf->nlim * sizeof(*st->res));
    if (!st->values || !st->res || key_values(ctx, conf, st) < 0)
        return PT_FILTER_ERROR;
    if (conf->cluster)
        return pt_rl_cluster_take(ctx, conf, st);
    return pt_rl_local_take(ctx, conf, st);
}

/* The upstream's answer: the same fields, replacing any it sent. */
static int rl_on_response_head(struct pt_filter_ctx *ctx, const void *conf_, void *state)
{
    const struct rl_conf *conf = conf_;
    const struct rl_state *st = state;
    if (!st->decided || !conf->send_headers)
        return PT_FILTER_CONTINUE;
    return put_headers(ctx, conf, st) < 0 ? PT_FILTER_ERROR : PT_FILTER_CONTINUE;
}

static bool rl_hides_interim_field(const void *conf_, pt_slice name)
{
    const struct rl_conf *conf = conf_;
    if (!conf->send_headers)
        return false;
    for (int i = 0; i < 3; i++)
        if (pt_slice_ieq(name, hdr_names[i]))
            return true;
    return pt_slice_ieq(name, PT_SLICE("RateLimit-Policy"));
}

/* ---- compile ---- */

/* The reporting context of one limit: "#<position>" paths (filter.h). */
struct lim_where {
    struct pt_filter_errs *errs;
    uint32_t pos; /* 1-based */
    char path[48];
};

static const char *at(struct lim_where *w, const char *key)
{
    if (key)
        snprintf(w->path, sizeof(w->path), "#%u.%s", w->pos, key);
    else
        snprintf(w->path, sizeof(w->path), "#%u", w->pos);
    return w->path;
}

static const char *at_part(struct lim_where *w, uint32_t k)
{
    snprintf(w->path, sizeof(w->path), "#%u.key#%u", w->pos, k + 1);
    return w->path;
}

/* One key part's text: "consumer", "header:X-User", "jwt:sub". */
static int compile_part(struct lim_where *w, const char *text, struct rl_keypart *kp,
                        struct pt_arena *a)
{
    static const char *const plain[] = {"consumer", "ip", "route"};
    static const enum rl_key_kind plain_kind[] = {RLK_CONSUMER, RLK_IP, RLK_ROUTE};
    kp->token = PT_TOK_UNKNOWN;
    for (int i = 0; i < 3; i++)
        if (strcmp(text, plain[i]) == 0) {
            kp->kind = plain_kind[i];
            kp->name = (pt_slice){"", 0};
            return 0;
        }
    if (strncmp(text, "header:", 7) == 0) {
        kp->kind = RLK_HEADER;
        if (pt_header_name_check(w->errs, "limits", w->path, true, false, text + 7, &kp->name) < 0)
            return -1;
        kp->token = pt_token_lookup(kp->name.p, kp->name.len);
        return 0;
    }
    if (strncmp(text, "jwt:", 4) == 0 && text[4]) {
        kp->kind = RLK_JWT;
        kp->name = (pt_slice){pt_arena_strdup(a, text + 4), strlen(text + 4)};
        return kp->name.p ? 0 : pt_filter_errorf(w->errs, NULL, NULL, false, "out of memory");
    }
    return pt_filter_errorf(w->errs, "limits", w->path, true,
                            "limits: key \"%s\" is not one of consumer, ip, route, header:NAME, "
                            "jwt:CLAIM",
                            text);
}

/* The part as it goes into the limit's id: header names lowercased (the
 * same field whatever the spelling). */
static size_t part_spec(const struct rl_keypart *kp, const char *text, char *out, size_t cap)
{
    if (kp->kind != RLK_HEADER)
        return (size_t)snprintf(out, cap, "%s", text);
    size_t n = (size_t)snprintf(out, cap, "header:");
    for (size_t i = 0; i < kp->name.len && n + 1 < cap; i++)
        out[n++] = (char)(kp->name.p[i] | (kp->name.p[i] >= 'A' && kp->name.p[i] <= 'Z' ? 32 : 0));
    out[n < cap ? n : cap - 1] = 0;
    return n;
}

static bool same_part(const struct rl_keypart *a, const struct rl_keypart *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == RLK_HEADER)
        return pt_slice_ieq(a->name, b->name);
    return pt_slice_eq(a->name, b->name);
}

/* The key spec: its parts, no duplicates, and the limit's id. */
static int compile_key(struct lim_where *w, struct rl_limit *l, struct pt_arena *a)
{
    static const char *const dflt[] = {"ip"};
    if (!l->key.v)
        l->key = (struct pt_strlist){(const char **)dflt, 1};
    if (l->key.n == 0 || l->key.n > PT_RL_MAX_LIMITS)
        return pt_filter_errorf(w->errs, "limits", at(w, "key"), true,
                                "limits: `key` takes 1 to %d parts", PT_RL_MAX_LIMITS);
    l->parts = pt_arena_zalloc(a, sizeof(*l->parts) * l->key.n);
    size_t idcap = (l->name ? strlen(l->name) : 12) + 2;
    for (uint32_t k = 0; k < l->key.n; k++)
        idcap += strlen(l->key.v[k]) + 1;
    char *id = pt_arena_alloc(a, idcap);
    if (!l->parts || !id)
        return pt_filter_errorf(w->errs, NULL, NULL, false, "out of memory");
    int bad = 0;
    size_t n = l->name ? (size_t)snprintf(id, idcap, "%s:", l->name)
                       : (size_t)snprintf(id, idcap, "#%u:", w->pos);
    for (uint32_t k = 0; k < l->key.n; k++) {
        at_part(w, k);
        if (compile_part(w, l->key.v[k], &l->parts[k], a) < 0) {
            bad = -1;
            continue;
        }
        for (uint32_t j = 0; j < k; j++)
            if (same_part(&l->parts[j], &l->parts[k])) {
                bad |= pt_filter_errorf(w->errs, "limits", at_part(w, k), true,
                                        "limits: key part \"%s\" is given twice", l->key.v[k]);
                break;
            }
        if (k)
            id[n++] = '+';
        n += part_spec(&l->parts[k], l->key.v[k], id + n, idcap - n);
    }
    l->nparts = l->key.n;
    l->id = (pt_slice){id, n};
    return bad;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > RL_MAX_NAME)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("_.-", *s)))
            return false;
    return true;
}

/* rate, burst, algorithm → params. */
static int compile_params(struct lim_where *w, struct rl_limit *l)
{
    struct pt_rl_params *p = &l->params;
    int bad = 0;
    if (!l->rate)
        return pt_filter_errorf(w->errs, "limits", at(w, NULL), false,
                                "limits: every limit needs a `rate` (e.g. 100/s, 1000/m)");
    if (pt_parse_rate(l->rate, &p->count, &p->period_ms) < 0)
        bad |= pt_filter_errorf(w->errs, "limits", at(w, "rate"), true,
                                "limits: rate \"%s\" is not a rate: N/s, N/m, N/h or N/d with "
                                "N at least 1 (e.g. 100/s)",
                                l->rate);
    if (l->burst < 0)
        bad |= pt_filter_errorf(w->errs, "limits", at(w, "burst"), true,
                                "limits: burst must be 0 or more");
    p->burst = l->burst > 0 ? (uint64_t)l->burst : 0;
    p->algorithm = PT_RL_GCRA;
    if (l->algorithm && strcmp(l->algorithm, "sliding_window") == 0)
        p->algorithm = PT_RL_SLIDING_WINDOW;
    else if (l->algorithm && strcmp(l->algorithm, "gcra") != 0)
        bad |= pt_filter_errorf(w->errs, "limits", at(w, "algorithm"), true,
                                "limits: algorithm \"%s\" is not gcra or sliding_window",
                                l->algorithm);
    if (bad)
        return bad;
    if (pt_rl_params_init(p) < 0) {
        if (p->algorithm == PT_RL_SLIDING_WINDOW)
            return pt_filter_errorf(w->errs, "limits", at(w, "rate"), true,
                                    "limits: sliding_window counts at most %u requests per "
                                    "window (rate + burst); use gcra for more",
                                    (unsigned)PT_RL_SW_MAX_COUNT);
        return pt_filter_errorf(w->errs, "limits", at(w, "rate"), true,
                                "limits: rate %s with burst %llu is out of range", l->rate,
                                (unsigned long long)p->burst);
    }
    return 0;
}

static int compile_limit(struct pt_filter_errs *errs, struct rl_conf *conf, uint32_t i,
                         struct pt_arena *a)
{
    struct rl_limit *l = &conf->lim[i];
    struct lim_where w = {errs, i + 1, ""};
    int bad = 0;
    l->same_key_as = -1;
    if (l->name && !name_ok(l->name))
        bad |= pt_filter_errorf(errs, "limits", at(&w, "name"), true,
                                "limits: name \"%s\" must be 1 to %d letters, digits, '_', '.' "
                                "or '-'",
                                l->name, RL_MAX_NAME);
    for (uint32_t j = 0; l->name && j < i; j++)
        if (conf->lim[j].name && strcmp(conf->lim[j].name, l->name) == 0) {
            bad |= pt_filter_errorf(errs, "limits", at(&w, "name"), true,
                                    "limits: name \"%s\" is also limit #%u's", l->name, j + 1);
            break;
        }
    bad |= compile_params(&w, l);
    bad |= compile_key(&w, l, a);
    for (uint32_t j = 0; !bad && j < i && l->same_key_as < 0; j++) {
        const struct rl_limit *o = &conf->lim[j];
        bool same = o->nparts == l->nparts;
        for (uint32_t k = 0; same && k < l->nparts; k++)
            same = same_part(&o->parts[k], &l->parts[k]);
        if (same)
            l->same_key_as = (int)j;
    }
    return bad;
}

static uint64_t period_s(uint64_t period_ms)
{
    return period_ms / 1000u;
}

/* RateLimit-Policy: "100;w=1;burst=20, 10000;w=86400". */
static int compile_policy(struct rl_conf *conf, struct pt_arena *a)
{
    size_t cap = conf->nlim * 72 + 1;
    char *buf = pt_arena_alloc(a, cap);
    if (!buf)
        return -ENOMEM;
    size_t n = 0;
    for (uint32_t i = 0; i < conf->nlim; i++) {
        const struct pt_rl_params *p = &conf->lim[i].params;
        n += (size_t)snprintf(buf + n, cap - n, "%s%llu;w=%llu", i ? ", " : "",
                              (unsigned long long)p->count,
                              (unsigned long long)period_s(p->period_ms));
        if (p->burst)
            n += (size_t)snprintf(buf + n, cap - n, ";burst=%llu", (unsigned long long)p->burst);
    }
    conf->policy = (pt_slice){buf, n};
    return 0;
}

/* scope, on_store_failure, store_timeout, headers. */
static int compile_options(struct rl_conf *conf, struct pt_filter_errs *errs)
{
    int bad = 0;
    if (conf->scope && strcmp(conf->scope, "cluster") == 0)
        conf->cluster = true;
    else if (conf->scope && strcmp(conf->scope, "local") != 0)
        bad |= pt_filter_errorf(errs, "scope", NULL, false, "scope: \"%s\" is not local or cluster",
                                conf->scope);
    if (conf->cluster && !errs->cluster_store)
        bad |= pt_filter_errorf(errs, "scope", NULL, false,
                                "scope: cluster needs `cluster.redis` at the top level");
    conf->on_failure = RL_FAIL_LOCAL;
    if (conf->on_store_failure) {
        if (strcmp(conf->on_store_failure, "allow") == 0)
            conf->on_failure = RL_FAIL_ALLOW;
        else if (strcmp(conf->on_store_failure, "deny") == 0)
            conf->on_failure = RL_FAIL_DENY;
        else if (strcmp(conf->on_store_failure, "local") != 0)
            bad |= pt_filter_errorf(errs, "on_store_failure", NULL, false,
                                    "on_store_failure: \"%s\" is not allow, deny or local",
                                    conf->on_store_failure);
    }
    conf->store_timeout_ms = RL_DEFAULT_STORE_TIMEOUT_MS;
    if (conf->store_timeout &&
        (pt_parse_duration_ms(conf->store_timeout, &conf->store_timeout_ms) < 0 ||
         conf->store_timeout_ms == 0 || conf->store_timeout_ms > RL_MAX_STORE_TIMEOUT_MS))
        bad |= pt_filter_errorf(errs, "store_timeout", NULL, false,
                                "store_timeout: \"%s\" is not a duration from 1ms to %ds",
                                conf->store_timeout, RL_MAX_STORE_TIMEOUT_MS / 1000);
    static const char *const yes[] = {"true", "yes", "on", NULL};
    static const char *const no[] = {"false", "no", "off", NULL};
    conf->send_headers = true;
    if (conf->headers) {
        bool t = false, f = false;
        for (int i = 0; yes[i]; i++) {
            t |= strcmp(conf->headers, yes[i]) == 0;
            f |= strcmp(conf->headers, no[i]) == 0;
        }
        if (!t && !f)
            bad |= pt_filter_errorf(errs, "headers", NULL, false,
                                    "headers: expected true or false, got \"%s\"", conf->headers);
        conf->send_headers = !f;
    }
    return bad;
}

/* scope: cluster: a gcra limit's interval T must be at least
 * RL_CLUSTER_MIN_INTERVAL_US (the script counts whole µs). */
static int check_cluster_rates(struct rl_conf *conf, struct pt_filter_errs *errs)
{
    int bad = 0;
    for (uint32_t i = 0; i < conf->nlim; i++) {
        const struct pt_rl_params *p = &conf->lim[i].params;
        if (p->algorithm != PT_RL_GCRA ||
            p->period_ms * 1000u / p->count >= RL_CLUSTER_MIN_INTERVAL_US)
            continue;
        struct lim_where w = {errs, i + 1, ""};
        bad |= pt_filter_errorf(errs, "limits", at(&w, "rate"), true,
                                "limits: rate %s is faster than scope: cluster counts exactly "
                                "(at most %u a second per key with gcra)",
                                conf->lim[i].rate, 1000000u / RL_CLUSTER_MIN_INTERVAL_US);
    }
    return bad;
}

static int rl_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct rl_conf *conf = conf_;
    int bad = compile_options(conf, errs);
    if (!conf->limits.v)
        return pt_filter_errorf(errs, NULL, NULL, false,
                                "`limits` is required: a list of { key, rate, burst, algorithm }");
    if (conf->limits.n == 0 || conf->limits.n > PT_RL_MAX_LIMITS)
        return pt_filter_errorf(errs, "limits", NULL, false, "limits: 1 to %d limits per route",
                                PT_RL_MAX_LIMITS);
    conf->lim = conf->limits.v;
    conf->nlim = conf->limits.n;
    for (uint32_t i = 0; i < conf->nlim; i++) {
        bad |= compile_limit(errs, conf, i, a);
        conf->needs_wall |= conf->lim[i].params.algorithm == PT_RL_SLIDING_WINDOW;
    }
    if (!bad && conf->cluster)
        bad |= check_cluster_rates(conf, errs);
    if (!bad && compile_policy(conf, a) < 0)
        bad |= pt_filter_errorf(errs, NULL, NULL, false, "out of memory");
    return bad ? -1 : 0;
}

const struct pt_filter_def pt_filter_rate_limit = {
    .name = "rate_limit",
    .priority = 1000,
    .fields = rl_fields,
    .config_size = sizeof(struct rl_conf),
    .compile = rl_compile,
    .state_size = sizeof(struct rl_state),
    .on_request = rl_on_request,
    .on_response_head = rl_on_response_head,
    .hides_interim_field = rl_hides_interim_field,
};
