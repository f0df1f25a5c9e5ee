/*
 * path.c — see path.h. Two in-place passes; the output cursor never
 * overtakes the input one, so no copy is needed.
 */
#include "http/path.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 §2.3: decoding these never changes what a URI means. */
static bool unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Returns the new length, or -1 for a `%` without two hex digits: kept,
 * it could pair with what decoding puts after it (`%%32%65` → `%2e`) and
 * give the next hop a second decoding the routes never saw. */
static long decode_unreserved(char *p, size_t len)
{
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        if (p[i] != '%') {
            p[w++] = p[i++];
            continue;
        }
        int hi = len - i >= 3 ? hexval(p[i + 1]) : -1, lo = len - i >= 3 ? hexval(p[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return -1;
        if (unreserved(hi * 16 + lo)) {
            p[w++] = (char)(hi * 16 + lo);
        } else {
            memmove(p + w, p + i, 3);
            w += 3;
        }
        i += 3;
    }
    return (long)w;
}

bool pt_path_needs_normalize(const char *p, size_t len, bool merge_slashes)
{
    if (len == 0 || p[0] != '/')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '%')
            return true;
        if (p[i] == '/' && i + 1 < len && (p[i + 1] == '.' || (merge_slashes && p[i + 1] == '/')))
            return true;
    }
    return false;
}

long pt_path_normalize(char *p, size_t len, bool merge_slashes)
{
    if (len == 0 || p[0] != '/')
        return (long)len;
    if (memchr(p, '%', len)) {
        long dl = decode_unreserved(p, len);
        if (dl < 0)
            return -1;
        len = (size_t)dl;
    }
    /* The output is "/" followed by segments each ending in '/', except
     * that a last plain segment has none; w is its length. */
    size_t w = 1;
    for (size_t i = 1;;) {
        size_t j = i;
        while (j < len && p[j] != '/')
            j++;
        size_t sl = j - i;
        bool last = j >= len;
        if (sl == 2 && p[i] == '.' && p[i + 1] == '.') {
            if (w == 1)
                return -1;    /* above the root */
            size_t k = w - 2; /* the '/' before the last output segment */
            while (p[k] != '/')
                k--;
            w = k + 1;
        } else if (sl == 1 && p[i] == '.') {
            /* nothing: `/a/./b` is `/a/b`, `/a/.` is `/a/` */
        } else if (sl == 0) {
            if (!last && !merge_slashes)
                p[w++] = '/';
        } else {
            if (w != i)
                memmove(p + w, p + i, sl);
            w += sl;
            if (!last)
                p[w++] = '/';
        }
        if (last)
            break;
        i = j + 1;
    }
    return (long)w;
}
