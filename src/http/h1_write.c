/*
 * h1_write.c — see h1_write.h.
 */
#include "http/h1_write.h"

size_t pt_h1_put_content_length(char *o, uint64_t v)
{
    char digits[20];
    size_t nd = 0;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    size_t n = pt_h1_put(o, PT_SLICE("Content-Length: "));
    while (nd)
        o[n++] = digits[--nd];
    o[n++] = '\r';
    o[n++] = '\n';
    return n;
}

size_t pt_h1_fields_size(const struct pt_headers *h)
{
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++)
        n += h->f[i].name.len + h->f[i].value.len + 4;
    return n;
}

pt_slice pt_h1_list_next(const char **pp, const char *end)
{
    const char *p = *pp;
    while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
        p++;
    const char *s = p;
    while (p < end && *p != ',' && *p != ' ' && *p != '\t')
        p++;
    *pp = p;
    return (pt_slice){s, (size_t)(p - s)};
}

/* Naming the framing or Host in Connection takes nothing away: the
 * writers put the framing from what the body was framed by, and the
 * exchange sets Host from the routed host. */
void pt_h1_drop_connection_listed(struct pt_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->f[i].dead || h->f[i].token != PT_TOK_CONNECTION)
            continue;
        const char *p = h->f[i].value.p, *end = p + h->f[i].value.len;
        while (p < end) {
            pt_slice name = pt_h1_list_next(&p, end);
            if (name.len && !pt_slice_ieq_cstr(name, "close") &&
                !pt_slice_ieq_cstr(name, "keep-alive"))
                pt_headers_remove(h, name);
        }
    }
}

bool pt_h1_connection_lists(const struct pt_h1_header *hs, size_t n, pt_slice name)
{
    for (size_t i = 0; i < n; i++) {
        if (hs[i].token != PT_TOK_CONNECTION)
            continue;
        const char *p = hs[i].value.p, *end = p + hs[i].value.len;
        while (p < end) {
            pt_slice item = pt_h1_list_next(&p, end);
            if (item.len && pt_slice_ieq(item, name))
                return true;
        }
    }
    return false;
}
