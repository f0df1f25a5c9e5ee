/*
 * jwt_verify.c — one token against a jwt filter's providers.
 *
 * A repeated token is answered from the verified-token cache (one
 * SHA-256, one short lock); otherwise the token is split, its header
 * read (alg, kid; jku/x5u/jwk ignored), and each provider tried in order:
 * its issuer, its algorithm allow-list, its keys (kid exact; a kid no
 * key has falls back to the keys without a kid; every key that can do
 * the alg when the token names none), the signature, then the claims.
 * The first provider that accepts the token wins; one that accepts
 * everything but the scopes makes the answer 403 when no other accepts
 * it.
 *
 * A token the keys of a remote provider do not verify (no set yet, an
 * unknown kid, or a bad signature while a refresh is due: the IdP may
 * have rotated keys without new kids) suspends the request: it either
 * runs the source's single fetch itself (through ctx->svc->call) or,
 * when another request runs it, polls the source's done_seq every tick
 * until it ends; a fetch whose request went away is taken over by a
 * waiter. Then it verifies again. A request whose token verified may
 * also run a due refresh of its provider's keys after its outcome is
 * decided, held at most REFRESH_HOLD_MS.
 *
 * Parsed JSON (jansson) lives only inside one call of pt_jwt_verify; what
 * outlives it is in the request arena.
 */
#include "filters/jwt_int.h"
#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/sha.h>

#define POLL_MS 8
#define DEADLINE_MARGIN_MS 1000
/* A due refresh run by a request whose token verified holds that request
 * (the filter contract ties a call to a suspended request): at most this
 * long, whatever jwks_timeout says. A refresh cut short counts as a
 * failed fetch; failing requests and unknown kids fetch with the full
 * jwks_timeout. */
#define REFRESH_HOLD_MS 1000

enum verdict { V_FAIL, V_SCOPE, V_OK, V_SUSPEND, V_ERROR };

/* What goes upstream when a token verified: the cache keeps it too. */
struct outcome {
    pt_slice consumer;
    pt_slice *groups;
    uint32_t ngroups;
    pt_slice *hvals; /* per claims_to_headers entry; p == NULL: absent */
    uint32_t nh;
};

/* ---- claims to text ---- */

static bool printable(pt_slice s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* The next space-separated word of [*s, end) (len 0: none left). */
static pt_slice next_word(const char **s, const char *end)
{
    while (*s < end && **s == ' ')
        (*s)++;
    const char *b = *s;
    while (*s < end && **s != ' ')
        (*s)++;
    return (pt_slice){b, (size_t)(*s - b)};
}

/* A scalar or nested value as text: strings as they are, the rest as
 * compact JSON. */
static pt_slice json_text(struct pt_arena *a, const json_t *v)
{
    if (json_is_string(v))
        return (pt_slice){pt_arena_strndup(a, json_string_value(v), json_string_length(v)),
                          json_string_length(v)};
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    pt_slice out = {s ? pt_arena_strdup(a, s) : NULL, s ? strlen(s) : 0};
    free(s);
    return out;
}

/* A claim's upstream value: arrays joined by ",". {NULL,0} when it cannot
 * be a header value (control characters) or memory is short. */
static pt_slice claim_value(struct pt_arena *a, const json_t *v)
{
    pt_slice out = {NULL, 0};
    if (!json_is_array(v)) {
        out = json_text(a, v);
    } else {
        size_t i, total = 0;
        const json_t *e;
        pt_slice *parts = pt_arena_alloc(a, sizeof(*parts) * (json_array_size(v) + 1));
        if (!parts)
            return out;
        json_array_foreach(v, i, e)
        {
            parts[i] = json_text(a, e);
            if (!parts[i].p)
                return (pt_slice){NULL, 0};
            total += parts[i].len + 1;
        }
        char *buf = pt_arena_alloc(a, total + 1);
        if (!buf)
            return out;
        size_t n = 0;
        for (i = 0; i < json_array_size(v); i++) {
            if (i)
                buf[n++] = ',';
            memcpy(buf + n, parts[i].p, parts[i].len);
            n += parts[i].len;
        }
        buf[n] = 0;
        out = (pt_slice){buf, n};
    }
    return out.p && printable(out) ? out : (pt_slice){NULL, 0};
}

/* Space-separated words of s, or the strings of an array, into *out. */
static int words(struct pt_arena *a, const json_t *v, pt_slice **out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = json_is_array(v)    ? json_array_size(v)
                 : json_is_string(v) ? json_string_length(v) / 2 + 1
                                     : 0;
    if (!cap)
        return 0;
    pt_slice *w = pt_arena_alloc(a, sizeof(*w) * cap);
    if (!w)
        return -ENOMEM;
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) if (json_is_string(e) && json_string_length(e))
        {
            pt_slice s = {json_string_value(e), json_string_length(e)};
            if (!printable(s) || memchr(s.p, ',', s.len))
                continue; /* it could not be told apart in X-Consumer-Groups */
            w[(*n)++] = s;
        }
    } else {
        const char *s = json_string_value(v), *end = s + json_string_length(v);
        for (pt_slice word; (word = next_word(&s, end)).len;)
            if (printable(word) && !memchr(word.p, ',', word.len))
                w[(*n)++] = word;
    }
    /* The slices borrow from the JSON document: copy them out. */
    for (uint32_t i = 0; i < *n; i++) {
        char *c = pt_arena_strndup(a, w[i].p, w[i].len);
        if (!c)
            return -ENOMEM;
        w[i].p = c;
    }
    *out = w;
    return 0;
}

