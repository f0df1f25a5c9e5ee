/*
 * exchange_request.c — what the gateway changes on the way upstream: the
 * path (strip_prefix, rewrite) and the forwarding fields (X-Forwarded-*,
 * X-Real-IP, X-Request-ID, Host); and who the client is.
 */
#include "gateway/exchange_int.h"

#include "http/forwarded.h"
#include "http/h1_write.h"
#include "http/path.h"

#include <strings.h>

void pt_exchange_find_client(struct pt_exchange *ex)
{
    ex->client = ex->peer;
    ex->client_ip = ex->peer_ip;
    if (!ex->peer_ip.family || !ex->gen->trusted_proxies.n)
        return; /* nothing to walk: the peer (already canonical text) is the client */
    pt_forwarded_client(&ex->reqh, &ex->gen->trusted_proxies, &ex->client_ip);
    if (memcmp(&ex->client_ip, &ex->peer_ip, sizeof(ex->client_ip)) == 0)
        return;
    /* Canonical text, so one client is one key (rate limits, hashing)
     * whatever spelling an X-Forwarded-For entry used. */
    size_t n = pt_ip_format(&ex->client_ip, ex->client_buf);
    if (n)
        ex->client = (pt_slice){ex->client_buf, n};
}

/* X-Forwarded-For appends the peer to what earlier proxies wrote (the
 * client is the walk's answer, but each hop records whom it heard from);
 * X-Forwarded-Proto is the listener's scheme; X-Real-IP, when asked for,
 * is the client and replaces whatever the client sent. */
bool pt_exchange_forwarding_headers(struct pt_exchange *t)
{
    struct pt_arena *a = t->arena;
    pt_slice ip = t->peer;
    /* X-Forwarded-For: append to what earlier proxies wrote (an empty
     * field adds nothing: no ", 10.0.0.1"). */
    size_t prior = 0;
    for (uint32_t i = 0; i < t->reqh.n; i++)
        if (!t->reqh.f[i].dead && t->reqh.f[i].token == PT_TOK_X_FORWARDED_FOR &&
            t->reqh.f[i].value.len)
            prior += t->reqh.f[i].value.len + 2;
    pt_slice xff = ip;
    if (prior) {
        char *v = pt_arena_alloc(a, prior + ip.len);
        if (!v)
            return false;
        size_t n = 0;
        for (uint32_t i = 0; i < t->reqh.n; i++) {
            if (t->reqh.f[i].dead || t->reqh.f[i].token != PT_TOK_X_FORWARDED_FOR ||
                !t->reqh.f[i].value.len)
                continue;
            n += pt_h1_put(v + n, t->reqh.f[i].value);
            v[n++] = ',';
            v[n++] = ' ';
        }
        n += pt_h1_put(v + n, ip);
        xff = (pt_slice){v, n};
    }
    if (pt_headers_set(&t->reqh, a, PT_SLICE("X-Forwarded-For"), xff) < 0 ||
        pt_headers_set(&t->reqh, a, PT_SLICE("X-Forwarded-Proto"), t->req.scheme) < 0 ||
        pt_headers_set(&t->reqh, a, PT_SLICE("X-Request-ID"), t->reqid) < 0)
        return false;
    if (t->gen->forward_real_ip &&
        pt_headers_set(&t->reqh, a, PT_SLICE("X-Real-IP"), t->client) < 0)
        return false;
    if (t->req.host.len &&
        pt_headers_set(&t->reqh, a, PT_SLICE("X-Forwarded-Host"), t->req.host) < 0)
        return false;
    /* The upstream sees the host the request was routed by: the authority
     * of an absolute-form target replaces the Host field (RFC 9112
     * §3.2.2). Before the filters, so a transform can still set its own. */
    struct pt_hfield *h = pt_headers_find_token(&t->reqh, PT_TOK_HOST);
    if (t->req.host.len && (!h || !pt_slice_eq(h->value, t->req.host)) &&
        pt_headers_set(&t->reqh, a, PT_SLICE("Host"), t->req.host) < 0)
        return false;
    return true;
}

/* Applies strip_prefix or rewrite to the path. Returns 1, 0 when out of
 * memory, -1 when a rewrite made a path that cannot be normalised. */
int pt_exchange_rewrite_path(struct pt_exchange *t)
{
    const struct pt_route *r = t->route;
    t->path = t->req.path;
    if (r->strip_prefix) {
        size_t n = strlen(r->strip_prefix);
        /* The route matched on that prefix, in any case when it ignores case. */
        if (t->path.len >= n &&
            (r->match.case_insensitive ? strncasecmp(t->path.p, r->strip_prefix, n) == 0
                                       : memcmp(t->path.p, r->strip_prefix, n) == 0)) {
            t->path.p += n;
            t->path.len -= n;
            if (t->path.len == 0 || t->path.p[0] != '/') {
                char *p = pt_arena_alloc(t->arena, t->path.len + 1);
                if (!p)
                    return 0;
                p[0] = '/';
                memcpy(p + 1, t->path.p, t->path.len);
                t->path = (pt_slice){p, t->path.len + 1};
            }
        }
    } else if (r->rewrite) {
        /* A template may use a parameter more than once: every `{` may
         * stand for the longest value, so bound it by all of them. */
        size_t cap = strlen(r->rewrite) + 1, values = 0, slots = 0;
        for (uint32_t i = 0; i < t->rr.nparams; i++)
            values += t->rr.param_values[i].len;
        for (const char *s = r->rewrite; *s; s++)
            slots += *s == '{';
        cap += slots * values;
        char *o = pt_arena_alloc(t->arena, cap);
        if (!o)
            return 0;
        size_t n = 0;
        for (const char *s = r->rewrite; *s;) {
            if (*s == '{') {
                const char *e = strchr(s, '}');
                if (e) {
                    pt_slice name = {s + 1, (size_t)(e - s - 1)};
                    pt_slice v = pt_param_lookup(t->rr.param_names, t->rr.param_values,
                                                 t->rr.nparams, r->match.regex != NULL, name);
                    if (v.p)
                        n += pt_h1_put(o + n, v);
                    s = e + 1;
                    continue;
                }
            }
            o[n++] = *s++;
        }
        t->path = (pt_slice){o, n};
        /* A regex capture can be part of a segment, so `..` again (`{name}`
         * of `/r/...pdf`): the rewritten path is normalised too. */
        if (t->gen->limits.normalize_path) {
            long nl = pt_path_normalize(o, n, t->gen->limits.merge_slashes);
            if (nl < 0)
                return -1;
            t->path.len = (size_t)nl;
        }
    }
    return 1;
}
