/*
 * introspection.c — OAuth 2.0 token introspection (RFC 7662): ask the
 * authorization server whether a bearer token is active, and who it
 * belongs to.
 *
 *   introspection:
 *     endpoint: http://idp.internal/introspect   # required
 *     client_id: gateway                         # required
 *     client_secret: "${IDP_SECRET}"             # required
 *     auth_method: client_secret_basic           # | client_secret_post
 *     timeout: 1s                                # the IdP call, default 1s
 *     cache_ttl: 60s                             # active answers, also bounded by exp
 *     negative_cache_ttl: 5s                     # inactive answers
 *     stale_if_error: 1m                         # past the TTL, only while the IdP fails
 *     consumer_field: sub                        # default: sub, else username, else client_id
 *     groups_field: scope                        # default: the scope string split on spaces
 *     optional: false                            # true: no token → unauthenticated
 *     hide_credentials: false                    # true: Authorization not sent upstream
 *
 * Per request: the token comes from `Authorization: Bearer`. None → 401
 * with a bare Bearer challenge (or on, unauthenticated, when optional). A
 * malformed one (not RFC 6750 b64token characters, longer than
 * INTRO_MAX_TOKEN) → 401 invalid_token, without asking anyone. Else the
 * shared cache (introspection_cache.h) is asked by SHA-256 of the token:
 * a fresh answer is used as it is; otherwise one request per token POSTs
 * `token=...&token_type_hint=access_token` to the endpoint while others
 * asking for the same token wait for its answer (single flight).
 *
 * The answer: `active: true` → the consumer and groups go on the exchange
 * and upstream (pt_auth_set_identity); `exp` in the past, `active: false`,
 * or an active answer naming no consumer → 401 invalid_token. Anything
 * else (connection failure, timeout, a status other than 200, a body that
 * is not a JSON object with a boolean `active`) is the IdP failing → 503,
 * unless the cache still holds an answer within stale_if_error.
 *
 * Waiting: a request whose token is being asked about by another request
 * (on any worker) polls the cache on a timer (INTRO_POLL_MS, rounded up to
 * the loop's timer tick) until the flight ends, re-arming the timer from
 * its callback (filter.h allows that). If the leading request goes away
 * (client gone), on_cancel marks the flight lost and a waiter takes over.
 *
 * The access log gets `"introspection":"hit"|"miss"|"coalesced"|"stale"`
 * for each request that consulted the cache.
 *
 * Secrets: the client secret lives only in the generation arena (as the
 * Basic credential or for the POST body) and in the IdP call's request;
 * tokens live in the request arena and reach the cache only as a hash.
 * Neither is ever logged.
 *
 * Ownership: the compiled config lives in the generation arena; the call,
 * its answer and the identity in the request arena; the cache's entries in
 * the cache. The state records the flight this request leads or waits
 * for, so on_cancel can give up a lead.
 */
#include "filters/auth.h"
#include "filters/introspection_cache.h"
#include "filters/registry.h"
#include "filters/template.h"
#include "core/log.h"
#include "core/units.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define INTRO_TIMEOUT_DEFAULT_MS 1000
#define INTRO_CACHE_TTL_DEFAULT_MS 60000
#define INTRO_NEG_TTL_DEFAULT_MS 5000
#define INTRO_STALE_DEFAULT_MS 60000
#define INTRO_MAX_TOKEN 8192
#define INTRO_MAX_BODY (64 * 1024)
#define INTRO_MAX_IDENT 256 /* a consumer name or a group, bytes */
#define INTRO_POLL_MS 1
/* Slack between the call's own timeout and the suspend deadline: the call
 * times out first and the filter decides. */
#define INTRO_DEADLINE_MARGIN_MS 1000

struct intro_conf {
    const char *endpoint;
    const char *tls_ca; /* https endpoint: the CA file (read by the loader) */
    const char *client_id;
    const char *client_secret;
    const char *auth_method; /* NULL: client_secret_basic */
    uint64_t timeout_ms;
    uint64_t cache_ttl_ms;
    uint64_t negative_cache_ttl_ms;
    const char *stale_if_error; /* a duration or "off"; NULL: the default */
    const char *consumer_field;
    const char *groups_field;
    bool optional;
    bool hide_credentials;
    /* Filled by intro_compile (not YAML keys). */
    bool post_auth;                /* client_secret_post */
    pt_slice basic;                /* "Basic base64(id:secret)" */
    pt_slice post_suffix;          /* "&client_id=..&client_secret=.." */
    uint8_t ns[PT_ICACHE_KEY_LEN]; /* the cache namespace (endpoint, client, fields) */
    struct pt_icache_ttl ttl;
};

