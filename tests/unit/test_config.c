/*
 * test_config.c — the config loader: YAML files in a temporary directory,
 * loaded as a user would (`t.yaml` relative to the working directory, so
 * every message starts with the path as given). Success cases check the
 * values and defaults that land in the generation; error cases check the
 * exact "file:line:col: message" lines, in file order.
 *
 * The loader is #included so that the generic filter-field parser can be
 * driven with a probe filter that has one field of every PT_F_* type (the
 * registered filters use only strings, lists and maps). All four files of
 * the schema walk are included, so none of them is also linked from the
 * library and every static stays reachable.
 */
#include "control/config.c"
#include "control/config_filters.c"
#include "control/config_routes.c"
#include "control/config_upstreams.c"

#include "filters/template.h"
#include "proxy/balance.h"
#include "unit.h"

#include <stdlib.h>

/* Three lines every error case may start with: a listener and an upstream. */
#define BASE                                                                                       \
    "listeners: [{ address: \"127.0.0.1:18080\" }]\n"                                              \
    "upstreams:\n"                                                                                 \
    "  users: { targets: [\"127.0.0.1:9001\"] }\n"

static struct pt_generation *load(const char *yaml, struct pt_diag *d)
{
    unit_write_file("t.yaml", yaml);
    pt_diag_init(d);
    return pt_config_load("t.yaml", 7, d);
}

/* Loads `yaml` and checks that it fails with exactly the `want` lines. */
static void expect_errors(int line, const char *yaml, const char *const *want)
{
    struct pt_diag d;
    struct pt_generation *g = load(yaml, &d);
    size_t nwant = 0;
    while (want[nwant])
        nwant++;
    bool same = !g && d.n == nwant;
    for (size_t i = 0; same && i < nwant; i++)
        same = strcmp(d.lines[i], want[i]) == 0;
    CHECK_MSG(same, "case at line %d", line);
    if (!same) {
        fprintf(stderr, "  want:\n");
        for (size_t i = 0; i < nwant; i++)
            fprintf(stderr, "    %s\n", want[i]);
        fprintf(stderr, "  got%s:\n", g ? " a generation and" : "");
        for (size_t i = 0; i < d.n; i++)
            fprintf(stderr, "    %s\n", d.lines[i]);
    }
    pt_generation_free(g);
    pt_diag_free(&d);
}

#define EXPECT(yaml, ...) expect_errors(__LINE__, yaml, (const char *const[]){__VA_ARGS__, NULL})

static struct pt_generation *expect_ok(int line, const char *yaml)
{
    struct pt_diag d;
    struct pt_generation *g = load(yaml, &d);
    CHECK_MSG(g != NULL, "case at line %d should load", line);
    if (!g)
        pt_diag_print(&d, stderr);
    pt_diag_free(&d);
    return g;
}

#define EXPECT_OK(yaml) expect_ok(__LINE__, yaml)
/* Loads, checks, frees. */
#define EXPECT_LOADS(yaml) pt_generation_free(expect_ok(__LINE__, yaml))

static const struct pt_route *route(const struct pt_generation *g, const char *name)
{
    for (uint32_t i = 0; i < g->nroutes; i++)
        if (strcmp(g->routes[i].name, name) == 0)
            return &g->routes[i];
    return NULL;
}

static const struct pt_filter_inst *inst(const struct pt_route *r, const char *filter)
{
    for (uint32_t i = 0; r && i < r->chain.n_all; i++)
        if (strcmp(r->chain.all[i].def->name, filter) == 0)
            return &r->chain.all[i];
    return NULL;
}

static const char *map_get(const struct pt_strmap *m, const char *key)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (strcmp(m->keys[i], key) == 0)
            return m->values[i];
    return NULL;
}

/* ---- success: values, defaults, env, inheritance ---- */

static void test_full_config(void)
{
    setenv("PT_TEST_TOKEN", "s3cret", 1);
    setenv("PT_TEST_PORT", "9002", 1);
    struct pt_generation *g =
        EXPECT_OK("workers: 3\n"
                  "listeners:\n"
                  "  - name: public\n"
                  "    address: 127.0.0.1:18080\n"
                  "  - address: \":18081\"\n"
                  "  - address: \"[::1]:18082\"\n"
                  "admin:\n"
                  "  address: 0.0.0.0:19901\n"
                  "  token: \"${PT_TEST_TOKEN}\"\n"
                  "limits:\n"
                  "  max_body_bytes: 1MiB\n"
                  "  header_timeout: 2.5s\n"
                  "  max_headers: 50\n"
                  "access_log: { path: logs/access.log, format: json }\n"
                  "upstreams:\n"
                  "  users:\n"
                  "    targets:\n"
                  "      - { address: 127.0.0.1:9001, weight: 3 }\n"
                  "      - \"127.0.0.1:${PT_TEST_PORT}\"\n"
                  "    connect_timeout: 250ms\n"
                  "    keepalive: 0\n"
                  "  orders: { targets: [127.0.0.1:9003] }\n"
                  "filters:\n"
                  "  response_transform: { remove_headers: [Server, X-Backend] }\n"
                  "routes:\n"
                  "  - name: user-by-id\n"
                  "    match:\n"
                  "      hosts: [API.Example.com, \"*.example.com\"]\n"
                  "      path_template: /v1/users/{id}\n"
                  "      methods: [GET, POST]\n"
                  "      headers: { X-Client: mobile, X-Version: \"~^v[0-9]+$\" }\n"
                  "      query: { debug: \"1\" }\n"
                  "    priority: 5\n"
                  "    upstream: users\n"
                  "    rewrite: /users/{id}\n"
                  "    timeout: 5s\n"
                  "    max_body_bytes: 16KiB\n"
                  "    filters:\n"
                  "      request_transform:\n"
                  "        add_headers: { X-Gateway: portico, X-User: \"${path.id}\" }\n"
                  "        set_headers: { X-Literal: \"$${HOME}\" }\n"
                  "  - name: orders\n"
                  "    match: { path_prefix: /v1/orders }\n"
                  "    upstream: orders\n"
                  "    strip_prefix: /v1\n"
                  "    filters:\n"
                  "      response_transform: { remove_headers: X-Internal }\n"
                  "  - name: health\n"
                  "    match: { path: /healthz }\n"
                  "    upstream: orders\n"
                  "    filters: { response_transform: off }\n"
                  "  - name: by-regex\n"
                  "    match: { path_regex: '^/u/(?<uid>[0-9]+)/(x|y)$' }\n"
                  "    upstream: users\n"
                  "    rewrite: /users/{uid}/{2}\n"
                  "    filters: { request_transform: off }\n");
    if (!g)
        return;
    CHECK_EQ_INT(g->id, 7);
    CHECK_STR(g->source_path, "t.yaml");
    CHECK_EQ_INT(g->workers, 3);
    CHECK(g->router != NULL);

    CHECK_EQ_INT(g->nlisteners, 3);
    CHECK_STR(g->listeners[0].name, "public");
    CHECK_STR(g->listeners[0].address, "127.0.0.1:18080");
    CHECK_EQ_INT(g->listeners[0].addr.ss_family, AF_INET);
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&g->listeners[0].addr)->sin_port), 18080);
    CHECK_EQ_INT(g->listeners[0].addrlen, sizeof(struct sockaddr_in));
    CHECK_STR(g->listeners[1].name, "listener-2");
    CHECK_EQ_INT(((struct sockaddr_in *)&g->listeners[1].addr)->sin_addr.s_addr, INADDR_ANY);
    CHECK_STR(g->listeners[2].name, "listener-3");
    CHECK_EQ_INT(g->listeners[2].addr.ss_family, AF_INET6);

    CHECK(g->has_admin);
    CHECK_STR(g->admin.name, "admin");
    CHECK_STR(g->admin.address, "0.0.0.0:19901");
    CHECK(g->admin_token && strcmp(g->admin_token, "s3cret") == 0);

    CHECK_EQ_INT(g->limits.max_body_bytes, 1 << 20);
    CHECK_EQ_INT(g->limits.header_timeout_ms, 2500);
    CHECK_EQ_INT(g->limits.max_headers, 50);
    CHECK_EQ_INT(g->limits.max_header_bytes, 16 << 10); /* defaults for the rest */
    CHECK_EQ_INT(g->limits.max_uri_bytes, 8 << 10);
    CHECK_EQ_INT(g->limits.idle_timeout_ms, 60000);
    CHECK_EQ_INT(g->limits.max_connections, 20000);
    CHECK_EQ_INT(g->limits.drain_timeout_ms, 30000);

    CHECK_EQ_INT(g->access_log.mode, PT_ALOG_FILE);
    CHECK_STR(g->access_log.path, "./logs/access.log"); /* relative to the config file */

    CHECK_EQ_INT(g->nupstreams, 2);
    const struct pt_upstream *u = &g->upstreams[0];
    CHECK_STR(u->name, "users");
    CHECK_EQ_INT(u->ntargets, 2);
    CHECK_EQ_INT(u->targets[0].weight, 3);
    CHECK_EQ_INT(u->targets[1].weight, 1);
    CHECK_STR(u->targets[1].address, "127.0.0.1:9002"); /* ${PT_TEST_PORT} */
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&u->targets[1].addr)->sin_port), 9002);
    CHECK_EQ_INT(u->targets[1].index, 1);
    CHECK_EQ_INT(u->connect_timeout_ms, 250);
    CHECK_EQ_INT(u->read_timeout_ms, 30000);
    CHECK_EQ_INT(u->keepalive, 0);
    CHECK_EQ_INT(u->pos.line, 16);
    CHECK_EQ_INT(u->pos.col, 3);
    CHECK_EQ_INT(g->upstreams[1].keepalive, 64);
    CHECK_EQ_INT(g->upstreams[1].connect_timeout_ms, 1000);

    CHECK_EQ_INT(g->nroutes, 4);
    const struct pt_route *r = route(g, "user-by-id");
    if (!r)
        goto out;
    CHECK_EQ_INT(r->index, 0);
    CHECK_EQ_INT(r->pos.line, 26);
    CHECK_EQ_INT(r->match.nhosts, 2);
    CHECK_STR(r->match.hosts[0], "api.example.com");
    CHECK_STR(r->match.hosts[1], "*.example.com");
    CHECK_STR(r->match.path_template, "/v1/users/{id}");
    CHECK_EQ_INT(r->match.methods, (1u << PT_METHOD_GET) | (1u << PT_METHOD_POST));
    CHECK_EQ_INT(r->match.nheaders, 2);
    CHECK_STR(r->match.headers[0].name, "X-Client");
    CHECK_STR(r->match.headers[0].value, "mobile");
    CHECK(r->match.headers[0].re == NULL);
    CHECK_EQ_INT(r->match.headers[0].token, PT_TOK_UNKNOWN);
    CHECK(r->match.headers[1].value == NULL && r->match.headers[1].re != NULL);
    CHECK_EQ_INT(r->match.nquery, 1);
    CHECK_STR(r->match.query[0].value, "1");
    CHECK_EQ_INT(r->priority, 5);
    CHECK(r->upstream == &g->upstreams[0]);
    CHECK_STR(r->rewrite, "/users/{id}");
    CHECK_EQ_INT(r->timeout_ms, 5000);
    CHECK_EQ_INT(r->max_body_bytes, 16384);

    /* Inherited default + own filter, both in the chain. */
    CHECK_EQ_INT(r->chain.n_all, 2);
    const struct pt_filter_inst *rq = inst(r, "request_transform");
    const struct pt_filter_inst *rs = inst(r, "response_transform");
    CHECK(rq && rs);
    if (rq) {
        const struct pt_header_edit_conf *hc = rq->conf;
        CHECK_EQ_INT(hc->add_headers.n, 2);
        const char *gw = map_get(&hc->add_headers, "X-Gateway");
        const char *user = map_get(&hc->add_headers, "X-User");
        const char *lit = map_get(&hc->set_headers, "X-Literal");
        CHECK(gw && strcmp(gw, "portico") == 0);
        CHECK(user && strcmp(user, "${path.id}") == 0); /* a request variable, not env */
        CHECK(lit && strcmp(lit, "$${HOME}") == 0);     /* escaped: left for the template */
        CHECK_EQ_INT(r->chain.n_request, 1);
    }
    if (rs) {
        const struct pt_header_edit_conf *hc = rs->conf;
        CHECK_EQ_INT(hc->remove_headers.n, 2);
        CHECK_EQ_INT(r->chain.n_response_head, 1);
    }

    /* Own response_transform replaces the default one (a scalar list). */
    const struct pt_route *o = route(g, "orders");
    CHECK(o && o->chain.n_all == 1);
    const struct pt_filter_inst *ors = inst(o, "response_transform");
    CHECK(ors && rs && ors->conf != rs->conf);
    if (ors) {
        const struct pt_header_edit_conf *hc = ors->conf;
        CHECK_EQ_INT(hc->remove_headers.n, 1);
        CHECK_STR(hc->remove_headers.v[0], "X-Internal");
    }
    CHECK(o && strcmp(o->strip_prefix, "/v1") == 0 && o->match.path_prefix);

    /* `off` removes the default; `off` for a filter no default enables is harmless. */
    const struct pt_route *h = route(g, "health");
    CHECK(h && h->chain.n_all == 0 && strcmp(h->match.path, "/healthz") == 0);
    const struct pt_route *rx = route(g, "by-regex");
    CHECK(rx && rx->chain.n_all == 1 && inst(rx, "response_transform") &&
          inst(rx, "response_transform")->conf == rs->conf);
    CHECK(rx && rx->match.regex != NULL);

    /* Every compiled regex is tracked for pt_generation_free. */
    CHECK_EQ_INT(g->nregexes, 2);