static bool has_word(const json_t *v, const char *want)
{
    size_t wl = strlen(want);
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) if (json_is_string(e) &&
                                        strcmp(json_string_value(e), want) == 0) return true;
        return false;
    }
    if (!json_is_string(v))
        return false;
    const char *s = json_string_value(v), *end = s + json_string_length(v);
    for (pt_slice word; (word = next_word(&s, end)).len;)
        if (word.len == wl && memcmp(word.p, want, wl) == 0)
            return true;
    return false;
}

/* ---- claims ---- */

static bool aud_ok(const struct jwt_provider *pv, const json_t *aud)
{
    if (!pv->audiences.n)
        return true;
    for (uint32_t i = 0; i < pv->audiences.n; i++) {
        const char *want = pv->audiences.v[i];
        if (json_is_string(aud) && strcmp(json_string_value(aud), want) == 0)
            return true;
        size_t k;
        const json_t *e;
        json_array_foreach(aud, k, e) if (json_is_string(e) &&
                                          strcmp(json_string_value(e), want) == 0) return true;
    }
    return false;
}

/* A NumericDate as whole seconds, rounded up, within ±1e15 (far beyond
 * any real date; a cast of a larger double is undefined). */
static int64_t clamp_s(double v)
{
    if (v > 1e15)
        return (int64_t)1e15;
    if (v < -1e15)
        return (int64_t)-1e15;
    return (int64_t)ceil(v);
}

/* exp (required), nbf, iss, aud, required_claims and required_scopes.
 * Fills the cache window on success. */
static enum verdict claims_ok(const struct jwt_provider *pv, const json_t *claims, int64_t now_s,
                              struct pt_jwt_cached *win)
{
    const json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
    if (!json_is_number(exp) || (nbf && !json_is_number(nbf)))
        return V_FAIL;
    double e = json_number_value(exp);
    if (!isfinite(e) || (double)now_s >= e + (double)pv->skew_s)
        return V_FAIL;
    win->expire_at = clamp_s(e) + pv->skew_s;
    win->not_before = INT64_MIN;
    if (nbf) {
        double b = json_number_value(nbf);
        if (!isfinite(b) || (double)now_s < b - (double)pv->skew_s)
            return V_FAIL;
        win->not_before = clamp_s(b) - pv->skew_s;
    }
    if (pv->issuer) {
        const json_t *iss = json_object_get(claims, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), pv->issuer) != 0)
            return V_FAIL;
    }
    if (!aud_ok(pv, json_object_get(claims, "aud")))
        return V_FAIL;
    for (uint32_t i = 0; i < pv->required_claims.n; i++) {
        const json_t *c = json_object_get(claims, pv->required_claims.v[i]);
        if (!c || json_is_null(c))
            return V_FAIL;
    }
    const json_t *scope = json_object_get(claims, "scope"), *scp = json_object_get(claims, "scp");
    for (uint32_t i = 0; i < pv->required_scopes.n; i++)
        if (!has_word(scope, pv->required_scopes.v[i]) && !has_word(scp, pv->required_scopes.v[i]))
            return V_SCOPE;
    return V_OK;
}