enum intro_phase {
    PH_IDLE,
    PH_LEADING, /* this request's call is the flight */
    PH_WAITING, /* polling for another request's flight */
};

struct intro_state {
    const struct intro_conf *conf;
    enum intro_phase phase;
    uint64_t seq; /* the flight led or waited for */
    uint8_t key[PT_ICACHE_KEY_LEN];
    pt_slice token;
};

static const struct pt_field intro_fields[] = {
    {"endpoint", PT_F_URL, offsetof(struct intro_conf, endpoint), NULL},
    {"tls_ca", PT_F_STRING, offsetof(struct intro_conf, tls_ca), NULL},
    {"client_id", PT_F_STRING, offsetof(struct intro_conf, client_id), NULL},
    {"client_secret", PT_F_STRING, offsetof(struct intro_conf, client_secret), NULL},
    {"auth_method", PT_F_STRING, offsetof(struct intro_conf, auth_method), NULL},
    {"timeout", PT_F_DURATION, offsetof(struct intro_conf, timeout_ms), NULL},
    {"cache_ttl", PT_F_DURATION, offsetof(struct intro_conf, cache_ttl_ms), NULL},
    {"negative_cache_ttl", PT_F_DURATION, offsetof(struct intro_conf, negative_cache_ttl_ms), NULL},
    {"stale_if_error", PT_F_STRING, offsetof(struct intro_conf, stale_if_error), NULL},
    {"consumer_field", PT_F_STRING, offsetof(struct intro_conf, consumer_field), NULL},
    {"groups_field", PT_F_STRING, offsetof(struct intro_conf, groups_field), NULL},
    {"optional", PT_F_BOOL, offsetof(struct intro_conf, optional), NULL},
    {"hide_credentials", PT_F_BOOL, offsetof(struct intro_conf, hide_credentials), NULL},
    {NULL, 0, 0, NULL},
};

static const char *const default_consumer_fields[] = {"sub", "username", "client_id"};

static void intro_call_done(struct pt_filter_ctx *ctx, void *state,
                            const struct pt_filter_call_res *res);
static void intro_poll(struct pt_filter_ctx *ctx, void *state);

/* ---- the token ---- */

/* RFC 6750 §2.1 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+"
 * / "/" ) *"=" */
static bool b64token_ok(pt_slice t)
{
    size_t i = 0;
    for (; i < t.len; i++) {
        unsigned char c = (unsigned char)t.p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'))
            break;
    }
    if (i == 0)
        return false;
    for (; i < t.len; i++)
        if (t.p[i] != '=')
            return false;
    return true;
}

enum token_result { TOKEN_NONE, TOKEN_OK, TOKEN_BAD };

/* The bearer token of the request. Another scheme counts as no token (it
 * is some other filter's credential); two Authorization fields, or a
 * Bearer credential that is not a b64token, are malformed. */
static enum token_result bearer_token(const struct pt_headers *h, pt_slice *tok)
{
    const struct pt_hfield *auth = NULL;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || !pt_slice_ieq(f->name, PT_SLICE("Authorization")))
            continue;
        if (auth)
            return TOKEN_BAD;
        auth = f;
    }
    if (!auth)
        return TOKEN_NONE;
    pt_slice v = auth->value;
    /* The scheme ends at any SP or HTAB (RFC 7235 §2.1). */
    if (v.len < 6 || strncasecmp(v.p, "Bearer", 6) != 0 ||
        (v.len > 6 && v.p[6] != ' ' && v.p[6] != '\t'))
        return TOKEN_NONE;
    size_t i = 6;
    while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
        i++;
    size_t end = v.len;
    while (end > i && (v.p[end - 1] == ' ' || v.p[end - 1] == '\t'))
        end--;
    *tok = (pt_slice){v.p + i, end - i};
    if (tok->len == 0 || tok->len > INTRO_MAX_TOKEN || !b64token_ok(*tok))
        return TOKEN_BAD;
    return TOKEN_OK;
}

