/*
 * body_transform.c — see body_transform.h.
 */
#include "filters/body_transform.h"

#include <stddef.h>

const struct pt_field pt_transform_fields[] = {
    {"add_headers", PT_F_TEMPLATE_MAP, offsetof(struct pt_transform_conf, headers.add_headers),
     NULL},
    {"set_headers", PT_F_TEMPLATE_MAP, offsetof(struct pt_transform_conf, headers.set_headers),
     NULL},
    {"remove_headers", PT_F_STRING_LIST, offsetof(struct pt_transform_conf, headers.remove_headers),
     NULL},
    {"rename_headers", PT_F_STRING_MAP, offsetof(struct pt_transform_conf, headers.rename_headers),
     NULL},
    {"rename_body_fields", PT_F_STRING_MAP, offsetof(struct pt_transform_conf, rename_body_fields),
     NULL},
    {"remove_body_fields", PT_F_STRING_LIST, offsetof(struct pt_transform_conf, remove_body_fields),
     NULL},
    {"add_body_fields", PT_F_JSON_MAP, offsetof(struct pt_transform_conf, add_body_fields), NULL},
    {"max_transform_bytes", PT_F_SIZE, offsetof(struct pt_transform_conf, max_transform_bytes),
     NULL},
    {NULL, 0, 0, NULL},
};

int pt_transform_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct pt_transform_conf *conf = conf_;
    int bad = pt_header_edit_compile(&conf->headers, a, errs);
    bad |= pt_json_edits_compile(&conf->body, &conf->remove_body_fields, &conf->rename_body_fields,
                                 &conf->add_body_fields, a, errs);
    if (conf->max_transform_bytes == 0)
        conf->max_transform_bytes = PT_TRANSFORM_DEFAULT_MAX_BYTES;
    return bad ? -1 : 0;
}

bool pt_transform_uses_body(const void *conf)
{
    return ((const struct pt_transform_conf *)conf)->body.nops > 0;
}

static pt_slice trim(pt_slice s)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.len--;
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

bool pt_transform_is_json(pt_slice ct)
{
    const char *semi = ct.p ? memchr(ct.p, ';', ct.len) : NULL;
    if (semi)
        ct.len = (size_t)(semi - ct.p);
    ct = trim(ct);
    if (pt_slice_ieq_cstr(ct, "application/json"))
        return true;
    const char *slash = ct.p ? memchr(ct.p, '/', ct.len) : NULL;
    /* type/subtype+json: a non-empty type and a subtype longer than the suffix */
    if (!slash || slash == ct.p)
        return false;
    size_t sub = ct.len - (size_t)(slash + 1 - ct.p);
    return sub > 5 && pt_slice_ieq_cstr((pt_slice){ct.p + ct.len - 5, 5}, "+json");
}

/* A Content-Length value as a number; -1 when it is not one. */
static int64_t length_of(pt_slice v)
{
    v = trim(v);
    if (v.len == 0 || v.len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        n = n * 10 + (v.p[i] - '0');
    }
    return n;
}

enum pt_body_verdict pt_transform_judge(const struct pt_transform_conf *conf, struct pt_headers *h)
{
    const struct pt_hfield *ct = pt_headers_find_token(h, PT_TOK_CONTENT_TYPE);
    if (!ct || !pt_transform_is_json(ct->value))
        return PT_BODY_NOT_JSON;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (!f->dead && f->token == PT_TOK_CONTENT_ENCODING &&
            !pt_slice_ieq_cstr(trim(f->value), "identity"))
            return PT_BODY_ENCODED;
    }
    const struct pt_hfield *cl = pt_headers_find_token(h, PT_TOK_CONTENT_LENGTH);
    if (cl) {
        int64_t n = length_of(cl->value);
        if (n < 0 || (uint64_t)n > conf->max_transform_bytes)
            return PT_BODY_TOO_LARGE;
    }
    return PT_BODY_OK;
}
