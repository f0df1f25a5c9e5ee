/*
 * admin_match.c — GET /debug/match?method=&host=&path=&query=&header=N:V
 * (header repeatable): the route a request would get in the running
 * generation, its filters in run order, its upstream or split, and for
 * each route weighed before it the first predicate it fails
 * (gateway/router.h, pt_router_explain). Parameters are percent-decoded
 * ('+' is a space; a bad escape or %00 is a 400). `path` is the path as a
 * client would send it: it goes through the data plane's own path rules
 * and normalisation (pt_exchange_path, with the generation's `limits`),
 * so the answer names the route the request would really get, or says it
 * would be refused with a 400 and why. `host` loses its port as the data
 * plane's Host does (pt_router_host: `[::1]:8080` → `[::1]`).
 */
#include "control/admin_int.h"
#include "gateway/exchange.h"
#include "gateway/router.h"

#include <errno.h>
#include <stdlib.h>

#define MATCH_MAX_HEADERS 32

struct match_args {
    char *method, *host, *path, *query;
    char *hdr[MATCH_MAX_HEADERS]; /* "Name:Value" */
    uint32_t nhdr;
    int err; /* 0; -ENOMEM; -EINVAL: a bad percent-escape */
};

static void parse_args(pt_slice q, struct match_args *a)
{
    const char *p = q.p, *end = q.p + q.len;
    while (q.len && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        if (eq) {
            size_t kl = (size_t)(eq - p), vl;
            char *v = NULL;
            int rc = admin_pct_decode(eq + 1, (size_t)(amp - eq - 1), true, &v, &vl);
            if (rc < 0 && !a->err)
                a->err = rc;
            char **slot = NULL;
            if (kl == 6 && memcmp(p, "method", 6) == 0)
                slot = &a->method;
            else if (kl == 4 && memcmp(p, "host", 4) == 0)
                slot = &a->host;
            else if (kl == 4 && memcmp(p, "path", 4) == 0)
                slot = &a->path;
            else if (kl == 5 && memcmp(p, "query", 5) == 0)
                slot = &a->query;
            else if (kl == 6 && memcmp(p, "header", 6) == 0 && a->nhdr < MATCH_MAX_HEADERS)
                slot = &a->hdr[a->nhdr++];
            if (slot) {
                free(*slot);
                *slot = v;
            } else {
                free(v);
            }
        }
        p = amp + 1;
    }
}

static void args_free(struct match_args *a)
{
    free(a->method);
    free(a->host);
    free(a->path);
    free(a->query);
    for (uint32_t i = 0; i < a->nhdr; i++)
        free(a->hdr[i]);
}

static void route_json(struct sbuf *b, const struct pt_route *r, const struct pt_route_result *res)
{
    sb_printf(b, ",\"route\":");
    sb_json_str(b, r->name);
    sb_printf(b, ",\"params\":{");
    for (uint32_t i = 0; i < res->nparams; i++) {
        sb_printf(b, "%s", i ? "," : "");
        sb_json_strn(b, res->param_names[i].p, res->param_names[i].len);
        sb_printf(b, ":");
        sb_json_strn(b, res->param_values[i].p, res->param_values[i].len);
    }
    sb_printf(b, "},\"upstream\":");
    sb_json_str(b, r->upstream ? r->upstream->name : NULL);
    if (r->split) {
        sb_printf(b, ",\"split\":[");
        for (uint32_t i = 0; i < r->split->nsides; i++) {
            sb_printf(b, "%s{\"upstream\":", i ? "," : "");
            sb_json_str(b, r->split->sides[i].up->name);
            sb_printf(b, ",\"weight\":%u}", r->split->sides[i].weight);
        }
        sb_printf(b, "]");
    }
    sb_printf(b, ",\"filters\":[");
    for (uint32_t f = 0; f < r->chain.n_all; f++) {
        sb_printf(b, "%s", f ? "," : "");
        sb_json_str(b, r->chain.all[f].def->name);
    }
    sb_printf(b, "]");
}

