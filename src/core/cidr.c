/*
 * cidr.c — address ranges (see cidr.h).
 */
#include "core/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

int pt_cidr_parse(const char *s, struct pt_cidr *out, const char **why)
{
    char tmp[INET6_ADDRSTRLEN + 4];
    size_t n = strlen(s);
    *why = "not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)";
    if (n == 0 || n >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, s, n + 1);
    char *slash = strchr(tmp, '/');
    if (slash)
        *slash = 0;
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, tmp, out->addr) == 1) {
        out->family = AF_INET;
        out->bits = 32;
    } else if (inet_pton(AF_INET6, tmp, out->addr) == 1) {
        out->family = AF_INET6;
        out->bits = 128;
    } else {
        return -EINVAL;
    }
    if (slash) {
        const char *b = slash + 1;
        unsigned v = 0;
        size_t k = strlen(b);
        if (k == 0 || k > 3 || (k > 1 && b[0] == '0') || strspn(b, "0123456789") != k) {
            *why = "the prefix length after `/` must be a number (0-32 for IPv4, 0-128 for IPv6)";
            return -EINVAL;
        }
        for (size_t i = 0; i < k; i++)
            v = v * 10 + (unsigned)(b[i] - '0');
        if (v > out->bits) {
            *why = "the prefix length is longer than the address (at most 32 for IPv4, 128 for "
                   "IPv6)";
            return -EINVAL;
        }
        out->bits = (uint8_t)v;
    }
    unsigned len = out->family == AF_INET ? 4 : 16;
    for (unsigned i = 0; i < len; i++) {
        unsigned keep = out->bits >= (i + 1) * 8 ? 8 : out->bits > i * 8 ? out->bits - i * 8 : 0;
        uint8_t mask = keep ? (uint8_t)(0xff << (8 - keep)) : 0;
        if (out->addr[i] & ~mask) {
            *why = "the address has bits set past the prefix length (write the network "
                   "address, e.g. 10.0.0.0/8)";
            return -EINVAL;
        }
    }
    return 0;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

bool pt_cidr_match(const struct pt_cidr *c, const struct sockaddr_storage *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const uint8_t *bytes;
    int fam = a->ss_family;
    if (fam == AF_INET) {
        bytes = (const uint8_t *)&((const struct sockaddr_in *)a)->sin_addr;
    } else if (fam == AF_INET6) {
        bytes = ((const struct sockaddr_in6 *)a)->sin6_addr.s6_addr;
        if (c->family == AF_INET && memcmp(bytes, mapped, 12) == 0) {
            bytes += 12;
            fam = AF_INET;
        }
    } else {
        return false;
    }
    return fam == c->family && prefix_eq(bytes, c->addr, c->bits);
}

bool pt_cidr_match_any(const struct pt_cidr *c, uint32_t n, const struct sockaddr_storage *a)
{
    for (uint32_t i = 0; i < n; i++)
        if (pt_cidr_match(&c[i], a))
            return true;
    return false;
}
