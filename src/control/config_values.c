/*
 * config_values.c — the config loader's typed readers (see config_yaml.h):
 * what the schema walker asks of a node. Each pt_cfg_want_* reads one node
 * as a mapping, list, string, number, duration, size or address and
 * reports a precise message at the node when it is not one;
 * pt_cfg_read_fields fills a filter's config from its field table; the
 * "did you mean" helpers suggest the closest known key.
 *
 * config_yaml.c builds the node tree these read and owns the error
 * collector they report into; config.c knows the schema (which keys exist,
 * what they mean); this file knows how to read any value and say exactly
 * what is wrong with it.
 *
 * Ownership: values returned are copied into w->arena (the generation's
 * arena while loading) unless a reader says it returns the node's own
 * string; nothing here is freed separately.
 */
#include "control/config_yaml.h"

#include "core/cidr.h"
#include "core/units.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- typed reading: what the walker asks of a node ---- */

void pt_cfg_verr(struct pt_cfg_walk *w, const struct pt_ynode *at, const char *fmt, va_list ap)
{
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) {
        pt_cfg_oom(w);
        return;
    }
    pt_cfg_error_add(&w->errs, at ? at->line : 0, at ? at->col : 0, "%s", msg);
    free(msg);
}

void pt_cfg_err(struct pt_cfg_walk *w, const struct pt_ynode *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pt_cfg_verr(w, at, fmt, ap);
    va_end(ap);
}

void pt_cfg_oom(struct pt_cfg_walk *w)
{
    if (!w->oom)
        pt_cfg_error_add(&w->errs, 0, 0, "out of memory");
    w->oom = true;
}

/* What a node is, for "expected X, got Y": scalars are quoted (cut short)
 * because the value itself is the most useful thing to show. */
const char *pt_cfg_describe(const struct pt_ynode *n, char *buf, size_t len)
{
    if (n->kind == PT_YSEQ)
        return "a list";
    if (n->kind == PT_YMAP)
        return "a mapping";
    if (n->is_null)
        return "nothing";
    snprintf(buf, len, "`%.40s%s`", n->str, n->len > 40 ? "..." : "");
    return buf;
}

static char lower_ascii(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch | 0x20) : ch;
}

/* Optimal-string-alignment distance (Damerau-Levenshtein with adjacent
 * transpositions), case-insensitive; stops early past `max`. */
size_t pt_cfg_edit_distance(const char *a, const char *b, size_t max)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return max + 1;
    if ((la > lb ? la - lb : lb - la) > max)
        return max + 1;
    size_t d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = lower_ascii(a[i - 1]) != lower_ascii(b[j - 1]);
            size_t v = d[i - 1][j] + 1;
            v = PT_MIN(v, d[i][j - 1] + 1);
            v = PT_MIN(v, d[i - 1][j - 1] + cost);
            if (i > 1 && j > 1 && lower_ascii(a[i - 1]) == lower_ascii(b[j - 2]) &&
                lower_ascii(a[i - 2]) == lower_ascii(b[j - 1]))
                v = PT_MIN(v, d[i - 2][j - 2] + 1);
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

/* The closest candidate to `word`: edit distance ≤ 2 (≤ 1 for words of
 * three letters or fewer, where 2 edits reach almost anything), else a
 * candidate that `word` is a prefix of. Ties go to the earlier candidate. */
const char *pt_cfg_suggest(const char *word, const char *const *cands, size_t n)
{
    size_t wl = strlen(word);
    size_t max = wl <= 3 ? 1 : 2;
    const char *best = NULL;
    size_t best_rank = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (!cands[i] || strcmp(cands[i], word) == 0)
            continue;
        size_t rank = pt_cfg_edit_distance(word, cands[i], max);
        if (rank > max)
            rank = (wl >= 3 && strncmp(cands[i], word, wl) == 0) ? max + 1 : SIZE_MAX;
        if (rank < best_rank) {
            best_rank = rank;
            best = cands[i];
        }
    }
    return best;
}

