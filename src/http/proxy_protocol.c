/*
 * proxy_protocol.c — PROXY protocol v1/v2 header parser (see the header
 * for the contract). The spec is HAProxy's "The PROXY protocol, Versions 1
 * & 2" (doc/proxy-protocol.txt).
 */
#include "http/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const char v2_sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* ---- v1 ---- */

/* A decimal port: 0..65535, no sign, no leading zero. */
static bool v1_port(const char *s, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* One address as inet_pton reads it (strict: dotted quad, or RFC 4291). */
static bool v1_addr(int af, const char *s, size_t n, struct sockaddr_storage *ss)
{
    char tmp[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    memset(ss, 0, sizeof(*ss));
    ss->ss_family = (sa_family_t)af;
    if (af == AF_INET)
        return inet_pton(AF_INET, tmp, &((struct sockaddr_in *)ss)->sin_addr) == 1;
    return inet_pton(AF_INET6, tmp, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* The fields of a complete line (without its CRLF): "PROXY" SP proto SP
 * src SP dst SP sport SP dport, each separated by exactly one space. */
static bool v1_fields(const char *p, size_t n, struct pt_pp_header *out)
{
    const char *f[6];
    size_t fl[6];
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != ' ')
            continue;
        if (k == 6)
            return false; /* too many fields */
        f[k] = p + start;
        fl[k++] = i - start;
        start = i + 1;
        if (k == 2 && fl[1] == 7 && memcmp(f[1], "UNKNOWN", 7) == 0) {
            /* Whatever follows UNKNOWN up to the CRLF is ignored. */
            out->version = 1;
            out->local = true;
            return true;
        }
    }
    if (k != 6 || fl[0] != 5 || memcmp(f[0], "PROXY", 5) != 0 || fl[1] != 4)
        return false;
    int af;
    if (memcmp(f[1], "TCP4", 4) == 0)
        af = AF_INET;
    else if (memcmp(f[1], "TCP6", 4) == 0)
        af = AF_INET6;
    else
        return false;
    uint16_t sport, dport;
    if (!v1_addr(af, f[2], fl[2], &out->src) || !v1_addr(af, f[3], fl[3], &out->dst) ||
        !v1_port(f[4], fl[4], &sport) || !v1_port(f[5], fl[5], &dport))
        return false;
    set_port(&out->src, sport);
    set_port(&out->dst, dport);
    out->version = 1;
    out->local = false;
    return true;
}

static int parse_v1(const char *buf, size_t len, struct pt_pp_header *out)
{
    static const char prefix[] = "PROXY ";
    size_t k = len < 6 ? len : 6;
    if (memcmp(buf, prefix, k) != 0)
        return PT_PP_ERROR;
    /* The CR of a valid line is at index PT_PP_V1_MAX - 2 at the latest. */
    for (size_t i = 0; i < len && i < PT_PP_V1_MAX - 1; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (ch == '\r') {
            if (i + 1 == len)
                return PT_PP_INCOMPLETE;
            if (buf[i + 1] != '\n')
                return PT_PP_ERROR;
            struct pt_pp_header h;
            if (!v1_fields(buf, i, &h))
                return PT_PP_ERROR;
            *out = h;
            return (int)(i + 2);
        }
        if (ch < 0x20 || ch > 0x7e)
            return PT_PP_ERROR; /* a bare LF, a control byte, binary */
    }
    return len >= PT_PP_V1_MAX - 1 ? PT_PP_ERROR : PT_PP_INCOMPLETE;
}

/* ---- v2 ---- */

/* The TLVs after the addresses must tile the rest of the block exactly: a
 * TLV whose length runs past the end means the header lies. */
static bool v2_tlvs_fit(const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (n < 3)
            return false;
        size_t l = ((size_t)p[1] << 8) | p[2];
        if (l > n - 3)
            return false;
        p += 3 + l;
        n -= 3 + l;
    }
    return true;
}

static int parse_v2(const char *buf, size_t len, struct pt_pp_header *out)
{
    const unsigned char *u = (const unsigned char *)buf;
    size_t k = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(buf, v2_sig, k) != 0)
        return PT_PP_ERROR;
    if (len > 12 && (u[12] >> 4) != 2)
        return PT_PP_ERROR; /* version */
    unsigned cmd = len > 12 ? (u[12] & 0x0f) : 0;
    if (cmd > 1)
        return PT_PP_ERROR; /* neither LOCAL (0) nor PROXY (1) */
    /* Under PROXY: UNSPEC, TCP over IPv4 / IPv6, or a UNIX stream. */
    if (len > 13 && cmd == 1 && u[13] != 0x00 && u[13] != 0x11 && u[13] != 0x21 && u[13] != 0x31)
        return PT_PP_ERROR;
    if (len < PT_PP_V2_HEAD)
        return PT_PP_INCOMPLETE;
    size_t body = ((size_t)u[14] << 8) | u[15];
    size_t need = 0;
    if (cmd == 1 && u[13] == 0x11)
        need = 12; /* 2 × 4-byte address, 2 × 2-byte port */
    else if (cmd == 1 && u[13] == 0x21)
        need = 36; /* 2 × 16-byte address, 2 × 2-byte port */
    else if (cmd == 1 && u[13] == 0x31)
        need = 216; /* 2 × 108-byte path */
    if (body < need)
        return PT_PP_ERROR; /* too short for its own family */
    if (len < PT_PP_V2_HEAD + body)
        return PT_PP_INCOMPLETE;
    const unsigned char *a = u + PT_PP_V2_HEAD;
    if (!v2_tlvs_fit(a + need, body - need) && cmd == 1)
        return PT_PP_ERROR;
    struct pt_pp_header h;
    memset(&h, 0, sizeof(h));
    h.version = 2;
    h.local = cmd == 0 || need == 0 || u[13] == 0x31;
    if (!h.local && u[13] == 0x11) {
        struct sockaddr_in *s = (struct sockaddr_in *)&h.src, *d = (struct sockaddr_in *)&h.dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
    } else if (!h.local) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h.src, *d = (struct sockaddr_in6 *)&h.dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&d->sin6_port, a + 34, 2);
    }
    *out = h;
    return (int)(PT_PP_V2_HEAD + body);
}

int pt_pp_parse(const char *buf, size_t len, struct pt_pp_header *out)
{
    if (len == 0)
        return PT_PP_INCOMPLETE;
    if (buf[0] == 'P')
        return parse_v1(buf, len, out);
    if (buf[0] == '\r')
        return parse_v2(buf, len, out);
    return PT_PP_ERROR;
}
