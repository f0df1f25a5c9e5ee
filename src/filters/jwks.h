/*
 * jwks.h — where the jwt filter's keys come from, shared by every worker
 * (DESIGN.md §6): immutable key sets, and the sources that hold the
 * current one.
 *
 * A key set is built once (from a JWKS document or a secret) and never
 * changed; it is reference-counted. A source holds the current set of
 * one provider's keys:
 *
 *   - a remote source (jwks_uri) is shared by every generation and every
 *     worker that names the same URI, through a process-wide registry
 *     (refcounted: a generation takes a reference when its config is
 *     compiled on the control thread and gives it back when its arena is
 *     destroyed), so its keys and fetch bookkeeping survive reloads;
 *   - a static source (jwks_file, secret) belongs to one generation.
 *
 * Swapping a remote source's set: the worker whose fetch completed builds
 * the new set, then takes the source's mutex just to swap the pointer;
 * a reader takes the same mutex just to load the pointer and add a
 * reference (nanoseconds; never held across anything slow), verifies with
 * no lock held, and drops the reference. The old set is freed by
 * whichever thread drops its last reference (deferred free).
 *
 * Fetches run on the workers, through the request that needed them
 * (jwt.c). Single flight: pt_jwks_begin_fetch is one atomic exchange,
 * and at most one fetch per source is in flight across all workers;
 * everyone else watches done_seq. All times are the loops' monotonic ms.
 */
#ifndef PT_FILTERS_JWKS_H
#define PT_FILTERS_JWKS_H

#include "filters/jose.h"

#include <pthread.h>
#include <stdatomic.h>

/* JWKS lifetimes from Cache-Control max-age are bounded to this range. */
#define PT_JWKS_MIN_TTL_MS (5 * 60 * 1000ull)
#define PT_JWKS_MAX_TTL_MS (24 * 60 * 60 * 1000ull)
/* Unknown-kid refetches: at most one per this interval per source. */
#define PT_JWKS_KID_REFETCH_MS 30000ull
/* A fetch whose request went away is taken over by another request that
 * needs it, at most one take-over per this interval per source. */
#define PT_JWKS_TAKEOVER_MS 1000ull
/* A failed fetch is retried after this, doubled up to the max. */
#define PT_JWKS_RETRY_MIN_MS 5000ull
#define PT_JWKS_RETRY_MAX_MS (5 * 60 * 1000ull)
/* The largest JWKS document kept. */
#define PT_JWKS_MAX_BYTES (512 * 1024)

struct pt_jwks_set {
    _Atomic uint32_t refs;
    uint32_t n;
    struct pt_jwk keys[];
};

/* Parses a JWKS document ({"keys": [...]}). Keys that are not usable
 * (unsupported type, short RSA, bad point...) are skipped and counted in
 * *skipped; oct keys are skipped unless `allow_oct`. A set with no key at
 * all is an error. 0 with *out (one reference), or -1 with a reason. */
int pt_jwks_parse(const char *json, size_t len, bool allow_oct, struct pt_jwks_set **out,
                  uint32_t *skipped, char *err, size_t errlen);
/* A set holding one HMAC secret. NULL when out of memory. */
struct pt_jwks_set *pt_jwks_from_secret(const uint8_t *secret, size_t len);
void pt_jwks_set_unref(struct pt_jwks_set *s);

/*
 * The next key of s, from *i on, that may verify `alg` and matches `kid`:
 * kid NULL: any key compatible with alg; else the keys with exactly that
 * kid, or, when no key of s has it, the keys without a kid (never a key
 * with another kid). Advances *i past it. NULL when there is none left.
 */
const struct pt_jwk *pt_jwks_next(const struct pt_jwks_set *s, const char *kid, int alg,
                                  uint32_t *i);
/* Whether some key of s has exactly this kid. */
bool pt_jwks_has_kid(const struct pt_jwks_set *s, const char *kid);