/* The cache key: SHA-256 of the namespace and the token. */
static bool token_key(struct pt_filter_ctx *ctx, const struct intro_conf *conf, pt_slice tok,
                      uint8_t out[PT_ICACHE_KEY_LEN])
{
    unsigned char *buf = pt_arena_alloc(ctx->arena, PT_ICACHE_KEY_LEN + tok.len);
    if (!buf)
        return false;
    memcpy(buf, conf->ns, PT_ICACHE_KEY_LEN);
    memcpy(buf + PT_ICACHE_KEY_LEN, tok.p, tok.len);
    SHA256(buf, PT_ICACHE_KEY_LEN + tok.len, out);
    return true;
}

/* ---- the IdP call ---- */

/* application/x-www-form-urlencoded (the WHATWG serializer): unreserved
 * bytes as they are, space as '+', everything else %XX. Returns the bytes
 * written; `out` holds 3 * s.len. */
static size_t form_encode(char *out, pt_slice s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '*') {
            out[n++] = (char)c;
        } else if (c == ' ') {
            out[n++] = '+';
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    return n;
}

/* The POST body: token=..&token_type_hint=access_token[&client_id=..]. */
static pt_slice call_body(struct pt_filter_ctx *ctx, const struct intro_conf *conf, pt_slice tok)
{
    static const char pre[] = "token=", hint[] = "&token_type_hint=access_token";
    size_t cap = sizeof(pre) + 3 * tok.len + sizeof(hint) + conf->post_suffix.len;
    char *b = pt_arena_alloc(ctx->arena, cap);
    if (!b)
        return (pt_slice){NULL, 0};
    size_t n = sizeof(pre) - 1;
    memcpy(b, pre, n);
    n += form_encode(b + n, tok);
    memcpy(b + n, hint, sizeof(hint) - 1);
    n += sizeof(hint) - 1;
    if (conf->post_suffix.len) {
        memcpy(b + n, conf->post_suffix.p, conf->post_suffix.len);
        n += conf->post_suffix.len;
    }
    return (pt_slice){b, n};
}

/* Starts this request's call to the IdP (it leads flight st->seq). */
static int start_call(struct pt_filter_ctx *ctx, struct intro_state *st)
{
    const struct intro_conf *conf = st->conf;
    struct pt_headers *h = pt_arena_zalloc(ctx->arena, sizeof(*h));
    pt_slice body = call_body(ctx, conf, st->token);
    if (!h || !body.p ||
        pt_headers_add(h, ctx->arena, PT_SLICE("Content-Type"),
                       PT_SLICE("application/x-www-form-urlencoded")) < 0 ||
        pt_headers_add(h, ctx->arena, PT_SLICE("Accept"), PT_SLICE("application/json")) < 0 ||
        (conf->basic.len &&
         pt_headers_add(h, ctx->arena, PT_SLICE("Authorization"), conf->basic) < 0))
        return -ENOMEM;
    struct pt_filter_call_req req = {
        .url = conf->endpoint,
        .method = PT_SLICE("POST"),
        .headers = h,
        .body = body,
        .timeout_ms = conf->timeout_ms,
        .max_body = INTRO_MAX_BODY,
    };
    int rc = ctx->svc->call(ctx, &req, intro_call_done);
    if (rc == 0)
        st->phase = PH_LEADING;
    return rc;
}

/* ---- the answer ---- */

/* A consumer name or group that can go into a header value as it is. */
static bool ident_ok(const char *s, size_t len, bool group)
{
    if (len == 0 || len > INTRO_MAX_IDENT)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (group && (c == ',' || c == ' ')))
            return false;
    }
    return true;
}

static bool add_group(struct pt_arena *a, pt_slice *g, uint32_t *n, const char *s, size_t len)
{
    if (*n >= PT_ICACHE_MAX_GROUPS || !ident_ok(s, len, true))
        return true; /* skipped, not an error */
    char *c = pt_arena_strndup(a, s, len);
    if (!c)
        return false;
    g[(*n)++] = (pt_slice){c, len};
    return true;
}

