/*
 * forwarded.c — the X-Forwarded-For walk of forwarded.h.
 */
#include "http/forwarded.h"

#include "http/tokens.h"

/* Walks one field's entries right to left. Returns true when the walk is
 * over (an untrusted or a malformed entry); *ip is then the client. */
static bool walk_field(pt_slice v, const struct pt_cidr_set *trusted, struct pt_ip *ip)
{
    size_t end = v.len;
    for (;;) {
        size_t start = end;
        while (start > 0 && v.p[start - 1] != ',')
            start--;
        pt_slice e = {v.p + start, end - start};
        bool blank = true;
        for (size_t i = 0; i < e.len && blank; i++)
            blank = e.p[i] == ' ' || e.p[i] == '\t';
        if (!blank) {
            struct pt_ip hop;
            if (!pt_ip_parse_hop(e, &hop))
                return true; /* stop at the last good address */
            *ip = hop;
            if (!pt_cidr_set_has(trusted, &hop))
                return true;
        }
        if (start == 0)
            return false;
        end = start - 1;
    }
}

void pt_forwarded_client(const struct pt_headers *h, const struct pt_cidr_set *trusted,
                         struct pt_ip *ip)
{
    if (!pt_cidr_set_has(trusted, ip))
        return;
    for (uint32_t i = h->n; i-- > 0;) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || f->token != PT_TOK_X_FORWARDED_FOR)
            continue;
        if (walk_field(f->value, trusted, ip))
            return;
    }
}
