/*
 * config_routes.c — the `routes:` section: names, match rules (hosts,
 * path forms, methods, header and query predicates, regexes compiled and
 * owned by the generation), priority, upstream, strip_prefix and rewrite
 * checked against the path's parameters, and each route's effective filter
 * chain (defaults overridden by its own block). Part of the loader
 * (config.c, config_int.h); pt_router_build later compiles what this
 * fills in. Everything read lives in the generation's arena.
 */
#include "control/config_int.h"
#include "gateway/router.h"
#include "http/path.h"
#include "http/tokens.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

enum {
    R_NAME,
    R_MATCH,
    R_PRIORITY,
    R_UPSTREAM,
    R_STRIP_PREFIX,
    R_REWRITE,
    R_TIMEOUT,
    R_MAX_BODY,
    R_FILTERS,
    R_SPLIT,
    R_STICKY,
    R_OVERRIDE,
    R_WEBSOCKET,
    R_N
};
static const char *const route_keys[] = {
    "name",           "match",   "priority", "upstream", "strip_prefix",    "rewrite",   "timeout",
    "max_body_bytes", "filters", "split",    "sticky",   "override_header", "websocket", NULL};

enum {
    M_HOSTS,
    M_PATH,
    M_PATH_PREFIX,
    M_PATH_TEMPLATE,
    M_PATH_REGEX,
    M_METHODS,
    M_HEADERS,
    M_QUERY,
    M_CASE_SENSITIVE,
    M_N
};
static const char *const match_keys[] = {
    "hosts",   "path",    "path_prefix", "path_template",  "path_regex",
    "methods", "headers", "query",       "case_sensitive", NULL};

/* Path parameters a route defines (template names, regex group names and
 * numbers), for checking `rewrite`. */
struct params {
    const char *names[2 * PT_ROUTE_MAX_PARAMS];
    uint32_t n;
    const char *source; /* "path_template" / "path_regex"; NULL: none */
};

static bool add_regex(struct cfg *c, pcre2_code *re)
{
    struct pt_generation *g = c->g;
    if (g->nregexes == g->capregexes) {
        uint32_t cap = g->capregexes ? g->capregexes * 2 : 8;
        pcre2_code **v = pt_arena_alloc(c->a, cap * sizeof(*v));
        if (!v) {
            pcre2_code_free(re);
            oom(c);
            return false;
        }
        if (g->nregexes)
            memcpy(v, g->regexes, g->nregexes * sizeof(*v));
        g->regexes = v;
        g->capregexes = cap;
    }
    g->regexes[g->nregexes++] = re;
    return true;
}

/* Compiles and JITs a pattern; the code is owned by the generation. */
static pcre2_code *compile_regex(struct cfg *c, const struct pt_ynode *at, const char *pattern,
                                 const char *what, uint32_t options)
{
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options, &errcode, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        err_at(c, at, "invalid regex in %s: %s at offset %zu", what, (const char *)msg,
               (size_t)erroff);
        return NULL;
    }
    /* JIT can be unavailable (platform, SELinux execmem); the interpreter
     * then gives the same answers, only slower, so this is not an error. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return add_regex(c, re) ? re : NULL;
}

/* RFC 9110 token: one or more tchar. */
bool pt_cfg_is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch)))
            return false;
    }
    return true;
}

/* Visible ASCII without the characters that end or escape a path. */
static const char *check_path_chars(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= 0x20 || ch >= 0x7f)
            return "must not contain spaces, control or non-ASCII characters "
                   "(percent-encode them)";
        if (ch == '?')
            return "must not contain `?` (match query parameters with `query`)";
        if (ch == '#')
            return "must not contain `#`";
    }
    return NULL;
}

static bool check_path(struct cfg *c, const struct pt_ynode *n, const char *key, const char *p)
{
    if (p[0] != '/') {
        err_at(c, n, "%s `%s` must start with `/`", key, p);
        return false;
    }
    const char *why = check_path_chars(p);
    if (why) {
        err_at(c, n, "%s `%s` %s", key, p, why);
        return false;
    }
    return true;
}

/* The literal text of a route path or rewrite with each `{param}` standing
 * in as "p" (*raw), and the same normalised as requests are (*lit;
 * limits.normalize_path and limits.merge_slashes: `limits` is read before
 * `routes`). Returns the normalised length, -1 for a path every request
 * of which is refused (a `..` above `/`, a `%` without two hex digits), or
 * -2 when out of memory. Both strings are malloc'd (free them). */
static long normal_literal(struct cfg *c, const char *p, bool always, char **raw, char **lit)
{
    size_t len = strlen(p), k = 0;
    *raw = malloc(len + 1);
    *lit = malloc(len + 1);
    if (!*raw || !*lit)
        return -2;
    for (const char *q = p; *q; q++) {
        const char *end = *q == '{' ? strchr(q, '}') : NULL;
        if (end) {
            (*raw)[k++] = 'p';
            q = end;
        } else {
            (*raw)[k++] = *q;
        }
    }
    (*raw)[k] = 0;
    memcpy(*lit, *raw, k + 1);
    if (!always && !c->g->limits.normalize_path)
        return (long)k;
    long nl = pt_path_normalize(*lit, k, c->g->limits.merge_slashes);
    if (nl >= 0)
        (*lit)[nl] = 0;
    return nl;
}