size_t pt_cfg_list_len(const char *const *list)
{
    size_t n = 0;
    while (list && list[n])
        n++;
    return n;
}

bool pt_cfg_in_list(const char *word, const char *const *list)
{
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], word) == 0)
            return true;
    return false;
}

/* " (did you mean `x`?)" or "", into buf. */
const char *pt_cfg_did_you_mean(const char *word, const char *const *cands, size_t n, char *buf,
                                size_t len)
{
    const char *s = pt_cfg_suggest(word, cands, n);
    if (!s)
        return "";
    snprintf(buf, len, " (did you mean `%s`?)", s);
    return buf;
}

/*
 * Sorts a mapping's keys into `vals`/`keys` slots by their index in
 * `known` (NULL-terminated). A key in `planned` names a feature CONFIG.md
 * promises but this build lacks: refused as such. Anything else is
 * unknown, with a suggestion from both lists. `where` completes "unknown
 * key `x` <where>", e.g. "in route". Returns how many keys were refused:
 * callers then skip "missing key" errors, which would mostly repeat the
 * same mistake (`upstrem: users` → "route has no `upstream`").
 */
uint32_t pt_cfg_bind_keys(struct pt_cfg_walk *w, const struct pt_ynode *map,
                          const char *const *known, const char *const *planned, const char *where,
                          const struct pt_ynode **vals, const struct pt_ynode **keys)
{
    uint32_t unknown = 0;
    if (map->kind != PT_YMAP)
        return 0; /* null: an empty mapping */
    for (uint32_t i = 0; i < map->n; i++) {
        const struct pt_ynode *k = map->pairs[i].key;
        if (strlen(k->str) != k->len) { /* "address\0junk" must not pass as `address` */
            pt_cfg_err(w, k, "key `%s…` contains a NUL character", k->str);
            unknown++;
            continue;
        }
        size_t idx = 0;
        while (known[idx] && strcmp(known[idx], k->str) != 0)
            idx++;
        if (known[idx]) {
            vals[idx] = map->pairs[i].value;
            if (keys)
                keys[idx] = k;
            continue;
        }
        unknown++;
        if (pt_cfg_in_list(k->str, planned)) {
            pt_cfg_err(w, k, "`%s` is not supported by this build yet", k->str);
            continue;
        }
        size_t nk = pt_cfg_list_len(known), np = pt_cfg_list_len(planned);
        const char **cands = malloc((nk + np + 1) * sizeof(*cands));
        if (!cands) {
            pt_cfg_oom(w);
            return unknown;
        }
        memcpy(cands, known, nk * sizeof(*cands));
        if (np)
            memcpy(cands + nk, planned, np * sizeof(*cands));
        char hint[128];
        pt_cfg_err(w, k, "unknown key `%s` %s%s", k->str, where,
                   pt_cfg_did_you_mean(k->str, cands, nk + np, hint, sizeof(hint)));
        free(cands);
    }
    return unknown;
}

/* Mapping (or nothing, which reads as an empty mapping). */
bool pt_cfg_want_map(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what)
{
    if (n->bad)
        return false; /* its `${...}` problem is reported already */
    if (n->kind == PT_YMAP || (n->kind == PT_YSCALAR && n->is_null))
        return true;
    char buf[64];
    pt_cfg_err(w, n, "expected a mapping for %s, got %s", what,
               pt_cfg_describe(n, buf, sizeof(buf)));
    return false;
}

/* List (or nothing, which reads as an empty list). */
bool pt_cfg_want_seq(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what)
{
    if (n->bad)
        return false;
    if (n->kind == PT_YSEQ || (n->kind == PT_YSCALAR && n->is_null))
        return true;
    char buf[64];
    pt_cfg_err(w, n, "expected a list for %s, got %s", what, pt_cfg_describe(n, buf, sizeof(buf)));
    return false;
}

