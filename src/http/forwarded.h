/*
 * forwarded.h — who the client is, from the peer and X-Forwarded-For
 * (nginx's real_ip_recursive, Envoy's trusted hops).
 *
 * Only a trusted peer's X-Forwarded-For is read; an untrusted peer is the
 * client, whatever its headers say. From a trusted peer the entries are
 * walked from the right (the last field's last entry first, then towards
 * the first field's first), skipping trusted addresses: the first
 * untrusted one is the client. When every entry is trusted the left-most
 * is. A malformed entry stops the walk: the client is the last address
 * read before it (the peer itself when the right-most entry is bad), so a
 * client cannot smuggle an address past a garbage entry. Empty list
 * elements (`a,,b`, a trailing comma) are skipped, as list syntax allows.
 * Entries are read by pt_ip_parse_hop (core/cidr.h).
 *
 * Pure: reads the fields, allocates nothing.
 */
#ifndef PT_HTTP_FORWARDED_H
#define PT_HTTP_FORWARDED_H

#include "core/cidr.h"
#include "http/headers.h"

/* `ip` holds the peer's address on entry and the client's on return. */
void pt_forwarded_client(const struct pt_headers *h, const struct pt_cidr_set *trusted,
                         struct pt_ip *ip);

#endif