/* A route path requests can match: the router sees normalised paths only,
 * so `/a/./b`, `/a//b` or `/%7Euser` would never match anything. */
static bool check_path_normal(struct cfg *c, const struct pt_ynode *n, const char *key,
                              const char *p)
{
    char *raw, *lit;
    long nl = normal_literal(c, p, false, &raw, &lit);
    bool ok = nl >= 0 && strcmp(lit, raw) == 0, escaped = false;
    const struct pt_limits *lim = &c->g->limits;
    const char *why =
        nl >= 0 ? pt_path_screen(raw, strlen(raw), lim->escaped_slashes, lim->semicolons, &escaped)
                : NULL;
    if (nl == -2) {
        oom(c);
    } else if (why) {
        ok = false;
        err_at(c, n, "%s `%s` can never match: requests that break a path rule are refused (%s)",
               key, p, why);
    } else if (escaped && lim->escaped_slashes == PT_ESC_DECODE) {
        ok = false;
        err_at(c, n,
               "%s `%s` can never match: `limits.escaped_slashes: decode` turns `%%2F` and `%%5C` "
               "into `/` before routing",
               key, p);
    } else if (nl < 0) {
        err_at(c, n,
               "%s `%s` can never match: a request whose path has a `..` above `/` or a `%%` "
               "not followed by two hex digits is refused with 400",
               key, p);
    } else if (!ok && !strchr(p, '{')) {
        err_at(c, n,
               "%s `%s` can never match: request paths are normalised before routing (dot "
               "segments resolved, escaped unreserved characters decoded%s), so write `%s`",
               key, p, c->g->limits.merge_slashes ? ", `//` merged" : "", lit);
    } else if (!ok) {
        err_at(c, n,
               "%s `%s` can never match: request paths are normalised before routing (dot "
               "segments resolved, escaped unreserved characters decoded%s)",
               key, p, c->g->limits.merge_slashes ? ", `//` merged" : "");
    }
    free(raw);
    free(lit);
    return ok;
}

static bool is_param_name(const char *s, size_t len)
{
    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!(ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9')))
            return false;
    }
    return true;
}

/* "{name}" only as whole segments, names unique and at most
 * PT_ROUTE_MAX_PARAMS of them: the router's template trie relies on it. */
static bool check_template(struct cfg *c, const struct pt_ynode *n, const char *t,
                           struct params *ps)
{
    if (!check_path(c, n, "path_template", t))
        return false;
    ps->source = "path_template";
    const char *seg = t + 1;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (memchr(seg, '{', len) || memchr(seg, '}', len)) {
            if (len < 2 || seg[0] != '{' || seg[len - 1] != '}' || memchr(seg + 1, '{', len - 2) ||
                memchr(seg + 1, '}', len - 2)) {
                err_at(c, n,
                       "path_template segment `%.*s` must be a whole `{name}` segment, as in "
                       "`/users/{id}`",
                       (int)len, seg);
                return false;
            }
            if (!is_param_name(seg + 1, len - 2)) {
                err_at(c, n,
                       "path_template parameter `%.*s` needs a name of letters, digits and `_`",
                       (int)len, seg);
                return false;
            }
            for (uint32_t i = 0; i < ps->n; i++) {
                if (strlen(ps->names[i]) == len - 2 &&
                    memcmp(ps->names[i], seg + 1, len - 2) == 0) {
                    err_at(c, n, "path_template parameter `%.*s` appears twice", (int)len, seg);
                    return false;
                }
            }
            if (ps->n == PT_ROUTE_MAX_PARAMS) {
                err_at(c, n, "path_template has more than %d parameters", PT_ROUTE_MAX_PARAMS);
                return false;
            }
            ps->names[ps->n] = pt_arena_strndup(c->a, seg + 1, len - 2);
            if (!ps->names[ps->n++]) {
                oom(c);
                return false;
            }
        }
        if (!end)
            break;
        seg = end + 1;
    }
    return true;
}

/* A regex's parameters are its named groups and its group numbers (the
 * router names unnamed groups "1", "2", ...). */