/* A non-empty string value. */
const char *pt_cfg_want_str(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what)
{
    char buf[64];
    if (n->bad)
        return NULL; /* its `${...}` problem is reported already */
    if (n->kind != PT_YSCALAR || n->is_null) {
        pt_cfg_err(w, n, "expected a string for %s, got %s", what,
                   pt_cfg_describe(n, buf, sizeof(buf)));
        return NULL;
    }
    if (n->len == 0) {
        pt_cfg_err(w, n, "%s is empty", what);
        return NULL;
    }
    if (strlen(n->str) != n->len) {
        pt_cfg_err(w, n, "%s contains a NUL character", what);
        return NULL;
    }
    return n->str;
}

/* A string or a list of strings; *out is allocated in w->arena. */
bool pt_cfg_want_strlist(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                         struct pt_strlist *out)
{
    char buf[64];
    out->v = NULL;
    out->n = 0;
    if (n->kind == PT_YSCALAR && n->is_null)
        return true;
    if (n->kind == PT_YSCALAR) {
        const char *s = pt_cfg_want_str(w, n, what);
        if (!s)
            return false;
        out->v = pt_arena_alloc(w->arena, sizeof(*out->v));
        if (!out->v) {
            pt_cfg_oom(w);
            return false;
        }
        out->v[0] = pt_arena_strdup(w->arena, s);
        out->n = 1;
        return out->v[0] != NULL || (pt_cfg_oom(w), false);
    }
    if (n->kind != PT_YSEQ) {
        pt_cfg_err(w, n, "expected a list of strings for %s, got %s", what,
                   pt_cfg_describe(n, buf, sizeof(buf)));
        return false;
    }
    const char **v = pt_arena_zalloc(w->arena, sizeof(*v) * (n->n ? n->n : 1));
    if (!v) {
        pt_cfg_oom(w);
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *it = n->items[i];
        if (it->kind != PT_YSCALAR || it->is_null) {
            pt_cfg_err(w, it, "expected a string in %s, got %s", what,
                       pt_cfg_describe(it, buf, sizeof(buf)));
            ok = false;
            continue;
        }
        const char *s = pt_cfg_want_str(w, it, what);
        if (!s) {
            ok = false;
            continue;
        }
        v[out->n] = pt_arena_strdup(w->arena, s);
        if (!v[out->n]) {
            pt_cfg_oom(w);
            return false;
        }
        out->n++;
    }
    out->v = v;
    return ok;
}

bool pt_cfg_parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* Decimal digits (after an optional '-') that pt_cfg_parse_u64 refused:
 * a number that overflows 64 bits, not a malformed one. */
static bool overflowing_number(const char *s)
{
    s += *s == '-';
    return *s && strspn(s, "0123456789") == strlen(s);
}

/* A whole number in [min, max]. */
/* One CIDR node into *out; false after reporting why it is not one. */
static bool want_cidr(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                      struct pt_cidr *out)
{
    const char *s = pt_cfg_want_str(w, n, what);
    if (!s)
        return false;
    const char *why = NULL;
    if (pt_cidr_parse(s, out, &why) == 0)
        return true;
    char net[PT_IP_TEXT_MAX];
    if (out->net.family && pt_ip_format(&out->net, net))
        pt_cfg_err(w, n, "`%s` in %s: %s (did you mean `%s/%u`?)", s, what, why, net,
                   (unsigned)out->bits);
    else
        pt_cfg_err(w, n, "`%s` in %s: %s", s, what, why);
    return false;
}

bool pt_cfg_want_cidrs(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                       struct pt_cidr_set *out)
{
    char buf[64];
    out->v = NULL;
    out->n = 0;
    if (n->kind == PT_YSCALAR && n->is_null)
        return true;
    bool seq = n->kind == PT_YSEQ;
    if (!seq && n->kind != PT_YSCALAR) {
        pt_cfg_err(w, n, "expected a list of CIDRs for %s, got %s", what,
                   pt_cfg_describe(n, buf, sizeof(buf)));
        return false;
    }
    uint32_t count = seq ? n->n : 1;
    struct pt_cidr *v = pt_arena_zalloc(w->arena, sizeof(*v) * (count ? count : 1));
    if (!v) {
        pt_cfg_oom(w);
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; i < count; i++) {
        if (want_cidr(w, seq ? n->items[i] : n, what, &v[out->n]))
            out->n++;
        else
            ok = false;
    }
    out->v = v;
    return ok;
}

