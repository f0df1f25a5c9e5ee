/*
 * config_yaml.c — the config loader's YAML layer (see config_yaml.h):
 *
 *  - libyaml events → a node tree with positions;
 *  - the error collector every message goes through.
 *
 * The typed readers that turn nodes into values (strings, numbers,
 * durations, sizes, addresses, a filter's field table) and the "did you
 * mean" suggestions are in config_values.c; config.c knows the schema
 * (which keys exist, what they mean).
 *
 * Why a tree and not libyaml's document API: we need our own rules while
 * building it — keys must be strings, duplicate keys are errors, `${ENV}`
 * expands in values only, aliases must not blow up (billion laughs), and
 * every node keeps a 1-based line:col for messages. The walker in config.c
 * then reads the tree in any order it likes (upstreams before the routes
 * that name them) without a second pass over the text.
 *
 * Ownership: nodes and strings live in the document's arena
 * (pt_ydoc_free); collected messages are malloc'd until flushed.
 */
#include "control/config_yaml.h"

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
        n->plain = plain;
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

/* Names that a filter's template resolves per request (filters/template.c,
 * aggregate paths): `${request_id}`, `${remote_addr}`, `${method}`,
 * `${path}`, `${consumer}` and any dotted name such as `${path.id}` or
 * `${jwt.sub}`. They are left in place for the filter; every other
 * `${NAME}` is an environment variable. */
static const char *const request_variables[] = {"request_id", "remote_addr", "method", "path",
                                                "consumer"};

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