static bool regex_params(struct cfg *c, const struct pt_ynode *n, pcre2_code *re, struct params *ps)
{
    uint32_t ngroups = 0, nnames = 0, esize = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &ngroups);
    pcre2_pattern_info(re, PCRE2_INFO_NAMECOUNT, &nnames);
    pcre2_pattern_info(re, PCRE2_INFO_NAMEENTRYSIZE, &esize);
    pcre2_pattern_info(re, PCRE2_INFO_NAMETABLE, &table);
    if (ngroups > PT_ROUTE_MAX_PARAMS) {
        err_at(c, n,
               "path_regex has %u capture groups; at most %d are allowed (use `(?:...)` "
               "for groups that capture nothing)",
               ngroups, PT_ROUTE_MAX_PARAMS);
        return false;
    }
    ps->source = "path_regex";
    for (uint32_t i = 0; i < nnames; i++) {
        const char *name = (const char *)table + (size_t)i * esize + 2;
        /* The table is sorted by name: with (?J) one name can stand for
         * several groups, and a parameter must mean one capture. */
        if (i > 0 && strcmp(name, ps->names[ps->n - 1]) == 0) {
            err_at(c, n, "path_regex names two groups `%s`; give each group its own name", name);
            return false;
        }
        ps->names[ps->n++] = name;
    }
    /* Named groups are params by name, and every group by its number —
     * the same rule the proxy applies (pt_param_lookup). */
    for (uint32_t i = 1; i <= ngroups; i++) {
        ps->names[ps->n] = pt_arena_sprintf(c->a, "%u", i);
        if (!ps->names[ps->n++]) {
            oom(c);
            return false;
        }
    }
    return true;
}

static char lower_ascii(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch | 0x20) : ch;
}

/* Lowercases and validates one `hosts` entry in place. */
static bool check_host(struct cfg *c, const struct pt_ynode *at, char *h)
{
    for (char *p = h; *p; p++)
        *p = lower_ascii(*p);
    const char *name = h;
    if (strncmp(h, "*.", 2) == 0)
        name = h + 2;
    if (strcmp(h, "*") == 0) {
        err_at(c, at, "host `*` matches everything: leave `hosts` out instead");
        return false;
    }
    if (strchr(name, '*')) {
        err_at(c, at,
               "host `%s`: a wildcard is only allowed as a leading `*.`, as in `*.example.com`", h);
        return false;
    }
    if (h[0] == '[') {
        /* An IPv6 literal, as the Host header carries it: `[::1]`. */
        size_t hl = strlen(h);
        char addr[64];
        struct in6_addr a6;
        if (hl < 3 || hl - 2 >= sizeof(addr) || h[hl - 1] != ']') {
            err_at(c, at, "host `%s`: an IPv6 address is written `[::1]`, without a port", h);
            return false;
        }
        memcpy(addr, h + 1, hl - 2);
        addr[hl - 2] = 0;
        if (inet_pton(AF_INET6, addr, &a6) != 1) {
            err_at(c, at, "host `%s` is not a valid IPv6 address", h);
            return false;
        }
        return true;
    }
    if (strchr(name, ':')) {
        err_at(c, at,
               "host `%s` must not include a port (hosts match the Host header without "
               "its port)",
               h);
        return false;
    }
    size_t len = strlen(name);
    if (len == 0 || len > 253) {
        err_at(c, at, "host `%s` is not a valid host name", h);
        return false;
    }
    const char *label = name;
    for (const char *p = name;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t ll = (size_t)(p - label);
            if (ll == 0 || ll > 63 || label[0] == '-' || p[-1] == '-') {
                err_at(c, at, "host `%s` is not a valid host name", h);
                return false;
            }
            if (!*p)
                break;
            label = p + 1;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                     *p == '_')) {
            err_at(c, at, "host `%s` contains `%c`, which is not allowed in a host name", h, *p);
            return false;
        }
    }
    return true;
}

static const struct {
    const char *name;
    int id;
} methods_table[] = {
#define PT_X(m) {#m, PT_METHOD_##m},
    PT_METHOD_LIST(PT_X)
#undef PT_X
};

static bool walk_methods(struct cfg *c, const struct pt_ynode *n, uint32_t *mask)
{
    struct pt_strlist l;
    if (!pt_cfg_want_strlist(&c->w, n, "`methods`", &l))
        return false;
    if (l.n == 0) {
        err_at(c, n, "`methods` is empty (leave it out to match any method)");
        return false;
    }
    const char *names[PT_ARRAY_LEN(methods_table)];
    for (size_t i = 0; i < PT_ARRAY_LEN(methods_table); i++)
        names[i] = methods_table[i].name;
    bool ok = true;
    for (uint32_t i = 0; i < l.n; i++) {
        const struct pt_ynode *at = n->kind == PT_YSEQ ? n->items[i] : n;
        const char *m = l.v[i];
        size_t j = 0;
        while (j < PT_ARRAY_LEN(methods_table) && strcmp(methods_table[j].name, m) != 0)
            j++;
        if (j < PT_ARRAY_LEN(methods_table)) {
            *mask |= 1u << methods_table[j].id;
            continue;
        }
        ok = false;
        char upper[32];
        size_t k = 0;
        for (; m[k] && k + 1 < sizeof(upper); k++)
            upper[k] = (m[k] >= 'a' && m[k] <= 'z') ? (char)(m[k] - 32) : m[k];
        upper[k] = 0;
        bool known_upper = false;
        for (size_t q = 0; q < PT_ARRAY_LEN(names); q++)
            known_upper |= strcmp(names[q], upper) == 0;
        if (known_upper) {
            /* RFC 9110 §9.1: "get" is a different (unknown) method. */
            err_at(c, at, "methods are case-sensitive: use %s", upper);
            continue;
        }
        char hint[64];
        const char *dym =
            pt_cfg_did_you_mean(upper, names, PT_ARRAY_LEN(names), hint, sizeof(hint));
        if (*dym)
            err_at(c, at, "unknown method `%s`%s", m, dym);
        else
            err_at(c, at,
                   "unknown method `%s` (use GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, "
                   "TRACE or PATCH)",
                   m);
    }
    return ok;
}

