/*
 * cache_store.h — the shared response cache (DESIGN.md §6): one store for
 * every worker, outside generations, so a reload keeps what it holds.
 *
 * Layout: `shards` independent tables, each a hash chain array, an LRU
 * list and a byte budget of max_bytes / shards, behind its own mutex. A
 * key's shard is picked by its hash. The mutex is held only to walk a
 * chain, link or unlink an entry, or touch a flight: never across I/O,
 * a copy of a body, or a log line.
 *
 * Entries are immutable once inserted: one malloc'd blob holding the
 * status, the stored header fields, the body, the validators, the
 * response's Vary field names with the request's values for them, the
 * route name (purge by route) and the client's request path, before
 * strip_prefix / rewrite (purge by prefix).
 * They are reference-counted: the table holds one reference while the
 * entry is linked; a lookup hands out another, which the caller drops
 * with pt_cache_entry_unref once it has copied what it needs. Eviction
 * and purge unlink; the last reference frees.
 *
 * Variants: several entries may share one primary key (the request's
 * method class, route, host, client path, query, the configured vary_headers and the
 * consumer); they differ by the request values of the response's own Vary
 * fields. A lookup walks the chain and takes the first entry whose key and
 * Vary values match.
 *
 * Flights (request coalescing): per shard, a short list of the keys being
 * fetched. The first miss for a key claims it (LEAD) and must end the
 * flight with pt_cache_flight_end; others WAIT: their lookup registers
 * their worker's bit on the flight, they park (filter.h svc->park), and
 * pt_cache_flight_end hands the bits back so the caller wakes those
 * workers (svc->unpark); a woken waiter looks again. A flight
 * ended as uncacheable leaves a short PASS mark so that later misses for
 * that key go upstream at once, unserialised.
 *
 * Threads: any worker and the control thread (purge, stats), any time.
 * Clock: callers pass the loop clock (monotonic ms; every thread reads the
 * same CLOCK_MONOTONIC).
 */
#ifndef PT_FILTERS_CACHE_STORE_H
#define PT_FILTERS_CACHE_STORE_H

#include "core/common.h"

#include <stdatomic.h>

#define PT_CACHE_DEFAULT_MAX_BYTES (256ull << 20)
#define PT_CACHE_DEFAULT_SHARDS 64u
#define PT_CACHE_MAX_SHARDS 4096u
#define PT_CACHE_MIN_MAX_BYTES (64ull << 10) /* whole store */
#define PT_CACHE_MAX_FIELDS 64u              /* header fields kept per entry */
#define PT_CACHE_MAX_VARY 8u                 /* Vary field names per entry */
#define PT_CACHE_PASS_MS 5000u               /* hit-for-pass after an uncacheable answer */

struct pt_cache_store;

/* A stored response; every slice points into the entry itself. */
struct pt_cache_entry {
    /* ---- the store's (under the shard lock) ---- */
    struct pt_cache_entry *hnext;         /* hash chain */
    struct pt_cache_entry *lprev, *lnext; /* LRU, most recent first */
    _Atomic uint32_t refs;
    bool linked;
    uint32_t shard;
    uint64_t hash;
    size_t size; /* bytes charged to the shard */
    /* ---- immutable ---- */
    pt_slice key;   /* primary key bytes */
    pt_slice route; /* the route that stored it */
    pt_slice path;  /* the client's request path (before rewrites) */
    int status;
    uint32_t nfields;
    const pt_slice *names, *values; /* stored response fields */
    pt_slice ctype;                 /* Content-Type ("" when none) */
    pt_slice body;
    pt_slice etag, last_modified; /* validators ("" when none) */
    uint32_t nvary;
    const pt_slice *vary_names, *vary_values; /* the response's Vary, request values */
    uint64_t stored_ms;                       /* loop clock when stored (or last revalidated) */
    uint64_t age0_s;                          /* the response's age when stored (Age field) */
    uint64_t fresh_ms;                        /* freshness lifetime */
    uint64_t swr_ms;                          /* stale_while_revalidate window after it */
    uint64_t sie_ms;                          /* stale_if_error window after it */
};

/* What to store: slices anywhere (copied in). */
struct pt_cache_put {
    pt_slice key, route, path;
    int status;
    uint32_t nfields;
    const pt_slice *names, *values;
    pt_slice ctype;
    const pt_slice *body; /* body chunks, in order */
    uint32_t nbody;
    size_t body_len;
    pt_slice etag, last_modified;
    uint32_t nvary;
    const pt_slice *vary_names, *vary_values;
    uint64_t now_ms, age0_s, fresh_ms, swr_ms, sie_ms;
};

