/*
 * template.c — header-value templates and the header-edit program shared
 * by request_transform and response_transform (see template.h).
 *
 * Everything that can be decided at config load is: variable names are
 * resolved to a part kind, `$$` escapes are folded into literal text,
 * header names are validated and turned into slices, so the per-request
 * work is one loop of slice copies and header-list edits.
 */
#include "filters/template.h"
#include "http/tokens.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

enum part_kind {
    PART_LITERAL,
    PART_REQUEST_ID,
    PART_REMOTE_ADDR,
    PART_METHOD,
    PART_PATH,
    PART_PARAM,    /* ${path.NAME}: text is NAME */
    PART_CONSUMER, /* the identified caller (auth filters), empty when anonymous */
};

struct template_part {
    enum part_kind kind;
    pt_slice text; /* literal text (escapes folded) or parameter name */
};

struct pt_template {
    const struct template_part *parts;
    uint32_t nparts;
    bool constant;    /* no variables: render returns `literal` */
    pt_slice literal; /* the whole text when constant */
};

static const char known_variables[] =
    "request_id, remote_addr, path.<param>, method, path, consumer";

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Resolves the text between "${" and "}" to a part; -1 when unknown. */
static int classify_variable(pt_slice name, struct template_part *part)
{
    static const struct {
        const char *name;
        enum part_kind kind;
    } fixed[] = {
        {"request_id", PART_REQUEST_ID}, {"remote_addr", PART_REMOTE_ADDR},
        {"method", PART_METHOD},         {"path", PART_PATH},
        {"consumer", PART_CONSUMER},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(fixed); i++) {
        if (pt_slice_eq_cstr(name, fixed[i].name)) {
            part->kind = fixed[i].kind;
            part->text = (pt_slice){"", 0};
            return 0;
        }
    }
    static const size_t plen = sizeof("path.") - 1;
    if (name.len > plen && memcmp(name.p, "path.", plen) == 0) {
        part->kind = PART_PARAM;
        part->text = (pt_slice){name.p + plen, name.len - plen};
        return 0;
    }
    return -1;
}

int pt_template_compile(struct pt_template **out, const char *src, struct pt_arena *a, char *err,
                        size_t errlen)
{
    size_t len = strlen(src);

    /* Every variable starts with a '$' and at most one literal run sits
     * before each of them, so 2 * dollars + 1 bounds the part count. */
    size_t dollars = 0;
    for (size_t i = 0; i < len; i++)
        dollars += src[i] == '$';

    struct pt_template *t = pt_arena_zalloc(a, sizeof(*t));
    struct template_part *parts = pt_arena_alloc(a, sizeof(*parts) * (2 * dollars + 1));
    /* Folded literal text and parameter names are never longer than the
     * source, so one buffer holds them all and each part is a slice of it. */
    char *buf = pt_arena_alloc(a, len + 1);
    if (!t || !parts || !buf) {
        fail(err, errlen, "out of memory");
        return -ENOMEM;
    }

    uint32_t nparts = 0;
    size_t used = 0, lit_start = 0;
    bool has_vars = false;
    size_t i = 0;
    while (i < len) {
        if (src[i] != '$' || i + 1 == len || (src[i + 1] != '$' && src[i + 1] != '{')) {
            buf[used++] = src[i++];
            continue;
        }
        if (src[i + 1] == '$') {
            buf[used++] = '$';
            i += 2;
            continue;
        }
        /* "${": a variable up to the next '}'. */
        const char *close = memchr(src + i + 2, '}', len - i - 2);
        if (!close) {
            fail(err, errlen, "unterminated ${ at offset %zu (missing }; write $$ for a literal $)",
                 i);
            return -EINVAL;
        }
        pt_slice name = {src + i + 2, (size_t)(close - (src + i + 2))};
        struct template_part var;
        if (classify_variable(name, &var) < 0) {
            if (pt_slice_eq_cstr(name, "path."))
                fail(err, errlen, "empty parameter name in ${path.} (write ${path.<param>})");
            else
                fail(err, errlen, "unknown variable ${%.*s} (known: %s)", (int)name.len, name.p,
                     known_variables);
            return -EINVAL;
        }
        if (used > lit_start)
            parts[nparts++] =
                (struct template_part){PART_LITERAL, {buf + lit_start, used - lit_start}};
        if (var.kind == PART_PARAM) {
            /* Copy the name so the template does not borrow `src`. */
            memcpy(buf + used, var.text.p, var.text.len);
            var.text.p = buf + used;
            used += var.text.len;
        }
        parts[nparts++] = var;
        lit_start = used;
        has_vars = true;
        i = (size_t)(close - src) + 1;
    }
    if (used > lit_start)
        parts[nparts++] = (struct template_part){PART_LITERAL, {buf + lit_start, used - lit_start}};
    buf[used] = '\0';

    t->parts = parts;
    t->nparts = nparts;
    t->constant = !has_vars;
    if (t->constant)
        t->literal = nparts ? parts[0].text : (pt_slice){buf, 0};
    *out = t;
    return 0;
}