/* Printable ASCII only (what a request-target can hold unescaped). */
static bool visible_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* `headers:` / `query:` predicates: exact value, or a regex as "~re". */
static bool walk_kv(struct cfg *c, const struct pt_ynode *n, bool headers, struct pt_kv_match **out,
                    uint32_t *nout)
{
    const char *what = headers ? "`headers`" : "`query`";
    char buf[64];
    if (!pt_cfg_want_map(&c->w, n, what) || n->kind != PT_YMAP)
        return n->is_null;
    if (n->n == 0) {
        err_at(c, n, "%s is empty (leave it out to match anything)", what);
        return false;
    }
    struct pt_kv_match *v = pt_arena_zalloc(c->a, sizeof(*v) * n->n);
    if (!v) {
        oom(c);
        return false;
    }
    bool ok = true;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *key = n->pairs[i].key, *val = n->pairs[i].value;
        const char *name = key->str;
        if (headers && !pt_cfg_is_token(name)) {
            err_at(c, key, "`%s` is not a valid header name", name);
            ok = false;
            continue;
        }
        if (headers && strcasecmp(name, "host") == 0) {
            err_at(c, key, "match the Host header with `hosts`, not `headers`");
            ok = false;
            continue;
        }
        if (headers && strchr(name, '_') && c->g->limits.underscores != PT_US_ALLOW) {
            err_at(c, key,
                   "header `%s` can never match: fields whose name has `_` are %s before "
                   "routing (set `limits.headers_with_underscores: allow` to route on them)",
                   name, c->g->limits.underscores == PT_US_DROP ? "dropped" : "refused with 400");
            ok = false;
            continue;
        }
        if (!headers && (!*name || strpbrk(name, "&=#") || !visible_ascii(name))) {
            err_at(c, key,
                   "`%s` is not a valid query parameter name (as it appears in the "
                   "request-target: no `&`, `=`, `#`, spaces or non-ASCII; percent-encoded "
                   "names are compared as sent)",
                   name);
            ok = false;
            continue;
        }
        if (val->kind != PT_YSCALAR || val->is_null) {
            err_at(c, val, "expected a string for `%s` in %s, got %s", name, what,
                   pt_cfg_describe(val, buf, sizeof(buf)));
            ok = false;
            continue;
        }
        struct pt_kv_match *m = &v[k];
        m->name = dup_str(c, name);
        m->token = headers ? pt_token_lookup(name, strlen(name)) : 0;
        if (val->str[0] == '~') {
            char where[160];
            snprintf(where, sizeof(where), "%s `%s`", headers ? "header" : "query parameter", name);
            m->re = compile_regex(c, val, val->str + 1, where, 0);
            if (!m->re) {
                ok = false;
                continue;
            }
        } else {
            if (!headers && (strpbrk(val->str, "&#") || !visible_ascii(val->str))) {
                err_at(c, val,
                       "query parameter `%s`: value `%s` can never match (values are compared "
                       "as sent in the request-target: no `&`, `#`, spaces or non-ASCII; "
                       "percent-encode them, or use `~regex`)",
                       name, val->str);
                ok = false;
                continue;
            }
            m->value = dup_str(c, val->str);
        }
        k++;
    }
    *out = v;
    *nout = k;
    return ok;
}

static void walk_match(struct cfg *c, const struct pt_ynode *n, struct pt_route *r,
                       struct params *ps)
{
    if (!pt_cfg_want_map(&c->w, n, "`match`"))
        return;
    const struct pt_ynode *v[M_N] = {0}, *k[M_N] = {0};
    pt_cfg_bind_keys(&c->w, n, match_keys, NULL, "in route match", v, k);
    struct pt_route_match *m = &r->match;
    bool cs = true;
    if (v[M_CASE_SENSITIVE] &&
        pt_cfg_want_bool(&c->w, v[M_CASE_SENSITIVE], "`case_sensitive`", &cs))
        m->case_insensitive = !cs;

    if (v[M_HOSTS]) {
        struct pt_strlist hosts;
        if (pt_cfg_want_strlist(&c->w, v[M_HOSTS], "`hosts`", &hosts)) {
            if (hosts.n == 0)
                err_at(c, v[M_HOSTS], "`hosts` is empty (leave it out to match any host)");
            for (uint32_t i = 0; i < hosts.n; i++) {
                const struct pt_ynode *at =
                    v[M_HOSTS]->kind == PT_YSEQ ? v[M_HOSTS]->items[i] : v[M_HOSTS];
                check_host(c, at, (char *)hosts.v[i]);
            }
            m->hosts = hosts.v;
            m->nhosts = hosts.n;
        }
    }

