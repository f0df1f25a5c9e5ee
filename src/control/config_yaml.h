/*
 * config_yaml.h — private to the config loader (config.c): a small YAML
 * node tree with source positions, and the error collector both halves
 * report into.
 *
 * config_yaml.c turns libyaml's event stream into this tree (anchors and
 * aliases resolved, `${ENV}` expanded in values, duplicate keys reported);
 * config.c walks the tree with the schema. Nothing outside src/control/
 * includes this header.
 *
 * Ownership: every node and string lives in the document's arena and dies
 * with pt_ydoc_free. The collector's messages are malloc'd until
 * pt_cfg_errors_flush hands them to a struct pt_diag.
 */
#ifndef PT_CONTROL_CONFIG_YAML_H
#define PT_CONTROL_CONFIG_YAML_H

#include "control/config.h"
#include "core/arena.h"

enum pt_ynode_kind { PT_YSCALAR, PT_YSEQ, PT_YMAP };

struct pt_ypair;

struct pt_ynode {
    enum pt_ynode_kind kind;
    int line, col;  /* 1-based position of the node's first character */
    /* scalars */
    const char *str; /* NUL-terminated; `${ENV}` already expanded in values */
    size_t len;
    bool is_null;    /* plain "", "~" or "null": `key:` with nothing after it */
    bool bad;        /* `${...}` expansion failed and was reported: say nothing more */
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

#endif
