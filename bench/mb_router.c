/*
 * mb_router.c — router lookup cost (part of `make microbench`).
 *
 * Builds tables of 1,000 and 10,000 routes shaped like a real gateway
 * config — a few dozen API hosts and tenant wildcards plus host-less
 * routes; per service a versioned prefix, REST templates, exact health
 * paths, method splits, the odd header predicate or regex — and replays a
 * request mix drawn from the same services (about one request in ten
 * misses and ends in 404/405). Time is taken around batches of 1,000
 * lookups with clock_gettime (vDSO, ~30 ns, amortised to nothing), and
 * the median and p99 of the per-lookup cost over the batches is printed.
 */
#include "gateway/router.h"

#include "http/tokens.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BATCH 1000
#define NBATCH 3000
#define NREQ 1024 /* distinct requests, replayed round-robin */

/* Requests are packed (strings in one pool) so that, as in the gateway,
 * where the router reads a request the parser has just touched, the
 * request itself is not what the benchmark measures. */
struct bench_req {
    const char *host;
    const char *target;
    int method;
    uint32_t nhdr;
    struct pt_hfield hdr[2];
};

static char pool[NREQ * 96];
static size_t pool_used;

static const char *pool_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *pool_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = pool + pool_used;
    int n = vsnprintf(p, sizeof(pool) - pool_used, fmt, ap);
    va_end(ap);
    pool_used += (size_t)n + 1;
    return p;
}

static uint64_t bench_rng = 0x2545f4914f6cdd1dull;

static uint32_t brnd(uint32_t n)
{
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 7;
    bench_rng ^= bench_rng << 17;
    return (uint32_t)((bench_rng >> 11) % n);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *const services[] = {"users",   "orders", "payments", "catalog", "search",
                                       "cart",    "auth",   "profile",  "reviews", "shipping",
                                       "billing", "media",  "notify",   "stock",   "pricing"};

/* A service is (host slot, version, name); each adds ~10 routes. Host slot
 * 0..NHOSTS-1 is an exact host, then tenant wildcards, then host-less. */
#define NHOSTS 40
#define NWILD 10

static const char *host_of(struct pt_arena *a, uint32_t slot)
{
    if (slot < NHOSTS)
        return pt_arena_sprintf(a, "api%u.example.com", slot);
    if (slot < NHOSTS + NWILD)
        return pt_arena_sprintf(a, "*.t%u.example.com", slot - NHOSTS);
    return NULL;
}

static pcre2_code *bench_regex(struct pt_generation *g, const char *pat)
{
    int ec;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &ec, &off, NULL);
    if (!re)
        return NULL;
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    if (g->nregexes == g->capregexes) {
        g->capregexes = g->capregexes ? g->capregexes * 2 : 64;
        g->regexes = realloc(g->regexes, sizeof(*g->regexes) * g->capregexes);
    }
    g->regexes[g->nregexes++] = re;
    return re;
}

static struct pt_route *add(struct pt_generation *g, const char *host, uint32_t methods)
{
    struct pt_route *r = &g->routes[g->nroutes];
    r->index = g->nroutes++;
    r->name = pt_arena_sprintf(&g->arena, "r%u", r->index);
    r->match.methods = methods;
    if (host) {
        r->match.hosts = pt_arena_alloc(&g->arena, sizeof(char *));
        r->match.hosts[0] = host;
        r->match.nhosts = 1;
    }
    return r;
}

#define MB(x) (1u << PT_METHOD_##x)