bool pt_cfg_want_uint(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                      uint64_t min, uint64_t max, uint64_t *out)
{
    const char *s = pt_cfg_want_str(w, n, what);
    uint64_t v;
    if (!s)
        return false;
    if (!pt_cfg_parse_u64(s, &v) && !(s[0] == '-' && pt_cfg_parse_u64(s + 1, &v))) {
        if (overflowing_number(s))
            pt_cfg_err(w, n, "%s `%s` is too %s (it must be from %llu to %llu)", what, s,
                       s[0] == '-' ? "small" : "large", (unsigned long long)min,
                       (unsigned long long)max);
        else
            pt_cfg_err(w, n, "expected a whole number for %s, got `%s`", what, s);
        return false;
    }
    if (s[0] == '-' || v < min || v > max) {
        pt_cfg_err(w, n, "%s must be from %llu to %llu, got %s", what, (unsigned long long)min,
                   (unsigned long long)max, s);
        return false;
    }
    *out = v;
    return true;
}

bool pt_cfg_want_int(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what, int64_t min,
                     int64_t max, int64_t *out)
{
    const char *s = pt_cfg_want_str(w, n, what);
    if (!s)
        return false;
    bool neg = s[0] == '-';
    uint64_t mag;
    if (!pt_cfg_parse_u64(s + neg, &mag)) {
        if (overflowing_number(s))
            pt_cfg_err(w, n, "%s `%s` is too %s (it must be from %lld to %lld)", what, s,
                       s[0] == '-' ? "small" : "large", (long long)min, (long long)max);
        else
            pt_cfg_err(w, n, "expected a whole number for %s, got `%s`", what, s);
        return false;
    }
    /* Compare magnitudes against the bounds without overflowing int64. */
    bool ok =
        neg ? (min < 0 && mag <= (uint64_t)(-(min + 1)) + 1) : (max >= 0 && mag <= (uint64_t)max);
    int64_t v = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    if (!ok || v < min || v > max) {
        pt_cfg_err(w, n, "%s must be from %lld to %lld, got %s", what, (long long)min,
                   (long long)max, s);
        return false;
    }
    *out = v;
    return true;
}

bool pt_cfg_want_bool(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", NULL};
    static const char *const no[] = {"false", "no", "off", NULL};
    const char *s = pt_cfg_want_str(w, n, what);
    if (!s)
        return false;
    if (pt_cfg_in_list(s, yes) || pt_cfg_in_list(s, no)) {
        *out = pt_cfg_in_list(s, yes);
        return true;
    }
    pt_cfg_err(w, n, "expected true or false for %s, got `%s`", what, s);
    return false;
}

bool pt_cfg_want_double(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                        double *out)
{
    const char *s = pt_cfg_want_str(w, n, what);
    if (!s)
        return false;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    /* strtod also takes "inf", "nan", hex floats and leading spaces;
     * a config number is plain decimal. */
    bool plain = strspn(s, "+-0123456789.eE") == strlen(s);
    if (!plain || end == s || *end || errno == ERANGE || !isfinite(v)) {
        pt_cfg_err(w, n, "expected a number for %s, got `%s`", what, s);
        return false;
    }
    *out = v;
    return true;
}

static bool all_digits(const char *s)
{
    return *s && strspn(s, "0123456789") == strlen(s);
}

