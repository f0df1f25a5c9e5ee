/*
 * config_yaml.c — the config loader's reading layer (see config_yaml.h):
 *
 *  - libyaml events → a node tree with positions;
 *  - the error collector every message goes through;
 *  - typed readers (mapping, list, string, number, duration, size,
 *    address, a filter's field table) that report precise messages;
 *  - "did you mean" suggestions.
 *
 * config.c knows the schema (which keys exist, what they mean); this file
 * knows how to read any value and say exactly what is wrong with it.
 *
 * Why a tree and not libyaml's document API: we need our own rules while
 * building it — keys must be strings, duplicate keys are errors, `${ENV}`
 * expands in values only, aliases must not blow up (billion laughs), and
 * every node keeps a 1-based line:col for messages. The walker in config.c
 * then reads the tree in any order it likes (upstreams before the routes
 * that name them) without a second pass over the text.
 */
#include "control/config_yaml.h"

#include "core/units.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <yaml.h>

/* Deeper nesting than any portico config needs; the limit keeps a
 * pathological file from costing stack or time. */
#define MAX_DEPTH 64
/* Total nodes after expanding every alias: a file far larger than any
 * real config still fits; "billion laughs" does not. */
#define MAX_EXPANDED_NODES 1000000u

struct frame {
    struct pt_ynode *node;
    struct pt_ynode *pending_key; /* mapping: key waiting for its value */
    bool skip_value;              /* mapping: the key was bad, drop its value */
    uint32_t cap;                 /* items/pairs allocated */
    const char *anchor;           /* registered when the node is complete */
};

struct anchor {
    const char *name;
    struct pt_ynode *node;
};

struct builder {
    struct pt_ydoc *doc;
    struct pt_cfg_errors *errs;
    const char *file;
    const char *text;
    size_t len;
    struct frame stack[MAX_DEPTH];
    int depth;
    struct anchor *anchors;
    uint32_t nanchors, capanchors;
    uint64_t expanded; /* nodes, counting each alias use in full */
    bool failed;       /* stop: the tree is unusable */
};

static int handle_event(struct builder *b, yaml_event_t *ev);
static void report_parser_error(struct builder *b, const yaml_parser_t *p);
static struct pt_ynode *new_node(struct builder *b, enum pt_ynode_kind kind, yaml_mark_t mark);
static int attach(struct builder *b, struct pt_ynode *node, uint64_t size);
static int push(struct builder *b, struct pt_ynode *node, const yaml_char_t *anchor);
static int pop(struct builder *b);
static void check_duplicate_keys(struct builder *b, struct pt_ynode *map);
static const char *expand_env(struct builder *b, struct pt_ynode *at, const char *s, size_t len,
                              size_t *outlen);
static void oom(struct builder *b);

/* ---- public: the tree ---- */

int pt_ydoc_parse(struct pt_ydoc *doc, const char *file, const char *text, size_t len,
                  struct pt_cfg_errors *errs)
{
    int rc = -1;
    yaml_parser_t parser;
    struct builder b = {.doc = doc, .errs = errs, .file = file, .text = text, .len = len};

    pt_arena_init(&doc->arena, 64 * 1024);
    doc->root = NULL;
    if (!yaml_parser_initialize(&parser)) {
        pt_cfg_error_add(errs, 0, 0, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

    int docs = 0;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            report_parser_error(&b, &parser);
            goto out;
        }
        yaml_event_type_t type = ev.type;
        if (type == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            pt_cfg_error_add(errs, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                             "a config file holds one YAML document; this starts a second one");
            yaml_event_delete(&ev);
            goto out;
        }
        int r = handle_event(&b, &ev);
        yaml_event_delete(&ev);
        if (r < 0 || b.failed)
            goto out;
        if (type == YAML_STREAM_END_EVENT)
            break;
    }
    rc = 0;
out:
    yaml_parser_delete(&parser);
    return rc;
}

void pt_ydoc_free(struct pt_ydoc *doc)
{
    pt_arena_destroy(&doc->arena);
    doc->root = NULL;
}

const struct pt_ynode *pt_ynode_get(const struct pt_ynode *map, const char *key)
{
    if (!map || map->kind != PT_YMAP)
        return NULL;
    for (uint32_t i = 0; i < map->n; i++)
        if (strcmp(map->pairs[i].key->str, key) == 0)
            return map->pairs[i].value;
    return NULL;
}

/* ---- public: the error collector ---- */