/* ---- outcome: built from claims, kept as a blob, applied ---- */

static int build_outcome(struct pt_arena *a, const struct jwt_provider *pv, const json_t *claims,
                         struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    const json_t *c = json_object_get(claims, pv->consumer_claim ? pv->consumer_claim : "sub");
    if (c && (json_is_string(c) || json_is_integer(c))) {
        o->consumer = json_text(a, c);
        if (!o->consumer.p)
            return -ENOMEM;
        if (!printable(o->consumer))
            o->consumer = (pt_slice){NULL, 0};
    }
    if (pv->groups_claim &&
        words(a, json_object_get(claims, pv->groups_claim), &o->groups, &o->ngroups) < 0)
        return -ENOMEM;
    o->nh = pv->nhdr;
    o->hvals = pt_arena_zalloc(a, sizeof(*o->hvals) * (pv->nhdr ? pv->nhdr : 1));
    if (!o->hvals)
        return -ENOMEM;
    for (uint32_t i = 0; i < pv->nhdr; i++) {
        const json_t *v = json_object_get(claims, pv->claims_to_headers.keys[i]);
        if (v)
            o->hvals[i] = claim_value(a, v);
    }
    return 0;
}

static size_t put_u32(char *buf, size_t n, uint32_t v)
{
    if (buf)
        memcpy(buf + n, &v, 4);
    return n + 4;
}

static size_t put_slice(char *buf, size_t n, pt_slice s)
{
    n = put_u32(buf, n, (uint32_t)s.len);
    if (buf && s.len)
        memcpy(buf + n, s.p, s.len);
    return n + s.len;
}

/* A claims_to_headers value's length in the blob when the claim is
 * absent (an empty claim is a present, empty value). */
#define BLOB_ABSENT UINT32_MAX

/* The outcome as bytes for the cache: the consumer, the group count and
 * groups, then one value per claims_to_headers entry (BLOB_ABSENT: no
 * such claim). Two passes: the size, then the bytes. */
static pt_slice outcome_blob(struct pt_arena *a, const struct outcome *o)
{
    char *buf = NULL;
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        n = put_slice(buf, 0, o->consumer);
        n = put_u32(buf, n, o->ngroups);
        for (uint32_t i = 0; i < o->ngroups; i++)
            n = put_slice(buf, n, o->groups[i]);
        for (uint32_t i = 0; i < o->nh; i++)
            n = o->hvals[i].p ? put_slice(buf, n, o->hvals[i]) : put_u32(buf, n, BLOB_ABSENT);
        if (!buf && !(buf = pt_arena_alloc(a, n)))
            return (pt_slice){NULL, 0};
    }
    return (pt_slice){buf, n};
}

static bool get_u32(pt_slice *b, uint32_t *v)
{
    if (b->len < 4)
        return false;
    memcpy(v, b->p, 4);
    b->p += 4;
    b->len -= 4;
    return true;
}

static bool get_slice(pt_slice *b, pt_slice *out)
{
    uint32_t len;
    if (!get_u32(b, &len) || b->len < len)
        return false;
    *out = (pt_slice){b->p, len};
    b->p += len;
    b->len -= len;
    return true;
}

static int outcome_from_blob(struct pt_arena *a, const struct jwt_provider *pv, pt_slice b,
                             struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    if (!get_slice(&b, &o->consumer) || !get_u32(&b, &o->ngroups) || o->ngroups > b.len / 4)
        return -1;
    o->groups = pt_arena_alloc(a, sizeof(*o->groups) * (o->ngroups + 1));
    o->nh = pv->nhdr;
    o->hvals = pt_arena_zalloc(a, sizeof(*o->hvals) * (pv->nhdr + 1));
    if (!o->groups || !o->hvals)
        return -ENOMEM;
    for (uint32_t i = 0; i < o->ngroups; i++)
        if (!get_slice(&b, &o->groups[i]))
            return -1;
    for (uint32_t i = 0; i < o->nh; i++) {
        uint32_t len;
        pt_slice peek = b;
        if (get_u32(&peek, &len) && len == BLOB_ABSENT) {
            b = peek;
            o->hvals[i] = (pt_slice){NULL, 0};
        } else if (!get_slice(&b, &o->hvals[i])) {
            return -1; /* else present, maybe empty */
        }
    }
    return 0;
}