/* Groups from a space-separated string or an array of strings. */
static bool read_groups(struct pt_arena *a, json_t *v, struct pt_icache_answer *out)
{
    pt_slice *g = pt_arena_alloc(a, sizeof(*g) * PT_ICACHE_MAX_GROUPS);
    if (!g)
        return false;
    uint32_t n = 0;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        for (size_t i = 0; i < len;) {
            while (i < len && s[i] == ' ')
                i++;
            size_t j = i;
            while (j < len && s[j] != ' ')
                j++;
            if (j > i && !add_group(a, g, &n, s + i, j - i))
                return false;
            i = j;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (json_is_string(item) &&
                !add_group(a, g, &n, json_string_value(item), json_string_length(item)))
                return false;
        }
    }
    out->groups = g;
    out->ngroups = n;
    return true;
}

/*
 * Reads an introspection response body (RFC 7662 §2.2) into *out: active
 * or not, the consumer, groups and exp (on the loop clock, from the wall
 * clock `now_unix`, seconds with their fraction). An active answer whose exp has passed, or which
 * names no usable consumer, counts as inactive. 0, or -1 when the body is not an answer (*why says
 * why, for the log) or out of memory.
 */
static int parse_answer(const struct intro_conf *conf, pt_slice body, double now_unix,
                        uint64_t now_ms, struct pt_arena *a, struct pt_icache_answer *out,
                        const char **why)
{
    *out = (struct pt_icache_answer){0};
    json_error_t jerr;
    json_t *root = json_loadb(body.p ? body.p : "", body.len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = -1;
    if (!root || !json_is_object(root)) {
        *why = "the answer is not a JSON object";
        goto out;
    }
    json_t *active = json_object_get(root, "active");
    if (!json_is_boolean(active)) {
        *why = "the answer has no boolean `active`";
        goto out;
    }
    rc = 0;
    if (!json_is_true(active))
        goto out;
    json_t *exp = json_object_get(root, "exp");
    if (json_is_number(exp)) {
        double e = json_number_value(exp);
        if (!(e > now_unix))
            goto out; /* expired: inactive */
        double left_ms = (e - now_unix) * 1000.0;
        out->exp_ms = now_ms + (left_ms > 1e15 ? (uint64_t)1e15 : (uint64_t)left_ms);
    }
    const char *const *names =
        conf->consumer_field ? &conf->consumer_field : default_consumer_fields;
    size_t nnames = conf->consumer_field ? 1 : PT_ARRAY_LEN(default_consumer_fields);
    for (size_t i = 0; i < nnames && !out->consumer.len; i++) {
        json_t *c = json_object_get(root, names[i]);
        if (json_is_string(c) && ident_ok(json_string_value(c), json_string_length(c), false)) {
            char *s = pt_arena_strndup(a, json_string_value(c), json_string_length(c));
            if (!s) {
                *why = "out of memory";
                rc = -1;
                goto out;
            }
            out->consumer = (pt_slice){s, json_string_length(c)};
        }
    }
    if (!out->consumer.len)
        goto out; /* active, but for whom? */
    json_t *g = json_object_get(root, conf->groups_field ? conf->groups_field : "scope");
    if (!read_groups(a, g, out)) {
        *why = "out of memory";
        rc = -1;
        goto out;
    }
    out->active = true;
out:
    if (root)
        json_decref(root);
    if (!out->active)
        out->exp_ms = 0;
    return rc;
}

/* ---- deciding ---- */

static uint64_t now_ms(struct pt_filter_ctx *ctx)
{
    return ctx->svc->now_ms(ctx);
}

/* The answer decides the request. */
static int apply(struct pt_filter_ctx *ctx, struct intro_state *st,
                 const struct pt_icache_answer *ans)
{
    if (!ans->active)
        return pt_auth_refuse(ctx, 401, "Bearer", PT_AUTH_INVALID_TOKEN);
    if (pt_auth_set_identity(ctx, ans->consumer, ans->groups, ans->ngroups, "introspection") < 0)
        return PT_FILTER_ERROR;
    if (st->conf->hide_credentials)
        pt_headers_remove(ctx->req_headers, PT_SLICE("Authorization"));
    return PT_FILTER_CONTINUE;
}

/* One warning line a second per worker at most: an IdP that is down fails
 * every request, and the log must not become the outage. Never the token
 * or the secret. */
static void warn_failure(struct pt_filter_ctx *ctx, const struct intro_conf *conf, const char *why,
                         bool stale)
{
    static _Thread_local uint64_t next_ms, suppressed;
    uint64_t now = now_ms(ctx);
    if (now < next_ms) {
        suppressed++;
        return;
    }
    next_ms = now + 1000;
    pt_warn("introspection: request %.*s: endpoint %s failed (%s); %s "
            "(%llu similar failures not logged)",
            (int)ctx->request_id.len, ctx->request_id.p, conf->endpoint, why,
            stale ? "serving the cached answer" : "answering 503", (unsigned long long)suppressed);
    suppressed = 0;
}

/* The IdP failed for this request's flight (led or waited for): a stale
 * answer if the cache has one, else 503. */
static int failed(struct pt_filter_ctx *ctx, struct intro_state *st, enum pt_icache_result r,
                  const struct pt_icache_answer *stale, const char *why)
{
    if (why)
        warn_failure(ctx, st->conf, why, r == PT_ICACHE_STALE);
    if (r == PT_ICACHE_STALE && stale) {
        pt_filter_note(ctx, "introspection", "stale");
        return apply(ctx, st, stale);
    }
    ctx->respond_status = 503;
    ctx->respond_error = "introspection endpoint unavailable";
    ctx->respond_body = (pt_slice){NULL, 0};
    ctx->respond_content_type = (pt_slice){NULL, 0};
    return PT_FILTER_RESPOND;
}

/* The leader's call could not be made or failed: end the flight as
 * failed (so its waiters do not each try again) and decide. */
static int lead_failed(struct pt_filter_ctx *ctx, struct intro_state *st, const char *why)
{
    struct pt_icache_answer stale;
    st->phase = PH_IDLE;
    enum pt_icache_result r =
        pt_icache_fail(st->key, st->seq, now_ms(ctx), &st->conf->ttl, ctx->arena, &stale);
    return failed(ctx, st, r, &stale, why);
}

/* What a lookup or a poll said: decide, suspend or lead. */
static int on_cache(struct pt_filter_ctx *ctx, struct intro_state *st, enum pt_icache_result r,
                    const struct pt_icache_answer *ans)
{
    switch (r) {
    case PT_ICACHE_HIT:
        st->phase = PH_IDLE;
        return apply(ctx, st, ans);
    case PT_ICACHE_WAIT:
        if (ctx->svc->timer(ctx, INTRO_POLL_MS, intro_poll) < 0) {
            st->phase = PH_IDLE;
            return failed(ctx, st, PT_ICACHE_FAILED, NULL, "could not wait for the answer");
        }
        st->phase = PH_WAITING;
        return PT_FILTER_SUSPEND;
    case PT_ICACHE_LEAD:
        pt_filter_note(ctx, "introspection", "miss");
        if (start_call(ctx, st) < 0)
            return lead_failed(ctx, st, "the call could not be started");
        return PT_FILTER_SUSPEND;
    case PT_ICACHE_STALE:
    case PT_ICACHE_FAILED:
        st->phase = PH_IDLE;
        return failed(ctx, st, r, ans, NULL);
    case PT_ICACHE_NOMEM:
        break;
    }
    st->phase = PH_IDLE;
    return failed(ctx, st, PT_ICACHE_FAILED, NULL, "out of memory");
}

static int intro_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state_)
{
    const struct intro_conf *conf = conf_;
    struct intro_state *st = state_;
    st->conf = conf;
    switch (bearer_token(ctx->req_headers, &st->token)) {
    case TOKEN_NONE:
        return conf->optional ? pt_auth_pass_anonymous(ctx, "Bearer")
                              : pt_auth_refuse(ctx, 401, "Bearer", NULL);
    case TOKEN_BAD:
        return pt_auth_refuse(ctx, 401, "Bearer", PT_AUTH_INVALID_TOKEN);
    case TOKEN_OK:
        break;
    }
    if (!token_key(ctx, conf, st->token, st->key))
        return PT_FILTER_ERROR;
    pt_filter_note(ctx, "introspection", "hit");
    struct pt_icache_answer ans;
    enum pt_icache_result r =
        pt_icache_lookup(st->key, now_ms(ctx), &conf->ttl, ctx->arena, &ans, &st->seq);
    if (r == PT_ICACHE_WAIT)
        pt_filter_note(ctx, "introspection", "coalesced");
    int res = on_cache(ctx, st, r, &ans);
    if (res == PT_FILTER_SUSPEND)
        /* A waiter may end up leading a call of its own: room for both. */
        ctx->suspend_deadline_ms = 2 * conf->timeout_ms + INTRO_DEADLINE_MARGIN_MS;
    return res;
}