out:
    pt_generation_free(g);
}

static void test_defaults(void)
{
    struct pt_generation *g = EXPECT_OK("listeners: [{ address: 127.0.0.1:18080 }]\n"
                                        "workers: auto\n"
                                        "admin:\n");
    if (!g)
        return;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK_EQ_INT(g->workers, cpus > 0 ? cpus : 1);
    CHECK_EQ_INT(g->io_backend, PT_IO_EPOLL);
    CHECK(g->has_admin);
    CHECK_STR(g->admin.address, "127.0.0.1:9901");
    CHECK(g->admin_token == NULL);
    CHECK_EQ_INT(g->access_log.mode, PT_ALOG_STDOUT);
    CHECK_EQ_INT(g->limits.max_body_bytes, 8 << 20);
    CHECK_EQ_INT(g->nroutes, 0);
    pt_generation_free(g);

    g = EXPECT_OK("listeners: [{ address: \"localhost:18080\" }]\n"
                  "access_log: { path: off }\n"
                  "upstreams:\n"
                  "  base: &targets { targets: [\"127.0.0.1:9001\"] }\n"
                  "  copy: *targets\n"
                  "routes:\n"
                  "  - { name: any, upstream: copy }\n");
    if (!g)
        return;
    CHECK_EQ_INT(g->access_log.mode, PT_ALOG_OFF);
    CHECK(!g->has_admin);
    CHECK_EQ_INT(g->upstreams[1].ntargets, 1);
    CHECK_STR(g->upstreams[1].name, "copy");
    CHECK(g->routes[0].upstream == &g->upstreams[1]);
    /* localhost prefers IPv4 */
    CHECK_EQ_INT(g->listeners[0].addr.ss_family, AF_INET);
    pt_generation_free(g);
}

/* ---- errors: exact text, line and column ---- */

static void test_unknown_and_planned_keys(void)
{
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstrem: users\n",
           "t.yaml:6:5: unknown key `upstrem` in route (did you mean `upstream`?)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "rutes: []\n",
           "t.yaml:2:1: unknown key `rutes` at the top level (did you mean `routes`?)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "frobnicate: 1\n",
           "t.yaml:2:1: unknown key `frobnicate` at the top level");
    EXPECT("listeners:\n"
           "  - address: \"127.0.0.1:18443\"\n"
           "    tls: { certificates: [] }\n",
           "t.yaml:3:26: `certificates` is empty: list at least one `{ cert: ..., key: ... }`");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  users:\n"
           "    targets: [\"127.0.0.1:9001\"]\n"
           "    health_check: { active: { path: healthz } }\n",
           "t.yaml:5:37: health check `path` must start with `/`, got `healthz`");
    EXPECT(
        "listeners: [{ address: \"127.0.0.1:18080\" }]\n"
        "upstreams:\n"
        "  users:\n"
        "    targets: [\"127.0.0.1:9001\"]\n"
        "    health_check: { active: { intervall: 2s } }\n",
        "t.yaml:5:31: unknown key `intervall` in health_check.active (did you mean `interval`?)");
    EXPECT(BASE "routes:\n"
                "  - name: canary\n"
                "    match: { path_prefix: /v2 }\n"
                "    split: [{ upstream: users, weight: 0 }]\n",
           "t.yaml:7:12: every weight in `split` is 0: at least one side must take traffic");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  users:\n"
           "    targets: [\"127.0.0.1:9001\"]\n"
           "    balance: round_robbin\n",
           "t.yaml:5:14: unknown balance `round_robbin` (did you mean `round_robin`?)");
}

/* failure_statuses, health_check.passive, circuit_breaker: values,
 * defaults, and every refusal with its position. */
#define UP                                                                                         \
    "listeners: [{ address: \"127.0.0.1:18080\" }]\nupstreams:\n  users:\n"                        \
    "    targets: [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n"