    /* At most one path form; the later one (in the file) is the error. */
    int first = -1;
    for (int i = M_PATH; i <= M_PATH_REGEX; i++) {
        if (!k[i])
            continue;
        if (first < 0 || k[i]->line < k[first]->line ||
            (k[i]->line == k[first]->line && k[i]->col < k[first]->col))
            first = i;
    }
    for (int i = M_PATH; i <= M_PATH_REGEX; i++) {
        if (!k[i] || i == first)
            continue;
        err_at(c, k[i],
               "`%s` conflicts with `%s` (at %s:%d:%d): set only one of path, path_prefix, "
               "path_template and path_regex",
               match_keys[i], match_keys[first], c->file, k[first]->line, k[first]->col);
    }
    if (first == M_PATH) {
        const char *p = pt_cfg_want_str(&c->w, v[M_PATH], "`path`");
        if (p && check_path(c, v[M_PATH], "path", p) && check_path_normal(c, v[M_PATH], "path", p))
            m->path = dup_str(c, p);
    } else if (first == M_PATH_PREFIX) {
        const char *p = pt_cfg_want_str(&c->w, v[M_PATH_PREFIX], "`path_prefix`");
        if (p && check_path(c, v[M_PATH_PREFIX], "path_prefix", p) &&
            check_path_normal(c, v[M_PATH_PREFIX], "path_prefix", p))
            m->path_prefix = dup_str(c, p);
    } else if (first == M_PATH_TEMPLATE) {
        const char *p = pt_cfg_want_str(&c->w, v[M_PATH_TEMPLATE], "`path_template`");
        if (p && check_template(c, v[M_PATH_TEMPLATE], p, ps) &&
            check_path_normal(c, v[M_PATH_TEMPLATE], "path_template", p))
            m->path_template = dup_str(c, p);
    } else if (first == M_PATH_REGEX) {
        const char *p = pt_cfg_want_str(&c->w, v[M_PATH_REGEX], "`path_regex`");
        pcre2_code *re = p ? compile_regex(c, v[M_PATH_REGEX], p, "`path_regex`",
                                           m->case_insensitive ? PCRE2_CASELESS : 0)
                           : NULL;
        if (re && regex_params(c, v[M_PATH_REGEX], re, ps)) {
            m->path_regex = dup_str(c, p);
            m->regex = re;
        }
    }

    if (v[M_METHODS])
        walk_methods(c, v[M_METHODS], &m->methods);
    if (v[M_HEADERS])
        walk_kv(c, v[M_HEADERS], true, &m->headers, &m->nheaders);
    if (v[M_QUERY])
        walk_kv(c, v[M_QUERY], false, &m->query, &m->nquery);
}

/* Whether the route's path defines parameter `name` (`number`: a regex
 * group number); if not, an error at n that `what` uses it, with a
 * did-you-mean among the route's parameters. */
static bool param_defined(struct cfg *c, const struct pt_ynode *n, const char *what,
                          const char *name, bool number, const struct params *ps)
{
    for (uint32_t i = 0; i < ps->n; i++)
        if (strcmp(ps->names[i], name) == 0)
            return true;
    if (!ps->source) {
        err_at(c, n,
               "%s uses `{%s}`, but the route's path defines no parameters (use a "
               "path_template such as `/users/{%s}`)",
               what, name, name);
        return false;
    }
    /* Group numbers are not names anyone misspells: suggest only among
     * real names. */
    char hint[160];
    const char *s = number ? NULL : pt_cfg_suggest(name, ps->names, ps->n);
    if (s)
        snprintf(hint, sizeof(hint), " (did you mean `{%s}`?)", s);
    else
        hint[0] = 0;
    err_at(c, n, "%s uses `{%s}`, which the %s does not define%s", what, name, ps->source, hint);
    return false;
}

/* The `{param}`s of each `aggregate` call's path (`agg`: the filter's
 * settings), like `rewrite`'s: only parameters the route's path defines.
 * An unknown one would render empty and call another endpoint
 * (`/users/{idd}` → `/users/`). `${...}` variables and malformed braces
 * are the filter's own to check. */
static void check_aggregate_params(struct cfg *c, const struct pt_ynode *agg,
                                   const struct params *ps)
{
    const struct pt_ynode *calls = agg && agg->kind == PT_YMAP ? pt_ynode_get(agg, "calls") : NULL;
    for (uint32_t i = 0; calls && calls->kind == PT_YSEQ && i < calls->n; i++) {
        const struct pt_ynode *it = calls->items[i];
        const struct pt_ynode *pn = it->kind == PT_YMAP ? pt_ynode_get(it, "path") : NULL;
        if (!pn || pn->kind != PT_YSCALAR || pn->is_null)
            continue;
        const struct pt_ynode *nn = pt_ynode_get(it, "name");
        char what[160];
        snprintf(what, sizeof(what), "filter `aggregate`: call `%s`'s path",
                 nn && nn->kind == PT_YSCALAR ? nn->str : "?");
        for (const char *p = pn->str; *p; p++) {
            if (p[0] == '$' && (p[1] == '$' || p[1] == '{')) {
                const char *end = p[1] == '{' ? strchr(p + 2, '}') : p + 1;
                if (!end)
                    break;
                p = end;
                continue;
            }
            if (*p != '{')
                continue;
            const char *end = strchr(p + 1, '}');
            if (!end)
                break;
            size_t len = (size_t)(end - p - 1);
            bool number = len > 0 && strspn(p + 1, "0123456789") >= len;
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)len, p + 1);
            if (len && len < sizeof(name))
                param_defined(c, pn, what, name, number, ps);
            p = end;
        }
    }
}