bool pt_cfg_want_duration(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                          bool positive, uint64_t *out_ms)
{
    const char *s = pt_cfg_want_str(w, n, what);
    if (!s)
        return false;
    int rc = pt_parse_duration_ms(s, out_ms);
    if (rc == -ERANGE) {
        pt_cfg_err(w, n, "duration `%s` is too large", s);
        return false;
    }
    if (rc < 0 && all_digits(s)) {
        pt_cfg_err(w, n, "invalid duration `%s`: a unit is needed (use 250ms, 5s, 2m, 1h)", s);
        return false;
    }
    if (rc < 0) {
        pt_cfg_err(w, n, "invalid duration `%s` (use 250ms, 5s, 2m, 1h)", s);
        return false;
    }
    if (positive && *out_ms == 0) {
        pt_cfg_err(w, n, "%s must be longer than 0", what);
        return false;
    }
    /* Timers add durations to the clock: keep the sum far from wrapping. */
    if (*out_ms > PT_CFG_DURATION_MAX_MS) {
        pt_cfg_err(w, n, "duration `%s` is too large (at most 365d)", s);
        return false;
    }
    return true;
}

bool pt_cfg_want_size(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                      bool positive, uint64_t *out)
{
    const char *s = pt_cfg_want_str(w, n, what);
    if (!s)
        return false;
    int rc = pt_parse_size(s, out);
    if (rc == -ERANGE) {
        pt_cfg_err(w, n, "size `%s` is too large", s);
        return false;
    }
    if (rc < 0) {
        pt_cfg_err(w, n, "invalid size `%s` (use 512, 16KiB, 1MiB, 1GiB)", s);
        return false;
    }
    if (positive && *out == 0) {
        pt_cfg_err(w, n, "%s must be larger than 0", what);
        return false;
    }
    return true;
}

/* ---- addresses ---- */

bool pt_addr_overlaps(const struct sockaddr_storage *x, const struct sockaddr_storage *y)
{
    if (x->ss_family != y->ss_family)
        return false;
    if (x->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)x, *b = (const void *)y;
        return a->sin_port == b->sin_port &&
               (a->sin_addr.s_addr == htonl(INADDR_ANY) || b->sin_addr.s_addr == htonl(INADDR_ANY));
    }
    if (x->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)x, *b = (const void *)y;
        return a->sin6_port == b->sin6_port &&
               (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&b->sin6_addr));
    }
    return false;
}

/*
 * "host:port", "[v6]:port" or (to listen) ":port" for every IPv4
 * interface. A name is resolved once, here, on the control thread —
 * workers never resolve. When a name has both, IPv4 is preferred: local
 * services mostly listen on 127.0.0.1, and "localhost" often lists ::1
 * first.
 */
