/*
 * resolver.h — host names of upstream targets and outbound URLs, resolved
 * with c-ares on the control thread (DESIGN.md §2: never on a worker,
 * never by a blocking call).
 *
 * The resolver keeps one entry per host name the running config needs
 * (`users.internal`, without the port): its last good answer (A and AAAA
 * records, sorted, so an answer that only reorders is no change), how
 * often to ask again (the smallest `resolve_every` of the upstreams naming
 * it) and whether a query is in flight. The config loader reads the
 * answers (pt_resolver_lookup) to expand each host-name target into one
 * target per address; the runtime re-runs the loader on the current
 * config's source when an answer changes (runtime.c), so a change takes
 * effect as a new generation, without a reload.
 *
 * Queries run on the control loop: c-ares's sockets are pt_io's on it
 * (ARES_OPT_SOCK_STATE_CB), its timeouts a pt_timer. The only wait is
 * pt_resolver_wait, bounded, for names the running config has never had
 * an answer for (start-up, a reload adding a name): it polls c-ares's
 * own sockets and nothing else.
 *
 * A failed query (timeout, SERVFAIL, refused, NXDOMAIN, no records) keeps
 * the last good answer: a DNS outage or a mistake in a zone never empties
 * an upstream. It is logged at the first failure and at the recovery.
 *
 * Ownership: the resolver is the runtime's; answers are copied into the
 * generation by the loader, so nothing outside points into it. Control
 * thread only.
 */
#ifndef PT_CONTROL_RESOLVER_H
#define PT_CONTROL_RESOLVER_H

#include "core/loop.h"
#include "gateway/generation.h"

#include <netinet/in.h>

struct pt_resolver;

/* One resolved address (no port). */
struct pt_dns_addr {
    int family; /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } a;
};

/* Called (on the control loop) when some name's answer changed; the
 * runtime rebuilds the generation then. */
typedef void (*pt_resolver_changed_cb)(void *user);

struct pt_resolver *pt_resolver_new(struct pt_loop *loop, pt_resolver_changed_cb changed,
                                    void *user);
void pt_resolver_free(struct pt_resolver *r);

/* Takes the names generation g needs (its upstreams' and URL upstreams'
 * host-name targets), their intervals and g's `resolver` servers; names
 * no longer needed stop being asked for. Starts a query for every name
 * without an answer. Returns how many needed names have never had an
 * answer and have not failed yet (the ones worth waiting for; a name
 * whose last query with the same servers failed is asked again but not
 * waited for: its answer, when it comes, rebuilds like any change). */
uint32_t pt_resolver_sync(struct pt_resolver *r, const struct pt_generation *g);

/* Forgets the names the last pt_resolver_sync did not name, and their
 * answers. Call once the generation handed to that sync is the one
 * running (published, or the old one given again after a refused
 * reload): until then a refused reload may still need them. A name whose
 * query is in flight is forgotten when that query ends (c-ares still
 * holds it); naming it again in a sync before then keeps it. */
void pt_resolver_prune(struct pt_resolver *r);

/* How many names the resolver holds (needed ones, and forgotten ones
 * whose query is still in flight); for tests and diagnostics. */
uint32_t pt_resolver_names(const struct pt_resolver *r);

/* Runs c-ares alone (no other event) until no name is waiting for its
 * first answer (names that failed already are not waited for) or
 * `max_ms` passed; pt_resolver_take_change then says
 * whether to load again with the new answers. */
void pt_resolver_wait(struct pt_resolver *r, uint64_t max_ms);

/* True once, after an answer changed (clears the mark). */
bool pt_resolver_take_change(struct pt_resolver *r);

/* The last good answer for `host` (sorted); 0 when there is none. The
 * array stays valid until the next event on the resolver. r may be NULL
 * (validate: no names resolve). */
uint32_t pt_resolver_lookup(const struct pt_resolver *r, const char *host,
                            const struct pt_dns_addr **out);

/* ---- helpers (pure; unit-tested) ---- */

/* True when `host` is an IP literal (IPv4 dotted or IPv6 without
 * brackets). */
bool pt_dns_is_ip_literal(const char *host);

/* True when `host` is a syntactically valid DNS name: labels of 1-63
 * letters, digits and `-` (not first or last), `_` allowed (SRV-style
 * names some registries use), joined by dots, at most 253 characters, an
 * optional final dot. */
bool pt_dns_valid_name(const char *host);

/* One `resolver:` entry, "ADDR", "ADDR:PORT", "[V6]" or "[V6]:PORT" (port
 * 53 by default), normalised for c-ares's server list into `out`
 * ("127.0.0.1:5353", "[::1]:53"). 0, or -EINVAL with *why set. */
int pt_dns_server_entry(const char *s, char *out, size_t outlen, const char **why);

/* "a:port" / "[a]:port" for an address and port, into out. */
void pt_dns_format(const struct pt_dns_addr *a, uint16_t port, char *out, size_t outlen);

/* Fills a sockaddr from an address and port; returns its length. */
socklen_t pt_dns_sockaddr(const struct pt_dns_addr *a, uint16_t port, struct sockaddr_storage *ss);

#endif