static void test_failure_handling_keys(void)
{
    struct pt_generation *g = EXPECT_OK(UP);
    if (g) {
        const struct pt_upstream *u = &g->upstreams[0];
        CHECK(!u->passive.enabled && !u->breaker.enabled);
        CHECK(pt_status_in(&u->failure_statuses, 502) && pt_status_in(&u->failure_statuses, 503) &&
              pt_status_in(&u->failure_statuses, 504) && !pt_status_in(&u->failure_statuses, 500));
        pt_generation_free(g);
    }
    /* A section written empty switches the feature on with its defaults. */
    g = EXPECT_OK(UP "    health_check: { passive: {} }\n    circuit_breaker: {}\n");
    if (g) {
        const struct pt_upstream *u = &g->upstreams[0];
        CHECK(u->passive.enabled && u->passive.consecutive_failures == 5 &&
              u->passive.eject_for_ms == 30000 && u->passive.max_ejected_percent == 50);
        CHECK(!u->hc.enabled); /* passive alone: no probes */
        CHECK(u->breaker.enabled && u->breaker.error_rate == 0.5 && u->breaker.min_requests == 20 &&
              u->breaker.window_ms == 10000 && u->breaker.open_for_ms == 5000 &&
              u->breaker.half_open_requests == 1 && u->breaker.max_concurrent == 0);
        pt_generation_free(g);
    }
    g = EXPECT_OK(UP "    failure_statuses: [500, 503]\n"
                     "    health_check:\n"
                     "      active: { path: /h }\n"
                     "      passive: { consecutive_failures: 3, eject_for: 2s, "
                     "max_ejected_percent: 100 }\n"
                     "    circuit_breaker: { error_rate: 25%, min_requests: 4, window: 2s, "
                     "open_for: 1500ms, half_open_requests: 3, max_concurrent: 7 }\n");
    if (g) {
        const struct pt_upstream *u = &g->upstreams[0];
        CHECK(pt_status_in(&u->failure_statuses, 500) && pt_status_in(&u->failure_statuses, 503) &&
              !pt_status_in(&u->failure_statuses, 502));
        CHECK(u->hc.enabled && u->passive.enabled && u->passive.consecutive_failures == 3 &&
              u->passive.eject_for_ms == 2000 && u->passive.max_ejected_percent == 100);
        CHECK(u->breaker.error_rate == 0.25 && u->breaker.min_requests == 4 &&
              u->breaker.window_ms == 2000 && u->breaker.open_for_ms == 1500 &&
              u->breaker.half_open_requests == 3 && u->breaker.max_concurrent == 7);
        pt_generation_free(g);
    }
    g = EXPECT_OK(UP "    failure_statuses: []\n"
                     "    circuit_breaker: { error_rate: 1, max_concurrent: unlimited }\n");
    if (g) {
        const struct pt_upstream *u = &g->upstreams[0];
        CHECK(!pt_status_in(&u->failure_statuses, 502) && u->breaker.error_rate == 1.0 &&
              u->breaker.max_concurrent == 0);
        pt_generation_free(g);
    }
    EXPECT(UP "    failure_statuses: [502, 99]\n",
           "t.yaml:5:29: a status in `failure_statuses` must be from 200 to 599, got 99");
    EXPECT(UP "    failure_statuses: 503\n",
           "t.yaml:5:23: expected a list for `failure_statuses`, got `503`");
    EXPECT(UP "    health_check: { passive: { consecutive: 5 } }\n",
           "t.yaml:5:32: unknown key `consecutive` in health_check.passive (did you mean "
           "`consecutive_failures`?)");
    EXPECT(UP "    health_check: { passive: { consecutive_failures: 0 } }\n",
           "t.yaml:5:54: `consecutive_failures` must be from 1 to 100000, got 0");
    EXPECT(UP "    health_check: { passive: { eject_for: 0s } }\n",
           "t.yaml:5:43: `eject_for` must be longer than 0");
    EXPECT(UP "    health_check: { passive: { eject_for: 2h } }\n",
           "t.yaml:5:43: `eject_for` must be at most 1h (repeat ejections last up to 10×)");
    EXPECT(UP "    health_check: { passive: { max_ejected_percent: 101 } }\n",
           "t.yaml:5:53: `max_ejected_percent` must be from 0 to 100, got 101");
    EXPECT(UP "    circuit_breaker: { error_rate: 1.5 }\n",
           "t.yaml:5:36: `error_rate` must be above 0 and at most 1 (100%), got `1.5`");
    EXPECT(UP "    circuit_breaker: { error_rate: 0 }\n",
           "t.yaml:5:36: `error_rate` must be above 0 and at most 1 (100%), got `0`");
    EXPECT(UP "    circuit_breaker: { error_rate: half }\n",
           "t.yaml:5:36: expected a ratio (0.5) or a percentage (50%) for `error_rate`, got "
           "`half`");
    EXPECT(UP "    circuit_breaker: { min_requests: 0 }\n",
           "t.yaml:5:38: `min_requests` must be from 1 to 1000000, got 0");
    EXPECT(UP "    circuit_breaker: { window: 50ms }\n",
           "t.yaml:5:32: `window` must be from 100ms to 1d");
    EXPECT(UP "    circuit_breaker: { open_for: 0s }\n",
           "t.yaml:5:34: `open_for` must be longer than 0");
    EXPECT(UP "    circuit_breaker: { half_open_requests: 0 }\n",
           "t.yaml:5:44: `half_open_requests` must be from 1 to 10000, got 0");
    EXPECT(UP "    circuit_breaker: { max_concurrent: 0 }\n",
           "t.yaml:5:40: `max_concurrent` (or `unlimited`) must be from 1 to 10000000, got 0");
    EXPECT(UP "    circuit_breaker: { max_concurent: 10 }\n",
           "t.yaml:5:24: unknown key `max_concurent` in circuit_breaker (did you mean "
           "`max_concurrent`?)");
    EXPECT(UP "    circuit_breaker: on\n",
           "t.yaml:5:22: expected a mapping for `circuit_breaker`, got `on`");
}
#undef UP

static void test_types_and_values(void)
{
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "admin: 127.0.0.1:9901\n",
           "t.yaml:2:8: expected a mapping for `admin`, got `127.0.0.1:9901`");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { methods: { GET: 1 } }\n",
           "t.yaml:7:23: expected a list of strings for `methods`, got a mapping");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  users:\n"
           "    targets: [\"127.0.0.1:9001\"]\n"
           "    connect_timeout: 5 seconds\n",
           "t.yaml:5:22: invalid duration `5 seconds` (use 250ms, 5s, 2m, 1h)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  users:\n"
           "    targets: [\"127.0.0.1:9001\"]\n"
           "    read_timeout: 30\n",
           "t.yaml:5:19: invalid duration `30`: a unit is needed (use 250ms, 5s, 2m, 1h)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "limits: { max_body_bytes: 8mb }\n",
           "t.yaml:2:27: invalid size `8mb` (use 512, 16KiB, 1MiB, 1GiB)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  users: { targets: [{ address: \"127.0.0.1:9001\", weight: 0 }] }\n",
           "t.yaml:3:59: `weight` must be from 1 to 1000, got 0");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "access_log: { format: text }\n",
           "t.yaml:2:23: access_log format `text` is not supported (only `json`)");
    EXPECT("listeners: [{ name: \"pub lic\", address: \"127.0.0.1:18080\" }]\n",
           "t.yaml:1:21: listener name `pub lic` must be 1 to 31 letters, digits, `-`, `_` "
           "and `.`");
    EXPECT("listeners: [{ name: \"a12345678901234567890123456789012345678901234567890123456789"
           "0123456789012345678901234567890123456789012345678901234567890123456789\", "
           "address: \"127.0.0.1:18080\" }]\n",
           "t.yaml:1:21: listener name `a123456789012345678901234567890123456789…` must be 1 "
           "to 31 letters, digits, `-`, `_` and `.`");
    EXPECT("listeners: [{ \"address\\0junk\": \"127.0.0.1:18080\" }]\n",
           "t.yaml:1:15: key `address…` contains a NUL character");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "limits: { max_header_bytes: 4GiB }\n",
           "t.yaml:2:29: `max_header_bytes` must be at most 1MiB");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "limits: { header_timeout: 18446744073709551000ms }\n",
           "t.yaml:2:27: duration `18446744073709551000ms` is too large (at most 365d)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "limits: { headers_with_underscores: yes }\n",
           "t.yaml:2:37: `headers_with_underscores` must be `drop`, `reject` or `allow`, got "
           "`yes`");
}