struct pt_jwks_source {
    char *uri;                      /* NULL: a static source (jwks_file, secret) */
    pthread_mutex_t mu;             /* guards `set` (load + ref, or swap) only */
    struct pt_jwks_set *set;        /* current keys; NULL before the first fetch */
    _Atomic uint64_t set_seq;       /* +1 per set installed (cached verdicts name it) */
    _Atomic uint64_t done_seq;      /* +1 per fetch that ended, either way */
    atomic_bool fetching;           /* one fetch in flight (single flight) */
    atomic_bool lost;               /* the last flight's request went away */
    _Atomic uint64_t takeover_ms;   /* the last take-over of a lost flight; 0 never */
    _Atomic uint64_t refresh_at_ms; /* refresh ahead of expiry from then on */
    _Atomic uint64_t retry_at_ms;   /* after a failure: no fetch before then */
    _Atomic uint64_t kid_fetch_ms;  /* the last unknown-kid refetch's start; 0 never */
    _Atomic uint32_t failures;      /* consecutive failed fetches */
    _Atomic uint64_t fetches;       /* fetches ended, for logs */
    /* registry (remote sources only), under the registry's lock */
    uint32_t refs;
    struct pt_jwks_source *next;
};

/* The shared source for `uri`, created on first use; one reference.
 * Control thread (config compile). NULL when out of memory. */
struct pt_jwks_source *pt_jwks_source_get(const char *uri);
/* A static source owning `set` (its reference is taken over). */
struct pt_jwks_source *pt_jwks_source_static(struct pt_jwks_set *set);
/* Gives back a reference (remote) or frees (static); the type fits
 * pt_arena_defer. */
void pt_jwks_source_put(void *src);

/* The current set with a reference (NULL: none yet); release with
 * pt_jwks_set_unref. */
struct pt_jwks_set *pt_jwks_acquire(struct pt_jwks_source *src);

/* Why a fetch would be started now, or NONE. */
enum pt_jwks_need {
    PT_JWKS_NEED_NONE,
    PT_JWKS_NEED_FIRST,    /* no set yet (and not backing off) */
    PT_JWKS_NEED_KID,      /* unknown kid, and the 30 s budget allows */
    PT_JWKS_NEED_REFRESH,  /* the set is due for refresh (and not backing off) */
    PT_JWKS_NEED_TAKEOVER, /* a fetch it needs was lost: take it over */
};
/*
 * What a request needs from src once it tried the current set: `verified`
 * says whether its token verified, `unknown_kid` whether it names a kid
 * no key of the set has. A verified token needs only a due refresh; one
 * that did not verify needs the first set, a kid refetch (budget
 * allowing), the take-over of a lost fetch (no set or unknown kid), or a
 * due refresh (the IdP may have rotated keys without new kids).
 */
enum pt_jwks_need pt_jwks_need(struct pt_jwks_source *src, bool unknown_kid, bool verified,
                               uint64_t now_ms);

/* Claims the single flight: true for exactly one caller until
 * pt_jwks_end_fetch / pt_jwks_abort_fetch. For NEED_KID it also spends
 * the 30 s budget; NEED_TAKEOVER spends none of it, but succeeds only
 * while the last flight is lost and once per PT_JWKS_TAKEOVER_MS. */
bool pt_jwks_begin_fetch(struct pt_jwks_source *src, enum pt_jwks_need why, uint64_t now_ms);

/*
 * The fetch ended: status 200 with a JWKS body installs a new set with a
 * lifetime from Cache-Control (NULL: none); anything else keeps the last
 * good set and backs off. Wakes the watchers (done_seq). Returns 0 when a
 * set was installed, else -1 with a reason (no key material) in err.
 */
int pt_jwks_end_fetch(struct pt_jwks_source *src, uint64_t now_ms, int status, pt_slice body,
                      pt_slice cache_control, char *err, size_t errlen);
/* The fetch was cancelled (its request went away): releases the flight
 * without counting a failure and marks it lost, so that a request
 * needing it (a waiter, or the next one with an unknown kid) takes it
 * over without the kid budget, which stays spent. */
void pt_jwks_abort_fetch(struct pt_jwks_source *src);

/* The lifetime Cache-Control gives, in ms, bounded to [MIN, MAX]. */
uint64_t pt_jwks_ttl_ms(pt_slice cache_control);

#endif