bool pt_template_is_constant(const struct pt_template *t)
{
    return t->constant;
}

static pt_slice part_value(const struct template_part *p, const struct pt_filter_ctx *ctx)
{
    switch (p->kind) {
    case PART_LITERAL:
        return p->text;
    case PART_REQUEST_ID:
        return ctx->request_id;
    case PART_REMOTE_ADDR:
        return ctx->remote_addr;
    case PART_METHOD:
        return ctx->method;
    case PART_PATH:
        return ctx->path;
    case PART_CONSUMER:
        return ctx->identity && ctx->identity->consumer.p ? ctx->identity->consumer
                                                          : (pt_slice){"", 0};
    case PART_PARAM: {
        pt_slice v = pt_param_lookup(ctx->param_names, ctx->param_values, ctx->nparams,
                                     ctx->params_numbered, p->text);
        return v.p ? v : (pt_slice){"", 0}; /* a route without that parameter */
    }
    }
    return (pt_slice){"", 0};
}

pt_slice pt_param_lookup(const pt_slice *names, const pt_slice *values, uint32_t n, bool numbered,
                         pt_slice name)
{
    for (uint32_t i = 0; i < n; i++)
        if (pt_slice_eq(names[i], name))
            return values[i];
    if (numbered && name.len > 0 && name.len <= 2 && name.p[0] != '0') {
        uint32_t g = 0;
        for (size_t i = 0; i < name.len; i++) {
            if (name.p[i] < '0' || name.p[i] > '9')
                return (pt_slice){NULL, 0};
            g = g * 10 + (uint32_t)(name.p[i] - '0');
        }
        if (g >= 1 && g <= n)
            return values[g - 1];
    }
    return (pt_slice){NULL, 0};
}

pt_slice pt_template_render(const struct pt_template *t, const struct pt_filter_ctx *ctx)
{
    if (t->constant)
        return t->literal;

    size_t total = 0;
    for (uint32_t i = 0; i < t->nparts; i++)
        total += part_value(&t->parts[i], ctx).len;
    if (total == 0)
        return (pt_slice){"", 0};

    char *out = pt_arena_alloc(ctx->arena, total);
    if (!out)
        return (pt_slice){NULL, 0};
    size_t off = 0;
    for (uint32_t i = 0; i < t->nparts; i++) {
        pt_slice v = part_value(&t->parts[i], ctx);
        if (v.len) {
            memcpy(out + off, v.p, v.len);
            off += v.len;
        }
    }
    return (pt_slice){out, total};
}

/* ---- header edits ---- */

/*
 * The apply order is remove, rename, set, add:
 *  - remove before rename, so a rename never resurrects a header the user
 *    asked to remove (remove X-A + rename X-B→X-A keeps the upstream's
 *    X-B value under X-A, and nothing of the original X-A);
 *  - rename before set/add, so set/add see the final names;
 *  - set before add, so `add` can append a second value to a header that
 *    `set` just fixed, instead of `set` wiping what `add` appended.
 */
enum op_kind { OP_REMOVE, OP_RENAME, OP_SET, OP_ADD };

struct pt_header_op {
    enum op_kind kind;
    pt_slice name;                   /* header to act on (rename: old name) */
    pt_slice to;                     /* rename: new name */
    const struct pt_template *value; /* set/add */
};

const struct pt_field pt_header_edit_fields[] = {
    {"add_headers", PT_F_TEMPLATE_MAP, offsetof(struct pt_header_edit_conf, add_headers), NULL},
    {"set_headers", PT_F_TEMPLATE_MAP, offsetof(struct pt_header_edit_conf, set_headers), NULL},
    {"remove_headers", PT_F_STRING_LIST, offsetof(struct pt_header_edit_conf, remove_headers),
     NULL},
    {"rename_headers", PT_F_STRING_MAP, offsetof(struct pt_header_edit_conf, rename_headers), NULL},
    {NULL, 0, 0, NULL},
};

/* Message framing belongs to the gateway: a filter that changed these
 * could desynchronise the client or upstream connection (request
 * smuggling, response splitting), so no transform may touch them. */
static const char *const forbidden_headers[] = {
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
};

