/*
 * cidr.h — IP addresses and CIDR sets, parsed strictly and matched with no
 * allocation: the trusted proxies (`trusted_proxies`), the ip_restriction
 * filter's allow / deny lists, and whatever else keys on an address.
 *
 * An address is IPv4 or IPv6. An IPv4-mapped IPv6 address (::ffff:a.b.c.d,
 * what a dual-stack socket reports for an IPv4 peer) is read as the IPv4
 * address it carries, so `10.0.0.0/8` covers it and it is written as
 * `10.1.2.3`. A CIDR matches addresses of its own family only: `::/0` is
 * every IPv6 address, not every address.
 *
 * Ownership: plain values. A set borrows its array (the generation arena
 * for a config's sets).
 */
#ifndef PT_CORE_CIDR_H
#define PT_CORE_CIDR_H

#include "core/common.h"

/* Longest text pt_ip_format writes, with its NUL (INET6_ADDRSTRLEN). */
#define PT_IP_TEXT_MAX 46

struct pt_ip {
    uint8_t family; /* 4 or 6; 0: none */
    uint8_t b[16];  /* network order; IPv4 in b[0..3], the rest zero */
};

struct pt_cidr {
    struct pt_ip net; /* host bits zero */
    uint8_t bits;     /* prefix length: 0-32 (IPv4) or 0-128 (IPv6) */
};

struct pt_cidr_set {
    const struct pt_cidr *v;
    uint32_t n;
};

/* A plain address, as inet_pton reads it (no brackets, port, zone or
 * surrounding space; IPv4 in four decimal parts without leading zeros). */
bool pt_ip_parse(pt_slice s, struct pt_ip *out);
/* One X-Forwarded-For entry: optional whitespace around a plain address,
 * an IPv4 address with a port (`192.0.2.1:8080`), or a bracketed IPv6
 * address with or without one (`[2001:db8::1]`, `[2001:db8::1]:443`), as
 * some balancers write them. The port is checked (1-5 digits) and dropped. */
bool pt_ip_parse_hop(pt_slice s, struct pt_ip *out);
/* The address as text (inet_ntop's canonical form) into out; its length,
 * 0 when ip holds no address. */
size_t pt_ip_format(const struct pt_ip *ip, char out[PT_IP_TEXT_MAX]);

/* "10.0.0.0/8", "2001:db8::/32" or a plain address (a /32 or /128).
 * 0, or -1 with a static reason in *why ("host bits are set" when the
 * address has bits past the prefix: write the network). */
int pt_cidr_parse(const char *s, struct pt_cidr *out, const char **why);
bool pt_cidr_has(const struct pt_cidr *c, const struct pt_ip *ip);
/* A socket address's IP (an IPv4-mapped IPv6 address becomes IPv4, as
 * pt_ip_parse reads it); false for other families. */
struct sockaddr_storage;
bool pt_ip_from_sockaddr(const struct sockaddr_storage *sa, struct pt_ip *out);
/* Whether any CIDR of the set covers ip; false for an empty set or no
 * address. A linear scan: sets are written by hand and short. */
bool pt_cidr_set_has(const struct pt_cidr_set *set, const struct pt_ip *ip);

#endif
