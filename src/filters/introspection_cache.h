/*
 * introspection_cache.h — the introspection filter's answers, shared by
 * every worker (DESIGN.md §6), with one IdP call in flight per token.
 *
 * An entry is keyed by a 32-byte SHA-256 (of the filter's namespace and the
 * token: never the token's text) and holds the last answer the IdP gave
 * (active with a consumer and groups, or inactive), when it was stored and
 * the token's own expiry, plus the state of the call in flight for it, if
 * any. Freshness is decided at lookup time with the caller's TTLs, so a
 * reload that changes cache_ttl applies to answers already stored.
 *
 * Single flight: the first request that misses becomes the leader (it
 * calls the IdP and reports with pt_icache_store / pt_icache_fail /
 * pt_icache_abandon); every other request for that token meanwhile gets
 * PT_ICACHE_WAIT and polls pt_icache_await with the flight's sequence
 * number until the leader reports.
 *
 * Threads: any worker, any time. The process-wide table is split into
 * shards, each behind its own mutex, held only for a hash-chain walk and a
 * copy of at most PT_ICACHE_MAX_BLOB bytes: never across a call, a
 * syscall or a log line.
 *
 * Ownership: entries are malloc'd and freed by this module alone, inside
 * their shard's lock; nothing points into them from outside. Answers are
 * copied out into the caller's arena. The table lives for the process
 * (it outlives generations, so a reload keeps what it learnt), bounded by
 * PT_ICACHE_MAX_ENTRIES entries and PT_ICACHE_MAX_BYTES bytes, least
 * recently used first out.
 */
#ifndef PT_FILTERS_INTROSPECTION_CACHE_H
#define PT_FILTERS_INTROSPECTION_CACHE_H

#include "core/arena.h"
#include "core/common.h"

#define PT_ICACHE_KEY_LEN 32
#define PT_ICACHE_SHARDS 64u
#define PT_ICACHE_MAX_ENTRIES 65536u            /* whole table */
#define PT_ICACHE_MAX_BYTES (16u * 1024 * 1024) /* whole table, entries included */
#define PT_ICACHE_MAX_BLOB 4096u                /* an answer bigger than this is not kept */
#define PT_ICACHE_MAX_GROUPS 64u

/* An IdP's answer about one token. Slices live in the caller's arena (a
 * lookup's copy) or wherever the caller keeps them (a store). */
struct pt_icache_answer {
    bool active;
    pt_slice consumer;
    const pt_slice *groups;
    uint32_t ngroups;
    uint64_t exp_ms; /* the token's `exp` on the loop clock; 0 = none */
};

/* How long answers count, from the filter's config. */
struct pt_icache_ttl {
    uint64_t positive_ms;       /* cache_ttl (also bounded by exp) */
    uint64_t negative_ms;       /* negative_cache_ttl */
    uint64_t stale_ms;          /* stale_if_error: served past the TTL only when the IdP fails */
    uint64_t flight_timeout_ms; /* a flight older than this is taken as lost */
};

enum pt_icache_result {
    PT_ICACHE_HIT,    /* a fresh answer was copied to *out */
    PT_ICACHE_LEAD,   /* the caller now leads a flight (*seq): call the IdP, then report */
    PT_ICACHE_WAIT,   /* another request's flight (*seq) is under way: poll pt_icache_await */
    PT_ICACHE_STALE,  /* the flight failed; an answer past its TTL but within stale_ms is in *out */
    PT_ICACHE_FAILED, /* the flight failed and there is no usable answer */
    PT_ICACHE_NOMEM,  /* out of memory (table or arena): treat as an IdP failure */
};

/* Looks the token up: HIT, LEAD or WAIT (or NOMEM). */
enum pt_icache_result pt_icache_lookup(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t now_ms,
                                       const struct pt_icache_ttl *ttl, struct pt_arena *a,
                                       struct pt_icache_answer *out, uint64_t *seq);

/* A waiter's poll on flight *seq: WAIT while it is under way; HIT when it
 * succeeded; STALE or FAILED when it failed; LEAD when it was lost (its
 * leader went away, or the entry was evicted) and the caller now leads a
 * new flight, *seq updated. */
enum pt_icache_result pt_icache_await(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t now_ms,
                                      const struct pt_icache_ttl *ttl, struct pt_arena *a,
                                      struct pt_icache_answer *out, uint64_t *seq);

/* The leader's report of an answer: stores it (when it fits) and ends the
 * flight. */
void pt_icache_store(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t seq, uint64_t now_ms,
                     const struct pt_icache_answer *ans);

/* The leader's report of a failed call: ends the flight as failed, so its
 * waiters fail too (no stampede on a failing IdP). STALE with the last
 * answer copied to *out when it is within ttl->stale_ms, else FAILED. */
enum pt_icache_result pt_icache_fail(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t seq,
                                     uint64_t now_ms, const struct pt_icache_ttl *ttl,
                                     struct pt_arena *a, struct pt_icache_answer *out);

/* The leader went away before an answer (its request was cancelled): one
 * of the waiters takes over. */
void pt_icache_abandon(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t seq);

/* Entries and bytes held now (tests, and later metrics). */
void pt_icache_usage(uint64_t *entries, uint64_t *bytes);
/* Drops every entry (tests). Flights under way lose their entry and their
 * waiters take over. */
void pt_icache_clear(void);

#endif