static void test_duplicates_and_references(void)
{
    EXPECT(BASE "routes:\n"
                "  - name: users\n"
                "    upstream: users\n"
                "  - name: users\n"
                "    upstream: users\n",
           "t.yaml:7:11: duplicate route name `users` (first defined at t.yaml:5:11)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    upstream: users\n",
           "t.yaml:7:5: duplicate key `upstream` (first defined at t.yaml:6:5)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: user\n",
           "t.yaml:6:15: unknown upstream `user` (did you mean `users`?)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "routes:\n"
           "  - { name: r, upstream: users }\n",
           "t.yaml:3:26: unknown upstream `users` (no upstreams are defined: add it under "
           "`upstreams`)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  users: { targets: [] }\n",
           "t.yaml:3:21: upstream `users` has no targets (`targets` is empty)");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  users: { keepalive: 4 }\n",
           "t.yaml:3:3: upstream `users` has no `targets`");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  users: { targets: [\"127.0.0.1:9001\", \"127.0.0.1:9001\"] }\n",
           "t.yaml:3:40: target `127.0.0.1:9001` is listed twice in upstream `users` (raise "
           "its `weight` instead)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    match: { path: /x }\n",
           "t.yaml:5:5: route `r` has no `upstream` (or `split`)");
    EXPECT(BASE "routes:\n"
                "  - upstream: users\n",
           "t.yaml:5:5: route has no `name`");
}

static void test_match_rules(void)
{
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match:\n"
                "      path_prefix: /a\n"
                "      path: /a\n",
           "t.yaml:9:7: `path` conflicts with `path_prefix` (at t.yaml:8:7): set only one of "
           "path, path_prefix, path_template and path_regex");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_prefix: v1 }\n",
           "t.yaml:7:27: path_prefix `v1` must start with `/`");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_template: \"/users/u{id}\" }\n",
           "t.yaml:7:29: path_template segment `u{id}` must be a whole `{name}` segment, as in "
           "`/users/{id}`");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_template: \"/a/{id}/b/{id}\" }\n",
           "t.yaml:7:29: path_template parameter `{id}` appears twice");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_regex: '^/u/(\\d+' }\n",
           "t.yaml:7:26: invalid regex in `path_regex`: missing closing parenthesis at offset 8");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { methods: [get] }\n",
           "t.yaml:7:24: methods are case-sensitive: use GET");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { methods: [GTE] }\n",
           "t.yaml:7:24: unknown method `GTE` (did you mean `GET`?)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { hosts: [\"api.*.com\"] }\n",
           "t.yaml:7:22: host `api.*.com`: a wildcard is only allowed as a leading `*.`, as in "
           "`*.example.com`");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { headers: { \"X Client\": mobile } }\n",
           "t.yaml:7:25: `X Client` is not a valid header name");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { headers: { X-Client: \"~(\" } }\n",
           "t.yaml:7:35: invalid regex in header `X-Client`: missing closing parenthesis at "
           "offset 1");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { headers: { Host: api.example.com } }\n",
           "t.yaml:7:25: match the Host header with `hosts`, not `headers`");
}

static void test_rewrite_rules(void)
{
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_template: \"/users/{id}\" }\n"
                "    rewrite: /u/{idd}\n",
           "t.yaml:8:14: rewrite uses `{idd}`, which the path_template does not define (did "
           "you mean `{id}`?)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_prefix: /users }\n"
                "    rewrite: /u/{id}\n",
           "t.yaml:8:14: rewrite uses `{id}`, but the route's path defines no parameters (use "
           "a path_template such as `/users/{id}`)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_regex: '^/u/(?<uid>\\d+)$' }\n"
                "    rewrite: /u/{2}\n",
           "t.yaml:8:14: rewrite uses `{2}`, which the path_regex does not define");
    /* A named group is also its number. */
    EXPECT_LOADS(BASE "routes:\n"
                      "  - name: r\n"
                      "    upstream: users\n"
                      "    match: { path_regex: '^/u/(?<uid>\\d+)/(\\w+)$' }\n"
                      "    rewrite: /u/{1}/{uid}/{2}\n");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_template: \"/users/{id}\" }\n"
                "    rewrite: /../{id}\n",
           "t.yaml:8:14: rewrite `/../{id}` is not a valid path: a `..` climbs above `/` or a "
           "`%` is not followed by two hex digits");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_prefix: /users }\n"
                "    rewrite: /u/%zz\n",
           "t.yaml:8:14: rewrite `/u/%zz` is not a valid path: a `..` climbs above `/` or a "
           "`%` is not followed by two hex digits");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_prefix: /v1 }\n"
                "    strip_prefix: /v1\n"
                "    rewrite: /x\n",
           "t.yaml:9:5: `strip_prefix` and `rewrite` cannot be combined (rewrite replaces the "
           "whole path; write the result you want in `rewrite`)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_prefix: /v1/users }\n"
                "    strip_prefix: /v2\n",
           "t.yaml:8:19: strip_prefix `/v2` is not a leading part of path_prefix `/v1/users`, "
           "so it would not apply to every request of this route");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_prefix: /v1 }\n"
                "    strip_prefix: /v1/users\n",
           "t.yaml:8:19: strip_prefix `/v1/users` is longer than path_prefix `/v1`");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_template: \"/{ver}/users\" }\n"
                "    strip_prefix: /v1\n",
           "t.yaml:8:19: strip_prefix `/v1` reaches the parameter segment `{ver}` of "
           "path_template `/{ver}/users`: strip only literal segments, or use `rewrite`");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_regex: '^/v1/.*' }\n"
                "    strip_prefix: /v1\n",
           "t.yaml:8:19: strip_prefix needs the route to match a `path`, `path_prefix` or "
           "`path_template` it is a leading part of (with path_regex, use `rewrite`)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_prefix: /v1 }\n"
                "    strip_prefix: /v1/\n",
           "t.yaml:8:19: strip_prefix `/v1/` must not end with `/` (write `/v1`, not `/v1/`)");
}