void pt_cfg_error_add(struct pt_cfg_errors *e, int line, int col, const char *fmt, ...)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        struct pt_cfg_error *v = realloc(e->v, cap * sizeof(*v));
        if (!v) {
            e->oom = true;
            return;
        }
        e->v = v;
        e->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int r = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (r < 0) {
        e->oom = true;
        return;
    }
    e->v[e->n] = (struct pt_cfg_error){line, col, (uint32_t)e->n, text};
    e->n++;
}

/* File order; messages about the whole file (line 0) last, because they
 * are conclusions ("no listeners") drawn after reading everything. */
static int error_cmp(const void *pa, const void *pb)
{
    const struct pt_cfg_error *a = pa, *b = pb;
    int la = a->line > 0 ? a->line : 0x7fffffff, lb = b->line > 0 ? b->line : 0x7fffffff;
    if (la != lb)
        return la < lb ? -1 : 1;
    if (a->col != b->col)
        return a->col < b->col ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

void pt_cfg_errors_flush(struct pt_cfg_errors *e, const char *file, struct pt_diag *d)
{
    if (e->n > 1)
        qsort(e->v, e->n, sizeof(e->v[0]), error_cmp);
    for (size_t i = 0; i < e->n; i++) {
        const struct pt_cfg_error *m = &e->v[i];
        bool repeat = false;
        /* Equal messages sort next to each other unless another message
         * shares their position, so look back over that position only. */
        for (size_t j = i; j-- > 0 && e->v[j].line == m->line && e->v[j].col == m->col;)
            if (strcmp(e->v[j].text, m->text) == 0)
                repeat = true;
        if (!repeat)
            pt_diag_add(d, file, m->line, m->col, "%s", m->text);
    }
    if (e->oom)
        pt_diag_add(d, file, 0, 0, "out of memory while collecting errors");
    pt_cfg_errors_free(e);
}

void pt_cfg_errors_free(struct pt_cfg_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i].text);
    free(e->v);
    e->v = NULL;
    e->n = e->cap = 0;
    e->oom = false;
}

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

