/*
 * json_edit.c — see json_edit.h. Paths are split once at config load;
 * per request the work is jansson's parse, a walk down each edit's path,
 * and one serialisation into the request arena.
 */
#include "filters/json_edit.h"
#include "filters/template.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum op_kind { OP_REMOVE, OP_RENAME, OP_ADD };

enum value_kind { V_TEMPLATE, V_INT, V_REAL, V_TRUE, V_FALSE, V_NULL };

struct json_path {
    const char **seg; /* NUL-terminated member names */
    uint32_t n;
};

struct pt_json_op {
    enum op_kind kind;
    struct json_path path;
    struct json_path to; /* rename: the new member's path from the root */
    enum value_kind vkind;
    int64_t i;
    double d;
    const struct pt_template *tpl;
};

/* ---- compile ---- */

/* Splits "a.b.c" into segments in `a`. -1 for an empty segment (a
 * leading, trailing or doubled dot, or an empty name). */
static int split_path(const char *src, struct pt_arena *a, struct json_path *out)
{
    size_t len = strlen(src);
    uint32_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += src[i] == '.';
    const char **seg = pt_arena_alloc(a, sizeof(*seg) * n);
    char *buf = pt_arena_strndup(a, src, len);
    if (!seg || !buf)
        return -ENOMEM;
    uint32_t k = 0;
    char *p = buf;
    for (;;) {
        char *dot = strchr(p, '.');
        if (dot)
            *dot = '\0';
        if (*p == '\0')
            return -EINVAL;
        seg[k++] = p;
        if (!dot)
            break;
        p = dot + 1;
    }
    out->seg = seg;
    out->n = k;
    return 0;
}

/* Whether a plain YAML scalar is a JSON number by JSON's own grammar
 * (RFC 8259 §6): YAML's other spellings (0x1F, .5, +1) stay strings. */