static void intro_poll(struct pt_filter_ctx *ctx, void *state)
{
    struct intro_state *st = state;
    struct pt_icache_answer ans;
    enum pt_icache_result r =
        pt_icache_await(st->key, now_ms(ctx), &st->conf->ttl, ctx->arena, &ans, &st->seq);
    int res = on_cache(ctx, st, r, &ans);
    if (res != PT_FILTER_SUSPEND)
        ctx->resume(ctx, res);
    /* SUSPEND: a new timer (or call) is pending; the suspension goes on. */
}

static void intro_call_done(struct pt_filter_ctx *ctx, void *state,
                            const struct pt_filter_call_res *res)
{
    struct intro_state *st = state;
    const struct intro_conf *conf = st->conf;
    char why[96];
    if (res->error != PT_CALL_OK) {
        snprintf(why, sizeof(why), "%s", res->error_text ? res->error_text : "call failed");
        ctx->resume(ctx, lead_failed(ctx, st, why));
        return;
    }
    if (res->status != 200 || res->truncated) {
        if (res->truncated)
            snprintf(why, sizeof(why), "the answer is longer than %d bytes", INTRO_MAX_BODY);
        else
            snprintf(why, sizeof(why), "it answered %d%s", res->status,
                     res->status == 401 ? " (check client_id and client_secret)" : "");
        ctx->resume(ctx, lead_failed(ctx, st, why));
        return;
    }
    struct pt_icache_answer ans;
    const char *bad = NULL;
    uint64_t now = now_ms(ctx);
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    double now_unix = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    if (parse_answer(conf, res->body, now_unix, now, ctx->arena, &ans, &bad) < 0) {
        ctx->resume(ctx, lead_failed(ctx, st, bad));
        return;
    }
    st->phase = PH_IDLE;
    pt_icache_store(st->key, st->seq, now, &ans);
    ctx->resume(ctx, apply(ctx, st, &ans));
}