/* Fills g with about `want` routes; returns the number of services. */
static uint32_t build_table(struct pt_generation *g, uint32_t want)
{
    struct pt_arena *a = &g->arena;
    uint32_t cap = want + 32;
    g->routes = pt_arena_zalloc(a, sizeof(*g->routes) * cap);
    uint32_t svc = 0;
    while (g->nroutes + 12 <= want) {
        /* ~70% of services sit on an exact host, ~10% on a wildcard. */
        uint32_t pick = svc % 10;
        uint32_t slot = pick < 7 ? svc % NHOSTS : pick < 8 ? NHOSTS + svc % NWILD : NHOSTS + NWILD;
        const char *host = host_of(a, slot);
        const char *name = services[svc % PT_ARRAY_LEN(services)];
        /* Keeps (host, version, name) unique. */
        uint32_t ver = 1 + (svc / PT_ARRAY_LEN(services)) % 97;
        const char *base = pt_arena_sprintf(a, "/v%u/%s", ver, name);
        struct pt_route *r;
        add(g, host, 0)->match.path_prefix = base;
        add(g, host, MB(GET))->match.path_template = pt_arena_sprintf(a, "%s/{id}", base);
        add(g, host, MB(PUT) | MB(PATCH) | MB(DELETE))->match.path_template =
            pt_arena_sprintf(a, "%s/{id}", base);
        add(g, host, MB(GET))->match.path_template =
            pt_arena_sprintf(a, "%s/{id}/items/{item}", base);
        add(g, host, MB(POST))->match.path = base;
        add(g, host, MB(GET))->match.path = pt_arena_sprintf(a, "%s/health", base);
        add(g, host, 0)->match.path = pt_arena_sprintf(a, "%s/status", base);
        add(g, host, MB(GET))->match.path_template = pt_arena_sprintf(a, "%s/{id}/history", base);
        r = add(g, host, 0);
        r->match.path_prefix = pt_arena_sprintf(a, "%s/admin", base);
        r->match.headers = pt_arena_zalloc(a, sizeof(struct pt_kv_match));
        r->match.headers[0] = (struct pt_kv_match){"X-Admin", PT_TOK_UNKNOWN, "1", NULL};
        r->match.nheaders = 1;
        r = add(g, host, 0);
        r->match.path_prefix = base;
        r->match.headers = pt_arena_zalloc(a, sizeof(struct pt_kv_match));
        r->match.headers[0] = (struct pt_kv_match){"X-Client", PT_TOK_UNKNOWN, "mobile", NULL};
        r->match.nheaders = 1;
        r->priority = 1;
        if (svc % 10 == 3) {
            r = add(g, host, MB(GET));
            r->match.path_regex = pt_arena_sprintf(a, "^%s/export/(?<fmt>csv|json)$", base);
            r->match.regex = bench_regex(g, r->match.path_regex);
        }
        svc++;
    }
    /* A few catch-alls, as real configs have. */
    add(g, NULL, MB(GET))->match.path = "/";
    add(g, NULL, MB(GET))->match.path = "/favicon.ico";
    add(g, NULL, 0)->match.path_prefix = "/.well-known";
    return svc;
}

