/*
 * cidr.h — IPv4/IPv6 address ranges ("10.0.0.0/8", "2001:db8::/32", or a
 * bare address: one host), for the lists of peers a listener or a rule
 * trusts. Pure: no allocation.
 */
#ifndef PT_CORE_CIDR_H
#define PT_CORE_CIDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct pt_cidr {
    uint8_t family;   /* AF_INET or AF_INET6 */
    uint8_t bits;     /* prefix length: ≤ 32 or ≤ 128 */
    uint8_t addr[16]; /* network bytes; host bits are zero */
};

/* Parses "ADDR" or "ADDR/BITS" (NUL-terminated). 0, or -EINVAL with a
 * reason in *why: a bad address, a bad prefix length, or host bits set
 * ("10.0.0.1/8" is a typo for a host or for 10.0.0.0/8: refused). */
int pt_cidr_parse(const char *s, struct pt_cidr *out, const char **why);

/* Is the address in the range? An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) matches IPv4 ranges. */
bool pt_cidr_match(const struct pt_cidr *c, const struct sockaddr_storage *a);
/* Any of n ranges. */
bool pt_cidr_match_any(const struct pt_cidr *c, uint32_t n, const struct sockaddr_storage *a);

#endif
