/*
 * config_yaml.h — private to the config loader (config*.c): a small YAML
 * node tree with source positions, and the error collector both halves
 * report into.
 *
 * config_yaml.c turns libyaml's event stream into this tree (anchors and
 * aliases resolved, `${ENV}` expanded in values, duplicate keys reported)
 * and collects the errors; config_values.c has the typed readers below;
 * config.c walks the tree with the schema, using those readers.
 * Nothing outside src/control/ includes this header.
 *
 * Ownership: every node and string lives in the document's arena and dies
 * with pt_ydoc_free. The collector's messages are malloc'd until
 * pt_cfg_errors_flush hands them to a struct pt_diag.
 */
#ifndef PT_CONTROL_CONFIG_YAML_H
#define PT_CONTROL_CONFIG_YAML_H

#include "control/config.h"
#include "core/arena.h"
#include "filters/filter.h"

#include <sys/socket.h>

#include <stdarg.h>

enum pt_ynode_kind { PT_YSCALAR, PT_YSEQ, PT_YMAP };

struct pt_ypair;

struct pt_ynode {
    enum pt_ynode_kind kind;
    int line, col; /* 1-based position of the node's first character */
    /* scalars */
    const char *str; /* NUL-terminated; `${ENV}` already expanded in values */
    /* str for template fields: `$` inside expanded environment values is
     * doubled, so the template reads them as text (else == str) */
    const char *tstr;
    size_t len;
    bool is_null; /* plain "", "~" or "null": `key:` with nothing after it */
    bool plain;   /* written without quotes (a JSON value's type depends on it) */
    bool bad;     /* `${...}` expansion failed and was reported: say nothing more */
    /* sequences */
    struct pt_ynode **items;
    /* mappings (keys are always scalars; duplicates were dropped) */
    struct pt_ypair *pairs;
    uint32_t n; /* items or pairs */
};

struct pt_ypair {
    struct pt_ynode *key;
    struct pt_ynode *value;
};

struct pt_ydoc {
    struct pt_arena arena;
    struct pt_ynode *root; /* NULL for an empty file */
};

/* One message, kept with its position so the whole list can be printed
 * in file order however the walker happened to find them. */
struct pt_cfg_error {
    int line, col; /* 0 when the message is about the whole file */
    uint32_t seq;  /* arrival order, the tie-breaker */
    char *text;    /* malloc'd */
};

struct pt_cfg_errors {
    struct pt_cfg_error *v;
    size_t n, cap;
    bool oom; /* a message could not be stored: report that instead */
};