/* The claims segment (between the two dots) of a token that verified. */
static pt_slice claims_segment(pt_slice token)
{
    const char *d1 = memchr(token.p, '.', token.len);
    const char *end = token.p + token.len;
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    return d2 ? (pt_slice){d1 + 1, (size_t)(d2 - d1 - 1)} : (pt_slice){"", 0};
}

/* Every success path (a fresh verification or a cache hit) ends here. */
static int apply_outcome(struct pt_filter_ctx *ctx, const struct jwt_provider *pv,
                         const struct outcome *o, pt_slice token)
{
    /* For rate_limit's `jwt:CLAIM` keys: the first verified token stands,
     * as the first identity does. */
    if (ctx->identity && !ctx->identity->token_claims.len)
        ctx->identity->token_claims = claims_segment(token);
    for (uint32_t i = 0; i < o->nh; i++)
        if (o->hvals[i].p &&
            pt_headers_add(ctx->req_headers, ctx->arena, pv->hdr_names[i], o->hvals[i]) < 0)
            return PT_FILTER_ERROR;
    if (o->consumer.len && pt_auth_set_identity(ctx, o->consumer, o->groups, o->ngroups, "jwt") < 0)
        return PT_FILTER_ERROR;
    if (o->consumer.len == 0 && ctx->identity && o->ngroups) {
        /* Groups without a consumer: acl can still read them. */
        ctx->identity->groups = o->groups;
        ctx->identity->ngroups = o->ngroups;
        ctx->identity->source = "jwt";
    }
    return PT_FILTER_CONTINUE;
}

/* ---- JWKS fetches and waits ---- */

static void fetch_done(struct pt_filter_ctx *ctx, void *state,
                       const struct pt_filter_call_res *res);
static void poll_fired(struct pt_filter_ctx *ctx, void *state);

static uint32_t provider_bit(const struct jwt_state *st, const struct jwt_provider *pv)
{
    return 1u << (uint32_t)(pv - st->conf->pv);
}

/* Starts this request's fetch of pv's keys (the flight is already ours).
 * 0, or -1 after giving the flight back. */
static int start_fetch(struct pt_filter_ctx *ctx, struct jwt_state *st, struct jwt_provider *pv,
                       enum jwt_phase phase)
{
    struct pt_headers *h = pt_arena_zalloc(ctx->arena, sizeof(*h));
    if (h && pt_headers_add(h, ctx->arena, PT_SLICE("Accept"),
                            PT_SLICE("application/jwk-set+json, application/json")) < 0)
        h = NULL;
    uint64_t timeout = pv->jwks_timeout_ms;
    if (phase == JWT_REFRESHING && timeout > REFRESH_HOLD_MS)
        timeout = REFRESH_HOLD_MS;
    struct pt_filter_call_req req = {
        .url = pv->jwks_uri,
        .method = PT_SLICE("GET"),
        .headers = h,
        .timeout_ms = timeout,
        .max_body = PT_JWKS_MAX_BYTES,
    };
    if (!h || ctx->svc->call(ctx, &req, fetch_done) < 0) {
        pt_jwks_abort_fetch(pv->src);
        pt_warn("jwt: keys from %s: the fetch could not be started", pv->label);
        return -1;
    }
    st->phase = phase;
    st->pv = pv;
    st->fetched |= provider_bit(st, pv);
    ctx->suspend_deadline_ms = timeout + DEADLINE_MARGIN_MS;
    return 0;
}

