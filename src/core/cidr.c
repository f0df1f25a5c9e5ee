/*
 * cidr.c — strict address parsing (inet_pton on a stack copy) and prefix
 * matching for cidr.h. Nothing here allocates.
 */
#include "core/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ::ffff:a.b.c.d is the IPv4 address a.b.c.d: one client, one key. */
static void unmap_v4(struct pt_ip *ip)
{
    if (memcmp(ip->b, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
        memmove(ip->b, ip->b + 12, 4);
        memset(ip->b + 4, 0, 12);
        ip->family = 4;
    }
}

bool pt_ip_parse(pt_slice s, struct pt_ip *out)
{
    char buf[PT_IP_TEXT_MAX];
    /* inet_pton reads up to a NUL: one inside would hide what follows. */
    if (s.len == 0 || s.len >= sizeof(buf) || memchr(s.p, '\0', s.len))
        return false;
    memcpy(buf, s.p, s.len);
    buf[s.len] = '\0';
    memset(out, 0, sizeof(*out));
    if (memchr(s.p, ':', s.len) == NULL) {
        if (inet_pton(AF_INET, buf, out->b) != 1)
            return false;
        out->family = 4;
        return true;
    }
    if (inet_pton(AF_INET6, buf, out->b) != 1)
        return false;
    out->family = 6;
    unmap_v4(out);
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* ":8080" — a colon and one to five digits, the whole of p[0..n). */
static bool is_port_suffix(const char *p, size_t n)
{
    if (n < 2 || n > 6 || p[0] != ':')
        return false;
    for (size_t i = 1; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    return true;
}

bool pt_ip_parse_hop(pt_slice s, struct pt_ip *out)
{
    while (s.len && is_ows(s.p[0]))
        s.p++, s.len--;
    while (s.len && is_ows(s.p[s.len - 1]))
        s.len--;
    if (s.len && s.p[0] == '[') {
        const char *close = memchr(s.p, ']', s.len);
        if (!close)
            return false;
        size_t inner = (size_t)(close - s.p) - 1, rest = s.len - inner - 2;
        if (rest && !is_port_suffix(close + 1, rest))
            return false;
        /* Brackets hold an IPv6 address only. */
        return memchr(s.p + 1, ':', inner) && pt_ip_parse((pt_slice){s.p + 1, inner}, out);
    }
    const char *colon = memchr(s.p, ':', s.len);
    if (colon && memchr(colon + 1, ':', s.len - (size_t)(colon - s.p) - 1) == NULL) {
        /* One colon: an IPv4 address and its port (IPv6 has two or more). */
        size_t host = (size_t)(colon - s.p);
        return is_port_suffix(colon, s.len - host) && pt_ip_parse((pt_slice){s.p, host}, out) &&
               out->family == 4;
    }
    return pt_ip_parse(s, out);
}

size_t pt_ip_format(const struct pt_ip *ip, char out[PT_IP_TEXT_MAX])
{
    out[0] = '\0';
    if (ip->family != 4 && ip->family != 6)
        return 0;
    if (!inet_ntop(ip->family == 4 ? AF_INET : AF_INET6, ip->b, out, PT_IP_TEXT_MAX))
        return 0;
    return strlen(out);
}

static unsigned family_bits(uint8_t family)
{
    return family == 4 ? 32 : 128;
}

/* Whether the first `bits` bits of a and b agree. */
static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return ((a[whole] ^ b[whole]) & mask) == 0;
}

int pt_cidr_parse(const char *s, struct pt_cidr *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    struct pt_ip ip;
    /* A mapped IPv6 form in a CIDR would change its prefix's meaning:
     * write IPv4 networks as IPv4. */
    if (!pt_ip_parse((pt_slice){s, alen}, &ip) ||
        (ip.family == 4 && memchr(s, ':', alen) != NULL)) {
        *why = "not an IP address (expected e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)";
        return -1;
    }
    unsigned max = family_bits(ip.family), bits = max;
    if (slash) {
        const char *d = slash + 1;
        size_t n = strlen(d);
        unsigned long v = 0;
        for (size_t i = 0; i < n; i++)
            v = (d[i] >= '0' && d[i] <= '9') ? v * 10 + (unsigned long)(d[i] - '0') : 1000;
        if (n == 0 || n > 3 || v > max || (n > 1 && d[0] == '0')) {
            *why = ip.family == 4 ? "the prefix length must be a number from 0 to 32"
                                  : "the prefix length must be a number from 0 to 128";
            return -1;
        }
        bits = (unsigned)v;
    }
    out->net.family = ip.family;
    out->bits = (uint8_t)bits;
    for (unsigned i = 0; i < max / 8; i++) {
        unsigned from = i * 8;
        uint8_t mask =
            from >= bits ? 0 : (bits - from >= 8 ? 0xff : (uint8_t)(0xff00u >> (bits - from)));
        out->net.b[i] = ip.b[i] & mask;
    }
    if (memcmp(out->net.b, ip.b, sizeof(ip.b)) != 0) {
        *why = "host bits are set past the prefix length";
        return -1;
    }
    return 0;
}

bool pt_cidr_has(const struct pt_cidr *c, const struct pt_ip *ip)
{
    return ip->family == c->net.family && prefix_eq(ip->b, c->net.b, c->bits);
}

bool pt_cidr_set_has(const struct pt_cidr_set *set, const struct pt_ip *ip)
{
    for (uint32_t i = 0; i < set->n; i++)
        if (pt_cidr_has(&set->v[i], ip))
            return true;
    return false;
}

bool pt_ip_from_sockaddr(const struct sockaddr_storage *sa, struct pt_ip *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->ss_family == AF_INET) {
        memcpy(out->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        out->family = 4;
        return true;
    }
    if (sa->ss_family != AF_INET6)
        return false;
    memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    out->family = 6;
    unmap_v4(out);
    return true;
}