static bool json_number_text(const char *s, bool *integral)
{
    const char *p = s;
    *integral = true;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return false;
    if (*p == '.') {
        *integral = false;
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        *integral = false;
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

/* An add value: typed when YAML wrote it plain and it reads as a JSON
 * literal, else a template. 0, or -1 with a message in err. */
static int compile_value(struct pt_json_op *op, const char *v, bool plain, struct pt_arena *a,
                         char *err, size_t errlen)
{
    static const struct {
        const char *text;
        enum value_kind kind;
    } words[] = {
        {"true", V_TRUE},   {"True", V_TRUE},   {"TRUE", V_TRUE}, {"false", V_FALSE},
        {"False", V_FALSE}, {"FALSE", V_FALSE}, {"null", V_NULL}, {"Null", V_NULL},
        {"NULL", V_NULL},   {"~", V_NULL},      {"", V_NULL},
    };
    if (plain) {
        for (size_t i = 0; i < PT_ARRAY_LEN(words); i++)
            if (strcmp(v, words[i].text) == 0) {
                op->vkind = words[i].kind;
                return 0;
            }
        bool integral;
        if (json_number_text(v, &integral)) {
            errno = 0;
            if (integral) {
                long long x = strtoll(v, NULL, 10);
                if (errno == 0) {
                    op->vkind = V_INT;
                    op->i = x;
                    return 0;
                }
            }
            errno = 0;
            double d = strtod(v, NULL);
            if (errno == 0 && isfinite(d)) {
                op->vkind = V_REAL;
                op->d = d;
                return 0;
            }
            snprintf(err, errlen, "number %s is out of range for JSON (quote it for a string)", v);
            return -1;
        }
    }
    struct pt_template *t;
    if (pt_template_compile(&t, v, a, err, errlen) != 0)
        return -1;
    op->vkind = V_TEMPLATE;
    op->tpl = t;
    return 0;
}

static int path_error(struct pt_filter_errs *errs, const char *field, const char *entry,
                      bool in_value, int rc)
{
    if (rc == -ENOMEM)
        return pt_filter_errorf(errs, field, entry, in_value, "out of memory");
    return pt_filter_errorf(errs, field, entry, in_value,
                            "`%s` is not a field path: members joined by single dots "
                            "(user.address.zip), none of them empty",
                            entry);
}

/* Whether path `p` lies strictly below `of`: a member moved there would
 * hold itself (a reference cycle jansson never frees). */
static bool inside(const struct json_path *p, const struct json_path *of)
{
    if (p->n <= of->n)
        return false;
    for (uint32_t i = 0; i < of->n; i++)
        if (strcmp(p->seg[i], of->seg[i]) != 0)
            return false;
    return true;
}

int pt_json_edits_compile(struct pt_json_edits *out, const struct pt_strlist *remove,
                          const struct pt_strmap *rename, const struct pt_jsonmap *add,
                          struct pt_arena *a, struct pt_filter_errs *errs)
{
    memset(out, 0, sizeof(*out));
    uint32_t n = remove->n + rename->n + add->n;
    if (n == 0)
        return 0;
    struct pt_json_op *ops = pt_arena_zalloc(a, sizeof(*ops) * n);
    if (!ops)
        return pt_filter_errorf(errs, NULL, NULL, false, "out of memory");
    int bad = 0;
    uint32_t k = 0;
    for (uint32_t i = 0; i < remove->n; i++, k++) {
        ops[k].kind = OP_REMOVE;
        int rc = split_path(remove->v[i], a, &ops[k].path);
        if (rc)
            bad |= path_error(errs, "remove_body_fields", remove->v[i], false, rc);
    }
    for (uint32_t i = 0; i < rename->n; i++, k++) {
        struct pt_json_op *op = &ops[k];
        op->kind = OP_RENAME;
        int rc = split_path(rename->keys[i], a, &op->path);
        if (rc) {
            bad |= path_error(errs, "rename_body_fields", rename->keys[i], false, rc);
            continue;
        }
        rc = split_path(rename->values[i], a, &op->to);
        if (rc) {
            bad |= path_error(errs, "rename_body_fields", rename->keys[i], true, rc);
            continue;
        }
        if (op->to.n == 1 && op->path.n > 1) {
            /* A bare new name stays in the old member's object. */
            struct json_path to = op->path;
            const char **seg = pt_arena_alloc(a, sizeof(*seg) * to.n);
            if (!seg)
                return pt_filter_errorf(errs, NULL, NULL, false, "out of memory");
            memcpy(seg, to.seg, sizeof(*seg) * to.n);
            seg[to.n - 1] = op->to.seg[0];
            op->to = (struct json_path){seg, to.n};
        }
        if (inside(&op->to, &op->path))
            bad |= pt_filter_errorf(errs, "rename_body_fields", rename->keys[i], true,
                                    "`%s` cannot move inside itself (`%s`)", rename->keys[i],
                                    rename->values[i]);
    }
    for (uint32_t i = 0; i < add->n; i++, k++) {
        struct pt_json_op *op = &ops[k];
        op->kind = OP_ADD;
        int rc = split_path(add->keys[i], a, &op->path);
        if (rc) {
            bad |= path_error(errs, "add_body_fields", add->keys[i], false, rc);
            continue;
        }
        char err[256];
        if (compile_value(op, add->values[i], add->plain && add->plain[i], a, err, sizeof(err)))
            bad |= pt_filter_errorf(errs, "add_body_fields", add->keys[i], true, "%s", err);
    }
    if (bad)
        return -1;
    out->ops = ops;
    out->nops = n;
    return 0;
}

/* ---- apply ---- */

/* The object holding the path's last member, or NULL when an
 * intermediate is missing or not an object. */
static json_t *parent_of(json_t *root, const struct json_path *p)
{
    json_t *o = root;
    for (uint32_t i = 0; i + 1 < p->n; i++) {
        o = json_object_get(o, p->seg[i]);
        if (!json_is_object(o))
            return NULL;
    }
    return o;
}

/* The object that is to hold the path's last member, creating the
 * missing intermediates as empty objects. *skip set (and NULL) when an
 * intermediate exists but is not an object: nothing is created then,
 * since everything below the first missing member is new. NULL without
 * *skip: out of memory. */
static json_t *make_parent(json_t *root, const struct json_path *p, bool *skip)
{
    json_t *o = root;
    *skip = false;
    for (uint32_t i = 0; i + 1 < p->n; i++) {
        json_t *next = json_object_get(o, p->seg[i]);
        if (!next) {
            next = json_object();
            if (json_object_set_new(o, p->seg[i], next) != 0)
                return NULL;
        } else if (!json_is_object(next)) {
            *skip = true;
            return NULL;
        }
        o = next;
    }
    return o;
}

static json_t *make_value(const struct pt_json_op *op, const struct pt_filter_ctx *ctx)
{
    switch (op->vkind) {
    case V_INT:
        return json_integer(op->i);
    case V_REAL:
        return json_real(op->d);
    case V_TRUE:
        return json_true();
    case V_FALSE:
        return json_false();
    case V_NULL:
        return json_null();
    case V_TEMPLATE:
        break;
    }
    pt_slice s = pt_template_render(op->tpl, ctx);
    if (!s.p)
        return NULL;
    /* NULL as well for bytes that are not UTF-8: the field is skipped. */
    return json_stringn(s.p, s.len);
}

/* 1 when the op changed the document, 0 when it was skipped, -1 out of memory. */
static int apply_one(const struct pt_json_op *op, json_t *root, const struct pt_filter_ctx *ctx)
{
    const char *last = op->path.seg[op->path.n - 1];
    bool skip;
    switch (op->kind) {
    case OP_REMOVE: {
        json_t *parent = parent_of(root, &op->path);
        return parent && json_object_del(parent, last) == 0;
    }
    case OP_RENAME: {
        json_t *parent = parent_of(root, &op->path);
        json_t *v = parent ? json_object_get(parent, last) : NULL;
        if (!v)
            return 0; /* nothing to move: no parent created either */
        const char *to = op->to.seg[op->to.n - 1];
        /* `to` is never inside `path` (refused at load), so creating its
         * parents never touches the member being moved. */
        json_t *dst = make_parent(root, &op->to, &skip);
        if (!dst)
            return skip ? 0 : -1;
        if (dst == parent && strcmp(to, last) == 0)
            return 0;
        json_incref(v);
        json_object_del(parent, last);
        return json_object_set_new(dst, to, v) == 0 ? 1 : -1;
    }
    case OP_ADD: {
        /* The value first: a template that renders no string skips the
         * rule before any parent is created. */
        json_t *v = make_value(op, ctx);
        if (!v)
            return op->vkind == V_TEMPLATE ? 0 : -1;
        json_t *parent = make_parent(root, &op->path, &skip);
        if (!parent) {
            json_decref(v);
            return skip ? 0 : -1;
        }
        return json_object_set_new(parent, last, v) == 0 ? 1 : -1;
    }
    }
    return 0;
}

int pt_json_edits_apply(const struct pt_json_edits *e, json_t *root,
                        const struct pt_filter_ctx *ctx)
{
    if (!json_is_object(root))
        return 0;
    int changed = 0;
    for (uint32_t i = 0; i < e->nops; i++) {
        int r = apply_one(&e->ops[i], root, ctx);
        if (r < 0)
            return -1;
        changed += r;
    }
    return changed;
}

/* ---- the pipeline ---- */

struct reader {
    const struct pt_body_part *part;
    size_t off;
};

/* json_load_callback's source: the parts in order, without joining them. */
static size_t read_parts(void *buffer, size_t buflen, void *data)
{
    struct reader *r = data;
    size_t n = 0;
    while (n < buflen && r->part) {
        size_t k = PT_MIN(buflen - n, r->part->s.len - r->off);
        if (k)
            memcpy((char *)buffer + n, r->part->s.p + r->off, k);
        n += k;
        r->off += k;
        if (r->off == r->part->s.len) {
            r->part = r->part->next;
            r->off = 0;
        }
    }
    return n;
}

/* The fewest significant digits (at least `from`) with which %.*g reads
 * back as x. */
static int digits_for(double x, int from)
{
    char buf[40];
    for (int p = from; p < 17; p++) {
        snprintf(buf, sizeof(buf), "%.*g", p, x);
        if (strtod(buf, NULL) == x)
            return p;
    }
    return 17;
}

/* The precision jansson writes every real with: enough for each real in
 * the tree to survive (jansson's default, 17, turns 1.1 into
 * 1.1000000000000001). */
static int real_precision(json_t *v, int p)
{
    if (json_is_real(v))
        return digits_for(json_real_value(v), p);
    if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach(v, k, m)
        {
            p = real_precision(m, p);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            p = real_precision(m, p);
        }
    }
    return p;
}

enum pt_json_result pt_json_edit_body(const struct pt_json_edits *e, struct pt_filter_ctx *ctx,
                                      const struct pt_body_part *parts, size_t len, pt_slice *out)
{
    struct reader rd = {parts, 0};
    json_error_t jerr;
    /* DECODE_ANY: a scalar document is valid JSON (no edit applies to it),
     * not an error to count. */
    json_t *root = json_load_callback(read_parts, &rd, JSON_DECODE_ANY, &jerr);
    if (!root)
        return json_error_code(&jerr) == json_error_out_of_memory ? PT_JSON_NOMEM : PT_JSON_INVALID;
    enum pt_json_result res = PT_JSON_UNCHANGED;
    int changed = pt_json_edits_apply(e, root, ctx);
    if (changed < 0) {
        res = PT_JSON_NOMEM;
        goto out;
    }
    if (changed == 0)
        goto out;
    size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY;
    flags |= JSON_REAL_PRECISION(real_precision(root, 1));
    /* Edits rarely grow a body by much: one guess, else the exact size. */
    size_t cap = len + len / 4 + 256;
    char *buf = pt_arena_alloc(ctx->arena, cap);
    size_t n = buf ? json_dumpb(root, buf, cap, flags) : 0;
    if (buf && n > cap) {
        cap = n;
        buf = pt_arena_alloc(ctx->arena, cap);
        n = buf ? json_dumpb(root, buf, cap, flags) : 0;
    }
    if (!buf || n == 0) {
        res = PT_JSON_NOMEM;
        goto out;
    }
    *out = (pt_slice){buf, n};
    res = PT_JSON_EDITED;
out:
    json_decref(root);
    return res;
}