static void test_filter_errors(void)
{
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      request_transfrom: {}\n",
           "t.yaml:8:7: unknown filter `request_transfrom` (did you mean `request_transform`?)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      aggregate: {}\n",
           "t.yaml:6:5: `upstream` conflicts with the `aggregate` filter: an aggregating route "
           "answers from its calls' upstreams (name them in `aggregate.calls`), not from one "
           "`upstream`",
           "t.yaml:8:7: filter `aggregate`: `aggregate` needs `calls` (a list of {name, upstream, "
           "path})");
    EXPECT(BASE "cache_store: { max_bytes: 1KiB, shards: 0 }\n"
                "routes:\n"
                "  - name: r\n"
                "    upstream: users\n",
           "t.yaml:4:27: `cache_store.max_bytes` must be at least 64KiB",
           "t.yaml:4:41: `cache_store.shards` must be from 1 to 4096, got 0");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      jwt: { secret: short, providers: [] }\n",
           "t.yaml:8:40: filter `jwt`: providers: with a list, put every provider key (jwks_uri, "
           "issuer, ...) "
           "inside its entries, not beside it");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      jwt: { secret: short }\n",
           "t.yaml:8:22: filter `jwt`: secret: an HMAC secret needs at least 32 bytes (RFC 7518 "
           "§3.2), got 5");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      request_transform: { add_header: { X-A: b } }\n",
           "t.yaml:8:28: unknown field `add_header` in filter `request_transform` (did you mean "
           "`add_headers`?)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      request_transform: { remove_body_fields: [a..b] }\n",
           "t.yaml:8:49: filter `request_transform`: `a..b` is not a field path: members joined "
           "by single dots (user.address.zip), none of them empty");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      response_transform: { add_body_fields: { n: 1e999 } }\n",
           "t.yaml:8:51: filter `response_transform`: number 1e999 is out of range for JSON "
           "(quote it for a string)");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      request_transform: { remove_headers: { a: b } }\n",
           "t.yaml:8:44: expected a list of strings for `remove_headers`, got a mapping");
    EXPECT(BASE "filters:\n"
                "  response_transform: off\n",
           "t.yaml:5:23: `response_transform: off` only makes sense in a route's `filters` (it "
           "switches off a default); leave the filter out here instead");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters: { response_transform: on }\n",
           "t.yaml:7:36: expected a mapping of settings for filter `response_transform`, or "
           "`off`, got `on`");

    /* The filter's own compile step: message from the filter, each at the
     * entry it is about (name or value), all of them. */
    struct pt_diag d;
    struct pt_generation *g = load(BASE "routes:\n"
                                        "  - name: r\n"
                                        "    upstream: users\n"
                                        "    filters:\n"
                                        "      request_transform: { set_headers: { Host: x } }\n",
                                   &d);
    const char *prefix = "t.yaml:8:43: filter `request_transform`: ";
    CHECK(!g && d.n == 1);
    CHECK(d.n >= 1 && strncmp(d.lines[0], prefix, strlen(prefix)) == 0 &&
          strstr(d.lines[0], "Host"));
    pt_generation_free(g);
    pt_diag_free(&d);
    g = load(BASE "routes:\n"
                  "  - name: r\n"
                  "    upstream: users\n"
                  "    filters:\n"
                  "      request_transform:\n"
                  "        set_headers: { Content-Length: \"1\" }\n"
                  "        remove_headers: [X-Ok, \"Bad Name\"]\n"
                  "        rename_headers: { X-A: \"B C\" }\n"
                  "        add_headers: { X-V: \"${nope}\" }\n",
             &d);
    CHECK(!g && d.n == 4);
    if (d.n == 4) {
        CHECK(strncmp(d.lines[0], "t.yaml:9:24: ", 13) == 0 &&
              strstr(d.lines[0], "Content-Length"));
        CHECK(strncmp(d.lines[1], "t.yaml:10:32: ", 14) == 0 && strstr(d.lines[1], "Bad Name"));
        CHECK(strncmp(d.lines[2], "t.yaml:11:32: ", 14) == 0 && strstr(d.lines[2], "B C"));
        CHECK(strncmp(d.lines[3], "t.yaml:12:29: ", 14) == 0 && strstr(d.lines[3], "nope"));
    }
    pt_generation_free(g);
    pt_diag_free(&d);
    /* Hop-by-hop fields end at the gateway: producing one is refused,
     * removing one is allowed (a no-op). */
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      request_transform:\n"
                "        set_headers: { Upgrade: h2c, TE: trailers }\n"
                "        add_headers: { Expect: 100-continue }\n"
                "        rename_headers: { X-Auth: Proxy-Authorization }\n"
                "        remove_headers: [Keep-Alive]\n",
           "t.yaml:9:24: filter `request_transform`: set_headers: header \"Upgrade\" is "
           "hop-by-hop: the gateway never forwards it, so it cannot be set or added (TE, "
           "Keep-Alive, Upgrade, Trailer, Proxy-Connection, Proxy-Authenticate, "
           "Proxy-Authorization, HTTP2-Settings and Expect end at the gateway)",
           "t.yaml:9:38: filter `request_transform`: set_headers: header \"TE\" is hop-by-hop: "
           "the gateway never forwards it, so it cannot be set or added (TE, Keep-Alive, "
           "Upgrade, Trailer, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, "
           "HTTP2-Settings and Expect end at the gateway)",
           "t.yaml:10:24: filter `request_transform`: add_headers: header \"Expect\" is "
           "hop-by-hop: the gateway never forwards it, so it cannot be set or added (TE, "
           "Keep-Alive, Upgrade, Trailer, Proxy-Connection, Proxy-Authenticate, "
           "Proxy-Authorization, HTTP2-Settings and Expect end at the gateway)",
           "t.yaml:11:35: filter `request_transform`: rename_headers: header "
           "\"Proxy-Authorization\" is hop-by-hop: the gateway never forwards it, so it cannot "
           "be a rename's new name (TE, Keep-Alive, Upgrade, Trailer, Proxy-Connection, "
           "Proxy-Authenticate, Proxy-Authorization, HTTP2-Settings and Expect end at the "
           "gateway)");
    /* Renames do not chain or swap; a field is set once. */
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    filters:\n"
                "      response_transform:\n"
                "        rename_headers: { X-A: X-B, X-B: X-A, X-C: x-c }\n"
                "        set_headers: { X-D: a, x-d: b }\n",
           "t.yaml:9:32: filter `response_transform`: rename_headers: \"X-A\" is renamed to "
           "\"X-B\", which is itself renamed; renames do not chain or swap (use a name no other "
           "rename uses)",
           "t.yaml:9:42: filter `response_transform`: rename_headers: \"X-B\" is renamed to "
           "\"X-A\", which is itself renamed; renames do not chain or swap (use a name no other "
           "rename uses)",
           "t.yaml:10:32: filter `response_transform`: set_headers: header \"x-d\" is set twice "
           "(as \"X-D\" too); set it once, or use add_headers for several fields");
    /* Two equal bad entries of one list: each reported at its own place. */
    g = load(BASE "routes:\n"
                  "  - name: r\n"
                  "    upstream: users\n"
                  "    filters:\n"
                  "      request_transform:\n"
                  "        remove_headers: [\"Bad Name\", X-Ok, \"Bad Name\"]\n",
             &d);
    CHECK(!g && d.n == 2);
    if (d.n == 2) {
        CHECK(strncmp(d.lines[0], "t.yaml:9:26: ", 13) == 0 && strstr(d.lines[0], "Bad Name"));
        CHECK(strncmp(d.lines[1], "t.yaml:9:44: ", 13) == 0 && strstr(d.lines[1], "Bad Name"));
    }
    pt_generation_free(g);
    pt_diag_free(&d);
}

static void test_addresses(void)
{
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "admin: { address: \"0.0.0.0:9901\" }\n",
           "t.yaml:2:19: the admin API on `0.0.0.0:9901` is reachable from other hosts: set "
           "`admin.token` (e.g. `token: \"${PORTICO_ADMIN_TOKEN}\"`) or bind it to 127.0.0.1");
    EXPECT("listeners: [{ address: \"127.0.0.1\" }]\n",
           "t.yaml:1:24: address `127.0.0.1` needs a port, as in `127.0.0.1:8080`");
    EXPECT("listeners: [{ address: \"::1:8080\" }]\n",
           "t.yaml:1:24: address `::1:8080`: an IPv6 address needs brackets, as in "
           "`[::1]:8080`");
    EXPECT("listeners: [{ address: \"127.0.0.1:99999\" }]\n",
           "t.yaml:1:24: address `127.0.0.1:99999`: the port must be a number from 1 to 65535");
    EXPECT("listeners:\n"
           "  - { name: a, address: \"0.0.0.0:18080\" }\n"
           "  - { name: b, address: \"127.0.0.1:18080\" }\n",
           "t.yaml:3:25: address `127.0.0.1:18080` overlaps listener `a` (`0.0.0.0:18080`)");
    EXPECT("listeners:\n"
           "  - { name: a, address: \"127.0.0.1:18080\" }\n"
           "  - { name: a, address: \"127.0.0.1:18081\" }\n",
           "t.yaml:3:13: duplicate listener name `a` (first defined at t.yaml:2:13)");
    EXPECT("upstreams: {}\n",
           "t.yaml: no listeners: add one, e.g. `listeners: [{ address: 0.0.0.0:8080 }]`");
}

static void test_file_level(void)
{
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "admin: { token: \"${PT_TEST_UNSET_VAR}\" }\n",
           "t.yaml:2:17: environment variable `PT_TEST_UNSET_VAR` is not set");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "admin: { token: \"x${reqest_id}\" }\n",
           "t.yaml:2:17: environment variable `reqest_id` is not set (did you mean the request "
           "variable `${request_id}`?)");
    EXPECT("", "t.yaml: the file is empty (a config needs at least `listeners`)");
    EXPECT("listeners: []\n"
           "---\n"
           "x: 1\n",
           "t.yaml:2:1: a config file holds one YAML document; this starts a second one");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
           "upstreams:\n"
           "  base: &base { targets: [\"127.0.0.1:9001\"] }\n"
           "  users:\n"
           "    <<: *base\n",
           "t.yaml:4:3: upstream `users` has no `targets`",
           "t.yaml:5:5: YAML merge keys (`<<`) are not supported; repeat the keys or use an "
           "alias for the whole value");
    EXPECT("listeners: [{ address: \"127.0.0.1:18080\" }\n"
           "routes: []\n",
           "t.yaml:2:1: invalid YAML: did not find expected ',' or ']' (while parsing a flow "
           "sequence at line 1, column 12)");
    EXPECT("listeners:\n"
           "\t- address: 127.0.0.1:18080\n",
           "t.yaml:2:1: invalid YAML: found character that cannot start any token (while "
           "scanning for the next token at line 2, column 1); tabs are not allowed for "
           "indentation, use spaces");

    struct pt_diag d;
    pt_diag_init(&d);
    CHECK(pt_config_load("nonexistent.yaml", 1, &d) == NULL);
    CHECK(d.n == 1 && strcmp(d.lines[0], "nonexistent.yaml: cannot open the config file: No "
                                         "such file or directory") == 0);
    pt_diag_free(&d);

    /* Every error, in file order, although the walker reads workers,
     * listeners, upstreams and routes in that (different) order. */
    EXPECT("routes:\n"
           "  - name: r\n"
           "    upstream: users\n"
           "    timeout: 5\n"
           "upstreams:\n"
           "  users: { targets: [\"127.0.0.1:9001\"], keepalive: -1 }\n"
           "listeners: [{ address: \"127.0.0.1:18080\", nme: x }]\n"
           "workers: 0\n",
           "t.yaml:4:14: invalid duration `5`: a unit is needed (use 250ms, 5s, 2m, 1h)",
           "t.yaml:6:52: `keepalive` must be from 0 to 100000, got -1",
           "t.yaml:7:43: unknown key `nme` in listener (did you mean `name`?)",
           "t.yaml:8:10: `workers` must be `auto` or a number from 1 to 1024, got `0`");
    /* Counts past 64 bits are "too large", like durations and sizes. */
    EXPECT(BASE "limits: { max_headers: 99999999999999999999 }\n"
                "routes: [{ name: r, upstream: users, priority: -99999999999999999999 }]\n",
           "t.yaml:4:24: `max_headers` `99999999999999999999` is too large (it must be from 1 to "
           "100000)",
           "t.yaml:5:48: `priority` `-99999999999999999999` is too small (it must be from "
           "-1000000 to 1000000)");
    EXPECT("listeners: [{ address: 127.0.0.1:18080 }]\n"
           "io_backend: uring\n",
           "t.yaml:2:13: `io_backend` must be `epoll` or `io_uring`, got `uring`");
    struct pt_generation *g = EXPECT_OK("listeners: [{ address: 127.0.0.1:18080 }]\n"
                                        "io_backend: io_uring\n");
    if (g) {
        CHECK_EQ_INT(g->io_backend, PT_IO_URING);
        pt_generation_free(g);
    }
}