static int start_wait(struct pt_filter_ctx *ctx, struct jwt_state *st, struct jwt_provider *pv)
{
    if (ctx->svc->timer(ctx, POLL_MS, poll_fired) < 0)
        return -1;
    st->phase = JWT_WAITING;
    st->pv = pv;
    st->seen_seq = atomic_load_explicit(&pv->src->done_seq, memory_order_acquire);
    st->wait_until_ms = ctx->svc->now_ms(ctx) + pv->jwks_timeout_ms + POLL_MS;
    st->fetched |= provider_bit(st, pv);
    /* Room for the wait, then a take-over of a lost fetch and that fetch. */
    ctx->suspend_deadline_ms = 2 * pv->jwks_timeout_ms + PT_JWKS_TAKEOVER_MS + DEADLINE_MARGIN_MS;
    return 0;
}

static void log_fetch(const struct jwt_provider *pv, int rc, const struct pt_filter_call_res *res,
                      const char *why)
{
    if (rc == 0) {
        struct pt_jwks_set *s = pt_jwks_acquire(pv->src);
        pt_info("jwt: keys from %s: %u key(s)%s%s", pv->label, s ? s->n : 0, why[0] ? "; " : "",
                why);
        pt_jwks_set_unref(s);
    } else if (res->error != PT_CALL_OK) {
        pt_warn("jwt: keys from %s: fetch failed (%s); keeping the last good set", pv->label,
                res->error_text ? res->error_text : "call failed");
    } else {
        pt_warn("jwt: keys from %s: %s; keeping the last good set", pv->label, why);
    }
}

/* Continues after a fetch or a wait: verifies again, or resumes with the
 * decided outcome. Ends in ctx->resume unless it started more work. */
static void continue_after(struct pt_filter_ctx *ctx, struct jwt_state *st)
{
    if (st->phase == JWT_REFRESHING) {
        st->phase = JWT_IDLE;
        ctx->resume(ctx, st->outcome);
        return;
    }
    st->phase = JWT_IDLE;
    int r = pt_jwt_verify(ctx, st);
    if (r != PT_FILTER_SUSPEND)
        ctx->resume(ctx, r);
    /* else: a fetch or wait for another provider is pending; the same
     * suspension goes on, and its completion resumes. */
}

static void fetch_done(struct pt_filter_ctx *ctx, void *state, const struct pt_filter_call_res *res)
{
    struct jwt_state *st = state;
    struct jwt_provider *pv = st->pv;
    pt_slice cc = {NULL, 0};
    int status = res->error == PT_CALL_OK ? res->status : 0;
    if (status == 200 && res->truncated)
        status = -1;
    for (uint32_t i = 0; status == 200 && i < res->headers.n; i++)
        if (!res->headers.f[i].dead &&
            pt_slice_ieq(res->headers.f[i].name, PT_SLICE("Cache-Control")))
            cc = res->headers.f[i].value;
    char why[128] = "";
    uint64_t now = ctx->svc->now_ms(ctx);
    int rc = pt_jwks_end_fetch(pv->src, now, status, res->body, cc, why, sizeof(why));
    if (status == -1)
        snprintf(why, sizeof(why), "the JWKS document is larger than %u bytes",
                 (unsigned)PT_JWKS_MAX_BYTES);
    log_fetch(pv, rc, res, why);
    continue_after(ctx, st);
}

static void poll_fired(struct pt_filter_ctx *ctx, void *state)
{
    struct jwt_state *st = state;
    struct jwt_provider *pv = st->pv;
    struct pt_jwks_source *src = pv->src;
    uint64_t now = ctx->svc->now_ms(ctx);
    uint64_t seq = atomic_load_explicit(&src->done_seq, memory_order_acquire);
    bool ended = seq != st->seen_seq || !atomic_load_explicit(&src->fetching, memory_order_acquire);
    if (ended && atomic_load_explicit(&src->lost, memory_order_acquire) &&
        now < st->wait_until_ms) {
        /* Its request went away: this one takes the fetch over, or keeps
         * waiting for whoever did (or for the take-over interval). */
        if (pt_jwks_begin_fetch(src, PT_JWKS_NEED_TAKEOVER, now)) {
            if (start_fetch(ctx, st, pv, JWT_FETCHING) == 0)
                return;
        } else {
            st->seen_seq = seq;
            ended = false;
        }
    }
    if (!ended && now < st->wait_until_ms && ctx->svc->timer(ctx, POLL_MS, poll_fired) == 0)
        return; /* still in flight: look again next tick */
    continue_after(ctx, st);
}

