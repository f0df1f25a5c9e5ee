/*
 * test_lint.c — lint rules on YAML trees the loader does not accept yet:
 * body transforms (rename/remove/add_body_fields, CONFIG.md) are refused
 * by this build's loader, so `portico lint` can never reach them from a
 * file; the rule is checked here on the tree pt_lint_tree reads. Also the
 * transform count with body rules in it.
 */
#include "control/config_yaml.h"
#include "control/lint.h"
#include "unit.h"

/* Lints `yaml` as a tree; returns the warnings in `d` (caller frees). */
static size_t lint_text(const char *yaml, struct pt_diag *d)
{
    struct pt_ydoc doc = {0};
    struct pt_cfg_errors errs = {0};
    pt_diag_init(d);
    int rc = pt_ydoc_parse(&doc, "t.yaml", yaml, strlen(yaml), &errs);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(errs.n, 0);
    size_t n = rc == 0 ? pt_lint_tree("t.yaml", doc.root, d) : 0;
    pt_cfg_errors_free(&errs);
    pt_ydoc_free(&doc);
    return n;
}

#define UPSTREAMS                                                                                  \
    "upstreams:\n"                                                                                 \
    "  users: { targets: [127.0.0.1:1, 127.0.0.1:2] }\n"

static void test_body_rule_without_max_body_bytes(void)
{
    struct pt_diag d;
    size_t n = lint_text(UPSTREAMS "routes:\n"
                                   "  - name: a\n"
                                   "    match: { path_prefix: /a }\n"
                                   "    upstream: users\n"
                                   "    filters:\n"
                                   "      request_transform: { rename_body_fields: { x: y } }\n"
                                   "  - name: bounded\n"
                                   "    match: { path_prefix: /b }\n"
                                   "    upstream: users\n"
                                   "    max_body_bytes: 64KiB\n"
                                   "    filters:\n"
                                   "      response_transform: { remove_body_fields: [secret] }\n",
                         &d);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        CHECK_MSG(strncmp(d.lines[0],
                          "t.yaml:8:28: warning: route `a`: request_transform "
                          "`rename_body_fields` rewrites bodies",
                          77) == 0 &&
                      strstr(d.lines[0], "[body-transform-without-limit]"),
                  "%s", d.lines[0]);
    pt_diag_free(&d);
}

/* A body rule in the top-level defaults: each route inheriting it is
 * flagged at its name; one that switches it off is not. */
static void test_inherited_body_rule(void)
{
    struct pt_diag d;
    size_t n = lint_text(UPSTREAMS "filters:\n"
                                   "  response_transform: { add_body_fields: { v: 1 } }\n"
                                   "routes:\n"
                                   "  - { name: a, match: { path_prefix: /a }, upstream: users }\n"
                                   "  - { name: b, match: { path_prefix: /b }, upstream: users,\n"
                                   "      filters: { response_transform: off } }\n",
                         &d);
    /* b switches off the default on 1 of 2 routes: that is its own rule. */
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_MSG(strstr(d.lines[0], "t.yaml:4:3: warning:") == d.lines[0] &&
                      strstr(d.lines[0], "[default-filter-mostly-off]"),
                  "%s", d.lines[0]);
        CHECK_MSG(strstr(d.lines[1], "t.yaml:6:13: warning: route `a`: the default "
                                     "response_transform `add_body_fields`") == d.lines[1],
                  "%s", d.lines[1]);
    }
    pt_diag_free(&d);
}

/* Body rules count as transforms: 2 header + 2 body keys = 4 > 3. */
static void test_body_rules_count_as_transforms(void)
{
    struct pt_diag d;
    size_t n = lint_text(UPSTREAMS "routes:\n"
                                   "  - name: a\n"
                                   "    match: { path_prefix: /a }\n"
                                   "    upstream: users\n"
                                   "    max_body_bytes: 1MiB\n"
                                   "    filters:\n"
                                   "      request_transform: { add_headers: { A: b }, "
                                   "rename_body_fields: { x: y } }\n"
                                   "      response_transform: { remove_headers: [S], "
                                   "remove_body_fields: [z] }\n",
                         &d);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        CHECK_MSG(strstr(d.lines[0], "t.yaml:4:11: warning: route `a` has 4 transforms") ==
                          d.lines[0] &&
                      strstr(d.lines[0], "[too-many-transforms]"),
                  "%s", d.lines[0]);
    pt_diag_free(&d);
}

/* A cache object limit above max_bytes / shards: flagged at its value;
 * at or below it, or a route without cache: nothing. */
static void test_cache_object_above_shard_budget(void)
{
    struct pt_diag d;
    size_t n =
        lint_text(UPSTREAMS "cache_store: { max_bytes: 1MiB, shards: 4 }\n"
                            "routes:\n"
                            "  - name: big\n"
                            "    match: { path_prefix: /v1/a }\n"
                            "    upstream: users\n"
                            "    filters: { cache: { ttl: 1s, max_object_bytes: 512KiB } }\n"
                            "  - name: fits\n"
                            "    match: { path_prefix: /v1/b }\n"
                            "    upstream: users\n"
                            "    filters: { cache: { ttl: 1s, max_object_bytes: 256KiB } }\n",
                  &d);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        CHECK_MSG(strstr(d.lines[0], "warning: route `big`: cache `max_object_bytes` (524288)") &&
                      strstr(d.lines[0], "[cache-object-above-shard-budget]"),
                  "%s", d.lines[0]);
    pt_diag_free(&d);
    /* the defaults (1MiB objects, 256MiB / 64 shards) fit */
    n = lint_text(UPSTREAMS "routes:\n"
                            "  - name: dflt\n"
                            "    match: { path_prefix: /v1/c }\n"
                            "    upstream: users\n"
                            "    filters: { cache: { ttl: 1s } }\n",
                  &d);
    CHECK_EQ_INT(n, 0);
    pt_diag_free(&d);
}

int main(void)
{
    test_cache_object_above_shard_budget();
    test_body_rule_without_max_body_bytes();
    test_inherited_body_rule();
    test_body_rules_count_as_transforms();
    return unit_report("lint");
}
