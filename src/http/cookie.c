/*
 * cookie.c — see cookie.h.
 */
#include "http/cookie.h"

#include "http/tokens.h"

static bool ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* `name`'s value among one field's pairs. */
static bool in_field(pt_slice v, pt_slice name, pt_slice *out)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (ows(v.p[i]) || v.p[i] == ';'))
            i++;
        size_t start = i;
        while (i < v.len && v.p[i] != ';')
            i++;
        /* One pair: v.p[start, i). */
        const char *eq = memchr(v.p + start, '=', i - start);
        if (!eq)
            continue;
        size_t ne = (size_t)(eq - v.p);
        while (ne > start && ows(v.p[ne - 1]))
            ne--;
        if (ne - start != name.len || memcmp(v.p + start, name.p, name.len) != 0)
            continue;
        size_t vs = (size_t)(eq - v.p) + 1, ve = i;
        while (vs < ve && ows(v.p[vs]))
            vs++;
        while (ve > vs && ows(v.p[ve - 1]))
            ve--;
        *out = (pt_slice){v.p + vs, ve - vs};
        return true;
    }
    return false;
}

pt_slice pt_cookie_find(const struct pt_headers *h, pt_slice name, bool *found)
{
    pt_slice out = {"", 0};
    *found = false;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || f->token != PT_TOK_COOKIE)
            continue;
        if (in_field(f->value, name, &out)) {
            *found = true;
            break;
        }
    }
    return out;
}