/* `rewrite` may use only the parameters the route's path defines. */
static void check_rewrite(struct cfg *c, const struct pt_ynode *n, const char *rw,
                          const struct params *ps)
{
    if (rw[0] != '/') {
        err_at(c, n, "rewrite `%s` must start with `/`", rw);
        return;
    }
    for (const char *p = rw; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f) {
            err_at(c, n, "rewrite `%s` must not contain spaces, control or non-ASCII characters",
                   rw);
            return;
        }
        if (ch == '?' || ch == '#') {
            err_at(c, n,
                   "rewrite `%s` must not contain `%c`: it replaces the path only, and the "
                   "request's query is kept as sent",
                   rw, ch);
            return;
        }
        if (ch == '}') {
            err_at(c, n, "rewrite `%s` has a `}` without `{`", rw);
            return;
        }
        if (ch != '{')
            continue;
        const char *end = strchr(p + 1, '}');
        if (!end) {
            err_at(c, n, "rewrite `%s` has a `{` without `}`", rw);
            return;
        }
        size_t len = (size_t)(end - p - 1);
        bool number = len > 0 && strspn(p + 1, "0123456789") >= len;
        if (!number && !is_param_name(p + 1, len)) {
            err_at(c, n, "rewrite `%s`: `%.*s` is not a parameter name", rw, (int)(len + 2), p);
            return;
        }
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)len, p + 1);
        param_defined(c, n, "rewrite", name, number, ps);
        p = end;
    }
    /* Its literal text must survive path normalisation, or every request
     * the route matches would be refused: parameters stand in as "p". */
    char *raw, *lit;
    long nl = normal_literal(c, rw, true, &raw, &lit);
    free(raw);
    if (nl == -2) {
        free(lit);
        return oom(c);
    }
    if (nl < 0)
        err_at(c, n,
               "rewrite `%s` is not a valid path: a `..` climbs above `/` or a `%%` is not "
               "followed by two hex digits",
               rw);
    free(lit);
}

/* strip_prefix must remove whole leading segments of every path the
 * route matches, so it must equal literal leading segments of the
 * route's path. The proxy strips it byte-wise, so this check is what keeps
 * it on segment boundaries: a `{param}` segment would let "/v1x" lose
 * "/v1". */
static void check_strip_prefix(struct cfg *c, const struct pt_ynode *n, const char *sp,
                               const struct pt_route_match *m)
{
    if (!check_path(c, n, "strip_prefix", sp))
        return;
    if (strcmp(sp, "/") == 0 || sp[strlen(sp) - 1] == '/') {
        err_at(c, n, "strip_prefix `%s` must not end with `/` (write `/v1`, not `/v1/`)", sp);
        return;
    }
    const char *path = m->path ? m->path : m->path_prefix ? m->path_prefix : m->path_template;
    const char *kind = m->path ? "path" : m->path_prefix ? "path_prefix" : "path_template";
    if (!path) {
        /* With a regex or no path at all, nothing says the prefix is
         * there, and stripping bytes off a path that merely starts with
         * them ("/v10" for "/v1") would be wrong: refuse it. */
        err_at(c, n,
               "strip_prefix needs the route to match a `path`, `path_prefix` or "
               "`path_template` it is a leading part of (with path_regex, use `rewrite`)");
        return;
    }
    const char *a = sp + 1, *b = path + 1;
    for (;;) {
        const char *ae = strchr(a, '/'), *be = strchr(b, '/');
        size_t al = ae ? (size_t)(ae - a) : strlen(a), bl = be ? (size_t)(be - b) : strlen(b);
        if (m->path_template && bl >= 2 && b[0] == '{') {
            err_at(c, n,
                   "strip_prefix `%s` reaches the parameter segment `%.*s` of path_template "
                   "`%s`: strip only literal segments, or use `rewrite`",
                   sp, (int)bl, b, path);
            return;
        }
        bool b_done = !*b && !be;
        if (b_done || al != bl || memcmp(a, b, al) != 0) {
            err_at(c, n,
                   "strip_prefix `%s` is not a leading part of %s `%s`, so it would not "
                   "apply to every request of this route",
                   sp, kind, path);
            return;
        }
        if (!ae)
            return;
        if (!be) {
            err_at(c, n, "strip_prefix `%s` is longer than %s `%s`", sp, kind, path);
            return;
        }
        a = ae + 1;
        b = be + 1;
    }
}

/* The route's effective filters: the defaults, replaced per filter by the
 * route's own entries, minus those it switches `off`. */