/* Fills one field of a filter's config struct from its YAML value. */
static bool parse_field(struct pt_cfg_walk *w, const struct pt_field *f, const struct pt_ynode *v,
                        void *conf)
{
    char what[96];
    snprintf(what, sizeof(what), "`%s`", f->name);
    void *dst = (char *)conf + f->offset;
    switch (f->type) {
    case PT_F_STRING:
    case PT_F_UPSTREAM: {
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

/* ---- building ---- */

static int add_anchor(struct builder *b, const char *name, struct pt_ynode *node)
{
    /* A redefined anchor shadows the earlier one from here on (YAML 1.2),
     * so later lookups must find the newest: search from the end. */
    if (b->nanchors == b->capanchors) {
        uint32_t cap = b->capanchors ? b->capanchors * 2 : 16;
        struct anchor *v = pt_arena_alloc(&b->doc->arena, cap * sizeof(*v));
        if (!v)
            return -1;
        if (b->nanchors)
            memcpy(v, b->anchors, b->nanchors * sizeof(*v));
        b->anchors = v;
        b->capanchors = cap;
    }
    b->anchors[b->nanchors++] = (struct anchor){name, node};
    return 0;
}

static struct pt_ynode *find_anchor(struct builder *b, const char *name)
{
    for (uint32_t i = b->nanchors; i-- > 0;)
        if (strcmp(b->anchors[i].name, name) == 0)
            return b->anchors[i].node;
    return NULL;
}

/* Subtree size of a finished node, for the alias budget. Only aliased
 * nodes need it, so it is counted on use rather than stored in every
 * node; `limit` stops the count once the budget is blown anyway. */
static uint64_t subtree_size(const struct pt_ynode *n, uint64_t limit)
{
    uint64_t s = 1;
    if (n->kind == PT_YSEQ) {
        for (uint32_t i = 0; i < n->n && s <= limit; i++)
            s += subtree_size(n->items[i], limit - s + 1);
    } else if (n->kind == PT_YMAP) {
        for (uint32_t i = 0; i < n->n && s <= limit; i++)
            s += 1 + subtree_size(n->pairs[i].value, limit - s + 1);
    }
    return s;
}

static int handle_event(struct builder *b, yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        struct pt_ynode *n = new_node(b, PT_YSCALAR, ev->start_mark);
        if (!n)
            return -1;
        const char *raw = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        struct frame *top = b->depth ? &b->stack[b->depth - 1] : NULL;
        bool is_key = top && top->node->kind == PT_YMAP && !top->pending_key && !top->skip_value;
        n->is_null = plain && (len == 0 || strcmp(raw, "~") == 0 || strcmp(raw, "null") == 0 ||
                               strcmp(raw, "Null") == 0 || strcmp(raw, "NULL") == 0);
        /* Keys are schema names or user-chosen names (upstreams, filters,
         * headers): `${...}` there is far more likely a mistake than a
         * wish, so only values expand. */
        if (is_key || n->is_null) {
            n->str = n->tstr = pt_arena_strndup(&b->doc->arena, raw, len);
            n->len = len;
        } else {
            n->str = expand_env(b, n, raw, len, &n->len);
        }
        if (!n->str)
            return -1;
        if (ev->data.scalar.anchor &&
            add_anchor(b, pt_arena_strdup(&b->doc->arena, (const char *)ev->data.scalar.anchor),
                       n) < 0)
            return -1;
        return attach(b, n, 1);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
        struct pt_ynode *n = new_node(b, seq ? PT_YSEQ : PT_YMAP, ev->start_mark);
        if (!n)
            return -1;
        return push(b, n, seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor);
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return pop(b);
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        struct pt_ynode *n = find_anchor(b, name);
        if (!n) {
            /* Includes an alias to a node still being built (a cycle):
             * anchors are registered only once their node is complete. */
            pt_cfg_error_add(b->errs, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                             "alias `*%s` refers to no anchor `&%s` defined before it", name, name);
            b->failed = true;
            return -1;
        }
        uint64_t size = subtree_size(n, MAX_EXPANDED_NODES);
        return attach(b, n, size);
    }
    default:
        return 0; /* stream and document boundaries carry nothing for us */
    }
}

static struct pt_ynode *new_node(struct builder *b, enum pt_ynode_kind kind, yaml_mark_t mark)
{
    struct pt_ynode *n = pt_arena_zalloc(&b->doc->arena, sizeof(*n));
    if (!n) {
        oom(b);
        return NULL;
    }
    n->kind = kind;
    n->line = (int)mark.line + 1;
    n->col = (int)mark.column + 1;
    return n;
}

/* Appends a finished node to the open container (or makes it the root). */
static int attach(struct builder *b, struct pt_ynode *node, uint64_t size)
{
    b->expanded += size;
    if (b->expanded > MAX_EXPANDED_NODES) {
        pt_cfg_error_add(b->errs, node->line, node->col,
                         "aliases expand this file to more than %u nodes", MAX_EXPANDED_NODES);
        b->failed = true;
        return -1;
    }
    if (b->depth == 0) {
        b->doc->root = node;
        return 0;
    }
    struct frame *f = &b->stack[b->depth - 1];
    struct pt_ynode *p = f->node;
    struct pt_arena *a = &b->doc->arena;

    if (p->kind == PT_YMAP) {
        if (f->skip_value) {
            f->skip_value = false;
            return 0;
        }
        if (!f->pending_key) {
            if (node->kind != PT_YSCALAR) {
                pt_cfg_error_add(b->errs, node->line, node->col,
                                 "mapping keys must be plain strings, not %s",
                                 node->kind == PT_YSEQ ? "lists" : "mappings");
                f->skip_value = true;
                return 0;
            }
            if (strcmp(node->str, "<<") == 0) {
                pt_cfg_error_add(b->errs, node->line, node->col,
                                 "YAML merge keys (`<<`) are not supported; repeat the keys "
                                 "or use an alias for the whole value");
                f->skip_value = true;
                return 0;
            }
            f->pending_key = node;
            return 0;
        }
        if (p->n == f->cap) {
            uint32_t cap = f->cap ? f->cap * 2 : 8;
            struct pt_ypair *v = pt_arena_alloc(a, cap * sizeof(*v));
            if (!v)
                goto nomem;
            if (p->n)
                memcpy(v, p->pairs, p->n * sizeof(*v));
            p->pairs = v;
            f->cap = cap;
        }
        p->pairs[p->n++] = (struct pt_ypair){f->pending_key, node};
        f->pending_key = NULL;
        return 0;
    }

    if (p->n == f->cap) {
        uint32_t cap = f->cap ? f->cap * 2 : 8;
        struct pt_ynode **v = pt_arena_alloc(a, cap * sizeof(*v));
        if (!v)
            goto nomem;
        if (p->n)
            memcpy(v, p->items, p->n * sizeof(*v));
        p->items = v;
        f->cap = cap;
    }
    p->items[p->n++] = node;
    return 0;
nomem:
    oom(b);
    return -1;
}

static int push(struct builder *b, struct pt_ynode *node, const yaml_char_t *anchor)
{
    if (b->depth == MAX_DEPTH) {
        pt_cfg_error_add(b->errs, node->line, node->col, "nesting is deeper than %d levels",
                         MAX_DEPTH);
        b->failed = true;
        return -1;
    }
    struct frame *f = &b->stack[b->depth++];
    *f = (struct frame){.node = node};
    if (anchor) {
        f->anchor = pt_arena_strdup(&b->doc->arena, (const char *)anchor);
        if (!f->anchor) {
            oom(b);
            return -1;
        }
    }
    return 0;
}

static int pop(struct builder *b)
{
    struct frame f = b->stack[--b->depth];
    if (f.node->kind == PT_YMAP)
        check_duplicate_keys(b, f.node);
    if (f.anchor && add_anchor(b, f.anchor, f.node) < 0) {
        oom(b);
        return -1;
    }
    return attach(b, f.node, 1);
}

struct keyref {
    const char *key;
    uint32_t index;
};

static int keyref_cmp(const void *pa, const void *pb)
{
    const struct keyref *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    if (c)
        return c;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Reports every repeated key at the repeat, pointing at the first one, and
 * drops the repeats: the walker then sees each key once, so one mistake
 * gives one message instead of a cascade. */
static void check_duplicate_keys(struct builder *b, struct pt_ynode *map)
{
    if (map->n < 2)
        return;
    struct keyref *refs = malloc(map->n * sizeof(*refs));
    bool *drop = calloc(map->n, sizeof(*drop));
    if (!refs || !drop) {
        oom(b);
        goto out;
    }
    for (uint32_t i = 0; i < map->n; i++)
        refs[i] = (struct keyref){map->pairs[i].key->str, i};
    qsort(refs, map->n, sizeof(*refs), keyref_cmp);
    bool any = false;
    for (uint32_t i = 1; i < map->n; i++) {
        uint32_t first = i;
        while (first > 0 && strcmp(refs[first - 1].key, refs[i].key) == 0)
            first--;
        if (first == i)
            continue;
        const struct pt_ynode *k1 = map->pairs[refs[first].index].key;
        const struct pt_ynode *k2 = map->pairs[refs[i].index].key;
        pt_cfg_error_add(b->errs, k2->line, k2->col,
                         "duplicate key `%s` (first defined at %s:%d:%d)", k2->str, b->file,
                         k1->line, k1->col);
        drop[refs[i].index] = true;
        any = true;
    }
    if (any) {
        uint32_t k = 0;
        for (uint32_t i = 0; i < map->n; i++)
            if (!drop[i])
                map->pairs[k++] = map->pairs[i];
        map->n = k;
    }
out:
    free(refs);
    free(drop);
}

/* Names that a filter's header template resolves per request (template.h):
 * `${request_id}`, `${remote_addr}`, `${method}`, `${path}` and any
 * dotted name such as `${path.id}`. They are left in place for the filter;
 * every other `${NAME}` is an environment variable. */
static const char *const request_variables[] = {"request_id", "remote_addr", "method", "path"};

static bool is_request_variable(const char *name, size_t len)
{
    const char *const *fixed = request_variables;
    if (memchr(name, '.', len))
        return true;
    for (size_t i = 0; i < PT_ARRAY_LEN(request_variables); i++)
        if (strlen(fixed[i]) == len && memcmp(fixed[i], name, len) == 0)
            return true;
    return false;
}

static bool is_env_name(const char *s, size_t len)
{
    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

/*
 * Expands `${NAME}` from the environment. `$$` is copied through untouched
 * (so `$${NAME}` is never expanded: it is how a template field writes a
 * literal `${`, and how any other value avoids expansion). An unset
 * variable is an error; a set-but-empty one expands to "".
 */
static const char *expand_env(struct builder *b, struct pt_ynode *at, const char *s, size_t len,
                              size_t *outlen)
{
    if (!memchr(s, '$', len)) {
        *outlen = len;
        char *p = pt_arena_strndup(&b->doc->arena, s, len);
        if (!p)
            oom(b);
        at->tstr = p;
        return p;
    }
    /* out: the value; tout: the same text for template fields, where an
     * environment value is data, so its `$` are doubled (`$$` is a literal
     * `$` there) and a secret holding `${method}` or `$$` stays itself. */
    char *out = NULL, *tout = NULL;
    size_t n = 0, cap = len + 1, tn = 0, tcap = 0;
    bool differs = false;
    out = malloc(cap);
    if (!out)
        goto nomem;
    for (size_t i = 0; i < len;) {
        const char *add = s + i; /* bytes to append */
        size_t addlen = 1;
        size_t used = 1; /* source bytes consumed */
        bool from_env = false;
        if (s[i] == '$' && i + 1 < len && s[i + 1] == '$') {
            addlen = used = 2;
        } else if (s[i] == '$' && i + 1 < len && s[i + 1] == '{') {
            const char *end = memchr(s + i + 2, '}', len - i - 2);
            if (!end) {
                pt_cfg_error_add(b->errs, at->line, at->col,
                                 "unterminated `${` in `%s` (write `$${` to keep it literally)", s);
                at->bad = true;
                addlen = used = len - i;
            } else {
                const char *name = s + i + 2;
                size_t nlen = (size_t)(end - name);
                addlen = used = nlen + 3;
                if (is_request_variable(name, nlen)) {
                    /* kept as written */
                } else if (!is_env_name(name, nlen)) {
                    pt_cfg_error_add(b->errs, at->line, at->col,
                                     "`${%.*s}` is not a valid environment variable name",
                                     (int)nlen, name);
                    at->bad = true;
                } else {
                    char var[256];
                    snprintf(var, sizeof(var), "%.*s", (int)nlen, name);
                    const char *val = getenv(var);
                    if (!val) {
                        /* `${reqest_id}` is more likely a misspelt
                         * request variable than a missing environment. */
                        const char *near =
                            pt_cfg_suggest(var, request_variables, PT_ARRAY_LEN(request_variables));
                        if (near)
                            pt_cfg_error_add(b->errs, at->line, at->col,
                                             "environment variable `%s` is not set (did you "
                                             "mean the request variable `${%s}`?)",
                                             var, near);
                        else
                            pt_cfg_error_add(b->errs, at->line, at->col,
                                             "environment variable `%s` is not set", var);
                        at->bad = true;
                    }
                    add = val ? val : "";
                    addlen = strlen(add);
                    from_env = true;
                    differs |= memchr(add, '$', addlen) != NULL;
                }
            }
        }
        if (n + addlen + 1 > cap) {
            cap = (n + addlen + 1) * 2;
            char *grown = realloc(out, cap);
            if (!grown)
                goto nomem;
            out = grown;
        }
        memcpy(out + n, add, addlen);
        n += addlen;
        i += used;
        /* tout doubles every `$` of an environment value. */
        if (tn + 2 * addlen + 1 > tcap) {
            tcap = (tn + 2 * addlen + 1) * 2;
            char *grown = realloc(tout, tcap);
            if (!grown)
                goto nomem;
            tout = grown;
        }
        for (size_t k = 0; k < addlen; k++) {
            tout[tn++] = add[k];
            if (from_env && add[k] == '$')
                tout[tn++] = '$';
        }
    }
    *outlen = n;
    char *p = pt_arena_strndup(&b->doc->arena, out, n);
    at->tstr = differs && p ? pt_arena_strndup(&b->doc->arena, tout, tn) : p;
    free(out);
    free(tout);
    if (!p || !at->tstr)
        oom(b);
    return p;
nomem:
    free(out);
    free(tout);
    oom(b);
    return NULL;
}

static void oom(struct builder *b)
{
    if (!b->failed)
        pt_cfg_error_add(b->errs, 0, 0, "out of memory while reading the file");
    b->failed = true;
}

/* Line and column (1-based) of a byte offset, for reader errors, which
 * libyaml reports as an offset only. Columns count characters, like
 * libyaml's marks, so multi-byte UTF-8 counts once. */
static void offset_to_pos(const char *text, size_t len, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static void report_parser_error(struct builder *b, const yaml_parser_t *p)
{
    int line, col;
    if (p->error == YAML_MEMORY_ERROR) {
        oom(b);
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        offset_to_pos(b->text, b->len, p->problem_offset, &line, &col);
        pt_cfg_error_add(b->errs, line, col, "invalid YAML: %s",
                         p->problem ? p->problem : "unreadable text");
        return;
    }
    line = (int)p->problem_mark.line + 1;
    col = (int)p->problem_mark.column + 1;
    /* The commonest cause of "cannot start any token" is a tab used for
     * indentation; say so instead of leaving the user to guess. */
    const char *hint = "";
    if (p->problem_mark.index < b->len && b->text[p->problem_mark.index] == '\t' &&
        !(p->problem && strstr(p->problem, "tab")))
        hint = "; tabs are not allowed for indentation, use spaces";
    if (p->context)
        pt_cfg_error_add(b->errs, line, col, "invalid YAML: %s (%s at line %d, column %d)%s",
                         p->problem ? p->problem : "syntax error", p->context,
                         (int)p->context_mark.line + 1, (int)p->context_mark.column + 1, hint);
    else
        pt_cfg_error_add(b->errs, line, col, "invalid YAML: %s%s",
                         p->problem ? p->problem : "syntax error", hint);
}