static void intro_on_cancel(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    struct intro_state *st = state;
    if (st->phase == PH_LEADING)
        pt_icache_abandon(st->key, st->seq); /* a waiter takes over */
    st->phase = PH_IDLE;
}

/* ---- compile ---- */

/* "form(id):form(secret)" base64'd, RFC 6749 §2.3.1. */
static int basic_credential(struct intro_conf *conf, struct pt_arena *a)
{
    size_t il = strlen(conf->client_id), sl = strlen(conf->client_secret);
    char *raw = pt_arena_alloc(a, 3 * (il + sl) + 2);
    if (!raw)
        return -ENOMEM;
    size_t n = form_encode(raw, (pt_slice){conf->client_id, il});
    raw[n++] = ':';
    n += form_encode(raw + n, (pt_slice){conf->client_secret, sl});
    size_t cap = 6 + 4 * ((n + 2) / 3) + 1;
    char *out = pt_arena_alloc(a, cap);
    if (!out)
        return -ENOMEM;
    memcpy(out, "Basic ", 6);
    int b = EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)raw, (int)n);
    if (b < 0)
        return -EINVAL;
    conf->basic = (pt_slice){out, 6 + (size_t)b};
    return 0;
}

/* "&client_id=..&client_secret=.." for client_secret_post. */
static int post_credential(struct intro_conf *conf, struct pt_arena *a)
{
    size_t il = strlen(conf->client_id), sl = strlen(conf->client_secret);
    char *out = pt_arena_alloc(a, 3 * (il + sl) + 32);
    if (!out)
        return -ENOMEM;
    size_t n = 0;
    memcpy(out + n, "&client_id=", 11);
    n += 11;
    n += form_encode(out + n, (pt_slice){conf->client_id, il});
    memcpy(out + n, "&client_secret=", 15);
    n += 15;
    n += form_encode(out + n, (pt_slice){conf->client_secret, sl});
    conf->post_suffix = (pt_slice){out, n};
    return 0;
}