static void make_requests(struct bench_req *q, uint32_t nsvc)
{
    static const char *const tails[] = {"",         "/42",         "/42/items/7",
                                        "/health",  "/status",     "/9/history",
                                        "/admin/x", "/export/csv", "/missing/deep/path"};
    for (uint32_t i = 0; i < NREQ; i++) {
        uint32_t svc = brnd(nsvc);
        uint32_t pick = svc % 10;
        uint32_t slot = pick < 7 ? svc % NHOSTS : pick < 8 ? NHOSTS + svc % NWILD : NHOSTS + NWILD;
        if (slot < NHOSTS)
            q[i].host = pool_printf("api%u.example.com", slot);
        else if (slot < NHOSTS + NWILD)
            q[i].host = pool_printf("acme.t%u.example.com", slot - NHOSTS);
        else
            q[i].host = pool_printf("gateway.internal");
        const char *name = services[svc % PT_ARRAY_LEN(services)];
        uint32_t ver = 1 + (svc / PT_ARRAY_LEN(services)) % 97;
        const char *tail = tails[brnd(PT_ARRAY_LEN(tails))];
        /* ~5% go to an unknown service: 404. */
        if (brnd(20) == 0)
            name = "nosuchservice";
        q[i].target =
            pool_printf("/v%u/%s%s%s", ver, name, tail, brnd(4) == 0 ? "?page=2&limit=50" : "");
        static const int methods[] = {PT_METHOD_GET,    PT_METHOD_GET,  PT_METHOD_GET,
                                      PT_METHOD_GET,    PT_METHOD_POST, PT_METHOD_PUT,
                                      PT_METHOD_DELETE, PT_METHOD_HEAD};
        q[i].method = methods[brnd(PT_ARRAY_LEN(methods))];
        q[i].nhdr = 0;
        q[i].hdr[q[i].nhdr++] = (struct pt_hfield){PT_SLICE("User-Agent"), PT_SLICE("okhttp/4.12"),
                                                   PT_TOK_USER_AGENT, false};
        if (brnd(5) == 0)
            q[i].hdr[q[i].nhdr++] =
                (struct pt_hfield){PT_SLICE("X-Client"), PT_SLICE("mobile"), PT_TOK_UNKNOWN, false};
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run(uint32_t nroutes)
{
    struct pt_generation g;
    memset(&g, 0, sizeof(g));
    pt_arena_init(&g.arena, 256 * 1024);
    uint32_t nsvc = build_table(&g, nroutes);
    char err[256];
    uint64_t t0 = now_ns();
    struct pt_router *r = pt_router_build(&g, err, sizeof(err));
    uint64_t build_ns = now_ns() - t0;
    int rc = -1;
    struct bench_req *q = calloc(NREQ, sizeof(*q));
    struct pt_route_input *in = calloc(NREQ, sizeof(*in));
    struct pt_headers *hs = calloc(NREQ, sizeof(*hs));
    double *per = calloc(NBATCH, sizeof(*per));
    if (!r || !q || !in || !hs || !per) {
        fprintf(stderr, "router bench: %s\n", r ? "out of memory" : err);
        goto out;
    }
    pool_used = 0;
    make_requests(q, nsvc);
    for (uint32_t i = 0; i < NREQ; i++) {
        const char *qm = strchr(q[i].target, '?');
        size_t plen = qm ? (size_t)(qm - q[i].target) : strlen(q[i].target);
        hs[i] = (struct pt_headers){q[i].hdr, q[i].nhdr, 2};
        in[i] = (struct pt_route_input){
            .host = {q[i].host, strlen(q[i].host)},
            .path = {q[i].target, plen},
            .query = qm ? (pt_slice){qm + 1, strlen(qm + 1)} : (pt_slice){NULL, 0},
            .method_id = q[i].method,
            .headers = &hs[i],
        };
    }
    struct pt_route_result res;
    uint32_t hits = 0, n405 = 0, k = 0;
    for (uint32_t i = 0; i < NREQ; i++) { /* warm-up, and the outcome mix */
        int s = pt_router_match(r, &in[i], &res);
        hits += s == 0;
        n405 += s == 405;
    }
    volatile uint32_t sink = 0;
    for (uint32_t b = 0; b < NBATCH; b++) {
        uint64_t start = now_ns();
        for (uint32_t i = 0; i < BATCH; i++) {
            sink += (uint32_t)pt_router_match(r, &in[k], &res);
            k = (k + 1) & (NREQ - 1);
        }
        per[b] = (double)(now_ns() - start) / BATCH;
    }
    qsort(per, NBATCH, sizeof(*per), cmp_double);
    printf("router: %5u routes: median %.1f ns/lookup, p99 %.1f ns (batches of %d; %u%% matched, "
           "%u%% 405, rest 404; build %.1f ms)\n",
           g.nroutes, per[NBATCH / 2], per[NBATCH * 99 / 100], BATCH, hits * 100 / NREQ,
           n405 * 100 / NREQ, (double)build_ns / 1e6);
    (void)sink;
    rc = 0;
out:
    free(q);
    free(in);
    free(hs);
    free(per);
    for (uint32_t i = 0; i < g.nregexes; i++)
        pcre2_code_free(g.regexes[i]);
    free(g.regexes);
    pt_arena_destroy(&g.arena);
    return rc;
}

int bench_router(void)
{
    int rc = run(1000);
    rc |= run(10000);
    return rc ? 1 : 0;
}