bool pt_cfg_want_address(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *s,
                         bool listen, struct sockaddr_storage *out, socklen_t *outlen)
{
    char host[256];
    const char *port;
    bool bracketed = s[0] == '[';
    if (bracketed) {
        const char *close = strchr(s, ']');
        if (!close) {
            pt_cfg_err(w, n, "address `%s` has `[` without `]`", s);
            return false;
        }
        if (close[1] != ':') {
            pt_cfg_err(w, n, "address `%s` needs a port, as in `%.*s:8080`", s,
                       (int)(close - s + 1), s);
            return false;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close - s - 1), s + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            pt_cfg_err(w, n, "address `%s` needs a port, as in `%s:8080`", s, s);
            return false;
        }
        if (memchr(s, ':', (size_t)(colon - s))) {
            pt_cfg_err(w, n, "address `%s`: an IPv6 address needs brackets, as in `[::1]:8080`", s);
            return false;
        }
        if ((size_t)(colon - s) >= sizeof(host)) {
            pt_cfg_err(w, n, "address `%s`: the host name is too long", s);
            return false;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
        port = colon + 1;
    }
    uint64_t pnum;
    if (!pt_cfg_parse_u64(port, &pnum) || pnum < 1 || pnum > 65535) {
        pt_cfg_err(w, n, "address `%s`: the port must be a number from 1 to 65535", s);
        return false;
    }
    if (!host[0]) {
        if (!listen || bracketed) {
            pt_cfg_err(w, n, "address `%s` needs a host, as in `127.0.0.1%s`", s, s);
            return false;
        }
        snprintf(host, sizeof(host), "0.0.0.0");
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (bracketed ? AI_NUMERICHOST : 0)};
    struct addrinfo *res = NULL;
    char portbuf[8];
    snprintf(portbuf, sizeof(portbuf), "%u", (unsigned)pnum);
    int rc = getaddrinfo(host, portbuf, &hints, &res);
    if (rc != 0 || !res) {
        if (bracketed)
            pt_cfg_err(w, n, "address `%s`: `%s` is not an IPv6 address", s, host);
        else
            pt_cfg_err(w, n, "cannot resolve `%s` in address `%s`: %s", host, s,
                       rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        if (res)
            freeaddrinfo(res);
        return false;
    }
    const struct addrinfo *pick = res;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    }
    memset(out, 0, sizeof(*out));
    memcpy(out, pick->ai_addr, pick->ai_addrlen);
    *outlen = pick->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

/* ---- filter settings from a field table ---- */

static const char *dup_str(struct pt_cfg_walk *w, const char *s)
{
    const char *p = pt_arena_strdup(w->arena, s);
    if (!p)
        pt_cfg_oom(w);
    return p;
}

static bool parse_strmap(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                         bool templates, struct pt_strmap *out)
{
    char buf[64];
    memset(out, 0, sizeof(*out));
    if (!pt_cfg_want_map(w, n, what) || n->kind != PT_YMAP || n->n == 0)
        return n->kind == PT_YMAP || n->is_null;
    out->keys = pt_arena_zalloc(w->arena, sizeof(*out->keys) * n->n);
    out->values = pt_arena_zalloc(w->arena, sizeof(*out->values) * n->n);
    if (!out->keys || !out->values) {
        pt_cfg_oom(w);
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
        if (v->kind != PT_YSCALAR || v->is_null) {
            pt_cfg_err(w, v, "expected a string for `%s` in %s, got %s", k->str, what,
                       pt_cfg_describe(v, buf, sizeof(buf)));
            ok = false;
            continue;
        }
        out->keys[out->n] = dup_str(w, k->str);
        out->values[out->n] = dup_str(w, templates && v->tstr ? v->tstr : v->str);
        out->n++;
    }
    return ok;
}

/* PT_F_JSON_MAP: a mapping of scalars as in parse_strmap (values read as
 * templates), each remembering whether it was plain; a plain null is the
 * text "null" (a JSON null). */
static bool parse_jsonmap(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                          struct pt_jsonmap *out)
{
    char buf[64];
    memset(out, 0, sizeof(*out));
    if (!pt_cfg_want_map(w, n, what) || n->kind != PT_YMAP || n->n == 0)
        return n->kind == PT_YMAP || n->is_null;
    out->keys = pt_arena_zalloc(w->arena, sizeof(*out->keys) * n->n);
    out->values = pt_arena_zalloc(w->arena, sizeof(*out->values) * n->n);
    bool *plain = pt_arena_zalloc(w->arena, sizeof(*plain) * n->n);
    if (!out->keys || !out->values || !plain) {
        pt_cfg_oom(w);
        return false;
    }
    out->plain = plain;
    bool ok = true;
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
        if (v->kind != PT_YSCALAR) {
            pt_cfg_err(
                w, v,
                "expected a scalar (string, number, true/false or null) for `%s` in %s, got %s",
                k->str, what, pt_cfg_describe(v, buf, sizeof(buf)));
            ok = false;
            continue;
        }
        out->keys[out->n] = dup_str(w, k->str);
        out->values[out->n] = dup_str(w, v->is_null ? "null" : v->tstr ? v->tstr : v->str);
        plain[out->n] = v->plain || v->is_null;
        out->n++;
    }
    return ok;
}