/* ---- the generic field parser, with a probe filter of every type ---- */

struct probe_conf {
    const char *s;
    struct pt_strlist list;
    struct pt_strmap map;
    bool flag;
    int64_t count;
    uint64_t wait_ms;
    uint64_t bytes;
    double ratio;
};

static const struct pt_field probe_fields[] = {
    {"s", PT_F_STRING, offsetof(struct probe_conf, s), NULL},
    {"list", PT_F_STRING_LIST, offsetof(struct probe_conf, list), NULL},
    {"map", PT_F_STRING_MAP, offsetof(struct probe_conf, map), NULL},
    {"flag", PT_F_BOOL, offsetof(struct probe_conf, flag), NULL},
    {"count", PT_F_INT, offsetof(struct probe_conf, count), NULL},
    {"wait", PT_F_DURATION, offsetof(struct probe_conf, wait_ms), NULL},
    {"bytes", PT_F_SIZE, offsetof(struct probe_conf, bytes), NULL},
    {"ratio", PT_F_DOUBLE, offsetof(struct probe_conf, ratio), NULL},
    {NULL, 0, 0, NULL},
};

static int probe_compile(void *conf, struct pt_arena *a, struct pt_filter_errs *errs)
{
    const struct probe_conf *p = conf;
    int bad = 0;
    if (p->count > 100) {
        errs->report(errs, "count", NULL, false, "count must be at most 100");
        bad = -1;
    }
    if (p->ratio > 1.0) {
        errs->report(errs, NULL, NULL, false, "ratio must be at most 1");
        bad = -1;
    }
    return bad;
}

static const struct pt_filter_def probe_def = {
    .name = "probe",
    .fields = probe_fields,
    .config_size = sizeof(struct probe_conf),
    .compile = probe_compile,
};

/* Parses `yaml` (a one-key mapping `probe: {...}`) with the probe filter;
 * returns the config or NULL, and the messages in `out`. */
static const struct probe_conf *probe(const char *yaml, struct pt_generation *g,
                                      struct pt_diag *out)
{
    struct cfg c = {.file = "p.yaml", .g = g, .a = &g->arena, .w.arena = &g->arena};
    struct pt_ydoc doc;
    const void *conf = NULL;
    pt_diag_init(out);
    if (pt_ydoc_parse(&doc, "p.yaml", yaml, strlen(yaml), &c.w.errs) == 0 && doc.root &&
        doc.root->kind == PT_YMAP)
        conf = parse_filter_conf(&c, &probe_def, doc.root->pairs[0].key, doc.root->pairs[0].value);
    pt_cfg_errors_flush(&c.w.errs, "p.yaml", out);
    pt_ydoc_free(&doc);
    return conf;
}

static void test_generic_fields(void)
{
    struct pt_generation *g = calloc(1, sizeof(*g));
    pt_arena_init(&g->arena, 4096);
    struct pt_diag d;

    const struct probe_conf *p = probe("probe:\n"
                                       "  s: hello\n"
                                       "  list: one\n"
                                       "  map: { a: \"1\", b: two }\n"
                                       "  flag: true\n"
                                       "  count: -42\n"
                                       "  wait: 1.5s\n"
                                       "  bytes: 2KiB\n"
                                       "  ratio: 0.25\n",
                                       g, &d);
    CHECK(p != NULL && d.n == 0);
    if (p) {
        CHECK_STR(p->s, "hello");
        CHECK(p->list.n == 1 && strcmp(p->list.v[0], "one") == 0);
        CHECK(p->map.n == 2 && strcmp(p->map.keys[1], "b") == 0 &&
              strcmp(p->map.values[1], "two") == 0);
        CHECK(p->flag);
        CHECK_EQ_INT(p->count, -42);
        CHECK_EQ_INT(p->wait_ms, 1500);
        CHECK_EQ_INT(p->bytes, 2048);
        CHECK(p->ratio == 0.25);
    }
    pt_diag_free(&d);

    /* An empty block means "on, with defaults". */
    p = probe("probe:\n", g, &d);
    CHECK(p != NULL && d.n == 0 && p->s == NULL && p->list.n == 0 && !p->flag);
    pt_diag_free(&d);

    p = probe("probe:\n"
              "  s: [x]\n"
              "  list: [a, { b: c }]\n"
              "  map: { a: [1] }\n"
              "  flag: maybe\n"
              "  count: 12x\n"
              "  wait: 5\n"
              "  bytes: 2 KiB\n"
              "  ratio: nan\n"
              "  wiat: 1s\n",
              g, &d);
    const char *want[] = {
        "p.yaml:2:6: expected a string for `s`, got a list",
        "p.yaml:3:13: expected a string in `list`, got a mapping",
        "p.yaml:4:13: expected a string for `a` in `map`, got a list",
        "p.yaml:5:9: expected true or false for `flag`, got `maybe`",
        "p.yaml:6:10: expected a whole number for `count`, got `12x`",
        "p.yaml:7:9: invalid duration `5`: a unit is needed (use 250ms, 5s, 2m, 1h)",
        "p.yaml:8:10: invalid size `2 KiB` (use 512, 16KiB, 1MiB, 1GiB)",
        "p.yaml:9:10: expected a number for `ratio`, got `nan`",
        "p.yaml:10:3: unknown field `wiat` in filter `probe` (did you mean `wait`?)",
    };
    CHECK(p == NULL);
    CHECK_EQ_INT(d.n, PT_ARRAY_LEN(want));
    for (size_t i = 0; i < d.n && i < PT_ARRAY_LEN(want); i++)
        CHECK_STR(d.lines[i], want[i]);
    pt_diag_free(&d);

    /* compile hook failures: every one, each at the field it names (or the
     * filter key when it names none). */
    p = probe("probe: { count: 101, ratio: 2 }\n", g, &d);
    CHECK(p == NULL && d.n == 2);
    if (d.n == 2) {
        CHECK_STR(d.lines[0], "p.yaml:1:1: filter `probe`: ratio must be at most 1");
        CHECK_STR(d.lines[1], "p.yaml:1:17: filter `probe`: count must be at most 100");
    }
    pt_diag_free(&d);

    pt_generation_free(g);
}

static void test_suggest(void)
{
    static const char *const keys[] = {"upstream", "strip_prefix", "rewrite", "timeout", "methods"};
    CHECK_STR(pt_cfg_suggest("upstrem", keys, 5), "upstream");
    CHECK_STR(pt_cfg_suggest("upsteram", keys, 5), "upstream");  /* transposition */
    CHECK_STR(pt_cfg_suggest("strip", keys, 5), "strip_prefix"); /* prefix */
    CHECK_STR(pt_cfg_suggest("Timeout", keys, 5), "timeout");
    CHECK(pt_cfg_suggest("banana", keys, 5) == NULL);
    CHECK(pt_cfg_suggest("xy", keys, 5) == NULL);
    CHECK_EQ_INT(pt_cfg_edit_distance("kitten", "sitting", 5), 3);
    CHECK_EQ_INT(pt_cfg_edit_distance("ab", "ba", 5), 1);
}

/* The shipped examples must stay valid (run from the repository root, as
 * `make unit` does). */
static void test_examples(void)
{
    static const char *const files[] = {"examples/quickstart.yaml", "examples/versioning.yaml"};
    for (size_t i = 0; i < PT_ARRAY_LEN(files); i++) {
        struct pt_diag d;
        pt_diag_init(&d);
        struct pt_generation *g = pt_config_load(files[i], 1, &d);
        CHECK_MSG(g != NULL, "%s should load", files[i]);
        pt_diag_print(&d, stderr);
        if (g && i == 0) {
            CHECK_EQ_INT(g->nroutes, 6);
            const struct pt_route *r = route(g, "user-by-id");
            CHECK(r && inst(r, "request_transform") && inst(r, "response_transform"));
            r = route(g, "private");
            CHECK(r && inst(r, "ext_auth"));
            CHECK(g->upstreams[0].hc.enabled && g->upstreams[0].hc.interval_ms == 2000);
        }
        pt_generation_free(g);
        pt_diag_free(&d);
    }
}