static bool build_chain(struct cfg *c, struct pt_route *r, const struct filter_set *own)
{
    uint32_t cap = c->defaults.n + own->n;
    if (cap == 0)
        return true;
    struct pt_filter_inst *inst = pt_arena_zalloc(c->a, sizeof(*inst) * cap);
    if (!inst) {
        oom(c);
        return false;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->defaults.n; i++) {
        const struct pt_filter_def *def = c->defaults.v[i].def;
        bool overridden = false;
        for (uint32_t j = 0; j < own->n && !overridden; j++)
            overridden = own->v[j].def == def;
        if (!overridden)
            inst[n++] = (struct pt_filter_inst){def, c->defaults.v[i].conf, 0};
    }
    for (uint32_t j = 0; j < own->n; j++)
        if (!own->v[j].off)
            inst[n++] = (struct pt_filter_inst){own->v[j].def, own->v[j].conf, 0};
    for (uint32_t i = 0; i < n; i++)
        inst[i].state_index = i;
    if (pt_chain_build(&r->chain, inst, n, c->a) < 0) {
        oom(c);
        return false;
    }
    return true;
}

static bool chain_has(const struct pt_chain *ch, const char *name)
{
    for (uint32_t i = 0; i < ch->n_all; i++)
        if (strcmp(ch->all[i].def->name, name) == 0)
            return true;
    return false;
}

/* acl reads the identity an auth filter sets: with none on the route,
 * every request would be a 401. */
static void check_acl_has_auth(struct cfg *c, const struct pt_ynode *at, const struct pt_chain *ch)
{
    bool acl = false, auth = false;
    for (uint32_t i = 0; i < ch->n_all; i++) {
        bool is_acl = strcmp(ch->all[i].def->name, "acl") == 0;
        acl |= is_acl;
        auth |= ch->all[i].def->auth && !is_acl;
    }
    if (acl && !auth) {
        const struct pt_ynode *k = at->kind == PT_YMAP ? pt_ynode_get(at, "acl") : NULL;
        err_at(c, k ? k : at,
               "filter `acl` needs an auth filter on the same route to identify the caller "
               "(key_auth, jwt, introspection or ext_auth); without one every request is a 401");
    }
}

/* The upstream a route (or one side of its split) names, or NULL after an
 * "unknown upstream" error at `at` with a did-you-mean. */
struct pt_upstream *pt_cfg_find_upstream(struct cfg *c, const struct pt_ynode *at, const char *u)
{
    struct pt_upstream *up = (struct pt_upstream *)pt_cfg_strtab_get(&c->upstreams, u);
    if (up)
        return up;
    const struct pt_generation *g = c->g;
    if (g->nupstreams == 0) {
        err_at(c, at, "unknown upstream `%s` (no upstreams are defined: add it under `upstreams`)",
               u);
        return NULL;
    }
    const char **cands = malloc(g->nupstreams * sizeof(*cands));
    if (!cands) {
        oom(c);
        return NULL;
    }
    for (uint32_t i = 0; i < g->nupstreams; i++)
        cands[i] = g->upstreams[i].name;
    char hint[160];
    err_at(c, at, "unknown upstream `%s`%s", u,
           pt_cfg_did_you_mean(u, cands, g->nupstreams, hint, sizeof(hint)));
    free(cands);
    return NULL;
}

static void walk_route(struct cfg *c, const struct pt_ynode *n, struct pt_route *r,
                       struct strtab *names)
{
    if (!pt_cfg_want_map(&c->w, n, "each route"))
        return;
    r->pos = (struct pt_src_pos){n->line, n->col};
    const struct pt_ynode *v[R_N] = {0}, *k[R_N] = {0};
    uint32_t refused = pt_cfg_bind_keys(&c->w, n, route_keys, NULL, "in route", v, k);

    if (!v[R_NAME]) {
        if (!refused)
            err_at(c, n, "route has no `name`");
    } else {
        r->name = pt_cfg_want_name(c, v[R_NAME], "route name", PT_NAME_MAX);
        if (r->name) {
            const struct pt_ynode *first = pt_cfg_strtab_put(c, names, r->name, v[R_NAME]);
            if (first)
                err_at(c, v[R_NAME], "duplicate route name `%s` (first defined at %s:%d:%d)",
                       r->name, c->file, first->line, first->col);
        }
    }

    struct params ps = {.n = 0};
    if (v[R_MATCH])
        walk_match(c, v[R_MATCH], r, &ps);

    int64_t prio;
    if (v[R_PRIORITY] &&
        pt_cfg_want_int(&c->w, v[R_PRIORITY], "`priority`", -1000000, 1000000, &prio))
        r->priority = (int)prio;