static void explain_json(struct sbuf *b, const struct pt_generation *g,
                         const struct pt_route_input *in)
{
    struct pt_route_result res;
    struct pt_route_explain *ex = NULL;
    size_t n = pt_router_explain(g, in, &res, &ex);
    if (n == SIZE_MAX) {
        b->oom = true;
        return;
    }
    sb_printf(b, ",\"status\":%d", res.route ? 200 : res.status);
    if (res.route)
        route_json(b, res.route, &res);
    else
        sb_printf(b, ",\"route\":null");
    sb_printf(b, ",\"not_matched\":[");
    for (size_t i = 0; i < n; i++) {
        sb_printf(b, "%s{\"route\":", i ? "," : "");
        sb_json_str(b, ex[i].route->name);
        sb_printf(b, ",\"reason\":\"%s\"", pt_route_miss_names[ex[i].miss]);
        if (ex[i].what) {
            sb_printf(b, ",\"%s\":", ex[i].miss == PT_MISS_HEADER ? "header" : "query");
            sb_json_str(b, ex[i].what);
        }
        sb_printf(b, "}");
    }
    sb_printf(b, "]}\n");
    free(ex);
}

/* The answer for a request whose parameters are valid: the path as the
 * data plane would make it, then the route (or the 400 it would get). */
static void answer(const struct admin_req *rq, struct admin_resp *out, const struct match_args *a,
                   const char *method, int mid, pt_slice host, const struct pt_headers *hs)
{
    struct pt_arena arena;
    pt_arena_init(&arena, 1024);
    pt_slice path;
    const char *why = NULL;
    int st =
        pt_exchange_path(&rq->g->limits, &arena, (pt_slice){a->path, strlen(a->path)}, &path, &why);
    if (st == 500) {
        admin_error(out, 500, "out of memory");
        pt_arena_destroy(&arena);
        return;
    }
    struct sbuf *b = &out->body;
    sb_printf(b, "{\"generation\":%llu,\"request\":{\"method\":", (unsigned long long)rq->g->id);
    sb_json_str(b, method);
    sb_printf(b, ",\"host\":");
    sb_json_strn(b, host.p, host.len);
    sb_printf(b, ",\"path\":");
    sb_json_str(b, a->path);
    sb_printf(b, ",\"normalized_path\":");
    if (st)
        sb_printf(b, "null");
    else
        sb_json_strn(b, path.p, path.len);
    sb_printf(b, ",\"headers\":%u}", hs->n);
    if (st) {
        /* Refused before routing, as the data plane would. */
        sb_printf(b, ",\"status\":%d,\"refused\":", st);
        sb_json_str(b, why);
        sb_printf(b, ",\"route\":null,\"not_matched\":[]}\n");
    } else {
        struct pt_route_input in = {
            .host = host,
            .path = path,
            .query = {a->query ? a->query : "", a->query ? strlen(a->query) : 0},
            .method_id = mid,
            .headers = hs};
        explain_json(b, rq->g, &in);
    }
    pt_arena_destroy(&arena);
}

void admin_debug_match(const struct admin_req *rq, struct admin_resp *out)
{
    struct match_args a = {0};
    parse_args(rq->query, &a);
    struct pt_hfield fields[MATCH_MAX_HEADERS];
    struct pt_headers hs = {fields, 0, MATCH_MAX_HEADERS};
    const char *method = a.method ? a.method : "GET";
    int mid = -1;
    for (int m = 1; m < PT_METHOD__COUNT; m++)
        if (pt_slice_eq_cstr(pt_method_names[m], method))
            mid = m;
    if (a.err == -ENOMEM) {
        admin_error(out, 500, "out of memory");
    } else if (a.err) {
        admin_error(out, 400,
                    "a parameter has a bad percent-escape (`%` needs two hex digits; %00 is not "
                    "allowed)");
    } else if (!a.path || a.path[0] != '/') {
        admin_error(out, 400, "`path` is required and starts with '/'");
    } else if (mid < 0) {
        admin_error(out, 400, "`method` is not an HTTP method this gateway knows");
    } else {
        for (uint32_t i = 0; i < a.nhdr; i++) {
            char *colon = strchr(a.hdr[i], ':');
            if (!colon || colon == a.hdr[i]) {
                admin_error(out, 400, "`header` is written Name:Value");
                args_free(&a);
                return;
            }
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            fields[hs.n++] = (struct pt_hfield){
                .name = {a.hdr[i], (size_t)(colon - a.hdr[i])},
                .value = {v, strlen(v)},
                .token = pt_token_lookup(a.hdr[i], (size_t)(colon - a.hdr[i])),
            };
        }
        const char *host = a.host ? a.host : "";
        pt_slice h = pt_router_host((pt_slice){host, strlen(host)});
        answer(rq, out, &a, method, mid, h, &hs);
    }
    args_free(&a);
}
