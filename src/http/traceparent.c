/*
 * traceparent.c — see traceparent.h.
 */
#include "http/traceparent.h"

#include <errno.h>
#include <string.h>

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1; /* uppercase too: the spec allows lowercase only */
}

/* n bytes from 2n lowercase hex chars; false on any other char. */
static bool hex_decode(const char *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

int pt_traceparent_parse(pt_slice v, struct pt_traceparent *out)
{
    uint8_t version;
    if (v.len < PT_TRACEPARENT_LEN || !hex_decode(v.p, &version, 1) || version == 0xff)
        return -EINVAL;
    /* Version 00 is exactly 55 bytes; a later version may append fields,
     * each after a `-`. */
    if (version == 0 ? v.len != PT_TRACEPARENT_LEN
                     : v.len > PT_TRACEPARENT_LEN && v.p[PT_TRACEPARENT_LEN] != '-')
        return -EINVAL;
    if (v.p[2] != '-' || v.p[35] != '-' || v.p[52] != '-')
        return -EINVAL;
    struct pt_traceparent t;
    if (!hex_decode(v.p + 3, t.trace_id, 16) || !hex_decode(v.p + 36, t.parent_id, 8) ||
        !hex_decode(v.p + 53, &t.flags, 1))
        return -EINVAL;
    if (all_zero(t.trace_id, 16) || all_zero(t.parent_id, 8))
        return -EINVAL;
    *out = t;
    return 0;
}

void pt_hex_encode(char *out, const uint8_t *in, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
}

void pt_traceparent_format(char out[PT_TRACEPARENT_LEN], const uint8_t trace_id[16],
                           const uint8_t span_id[8], uint8_t flags)
{
    out[0] = '0';
    out[1] = '0';
    out[2] = '-';
    pt_hex_encode(out + 3, trace_id, 16);
    out[35] = '-';
    pt_hex_encode(out + 36, span_id, 8);
    out[52] = '-';
    pt_hex_encode(out + 53, &flags, 1);
}
