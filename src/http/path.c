/*
 * path.c — see path.h. Two in-place passes; the output cursor never
 * overtakes the input one, so no copy is needed.
 */
#include "http/path.h"

#include "core/common.h"

#include <string.h>

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
        int hi = len - i >= 3 ? pt_hexval(p[i + 1]) : -1,
            lo = len - i >= 3 ? pt_hexval(p[i + 2]) : -1;
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

const char *const pt_escaped_slashes_names[PT_ESC_MODES] = {"reject", "keep", "decode"};
const char *const pt_semicolons_names[PT_SEMI_MODES] = {"reject", "keep"};

/* The byte an escape at p[0] (`%` and two hex digits, len ≥ 3) stands for. */
static int escape_at(const char *p)
{
    int hi = pt_hexval(p[1]), lo = pt_hexval(p[2]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static bool is_escaped_slash(const char *p, size_t n)
{
    if (n < 3 || p[0] != '%')
        return false;
    int v = escape_at(p);
    return v == '/' || v == '\\';
}

/* Whether the text before the `;` at p[semi] is a whole `.` or `..`
 * segment, its dots raw or `%2e`: Tomcat and Spring drop the `;x` and
 * then resolve it, so `/..;/admin` climbs to `/admin` behind the gateway. */
static bool dot_params(const char *p, size_t semi)
{
    size_t j = semi;
    int dots = 0;
    while (dots < 3) {
        if (j >= 1 && p[j - 1] == '.')
            j -= 1;
        else if (j >= 3 && p[j - 3] == '%' && p[j - 2] == '2' && (p[j - 1] | 0x20) == 'e')
            j -= 3;
        else
            break;
        dots++;
    }
    if (dots == 0 || dots > 2)
        return false;
    return j == 0 || p[j - 1] == '/' || (j >= 3 && is_escaped_slash(p + j - 3, 3));
}

static inline bool screened(unsigned char c)
{
    return c <= 0x20 || c == 0x7f || c == '%' || c == ';' || c == '\\';
}

const char *pt_path_screen(const char *p, size_t len, enum pt_escaped_slashes escaped_slashes,
                           enum pt_semicolons semicolons, bool *escaped)
{
    *escaped = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (pt_likely(!screened(c)))
            continue;
        if (c <= 0x20 || c == 0x7f)
            return "path rule: raw control character, space or DEL";
        if (c == '\\')
            return "path rule: backslash";
        if (c == ';') {
            if (dot_params(p, i))
                return "path rule: dot segment with parameters (`..;` or `.;`)";
            if (semicolons == PT_SEMI_REJECT)
                return "path rule: semicolon (limits.semicolons)";
            continue;
        }
        /* '%': a broken escape is pt_path_normalize's to refuse. */
        int v = len - i >= 3 ? escape_at(p + i) : -1;
        if (v < 0)
            continue;
        if (v < 0x20 || v == 0x7f)
            return "path rule: percent-encoded control character";
        if (v == '/' || v == '\\') {
            if (escaped_slashes == PT_ESC_REJECT)
                return "path rule: escaped slash `%2F` or `%5C` (limits.escaped_slashes)";
            *escaped = true;
        }
        i += 2;
    }
    return NULL;
}

/* Walks escapes exactly as pt_path_screen does, so both agree on which
 * `%2F` are escapes. */
size_t pt_path_decode_slashes(char *p, size_t len)
{
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        int v = p[i] == '%' && len - i >= 3 ? escape_at(p + i) : -1;
        if (v == '/' || v == '\\') {
            p[w++] = '/';
            i += 3;
        } else if (v >= 0) {
            memmove(p + w, p + i, 3);
            w += 3;
            i += 3;
        } else {
            p[w++] = p[i++];
        }
    }
    return w;
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
