/*
 * admin_text.c — the admin API's JSON text helpers (admin_int.h).
 */
#include "control/admin_int.h"
#include "gateway/respond.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0 || b->oom)
            return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = (b->cap ? b->cap * 2 : 1024) + (size_t)n;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (!b->p || b->len + n + 1 > b->cap) {
        size_t ncap = (b->cap ? b->cap * 2 : 1024) + n + 1;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void sb_json_strn(struct sbuf *b, const char *s, size_t n)
{
    char *esc = malloc(6 * n + 1);
    if (!esc) {
        b->oom = true;
        return;
    }
    size_t e = pt_json_escape(esc, s, n);
    sb_put(b, "\"", 1);
    sb_put(b, esc, e);
    sb_put(b, "\"", 1);
    free(esc);
}

void sb_json_str(struct sbuf *b, const char *s)
{
    if (!s)
        sb_put(b, "null", 4);
    else
        sb_json_strn(b, s, strlen(s));
}

void admin_error(struct admin_resp *out, int status, const char *msg)
{
    out->status = status;
    out->body.len = 0;
    sb_printf(&out->body, "{\"error\":");
    sb_json_str(&out->body, msg);
    sb_printf(&out->body, ",\"status\":%d}\n", status);
}

/* "file:line:col: message" → its parts; the file name may itself hold
 * colons, so the position is looked for from the right of the prefix:
 * the first ":<digits>:<digits>: " sequence. */
static void diag_entry(struct sbuf *b, const char *line)
{
    for (const char *p = strchr(line, ':'); p; p = strchr(p + 1, ':')) {
        char *e1, *e2;
        long l = strtol(p + 1, &e1, 10);
        if (e1 == p + 1 || *e1 != ':')
            continue;
        long c = strtol(e1 + 1, &e2, 10);
        if (e2 == e1 + 1 || e2[0] != ':' || e2[1] != ' ')
            continue;
        sb_printf(b, "{\"file\":");
        sb_json_strn(b, line, (size_t)(p - line));
        sb_printf(b, ",\"line\":%ld,\"col\":%ld,\"message\":", l, c);
        sb_json_str(b, e2 + 2);
        sb_printf(b, "}");
        return;
    }
    const char *colon = strstr(line, ": ");
    sb_printf(b, "{\"file\":");
    if (colon)
        sb_json_strn(b, line, (size_t)(colon - line));
    else
        sb_printf(b, "null");
    sb_printf(b, ",\"line\":null,\"col\":null,\"message\":");
    sb_json_str(b, colon ? colon + 2 : line);
    sb_printf(b, "}");
}

void admin_diag_json(struct sbuf *b, const struct pt_diag *d)
{
    sb_printf(b, "{\"valid\":false,\"errors\":[");
    for (size_t i = 0; i < d->n; i++) {
        if (i)
            sb_printf(b, ",");
        diag_entry(b, d->lines[i]);
    }
    sb_printf(b, "]}\n");
}

int admin_pct_decode(const char *s, size_t n, bool plus_space, char **out, size_t *len)
{
    char *o = malloc(n + 1);
    if (!o)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || pt_hexval(s[i + 1]) < 0 || pt_hexval(s[i + 2]) < 0)
                goto bad;
            c = (char)(pt_hexval(s[i + 1]) * 16 + pt_hexval(s[i + 2]));
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (c == 0)
            goto bad;
        o[k++] = c;
    }
    o[k] = 0;
    *out = o;
    *len = k;
    return 0;
bad:
    free(o);
    return -EINVAL;
}