/* A percentage in [0, 100]: a number, or a number followed by `%`. */
static bool want_percent(struct pt_cfg_walk *w, const struct pt_ynode *v, const char *what,
                         double *out)
{
    char buf[64];
    if (v->kind != PT_YSCALAR || v->is_null) {
        pt_cfg_err(w, v, "expected a percentage (0-100) for %s, got %s", what,
                   pt_cfg_describe(v, buf, sizeof(buf)));
        return false;
    }
    char *end = NULL;
    errno = 0;
    double d = strtod(v->str, &end);
    if (end && *end == '%')
        end++;
    if (errno || end == v->str || !end || *end || !(d >= 0 && d <= 100)) {
        pt_cfg_err(w, v, "expected a percentage (0-100) for %s, got `%s`", what, v->str);
        return false;
    }
    *out = d;
    return true;
}

bool pt_cfg_want_percent(struct pt_cfg_walk *w, const struct pt_ynode *v, const char *what,
                         double *out)
{
    return want_percent(w, v, what, out);
}

bool pt_cfg_want_ratio(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                       bool zero_ok, double *out)
{
    const char *s = pt_cfg_want_str(w, n, what);
    if (!s)
        return false;
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    bool pct = end && *end == '%';
    if (pct)
        end++;
    bool plain = s[0] && strspn(s, "0123456789.%") == strlen(s);
    if (!plain || errno || end == s || !end || *end || !isfinite(d)) {
        pt_cfg_err(w, n, "expected a ratio (0.5) or a percentage (50%%) for %s, got `%s`", what, s);
        return false;
    }
    if (pct)
        d /= 100.0;
    if (d > 1 || d < 0 || (!zero_ok && d == 0)) {
        pt_cfg_err(w, n, "%s must be %s, got `%s`", what,
                   zero_ok ? "from 0 to 1 (100%)" : "above 0 and at most 1 (100%)", s);
        return false;
    }
    *out = d;
    return true;
}

/* A mapping whose values are string lists (PT_F_STRLIST_MAP) or
 * mappings of scalars (PT_F_STRMAP_MAP), each read as that type. */
static bool parse_map_of(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                         bool lists, void *dst)
{
    struct pt_strlistmap *lm = dst;
    struct pt_strmapmap *mm = dst;
    memset(dst, 0, lists ? sizeof(*lm) : sizeof(*mm));
    if (!pt_cfg_want_map(w, n, what) || n->kind != PT_YMAP || n->n == 0)
        return n->kind == PT_YMAP || n->is_null;
    const char **keys = pt_arena_zalloc(w->arena, sizeof(*keys) * n->n);
    void *vals = pt_arena_zalloc(
        w->arena, (lists ? sizeof(struct pt_strlist) : sizeof(struct pt_strmap)) * n->n);
    if (!keys || !vals) {
        pt_cfg_oom(w);
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *k = n->pairs[i].key, *v = n->pairs[i].value;
        char in[192];
        snprintf(in, sizeof(in), "`%.60s` of %.100s", k->str, what);
        keys[i] = dup_str(w, k->str);
        if (lists)
            ok &= pt_cfg_want_strlist(w, v, in, (struct pt_strlist *)vals + i);
        else
            ok &= parse_strmap(w, v, in, false, (struct pt_strmap *)vals + i);
    }
    if (lists)
        *lm = (struct pt_strlistmap){keys, vals, n->n};
    else
        *mm = (struct pt_strmapmap){keys, vals, n->n};
    return ok;
}

/* A sequence of mappings, each read with the field's nested table. */
static bool parse_objlist(struct pt_cfg_walk *w, const struct pt_field *f, const struct pt_ynode *v,
                          const char *what, struct pt_objlist *out)
{
    char buf[64];
    memset(out, 0, sizeof(*out));
    if (v->kind != PT_YSEQ) {
        pt_cfg_err(w, v, "expected a list of mappings for %s, got %s", what,
                   pt_cfg_describe(v, buf, sizeof(buf)));
        return false;
    }
    size_t size = pt_field_item_size(f);
    out->v = pt_arena_zalloc(w->arena, size * (v->n ? v->n : 1));
    if (!out->v) {
        pt_cfg_oom(w);
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; i < v->n; i++) {
        const struct pt_ynode *item = v->items[i];
        if (!pt_cfg_want_map(w, item, what)) {
            ok = false;
            continue;
        }
        ok &= pt_cfg_read_fields(w, f->name, f->sub, NULL, item, (char *)out->v + size * i);
    }
    out->n = v->n;
    return ok;
}