/* The cache namespace: answers depend on the endpoint, the client asking
 * and how consumer and groups are read; the secret and the TTLs do not
 * change them, so a reload that rotates the secret keeps the cache. */
static void cache_namespace(struct intro_conf *conf)
{
    char buf[2048];
    int n = snprintf(buf, sizeof(buf), "%s%c%s%c%s%c%s", conf->endpoint, 0, conf->client_id, 0,
                     conf->consumer_field ? conf->consumer_field : "", 0,
                     conf->groups_field ? conf->groups_field : "");
    size_t len = n < 0 ? 0 : PT_MIN((size_t)n, sizeof(buf) - 1);
    SHA256((const unsigned char *)buf, len, conf->ns);
}

static int compile_ttls(struct intro_conf *conf, struct pt_filter_errs *errs)
{
    if (!conf->timeout_ms)
        conf->timeout_ms = INTRO_TIMEOUT_DEFAULT_MS;
    if (!conf->cache_ttl_ms)
        conf->cache_ttl_ms = INTRO_CACHE_TTL_DEFAULT_MS;
    if (!conf->negative_cache_ttl_ms)
        conf->negative_cache_ttl_ms = INTRO_NEG_TTL_DEFAULT_MS;
    uint64_t stale = INTRO_STALE_DEFAULT_MS;
    if (conf->stale_if_error && strcmp(conf->stale_if_error, "off") == 0)
        stale = 0;
    else if (conf->stale_if_error && pt_parse_duration_ms(conf->stale_if_error, &stale) < 0)
        return pt_filter_errorf(errs, "stale_if_error", NULL, false,
                                "stale_if_error: expected a duration (\"1m\") or off, got \"%s\"",
                                conf->stale_if_error);
    conf->ttl = (struct pt_icache_ttl){
        .positive_ms = conf->cache_ttl_ms,
        .negative_ms = conf->negative_cache_ttl_ms,
        .stale_ms = stale,
        .flight_timeout_ms = conf->timeout_ms + INTRO_DEADLINE_MARGIN_MS,
    };
    return 0;
}

static int intro_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct intro_conf *conf = conf_;
    int bad = 0;
    if (!conf->endpoint)
        bad |= pt_filter_errorf(errs, NULL, NULL, false,
                                "`endpoint` is required (the IdP's introspection URL)");
    if (!conf->client_id || !conf->client_id[0])
        bad |= pt_filter_errorf(errs, conf->client_id ? "client_id" : NULL, NULL, false,
                                "`client_id` is required (the gateway's client at the IdP)");
    if (!conf->client_secret || !conf->client_secret[0])
        bad |= pt_filter_errorf(errs, conf->client_secret ? "client_secret" : NULL, NULL, false,
                                "`client_secret` is required (write \"${NAME}\" to take it "
                                "from the environment)");
    if (!conf->auth_method || strcmp(conf->auth_method, "client_secret_basic") == 0)
        conf->post_auth = false;
    else if (strcmp(conf->auth_method, "client_secret_post") == 0)
        conf->post_auth = true;
    else
        bad |= pt_filter_errorf(errs, "auth_method", NULL, false,
                                "auth_method: expected client_secret_basic or client_secret_post, "
                                "got \"%s\"",
                                conf->auth_method);
    if (conf->consumer_field && !conf->consumer_field[0])
        bad |=
            pt_filter_errorf(errs, "consumer_field", NULL, false,
                             "consumer_field: empty (leave it out for sub, username, client_id)");
    if (conf->groups_field && !conf->groups_field[0])
        bad |= pt_filter_errorf(errs, "groups_field", NULL, false,
                                "groups_field: empty (leave it out for scope)");
    bad |= compile_ttls(conf, errs);
    if (bad)
        return -1;
    int rc = conf->post_auth ? post_credential(conf, a) : basic_credential(conf, a);
    if (rc < 0)
        return pt_filter_errorf(errs, NULL, NULL, false, "out of memory");
    cache_namespace(conf);
    return 0;
}

const struct pt_filter_def pt_filter_introspection = {
    .name = "introspection",
    .priority = 1280,
    .auth = true,
    .fields = intro_fields,
    .config_size = sizeof(struct intro_conf),
    .compile = intro_compile,
    .state_size = sizeof(struct intro_state),
    .on_request = intro_on_request,
    .on_cancel = intro_on_cancel,
};