void pt_jwt_cancel(struct jwt_state *st)
{
    /* The gateway has cancelled our call: give the flight back so that
     * another request can fetch. A waiter holds nothing. */
    if (st->phase == JWT_FETCHING || st->phase == JWT_REFRESHING)
        pt_jwks_abort_fetch(st->pv->src);
    st->phase = JWT_IDLE;
}

/* ---- providers ---- */

struct token {
    struct pt_jws jws;
    int alg;
    const char *kid;
    json_t *claims;
};

/* The token did not verify with the keys pv has (none yet, an unknown
 * kid, or a bad signature): V_SUSPEND when a fetch (the first, a kid
 * refetch, a due refresh, the take-over of a lost one) or a wait for one
 * was started, V_FAIL when there is nothing to wait for. */
static enum verdict need_keys(struct pt_filter_ctx *ctx, struct jwt_state *st,
                              struct jwt_provider *pv, bool have_set, bool unknown)
{
    struct pt_jwks_source *src = pv->src;
    if (!src->uri || (st->fetched & provider_bit(st, pv)))
        return V_FAIL;
    uint64_t now = ctx->svc->now_ms(ctx);
    enum pt_jwks_need need = pt_jwks_need(src, unknown, false, now);
    if (need != PT_JWKS_NEED_NONE && pt_jwks_begin_fetch(src, need, now))
        return start_fetch(ctx, st, pv, JWT_FETCHING) == 0 ? V_SUSPEND : V_FAIL;
    /* Someone else's fetch may bring the keys: wait for it when the token
     * needs new keys, or for a lost fetch to be taken over. */
    bool wait = need == PT_JWKS_NEED_TAKEOVER ||
                ((!have_set || unknown || need == PT_JWKS_NEED_REFRESH) &&
                 atomic_load_explicit(&src->fetching, memory_order_acquire));
    return wait && start_wait(ctx, st, pv) == 0 ? V_SUSPEND : V_FAIL;
}

static enum verdict try_provider(struct pt_filter_ctx *ctx, struct jwt_state *st,
                                 struct jwt_provider *pv, const struct token *t, int64_t now_s,
                                 struct pt_jwt_cached *win, uint64_t *set_seq)
{
    if (t->alg < 0 || !(pv->algs & PT_JOSE_BIT(t->alg)))
        return V_FAIL;
    /* A token from another issuer never costs this provider a fetch. */
    if (pv->issuer) {
        const json_t *iss = json_object_get(t->claims, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), pv->issuer) != 0)
            return V_FAIL;
    }
    *set_seq = atomic_load_explicit(&pv->src->set_seq, memory_order_acquire);
    struct pt_jwks_set *set = pt_jwks_acquire(pv->src);
    bool unknown = set && t->kid && !pt_jwks_has_kid(set, t->kid);
    bool ok = false;
    uint32_t i = 0;
    for (const struct pt_jwk *k; !ok && (k = pt_jwks_next(set, t->kid, t->alg, &i));)
        ok = pt_jose_verify(t->alg, k, (const uint8_t *)t->jws.signing_input.p,
                            t->jws.signing_input.len, t->jws.sig, t->jws.sig_len);
    bool have_set = set != NULL;
    pt_jwks_set_unref(set);
    if (ok)
        return claims_ok(pv, t->claims, now_s, win);
    return need_keys(ctx, st, pv, have_set, unknown);
}

/* The token's parts, or -1 when it is not a JWS we could verify. */
static int read_token(struct pt_filter_ctx *ctx, pt_slice token, struct token *t)
{
    memset(t, 0, sizeof(*t));
    if (pt_jws_split(token, ctx->arena, &t->jws) < 0 ||
        pt_jws_header(&t->jws, ctx->arena, &t->alg, &t->kid) < 0 || t->alg < 0)
        return -1;
    t->claims = json_loadb(t->jws.payload, t->jws.payload_len, JSON_REJECT_DUPLICATES, NULL);
    return json_is_object(t->claims) ? 0 : -1;
}

/* A verified token: outcome upstream, into the cache, and maybe a due
 * refresh of the provider's keys run by this request. */
