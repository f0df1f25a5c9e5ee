/* headers.c — see headers.h. */
#include "http/headers.h"

#include <errno.h>

void pt_headers_from_h1(struct pt_headers *h, struct pt_hfield *storage, uint32_t cap,
                        const struct pt_h1_header *src, size_t n)
{
    h->f = storage;
    h->cap = cap;
    h->n = 0;
    for (size_t i = 0; i < n && h->n < cap; i++) {
        storage[h->n++] = (struct pt_hfield){src[i].name, src[i].value, src[i].token, false};
    }
}

struct pt_hfield *pt_headers_find_token(struct pt_headers *h, int token)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (!h->f[i].dead && h->f[i].token == token)
            return &h->f[i];
    return NULL;
}

struct pt_hfield *pt_headers_find(struct pt_headers *h, pt_slice name)
{
    int tok = pt_token_lookup(name.p, name.len);
    if (tok != PT_TOK_UNKNOWN)
        return pt_headers_find_token(h, tok);
    for (uint32_t i = 0; i < h->n; i++)
        if (!h->f[i].dead && pt_slice_ieq(h->f[i].name, name))
            return &h->f[i];
    return NULL;
}

static bool field_is(const struct pt_hfield *f, pt_slice name, int tok)
{
    if (f->dead)
        return false;
    if (tok != PT_TOK_UNKNOWN)
        return f->token == tok;
    return f->token == PT_TOK_UNKNOWN && pt_slice_ieq(f->name, name);
}

int pt_headers_add(struct pt_headers *h, struct pt_arena *a, pt_slice name, pt_slice value)
{
    if (h->n == h->cap) {
        uint32_t ncap = h->cap ? h->cap * 2 : 16;
        struct pt_hfield *nf = pt_arena_alloc(a, sizeof(*nf) * ncap);
        if (!nf)
            return -ENOMEM;
        if (h->n)
            memcpy(nf, h->f, sizeof(*nf) * h->n);
        h->f = nf;
        h->cap = ncap;
    }
    h->f[h->n++] = (struct pt_hfield){name, value, pt_token_lookup(name.p, name.len), false};
    return 0;
}

int pt_headers_set(struct pt_headers *h, struct pt_arena *a, pt_slice name, pt_slice value)
{
    int tok = pt_token_lookup(name.p, name.len);
    struct pt_hfield *first = NULL;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!field_is(&h->f[i], name, tok))
            continue;
        if (!first) {
            first = &h->f[i];
            first->value = value;
        } else {
            h->f[i].dead = true;
        }
    }
    return first ? 0 : pt_headers_add(h, a, name, value);
}

int pt_headers_remove(struct pt_headers *h, pt_slice name)
{
    int tok = pt_token_lookup(name.p, name.len);
    int removed = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (field_is(&h->f[i], name, tok)) {
            h->f[i].dead = true;
            removed++;
        }
    }
    return removed;
}

/* Case-insensitive, with `-` and `_` alike: servers that map fields to
 * CGI-style variables fold one into the other. */
static bool prefix_loose(pt_slice name, pt_slice prefix)
{
    if (name.len < prefix.len)
        return false;
    for (size_t i = 0; i < prefix.len; i++) {
        unsigned char a = (unsigned char)name.p[i], b = (unsigned char)prefix.p[i];
        if (a == '_')
            a = '-';
        if (b == '_')
            b = '-';
        if (a >= 'A' && a <= 'Z')
            a |= 0x20;
        if (b >= 'A' && b <= 'Z')
            b |= 0x20;
        if (a != b)
            return false;
    }
    return true;
}

int pt_headers_remove_prefix(struct pt_headers *h, pt_slice prefix)
{
    int removed = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!h->f[i].dead && prefix_loose(h->f[i].name, prefix)) {
            h->f[i].dead = true;
            removed++;
        }
    }
    return removed;
}

int pt_headers_rename(struct pt_headers *h, struct pt_arena *a, pt_slice from, pt_slice to)
{
    int tok = pt_token_lookup(from.p, from.len);
    int renamed = 0;
    uint32_t n = h->n; /* the copies appended below are not looked at */
    for (uint32_t i = 0; i < n; i++) {
        if (!field_is(&h->f[i], from, tok))
            continue;
        pt_slice value = h->f[i].value;
        if (pt_headers_add(h, a, to, value) < 0)
            return -ENOMEM;
        h->f[i].dead = true; /* (h->f may have moved: index again) */
        renamed++;
    }
    return renamed;
}