/* A request's value of a header field, for Vary matching (empty: absent). */
typedef pt_slice (*pt_cache_field_fn)(void *ud, pt_slice name);

enum pt_cache_flight {
    PT_CACHE_NONE = 0, /* no flight asked for, or none needed */
    PT_CACHE_LEAD,     /* this caller fetches: end it with pt_cache_flight_end */
    PT_CACHE_WAIT,     /* another request fetches: poll */
    PT_CACHE_PASS,     /* recently uncacheable: go upstream, no flight */
};

struct pt_cache_stats {
    uint64_t entries, bytes, max_bytes, shards;
    uint64_t inserts, evictions, purged;
    /* background refreshes (cache_refresh.c): started, and of those ended
     * without a new answer (failed, 5xx, timed out, cancelled) */
    uint64_t refreshes, refresh_failures;
};

struct pt_cache_store *pt_cache_store_new(uint64_t max_bytes, uint32_t shards);
void pt_cache_store_ref(struct pt_cache_store *s);
/* Drops a reference; the last one frees every entry (NULL: no-op). */
void pt_cache_store_unref(struct pt_cache_store *s);
uint64_t pt_cache_store_max_bytes(struct pt_cache_store *s);
/* A reload's new max_bytes (same shards): every shard's budget changes,
 * and shards over it evict from their LRU tail at once. */
void pt_cache_store_resize(struct pt_cache_store *s, uint64_t max_bytes);
uint32_t pt_cache_store_shards(const struct pt_cache_store *s);
void pt_cache_store_stats(struct pt_cache_store *s, struct pt_cache_stats *out);

uint64_t pt_cache_hash(const struct pt_cache_store *s, pt_slice key);
/* Counts a background refresh started / one that got no new answer. */
void pt_cache_store_count_refresh(struct pt_cache_store *s, bool failed);

/*
 * The entry for key whose Vary values match the request (a new reference,
 * or NULL), and, with `claim`, the key's flight state: when there is no
 * usable entry (none, or `want_fresh` and it is no longer fresh at now_ms)
 * and no flight, the caller becomes the LEAD (*seq its flight); a flight
 * older than lock_timeout_ms is taken over. *seq in: the flight the caller
 * waits on (0: none); with it set, WAIT means that flight still runs and
 * NONE that it ended. On WAIT, wait_bit (the caller's worker bit) is added
 * to the flight's waiters.
 */
struct pt_cache_entry *pt_cache_lookup(struct pt_cache_store *s, uint64_t hash, pt_slice key,
                                       pt_cache_field_fn field, void *ud, uint64_t now_ms,
                                       bool claim, uint64_t lock_timeout_ms,
                                       enum pt_cache_flight *flight, uint64_t *seq,
                                       uint64_t wait_bit);
/* Stores a response, replacing an entry with the same key and Vary values;
 * evicts least recently used entries of its shard to fit. 0, -E2BIG
 * (bigger than a shard's budget), -ENOMEM. */
int pt_cache_insert(struct pt_cache_store *s, uint64_t hash, const struct pt_cache_put *p);
/* Ends the caller's flight; `pass`: the answer was uncacheable, later
 * misses skip coalescing for PT_CACHE_PASS_MS. Returns the waiters'
 * worker bits (0: nobody waits), for the caller to wake. */
uint64_t pt_cache_flight_end(struct pt_cache_store *s, uint64_t hash, pt_slice key, uint64_t seq,
                             bool pass, uint64_t now_ms);
/* Unlinks every entry (route NULL and prefix NULL), or those of route,
 * or those whose path starts with prefix (both: both must hold). Returns
 * how many. */
uint64_t pt_cache_purge(struct pt_cache_store *s, const char *route, const char *prefix);

void pt_cache_entry_ref(struct pt_cache_entry *e); /* one more reference: the caller has one */
void pt_cache_entry_unref(struct pt_cache_store *s, struct pt_cache_entry *e);
/* Fresh at now_ms; age in seconds (RFC 9111 §4.2.3, simplified: the
 * stored Age plus the time resident). */
bool pt_cache_entry_fresh(const struct pt_cache_entry *e, uint64_t now_ms);
uint64_t pt_cache_entry_age_s(const struct pt_cache_entry *e, uint64_t now_ms);

#endif