static int accept_token(struct pt_filter_ctx *ctx, struct jwt_state *st, struct jwt_provider *pv,
                        const struct token *t, struct pt_jwt_cached *win, uint64_t set_seq)
{
    struct outcome o;
    if (build_outcome(ctx->arena, pv, t->claims, &o) < 0)
        return PT_FILTER_ERROR;
    const struct jwt_conf *conf = st->conf;
    if (conf->cache) {
        win->provider = (uint32_t)(pv - conf->pv);
        win->set_seq = set_seq;
        win->blob = outcome_blob(ctx->arena, &o);
        if (win->blob.p)
            pt_jwt_cache_put(conf->cache, st->key, win);
    }
    int r = apply_outcome(ctx, pv, &o, st->token);
    if (r != PT_FILTER_CONTINUE || !pv->src->uri)
        return r;
    uint64_t now = ctx->svc->now_ms(ctx);
    if (pt_jwks_need(pv->src, false, true, now) == PT_JWKS_NEED_REFRESH &&
        pt_jwks_begin_fetch(pv->src, PT_JWKS_NEED_REFRESH, now) &&
        start_fetch(ctx, st, pv, JWT_REFRESHING) == 0) {
        st->outcome = PT_FILTER_CONTINUE;
        return PT_FILTER_SUSPEND;
    }
    return r;
}

static bool from_cache(struct pt_filter_ctx *ctx, struct jwt_state *st, int64_t now_s, int *r)
{
    const struct jwt_conf *conf = st->conf;
    struct pt_jwt_cached c;
    if (!conf->cache || !pt_jwt_cache_get(conf->cache, st->key, now_s, ctx->arena, &c))
        return false;
    if (c.provider >= conf->npv || now_s < c.not_before)
        return false;
    struct jwt_provider *pv = &conf->pv[c.provider];
    /* Verified with keys the provider no longer has as they were: again. */
    if (atomic_load_explicit(&pv->src->set_seq, memory_order_acquire) != c.set_seq)
        return false;
    struct outcome o;
    if (outcome_from_blob(ctx->arena, pv, c.blob, &o) < 0)
        return false;
    *r = apply_outcome(ctx, pv, &o, st->token);
    return true;
}

int pt_jwt_verify(struct pt_filter_ctx *ctx, struct jwt_state *st)
{
    const struct jwt_conf *conf = st->conf;
    int64_t now_s = (int64_t)time(NULL);
    int r;
    if (st->fetched == 0 && conf->cache) {
        SHA256((const unsigned char *)st->token.p, st->token.len, st->key);
        /* The verified-token cache's result, for the access log and the
         * metrics (portico_filter_notes_total). */
        bool hit = from_cache(ctx, st, now_s, &r);
        pt_filter_note(ctx, "jwt_cache", hit ? "hit" : "miss");
        if (hit)
            return r;
    }
    struct token t;
    enum verdict best = V_FAIL;
    if (read_token(ctx, st->token, &t) < 0) {
        json_decref(t.claims);
        return pt_auth_refuse(ctx, 401, "Bearer", PT_AUTH_INVALID_TOKEN);
    }
    r = PT_FILTER_CONTINUE;
    for (uint32_t i = 0; i < conf->npv; i++) {
        struct pt_jwt_cached win;
        uint64_t seq = 0;
        enum verdict v = try_provider(ctx, st, &conf->pv[i], &t, now_s, &win, &seq);
        if (v == V_SUSPEND) {
            r = PT_FILTER_SUSPEND;
            break;
        }
        if (v == V_OK) {
            r = accept_token(ctx, st, &conf->pv[i], &t, &win, seq);
            best = V_OK;
            break;
        }
        if (v == V_SCOPE)
            best = V_SCOPE;
    }
    json_decref(t.claims);
    if (r == PT_FILTER_SUSPEND || best == V_OK)
        return r;
    if (best == V_SCOPE)
        return pt_auth_refuse(ctx, 403, "Bearer", PT_AUTH_INSUFFICIENT_SCOPE);
    return pt_auth_refuse(ctx, 401, "Bearer", PT_AUTH_INVALID_TOKEN);
}