void pt_cfg_error_add(struct pt_cfg_errors *e, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sorts by position, drops exact repeats (an aliased block reports its
 * errors once per use) and moves the messages into `d`, prefixed with
 * `file`. Leaves `e` empty. */
void pt_cfg_errors_flush(struct pt_cfg_errors *e, const char *file, struct pt_diag *d);
void pt_cfg_errors_free(struct pt_cfg_errors *e);

/*
 * Parses `text` (len bytes, the whole file; `file` is its name for
 * cross-references in messages) into doc->root. YAML syntax
 * errors, duplicate keys, unset environment variables and the like are
 * added to `errs`. Returns 0 when a tree was built (it may still hold
 * reported problems such as a dropped duplicate key), -1 when the text is
 * not usable YAML at all.
 */
int pt_ydoc_parse(struct pt_ydoc *doc, const char *file, const char *text, size_t len,
                  struct pt_cfg_errors *errs);
void pt_ydoc_free(struct pt_ydoc *doc);

/* The value of `key` in mapping `map`, or NULL. */
const struct pt_ynode *pt_ynode_get(const struct pt_ynode *map, const char *key);

/* ---- typed reading: the walker's vocabulary ----
 *
 * Each pt_cfg_want_* reads one node as a type, reports a precise message
 * at the node when it is not (and returns false/NULL), and copies what it
 * returns into w->arena. A node whose `${...}` expansion failed is refused
 * silently: it has its message already. "Nothing" (`key:` with no value)
 * reads as an empty mapping or list, and as an error for scalars. `what`
 * names the value in messages, e.g. "`timeout`" or "each route".
 */
struct pt_cfg_walk {
    struct pt_cfg_errors errs;
    struct pt_arena *arena; /* where strings and lists read from nodes are copied */
    bool oom;
};

void pt_cfg_err(struct pt_cfg_walk *w, const struct pt_ynode *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pt_cfg_verr(struct pt_cfg_walk *w, const struct pt_ynode *at, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
void pt_cfg_oom(struct pt_cfg_walk *w);

/*
 * Sorts a mapping's keys into `vals`/`keys` slots by their index in
 * `known` (NULL-terminated). A key in `planned` is refused as "not
 * supported by this build yet"; any other key is unknown, with a "did you
 * mean" from both lists. `where` completes "unknown key `x` <where>".
 * Returns how many keys were refused.
 */
uint32_t pt_cfg_bind_keys(struct pt_cfg_walk *w, const struct pt_ynode *map,
                          const char *const *known, const char *const *planned, const char *where,
                          const struct pt_ynode **vals, const struct pt_ynode **keys);

bool pt_cfg_want_map(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what);
bool pt_cfg_want_seq(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what);
/* A non-empty string without NUL bytes (not copied: it lives in the tree). */
const char *pt_cfg_want_str(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what);
/* A string or a list of strings. */
bool pt_cfg_want_strlist(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                         struct pt_strlist *out);
bool pt_cfg_want_uint(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                      uint64_t min, uint64_t max, uint64_t *out);
bool pt_cfg_want_int(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what, int64_t min,
                     int64_t max, int64_t *out);
bool pt_cfg_want_bool(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what, bool *out);
bool pt_cfg_want_double(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                        double *out);
/* A ratio: a number in [0, 1] or a percentage ("10%"), as a fraction;
 * 0 refused unless zero_ok (shared/CONFIG.md "ratios"). */
bool pt_cfg_want_ratio(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                       bool zero_ok, double *out);
/* A percentage in [0, 100]: `20%` or `20` (*out = 20). */
bool pt_cfg_want_percent(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                         double *out);
/* `positive`: 0 is refused ("must be longer than 0"). */
/* The longest duration any key takes: 365 days. */
#define PT_CFG_DURATION_MAX_MS (365ull * 24 * 3600 * 1000)

bool pt_cfg_want_duration(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                          bool positive, uint64_t *out_ms);
bool pt_cfg_want_size(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                      bool positive, uint64_t *out);

/*
 * An address node `s` ("host:port", "[v6]:port", or ":port" when
 * `listen`), resolved now (names too; IPv4 preferred) into *out.
 */
/* Same port and one of the two a wildcard address: a plain bind of one
 * fails while the other is held. */
bool pt_addr_overlaps(const struct sockaddr_storage *x, const struct sockaddr_storage *y);

bool pt_cfg_want_address(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *s,
                         bool listen, struct sockaddr_storage *out, socklen_t *outlen);

/*
 * Fills a filter's config struct `conf` from mapping `n` with the generic
 * field table `fields` (filter.h): every PT_F_* type, unknown fields with a
 * "did you mean", fields in `planned` (NULL-terminated, may be NULL)
 * refused as not supported yet. Returns true when every field was valid.
 */
bool pt_cfg_read_fields(struct pt_cfg_walk *w, const char *filter, const struct pt_field *fields,
                        const char *const *planned, const struct pt_ynode *n, void *conf);

/* A CIDR or a list of them (core/cidr.h: `10.0.0.0/8`, `2001:db8::/32`, a
 * plain address), each checked at its own node; the array lands in
 * w->arena. Nothing (`key:` / `[]`) is the empty set. */
bool pt_cfg_want_cidrs(struct pt_cfg_walk *w, const struct pt_ynode *n, const char *what,
                       struct pt_cidr_set *out);

/* "a list", "a mapping", "nothing" or the scalar quoted (cut at 40). */
const char *pt_cfg_describe(const struct pt_ynode *n, char *buf, size_t len);
/* Decimal digits only, no sign, no overflow. */
bool pt_cfg_parse_u64(const char *s, uint64_t *out);

/* ---- did you mean ---- */

size_t pt_cfg_edit_distance(const char *a, const char *b, size_t max);
/* The closest of `cands` to `word` (see config_values.c), or NULL. */
const char *pt_cfg_suggest(const char *word, const char *const *cands, size_t n);
/* " (did you mean `x`?)" in buf, or "" when nothing is close. */
const char *pt_cfg_did_you_mean(const char *word, const char *const *cands, size_t n, char *buf,
                                size_t len);
/* NULL-terminated word lists. */
bool pt_cfg_in_list(const char *word, const char *const *list);
size_t pt_cfg_list_len(const char *const *list);

#endif