/* Settings that would be accepted and could never take effect. */
static void test_never_effective(void)
{
    /* Route paths are compared with normalised request paths. */
    EXPECT(BASE "routes:\n"
                "  - { name: a, upstream: users, match: { path: /a/./b } }\n"
                "  - { name: b, upstream: users, match: { path_prefix: \"/c//d\" } }\n"
                "  - { name: c, upstream: users, match: { path: \"/%7Ejohn\" } }\n"
                "  - { name: d, upstream: users, match: { path_template: \"/e/../{id}\" } }\n"
                "  - { name: e, upstream: users, match: { path_prefix: \"/a%zz\" } }\n",
           "t.yaml:5:48: path `/a/./b` can never match: request paths are normalised before "
           "routing (dot segments resolved, escaped unreserved characters decoded, `//` merged), "
           "so write `/a/b`",
           "t.yaml:6:55: path_prefix `/c//d` can never match: request paths are normalised "
           "before routing (dot segments resolved, escaped unreserved characters decoded, `//` "
           "merged), so write `/c/d`",
           "t.yaml:7:48: path `/%7Ejohn` can never match: request paths are normalised before "
           "routing (dot segments resolved, escaped unreserved characters decoded, `//` merged), "
           "so write `/~john`",
           "t.yaml:8:57: path_template `/e/../{id}` can never match: request paths are "
           "normalised before routing (dot segments resolved, escaped unreserved characters "
           "decoded, `//` merged)",
           "t.yaml:9:55: path_prefix `/a%zz` can never match: a request whose path has a `..` "
           "above `/` or a `%` not followed by two hex digits is refused with 400");
    /* ...unless the gateway is told not to normalise (or merge). */
    EXPECT_LOADS(BASE "limits: { normalize_path: false }\n"
                      "routes:\n"
                      "  - { name: a, upstream: users, match: { path: /a/./b } }\n");
    EXPECT_LOADS(BASE "limits: { merge_slashes: false }\n"
                      "routes:\n"
                      "  - { name: a, upstream: users, match: { path_prefix: \"/c//d\" } }\n");
    /* A rewrite replaces the path only. */
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_template: \"/a/{id}\" }\n"
                "    rewrite: \"/x/{id}?v=1\"\n",
           "t.yaml:8:14: rewrite `/x/{id}?v=1` must not contain `?`: it replaces the path only, "
           "and the request's query is kept as sent");
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_template: \"/a/{id}\" }\n"
                "    rewrite: \"/y/{id}#frag\"\n",
           "t.yaml:8:14: rewrite `/y/{id}#frag` must not contain `#`: it replaces the path "
           "only, and the request's query is kept as sent");
    /* One name, one capture. */
    EXPECT(BASE "routes:\n"
                "  - name: r\n"
                "    upstream: users\n"
                "    match: { path_regex: \"(?J)^/(?:(?<x>a+)|b(?<x>c+))$\" }\n",
           "t.yaml:7:26: path_regex names two groups `x`; give each group its own name");
    /* Header fields with `_` never reach routing unless allowed. */
    EXPECT(BASE "routes:\n"
                "  - { name: r, upstream: users, match: { headers: { X_C: \"1\" } } }\n",
           "t.yaml:5:53: header `X_C` can never match: fields whose name has `_` are dropped "
           "before routing (set `limits.headers_with_underscores: allow` to route on them)");
    EXPECT_LOADS(BASE "limits: { headers_with_underscores: allow }\n"
                      "routes:\n"
                      "  - { name: r, upstream: users, match: { headers: { X_C: \"1\" } } }\n");
    /* Query names and values are compared as sent in the request-target. */
    EXPECT(BASE "routes:\n"
                "  - { name: r, upstream: users, match: { query: { \"a b\": \"1\" } } }\n"
                "  - { name: s, upstream: users, match: { query: { a: \"x y\" } } }\n",
           "t.yaml:5:51: `a b` is not a valid query parameter name (as it appears in the "
           "request-target: no `&`, `=`, `#`, spaces or non-ASCII; percent-encoded names are "
           "compared as sent)",
           "t.yaml:6:54: query parameter `a`: value `x y` can never match (values are compared "
           "as sent in the request-target: no `&`, `#`, spaces or non-ASCII; percent-encode "
           "them, or use `~regex`)");
    /* IPv6 literals are hosts, as the Host header writes them. */
    EXPECT_LOADS(BASE "routes:\n"
                      "  - { name: r, upstream: users, match: { hosts: [\"[::1]\"] } }\n");
    EXPECT(BASE "routes:\n"
                "  - { name: r, upstream: users, match: { hosts: [\"[::1]:80\"] } }\n"
                "  - { name: s, upstream: users, match: { hosts: [\"[zz::1]\"] } }\n",
           "t.yaml:5:50: host `[::1]:80`: an IPv6 address is written `[::1]`, without a port",
           "t.yaml:6:50: host `[zz::1]` is not a valid IPv6 address");
}

/* `proxy_protocol` and `proxy_protocol_from` on a listener. */
static void test_proxy_protocol_keys(void)
{
    struct pt_generation *g = EXPECT_OK("listeners:\n"
                                        "  - { address: \"127.0.0.1:18080\" }\n"
                                        "  - address: \"127.0.0.1:18081\"\n"
                                        "    proxy_protocol: true\n"
                                        "  - address: \"127.0.0.1:18082\"\n"
                                        "    proxy_protocol: true\n"
                                        "    proxy_protocol_from: [10.0.0.0/8, \"2001:db8::/32\", "
                                        "192.0.2.7]\n");
    if (g) {
        CHECK(!g->listeners[0].proxy_protocol);
        CHECK(g->listeners[1].proxy_protocol);
        CHECK_EQ_INT(g->listeners[1].nproxy_from, 0);
        CHECK(g->listeners[2].proxy_protocol);
        CHECK_EQ_INT(g->listeners[2].nproxy_from, 3);
        CHECK_EQ_INT(g->listeners[2].proxy_from[0].bits, 8);
        CHECK_EQ_INT(g->listeners[2].proxy_from[1].net.family, 6);
        CHECK_EQ_INT(g->listeners[2].proxy_from[2].bits, 32);
    }
    pt_generation_free(g);
    EXPECT("listeners:\n"
           "  - address: \"127.0.0.1:18080\"\n"
           "    proxy_protocol: yes please\n",
           "t.yaml:3:21: expected true or false for `proxy_protocol`, got `yes please`");
    EXPECT("listeners:\n"
           "  - address: \"127.0.0.1:18080\"\n"
           "    proxy_protocol_from: [10.0.0.0/8]\n",
           "t.yaml:3:5: `proxy_protocol_from` needs `proxy_protocol: true` on the same listener");
    EXPECT("listeners:\n"
           "  - address: \"127.0.0.1:18080\"\n"
           "    proxy_protocol: true\n"
           "    proxy_protocol_from: [10.0.0.0/8, 10.0.0.1/8, 10.0.0.0/40]\n",
           "t.yaml:4:39: `proxy_protocol_from`: `10.0.0.1/8`: host bits are set past the prefix "
           "length",
           "t.yaml:4:51: `proxy_protocol_from`: `10.0.0.0/40`: the prefix length must be a number "
           "from 0 to 32");
    EXPECT("listeners:\n"
           "  - address: \"127.0.0.1:18080\"\n"
           "    proxy_protocol: true\n"
           "    proxy_protocol_from: balancer.internal\n",
           "t.yaml:4:26: `proxy_protocol_from`: `balancer.internal`: not an IP address "
           "(expected e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)");
    EXPECT("listeners:\n"
           "  - address: \"127.0.0.1:18080\"\n"
           "    proxy_protcol: true\n",
           "t.yaml:3:5: unknown key `proxy_protcol` in listener (did you mean `proxy_protocol`?)");
}

/* balance and hash_on: every policy loads; consistent_hash needs hash_on
 * (and gets a ring), which no other policy takes; hash_on's four forms. */
#define UP                                                                                         \
    "listeners: [{ address: \"127.0.0.1:18080\" }]\n"                                              \
    "upstreams:\n"                                                                                 \
    "  users:\n"                                                                                   \
    "    targets: [\"127.0.0.1:9001\", { address: \"127.0.0.1:9002\", weight: 3 }]\n"