/* tchar (RFC 9110 §5.6.2). */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Field values may hold VCHAR, SP, HTAB and obs-text; every other control
 * character (CR, LF and NUL above all) could split the message. */
static bool is_bad_value_char(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static bool value_is_clean(pt_slice v)
{
    for (size_t i = 0; i < v.len; i++)
        if (is_bad_value_char((unsigned char)v.p[i]))
            return false;
    return true;
}

int pt_filter_errorf(struct pt_filter_errs *errs, const char *field, const char *entry,
                     bool in_value, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    errs->report(errs, field, entry, in_value, msg);
    return -1;
}

/* Hop-by-hop fields (RFC 9110 §7.6.1) and Expect belong to each hop: the
 * gateway forwards none of them, so a filter producing one would be
 * configured and never enforced. */
static bool never_forwarded(pt_slice name)
{
    int tok = pt_token_lookup(name.p, name.len);
    return (pt_token_flags[tok] & PT_TF_HOP) || tok == PT_TOK_EXPECT;
}

int pt_header_name_check(struct pt_filter_errs *errs, const char *key, const char *entry,
                         bool in_value, bool produces, const char *name, pt_slice *out)
{
    if (!name || !*name)
        return pt_filter_errorf(errs, key, entry, in_value, "%s: empty header name", key);
    size_t len = strlen(name);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (is_tchar(c))
            continue;
        if (c > 0x20 && c < 0x7f)
            return pt_filter_errorf(
                errs, key, entry, in_value,
                "%s: invalid header name \"%s\": '%c' is not allowed (a header name "
                "is letters, digits and !#$%%&'*+-.^_`|~)",
                key, name, c);
        return pt_filter_errorf(
            errs, key, entry, in_value,
            "%s: invalid header name \"%s\": byte 0x%02x is not allowed (a header "
            "name is letters, digits and !#$%%&'*+-.^_`|~)",
            key, name, c);
    }
    *out = (pt_slice){name, len};
    for (size_t i = 0; i < PT_ARRAY_LEN(forbidden_headers); i++)
        if (pt_slice_ieq_cstr(*out, forbidden_headers[i]))
            return pt_filter_errorf(
                errs, key, entry, in_value,
                "%s: header \"%s\" cannot be changed by a filter (Host, "
                "Content-Length, Transfer-Encoding and Connection are managed by the "
                "gateway)",
                key, name);
    if (produces && never_forwarded(*out))
        return pt_filter_errorf(
            errs, key, entry, in_value,
            "%s: header \"%s\" is hop-by-hop: the gateway never forwards it, so "
            "it cannot be %s (TE, Keep-Alive, Upgrade, Trailer, Proxy-Connection, "
            "Proxy-Authenticate, Proxy-Authorization, HTTP2-Settings and Expect "
            "end at the gateway)",
            key, name, in_value ? "a rename's new name" : "set or added");
    return 0;
}

static int compile_value(struct pt_filter_errs *errs, const char *key, const char *name,
                         const char *value, struct pt_arena *a, const struct pt_template **out)
{
    if (!value)
        return pt_filter_errorf(errs, key, name, true, "%s: header \"%s\" has no value", key, name);
    if (!value_is_clean((pt_slice){value, strlen(value)}))
        return pt_filter_errorf(
            errs, key, name, true,
            "%s: value of header \"%s\" contains a control character (CR, LF, NUL "
            "and other control characters are not allowed in header values)",
            key, name);
    char terr[256];
    struct pt_template *t;
    int rc = pt_template_compile(&t, value, a, terr, sizeof(terr));
    if (rc < 0)
        return pt_filter_errorf(errs, key, name, true, "%s: value of header \"%s\": %s", key, name,
                                terr);
    *out = t;
    return 0;
}

