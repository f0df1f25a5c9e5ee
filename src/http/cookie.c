/*
 * cookie.c — see cookie.h.
 */
#include "http/cookie.h"
#include "http/tokens.h"

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

bool pt_cookie_find_in(pt_slice field, pt_slice name, pt_slice *value)
{
    const char *p = field.p, *end = field.p + field.len;
    while (p < end) {
        while (p < end && (is_ows(*p) || *p == ';'))
            p++;
        const char *pair = p;
        while (p < end && *p != ';')
            p++;
        /* [pair, p) is one `name=value`, maybe with trailing spaces. */
        const char *pe = p;
        while (pe > pair && is_ows(pe[-1]))
            pe--;
        const char *eq = memchr(pair, '=', (size_t)(pe - pair));
        if (!eq)
            continue;
        const char *ne = eq;
        while (ne > pair && is_ows(ne[-1]))
            ne--;
        if ((size_t)(ne - pair) != name.len || memcmp(pair, name.p, name.len) != 0)
            continue;
        const char *v = eq + 1;
        while (v < pe && is_ows(*v))
            v++;
        if (pe - v >= 2 && *v == '"' && pe[-1] == '"') {
            v++;
            pe--;
        }
        *value = (pt_slice){v, (size_t)(pe - v)};
        return true;
    }
    return false;
}

bool pt_cookie_find(const struct pt_headers *h, pt_slice name, pt_slice *value)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || f->token != PT_TOK_COOKIE)
            continue;
        if (pt_cookie_find_in(f->value, name, value))
            return true;
    }
    return false;
}