static void test_balance_keys(void)
{
    static const char *const pol[] = {"round_robin", "least_conn", "p2c_ewma"};
    for (size_t i = 0; i < PT_ARRAY_LEN(pol); i++) {
        char y[512];
        snprintf(y, sizeof(y), UP "    balance: %s\n", pol[i]);
        struct pt_generation *g = EXPECT_OK(y);
        if (g) {
            CHECK_STR(pt_balance_name(g->upstreams[0].balance), pol[i]);
            CHECK(g->upstreams[0].ring == NULL);
        }
        pt_generation_free(g);
    }
    static const struct {
        const char *on;
        enum pt_hash_on want;
        const char *name;
    } forms[] = {{"header:X-User-ID", PT_HASH_HEADER, "X-User-ID"},
                 {"cookie:session", PT_HASH_COOKIE, "session"},
                 {"ip", PT_HASH_IP, NULL},
                 {"consumer", PT_HASH_CONSUMER, NULL}};
    for (size_t i = 0; i < PT_ARRAY_LEN(forms); i++) {
        char y[512];
        snprintf(y, sizeof(y), UP "    balance: consistent_hash\n    hash_on: %s\n", forms[i].on);
        struct pt_generation *g = EXPECT_OK(y);
        if (!g)
            continue;
        const struct pt_upstream *u = &g->upstreams[0];
        CHECK(u->balance == PT_BALANCE_CONSISTENT_HASH && u->hash_on == forms[i].want);
        CHECK(forms[i].name ? u->hash_name && strcmp(u->hash_name, forms[i].name) == 0
                            : u->hash_name == NULL);
        /* 1000 points per weight unit: weights 1 and 3. */
        CHECK(u->ring && u->ring->n == 4000);
        pt_generation_free(g);
    }
    EXPECT(UP "    balance: consistent_hash\n",
           "t.yaml:5:14: balance `consistent_hash` needs `hash_on` (header:NAME, cookie:NAME, ip "
           "or consumer)");
    EXPECT(UP "    hash_on: ip\n",
           "t.yaml:5:14: `hash_on` applies only to `balance: consistent_hash` (upstream `users` "
           "balances by round_robin)");
    EXPECT(UP "    balance: least_conn\n    hash_on: consumer\n",
           "t.yaml:6:14: `hash_on` applies only to `balance: consistent_hash` (upstream `users` "
           "balances by least_conn)");
    EXPECT(UP "    balance: consistent_hash\n    hash_on: hedaer:X-User\n",
           "t.yaml:6:14: unknown `hash_on` `hedaer:X-User` (did you mean `header:X-User`?); "
           "expected header:NAME, cookie:NAME, ip or consumer");
    EXPECT(UP "    balance: consistent_hash\n    hash_on: consumr\n",
           "t.yaml:6:14: unknown `hash_on` `consumr` (did you mean `consumer`?); expected "
           "header:NAME, cookie:NAME, ip or consumer");
    EXPECT(UP "    balance: consistent_hash\n    hash_on: \"header:\"\n",
           "t.yaml:6:14: `hash_on: header:` needs a header name (e.g. `header:X-User-ID`)");
    EXPECT(UP "    balance: consistent_hash\n    hash_on: \"cookie:a b\"\n",
           "t.yaml:6:14: `hash_on`: `a b` is not a valid cookie name");
    EXPECT(UP "    balance: p2c_ewa\n",
           "t.yaml:5:14: unknown balance `p2c_ewa` (did you mean `p2c_ewma`?)");
}
#undef UP

/* `rate_limit_store.max_keys`: the default, a value, and its bounds. */
static void test_rate_limit_store_key(void)
{
    struct pt_generation *g = EXPECT_OK(BASE);
    if (g)
        CHECK_EQ_INT(g->rl_max_keys, PT_RL_DEFAULT_MAX_KEYS);
    CHECK(!g || g->rl_table == NULL); /* loading alone makes no table: the runtime does */
    pt_generation_free(g);
    g = EXPECT_OK(BASE "rate_limit_store: { max_keys: 4096 }\n");
    if (g)
        CHECK_EQ_INT(g->rl_max_keys, 4096);
    pt_generation_free(g);
    EXPECT(BASE "rate_limit_store: { max_keys: 100 }\n",
           "t.yaml:4:31: `rate_limit_store.max_keys` must be from 1024 to 268435456, got 100");
    /* 2^28 cells (4 GiB) at most: a larger table is refused at load */
    EXPECT(BASE "rate_limit_store: { max_keys: 268435457 }\n",
           "t.yaml:4:31: `rate_limit_store.max_keys` must be from 1024 to 268435456, got "
           "268435457");
    EXPECT(BASE "rate_limit_store: { max_key: 5000 }\n",
           "t.yaml:4:21: unknown key `max_key` in rate_limit_store (did you mean `max_keys`?)");
    EXPECT(BASE "rate_limit_store: 5\n",
           "t.yaml:4:19: expected a mapping for `rate_limit_store`, got `5`");
}

/* `tracing`: off without the section; its defaults; values; errors. */
static void test_tracing_section(void)
{
    struct pt_generation *g = EXPECT_OK(BASE);
    CHECK(!g || !g->tracing.enabled);
    pt_generation_free(g);
    g = EXPECT_OK(BASE "tracing: {}\n");
    if (g) {
        CHECK(g->tracing.enabled && !g->tracing.server_timing);
        CHECK(g->tracing.sample == 0.1);
        CHECK_STR(g->tracing.service_name, "portico");
        CHECK(g->tracing.otlp_endpoint == NULL); /* propagate and log only */
        CHECK_EQ_INT(g->tracing.batch, 512);
        CHECK_EQ_INT(g->tracing.flush_every_ms, 1000);
        CHECK_EQ_INT(g->tracing.max_queue, 8192);
    }
    pt_generation_free(g);
    g = EXPECT_OK(BASE "tracing: { otlp_endpoint: \"http://127.0.0.1:4318/v1/traces?x=1\", "
                       "sample: 25%, service_name: edge, server_timing: true, batch: 64, "
                       "flush_every: 250ms, max_queue: 1024 }\n");
    if (g) {
        CHECK(g->tracing.sample == 0.25);
        CHECK_STR(g->tracing.service_name, "edge");
        CHECK(g->tracing.server_timing);
        CHECK(g->tracing.export_up && g->tracing.export_up->ntargets == 1);
        CHECK_STR(g->tracing.export_up->targets[0].address, "127.0.0.1:4318");
        CHECK_EQ_INT(g->tracing.export_path.len, strlen("/v1/traces?x=1"));
        CHECK_EQ_INT(g->tracing.batch, 64);
        CHECK_EQ_INT(g->tracing.flush_every_ms, 250);
        CHECK_EQ_INT(g->tracing.max_queue, 1024);
    }
    pt_generation_free(g);
    EXPECT(BASE "tracing: { sample: 1.5 }\n",
           "t.yaml:4:20: `tracing.sample` must be from 0 to 1 (100%), got `1.5`");
    EXPECT(BASE "tracing: { sampel: 1 }\n",
           "t.yaml:4:12: unknown key `sampel` in tracing (did you mean `sample`?)");
    EXPECT(BASE "tracing: { max_queue: 100, batch: 200 }\n",
           "t.yaml:4:35: `tracing.batch` (200) is above `tracing.max_queue` (100)");
    /* An unset batch follows a queue smaller than 512 down, so a full
     * queue still triggers an early export. */
    g = EXPECT_OK(BASE "tracing: { max_queue: 16 }\n");
    if (g)
        CHECK_EQ_INT(g->tracing.batch, 16);
    pt_generation_free(g);
    g = EXPECT_OK(BASE "tracing: { max_queue: 600 }\n");
    if (g)
        CHECK_EQ_INT(g->tracing.batch, 512);
    pt_generation_free(g);
    /* Both set: checked whichever order they are written in. */
    EXPECT(BASE "tracing: { batch: 64, max_queue: 32 }\n",
           "t.yaml:4:19: `tracing.batch` (64) is above `tracing.max_queue` (32)");
    /* The cap that bounds a worker's export buffer. */
    EXPECT(BASE "tracing: { batch: 4097, max_queue: 8192 }\n",
           "t.yaml:4:19: `tracing.batch` must be from 1 to 4096, got 4097");
}

int main(void)
{
    test_examples();
    char dir[] = "/tmp/pt_test_config_XXXXXX";
    if (!mkdtemp(dir) || chdir(dir) != 0) {
        perror("temp dir");
        return 2;
    }
    test_full_config();
    test_defaults();
    test_unknown_and_planned_keys();
    test_failure_handling_keys();
    test_types_and_values();
    test_duplicates_and_references();
    test_match_rules();
    test_rewrite_rules();
    test_filter_errors();
    test_never_effective();
    test_addresses();
    test_file_level();
    test_generic_fields();
    test_suggest();
    test_proxy_protocol_keys();
    test_balance_keys();
    test_rate_limit_store_key();
    test_tracing_section();

    unlink("t.yaml");
    if (chdir("/") == 0)
        rmdir(dir);
    return unit_report("config");
}