int pt_header_edit_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct pt_header_edit_conf *conf = conf_;
    size_t n = (size_t)conf->remove_headers.n + conf->rename_headers.n + conf->set_headers.n +
               conf->add_headers.n;
    conf->ops = NULL;
    conf->nops = 0;
    if (n == 0)
        return 0;

    struct pt_header_op *ops = pt_arena_zalloc(a, sizeof(*ops) * n);
    if (!ops)
        return pt_filter_errorf(errs, NULL, NULL, false, "out of memory");
    uint32_t k = 0;
    int bad = 0; /* every problem is reported, not just the first */

    for (uint32_t i = 0; i < conf->remove_headers.n; i++, k++) {
        ops[k].kind = OP_REMOVE;
        const char *name = conf->remove_headers.v[i];
        bad |= pt_header_name_check(errs, "remove_headers", name, false, false, name, &ops[k].name);
    }
    for (uint32_t i = 0; i < conf->rename_headers.n; i++, k++) {
        const struct pt_strmap *m = &conf->rename_headers;
        ops[k].kind = OP_RENAME;
        bad |= pt_header_name_check(errs, "rename_headers", m->keys[i], false, false, m->keys[i],
                                    &ops[k].name);
        bad |= pt_header_name_check(errs, "rename_headers", m->keys[i], true, true, m->values[i],
                                    &ops[k].to);
    }
    /* Renames apply one after the other: `{A: B, B: A}` would leave both
     * fields named A, and `{A: B, B: C}` would rename A to C. */
    for (uint32_t i = 0; i < conf->rename_headers.n; i++) {
        const struct pt_strmap *m = &conf->rename_headers;
        for (uint32_t j = 0; j < m->n; j++) {
            if (j != i && m->values[i] && m->keys[j] && strcasecmp(m->values[i], m->keys[j]) == 0) {
                bad |=
                    pt_filter_errorf(errs, "rename_headers", m->keys[i], true,
                                     "rename_headers: \"%s\" is renamed to \"%s\", which is itself "
                                     "renamed; renames do not chain or swap (use a name no other "
                                     "rename uses)",
                                     m->keys[i], m->values[i]);
                break;
            }
        }
    }
    /* A second set of the same field (names are case-insensitive) would
     * silently win over the first. */
    for (uint32_t i = 0; i < conf->set_headers.n; i++)
        for (uint32_t j = 0; j < i; j++)
            if (conf->set_headers.keys[i] && conf->set_headers.keys[j] &&
                strcasecmp(conf->set_headers.keys[i], conf->set_headers.keys[j]) == 0) {
                bad |= pt_filter_errorf(errs, "set_headers", conf->set_headers.keys[i], false,
                                        "set_headers: header \"%s\" is set twice (as \"%s\" too); "
                                        "set it once, or use add_headers for several fields",
                                        conf->set_headers.keys[i], conf->set_headers.keys[j]);
                break;
            }
    /* set before add: see the order comment above struct pt_header_op. */
    const struct {
        const char *key;
        const struct pt_strmap *map;
        enum op_kind kind;
    } valued[] = {
        {"set_headers", &conf->set_headers, OP_SET},
        {"add_headers", &conf->add_headers, OP_ADD},
    };
    for (size_t j = 0; j < PT_ARRAY_LEN(valued); j++) {
        for (uint32_t i = 0; i < valued[j].map->n; i++, k++) {
            const char *name = valued[j].map->keys[i];
            ops[k].kind = valued[j].kind;
            bad |= pt_header_name_check(errs, valued[j].key, name, false, true, name, &ops[k].name);
            bad |= compile_value(errs, valued[j].key, name, valued[j].map->values[i], a,
                                 &ops[k].value);
        }
    }
    if (bad)
        return -1;
    conf->ops = ops;
    conf->nops = k;
    return 0;
}

bool pt_header_edit_removes(const struct pt_header_edit_conf *conf, pt_slice name)
{
    for (uint32_t i = 0; i < conf->nops; i++) {
        const struct pt_header_op *op = &conf->ops[i];
        if (op->kind != OP_ADD && pt_slice_ieq(op->name, name))
            return true;
    }
    return false;
}

int pt_header_edit_apply(const struct pt_header_edit_conf *conf, struct pt_filter_ctx *ctx,
                         struct pt_headers *h)
{
    for (uint32_t i = 0; i < conf->nops; i++) {
        const struct pt_header_op *op = &conf->ops[i];
        switch (op->kind) {
        case OP_REMOVE:
            pt_headers_remove(h, op->name);
            break;
        case OP_RENAME:
            if (pt_headers_rename(h, ctx->arena, op->name, op->to) < 0)
                return PT_FILTER_ERROR;
            break;
        case OP_SET:
        case OP_ADD: {
            pt_slice v = pt_template_render(op->value, ctx);
            if (!v.p)
                return PT_FILTER_ERROR;
            /* Literal text was checked at load; request data (path,
             * params, ids) is checked here so a value that slipped past
             * the parser can never split the message. */
            if (!pt_template_is_constant(op->value) && !value_is_clean(v))
                return PT_FILTER_ERROR;
            int rc = op->kind == OP_SET ? pt_headers_set(h, ctx->arena, op->name, v)
                                        : pt_headers_add(h, ctx->arena, op->name, v);
            if (rc < 0)
                return PT_FILTER_ERROR;
            break;
        }
        }
    }
    return PT_FILTER_CONTINUE;
}