/* Fills one field of a filter's config struct from its YAML value. */
static bool parse_field(struct pt_cfg_walk *w, const struct pt_field *f, const struct pt_ynode *v,
                        void *conf)
{
    char what[96];
    snprintf(what, sizeof(what), "`%s`", f->name);
    void *dst = (char *)conf + f->offset;
    switch (f->type) {
    case PT_F_STRING:
    case PT_F_UPSTREAM:
    case PT_F_URL: {
        const char *s = pt_cfg_want_str(w, v, what);
        if (!s)
            return false;
        *(const char **)dst = dup_str(w, s);
        return true;
    }
    case PT_F_STRING_LIST:
        return pt_cfg_want_strlist(w, v, what, dst);
    case PT_F_STRING_MAP:
    case PT_F_TEMPLATE_MAP:
        return parse_strmap(w, v, what, f->type == PT_F_TEMPLATE_MAP, dst);
    case PT_F_JSON_MAP:
        return parse_jsonmap(w, v, what, dst);
    case PT_F_BOOL:
        return pt_cfg_want_bool(w, v, what, dst);
    case PT_F_INT:
        return pt_cfg_want_int(w, v, what, INT64_MIN, INT64_MAX, dst);
    case PT_F_DURATION:
        return pt_cfg_want_duration(w, v, what, false, dst);
    case PT_F_SIZE:
        return pt_cfg_want_size(w, v, what, false, dst);
    case PT_F_DOUBLE:
        return pt_cfg_want_double(w, v, what, dst);
    case PT_F_PERCENT:
        return want_percent(w, v, what, dst);
    case PT_F_OBJECT:
        if (!pt_cfg_want_map(w, v, what))
            return false;
        return pt_cfg_read_fields(w, f->name, f->sub, NULL, v, dst);
    case PT_F_OBJECT_LIST:
        return parse_objlist(w, f, v, what, dst);
    case PT_F_STRLIST_MAP:
    case PT_F_STRMAP_MAP:
        return parse_map_of(w, v, what, f->type == PT_F_STRLIST_MAP, dst);
    }
    pt_cfg_err(w, v, "internal error: field `%s` has an unknown type", f->name);
    return false;
}

bool pt_cfg_read_fields(struct pt_cfg_walk *w, const char *filter, const struct pt_field *fields,
                        const char *const *planned, const struct pt_ynode *n, void *conf)
{
    size_t nfields = 0;
    while (fields && fields[nfields].name)
        nfields++;
    bool ok = true;
    for (uint32_t i = 0; n->kind == PT_YMAP && i < n->n; i++) {
        const struct pt_ynode *k = n->pairs[i].key;
        const struct pt_field *f = NULL;
        for (size_t j = 0; j < nfields && !f; j++)
            if (strcmp(fields[j].name, k->str) == 0)
                f = &fields[j];
        if (f) {
            ok &= parse_field(w, f, n->pairs[i].value, conf);
            continue;
        }
        ok = false;
        if (pt_cfg_in_list(k->str, planned)) {
            pt_cfg_err(w, k, "`%s` is not supported by this build yet", k->str);
            continue;
        }
        const char **names = malloc((nfields + 1) * sizeof(*names));
        if (!names) {
            pt_cfg_oom(w);
            return false;
        }
        for (size_t j = 0; j < nfields; j++)
            names[j] = fields[j].name;
        char hint[128];
        pt_cfg_err(w, k, "unknown field `%s` in filter `%s`%s", k->str, filter,
                   pt_cfg_did_you_mean(k->str, names, nfields, hint, sizeof(hint)));
        free(names);
    }
    return ok && !w->oom;
}