    if (v[R_UPSTREAM] && v[R_SPLIT]) {
        bool split_later =
            k[R_SPLIT]->line > k[R_UPSTREAM]->line ||
            (k[R_SPLIT]->line == k[R_UPSTREAM]->line && k[R_SPLIT]->col > k[R_UPSTREAM]->col);
        const struct pt_ynode *later = split_later ? k[R_SPLIT] : k[R_UPSTREAM];
        const struct pt_ynode *first = split_later ? k[R_UPSTREAM] : k[R_SPLIT];
        err_at(c, later,
               "`%s` conflicts with `%s` (at %s:%d:%d): a route sends to one `upstream` or "
               "splits between several with `split`, not both",
               split_later ? "split" : "upstream", split_later ? "upstream" : "split", c->file,
               first->line, first->col);
    } else if (v[R_UPSTREAM]) {
        const char *u = pt_cfg_want_str(&c->w, v[R_UPSTREAM], "`upstream`");
        if (u)
            r->upstream = pt_cfg_find_upstream(c, v[R_UPSTREAM], u);
    }
    pt_cfg_walk_split(c, v[R_SPLIT], v[R_STICKY], v[R_OVERRIDE], r);

    if (v[R_STRIP_PREFIX] && v[R_REWRITE]) {
        const struct pt_ynode *later = k[R_REWRITE]->line > k[R_STRIP_PREFIX]->line ||
                                               (k[R_REWRITE]->line == k[R_STRIP_PREFIX]->line &&
                                                k[R_REWRITE]->col > k[R_STRIP_PREFIX]->col)
                                           ? k[R_REWRITE]
                                           : k[R_STRIP_PREFIX];
        err_at(c, later,
               "`strip_prefix` and `rewrite` cannot be combined (rewrite replaces the whole "
               "path; write the result you want in `rewrite`)");
    } else if (v[R_STRIP_PREFIX]) {
        const char *sp = pt_cfg_want_str(&c->w, v[R_STRIP_PREFIX], "`strip_prefix`");
        if (sp) {
            check_strip_prefix(c, v[R_STRIP_PREFIX], sp, &r->match);
            r->strip_prefix = dup_str(c, sp);
        }
    } else if (v[R_REWRITE]) {
        const char *rw = pt_cfg_want_str(&c->w, v[R_REWRITE], "`rewrite`");
        if (rw) {
            check_rewrite(c, v[R_REWRITE], rw, &ps);
            r->rewrite = dup_str(c, rw);
        }
    }

    if (v[R_TIMEOUT])
        pt_cfg_want_duration(&c->w, v[R_TIMEOUT], "`timeout`", true, &r->timeout_ms);
    if (v[R_MAX_BODY])
        pt_cfg_want_size(&c->w, v[R_MAX_BODY], "`max_body_bytes`", true, &r->max_body_bytes);
    if (v[R_WEBSOCKET])
        pt_cfg_want_bool(&c->w, v[R_WEBSOCKET], "`websocket`", &r->websocket);

    struct filter_set own = {0};
    if (v[R_FILTERS])
        pt_cfg_walk_filter_block(c, v[R_FILTERS], true, &own);
    build_chain(c, r, &own);
    free(own.v);
    check_acl_has_auth(c, v[R_FILTERS] ? v[R_FILTERS] : n, &r->chain);

    /* the filter's key counts even when its settings were refused: one
     * error about them, not a second about the route */
    const struct pt_ynode *own_agg = v[R_FILTERS] && v[R_FILTERS]->kind == PT_YMAP
                                         ? pt_ynode_get(v[R_FILTERS], "aggregate")
                                         : NULL;
    bool aggregates =
        chain_has(&r->chain, "aggregate") ||
        (own_agg && !(own_agg->kind == PT_YSCALAR && strcmp(own_agg->str, "off") == 0));
    /* its calls' {param}s, wherever its settings are written */
    if (own_agg)
        check_aggregate_params(c, own_agg, &ps);
    else if (aggregates && c->defaults_at && c->defaults_at->kind == PT_YMAP)
        check_aggregate_params(c, pt_ynode_get(c->defaults_at, "aggregate"), &ps);
    if (aggregates && (v[R_UPSTREAM] || v[R_SPLIT])) {
        const struct pt_ynode *at = v[R_UPSTREAM] ? k[R_UPSTREAM] : k[R_SPLIT];
        err_at(c, at,
               "`%s` conflicts with the `aggregate` filter: an aggregating route answers from "
               "its calls' upstreams (name them in `aggregate.calls`), not from one `upstream`",
               v[R_UPSTREAM] ? "upstream" : "split");
    }
    if (!v[R_UPSTREAM] && !v[R_SPLIT] && !refused && !aggregates) {
        if (r->name)
            err_at(c, n, "route `%s` has no `upstream` (or `split`)", r->name);
        else
            err_at(c, n, "route has no `upstream` (or `split`)");
    }
}

void pt_cfg_walk_routes(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_seq(&c->w, n, "`routes`") || n->n == 0)
        return;
    struct pt_generation *g = c->g;
    g->routes = pt_arena_zalloc(c->a, sizeof(*g->routes) * n->n);
    if (!g->routes)
        return oom(c);
    struct strtab names = {0};
    for (uint32_t i = 0; i < n->n; i++) {
        struct pt_route *r = &g->routes[i];
        r->index = i;
        walk_route(c, n->items[i], r, &names);
    }
    g->nroutes = n->n;
    pt_cfg_strtab_free(&names);
}
