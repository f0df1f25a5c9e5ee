/*
 * cache_store.c — the shared response cache's table (cache_store.h):
 * shards of hash chains with an LRU list and a byte budget each, entries
 * as immutable refcounted blobs, and the flights that coalesce misses.
 */
#include "filters/cache_store.h"

#include "core/siphash.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A key being fetched (LOADING) or recently found uncacheable (PASS). */
struct flight {
    struct flight *next;
    uint64_t hash;
    uint64_t seq;
    uint64_t until_ms; /* LOADING: taken over after; PASS: forgotten after */
    uint64_t waiters;  /* worker bits of the requests parked on it */
    bool pass;
    size_t klen;
    char key[]; /* klen bytes */
};

struct shard {
    pthread_mutex_t mu;
    struct pt_cache_entry **buckets;
    uint32_t nbuckets; /* power of two */
    struct pt_cache_entry *lru_head, *lru_tail;
    size_t bytes, budget;
    uint64_t entries;
    struct flight *flights;
    uint64_t inserts, evictions, purged;
    char pad[64];
};

struct pt_cache_store {
    _Atomic uint32_t refs;
    uint32_t nshards;
    _Atomic uint64_t max_bytes;
    _Atomic uint64_t seq;
    _Atomic uint64_t refreshes, refresh_failures;
    uint8_t hkey[16];
    struct shard *shards;
};

/* Fixed overhead charged per entry beyond its blob (chain, list, malloc). */
#define ENTRY_OVERHEAD 64u

struct pt_cache_store *pt_cache_store_new(uint64_t max_bytes, uint32_t nshards)
{
    if (nshards == 0)
        nshards = 1;
    struct pt_cache_store *s = calloc(1, sizeof(*s));
    struct shard *sh = s ? calloc(nshards, sizeof(*sh)) : NULL;
    if (!sh) {
        free(s);
        return NULL;
    }
    s->shards = sh;
    s->nshards = nshards;
    atomic_init(&s->max_bytes, max_bytes);
    atomic_init(&s->refs, 1);
    atomic_init(&s->seq, 1);
    atomic_init(&s->refreshes, 0);
    atomic_init(&s->refresh_failures, 0);
    uint64_t r0 = pt_mix64((uint64_t)(uintptr_t)s ^ pt_now_ns());
    uint64_t r1 = pt_mix64(r0 ^ 0x9e3779b97f4a7c15ull);
    memcpy(s->hkey, &r0, 8);
    memcpy(s->hkey + 8, &r1, 8);
    for (uint32_t i = 0; i < nshards; i++) {
        pthread_mutex_init(&sh[i].mu, NULL);
        sh[i].budget = (size_t)(max_bytes / nshards);
        /* about one bucket per 4 KiB of budget: chains stay short for
         * typical API objects; at least 16 */
        uint32_t nb = 16;
        while (nb < (1u << 20) && (uint64_t)nb * 4096 < sh[i].budget)
            nb <<= 1;
        sh[i].nbuckets = nb;
        sh[i].buckets = calloc(nb, sizeof(*sh[i].buckets));
        if (!sh[i].buckets) {
            s->nshards = i + 1;
            pt_cache_store_unref(s);
            return NULL;
        }
    }
    return s;
}

void pt_cache_store_ref(struct pt_cache_store *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void entry_free(struct pt_cache_entry *e)
{
    free(e);
}

void pt_cache_store_unref(struct pt_cache_store *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < s->nshards; i++) {
        struct shard *sh = &s->shards[i];
        for (struct pt_cache_entry *e = sh->lru_head, *n; e; e = n) {
            n = e->lnext;
            e->linked = false;
            pt_cache_entry_unref(s, e);
        }
        for (struct flight *f = sh->flights, *n; f; f = n) {
            n = f->next;
            free(f);
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->mu);
    }
    free(s->shards);
    free(s);
}

uint64_t pt_cache_store_max_bytes(struct pt_cache_store *s)
{
    return atomic_load(&s->max_bytes);
}

void pt_cache_store_stats(struct pt_cache_store *s, struct pt_cache_stats *out)
{
    *out = (struct pt_cache_stats){.max_bytes = atomic_load(&s->max_bytes),
                                   .shards = s->nshards,
                                   .refreshes = atomic_load(&s->refreshes),
                                   .refresh_failures = atomic_load(&s->refresh_failures)};
    for (uint32_t i = 0; i < s->nshards; i++) {
        struct shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        out->entries += sh->entries;
        out->bytes += sh->bytes;
        out->inserts += sh->inserts;
        out->evictions += sh->evictions;
        out->purged += sh->purged;
        pthread_mutex_unlock(&sh->mu);
    }
}

void pt_cache_store_count_refresh(struct pt_cache_store *s, bool failed)
{
    atomic_fetch_add_explicit(failed ? &s->refresh_failures : &s->refreshes, 1,
                              memory_order_relaxed);
}

uint64_t pt_cache_hash(const struct pt_cache_store *s, pt_slice key)
{
    return pt_siphash24(s->hkey, key.p, key.len);
}

void pt_cache_entry_ref(struct pt_cache_entry *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

void pt_cache_entry_unref(struct pt_cache_store *s, struct pt_cache_entry *e)
{
    (void)s;
    if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        entry_free(e);
}

bool pt_cache_entry_fresh(const struct pt_cache_entry *e, uint64_t now_ms)
{
    uint64_t age_ms = e->age0_s * 1000 + (now_ms > e->stored_ms ? now_ms - e->stored_ms : 0);
    return age_ms < e->fresh_ms;
}

uint64_t pt_cache_entry_age_s(const struct pt_cache_entry *e, uint64_t now_ms)
{
    return e->age0_s + (now_ms > e->stored_ms ? now_ms - e->stored_ms : 0) / 1000;
}

/* ---- under the shard lock ---- */

static struct shard *shard_of(struct pt_cache_store *s, uint64_t hash)
{
    return &s->shards[(hash >> 32) % s->nshards];
}

static struct pt_cache_entry **bucket(struct shard *sh, uint64_t hash)
{
    return &sh->buckets[hash & (sh->nbuckets - 1)];
}

static void lru_unlink(struct shard *sh, struct pt_cache_entry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        sh->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        sh->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_front(struct shard *sh, struct pt_cache_entry *e)
{
    e->lprev = NULL;
    e->lnext = sh->lru_head;
    if (sh->lru_head)
        sh->lru_head->lprev = e;
    sh->lru_head = e;
    if (!sh->lru_tail)
        sh->lru_tail = e;
}

/* Takes e out of the table; returns it when the table's reference was the
 * last (the caller frees it after unlocking), else NULL. */
static struct pt_cache_entry *unlink_entry(struct shard *sh, struct pt_cache_entry *e)
{
    struct pt_cache_entry **pp = bucket(sh, e->hash);
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    lru_unlink(sh, e);
    e->linked = false;
    sh->bytes -= e->size;
    sh->entries--;
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        return e;
    return NULL;
}

/* Evicts from the LRU tail until the shard fits its budget (under the
 * lock); the entries whose last reference went are chained on hnext. */
static struct pt_cache_entry *shrink(struct shard *sh, size_t need)
{
    struct pt_cache_entry *dead = NULL;
    while (sh->bytes + need > sh->budget && sh->lru_tail) {
        struct pt_cache_entry *d = unlink_entry(sh, sh->lru_tail);
        sh->evictions++;
        if (d) {
            d->hnext = dead;
            dead = d;
        }
    }
    return dead;
}

void pt_cache_store_resize(struct pt_cache_store *s, uint64_t max_bytes)
{
    atomic_store(&s->max_bytes, max_bytes);
    for (uint32_t i = 0; i < s->nshards; i++) {
        struct shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        sh->budget = (size_t)(max_bytes / s->nshards);
        struct pt_cache_entry *dead = shrink(sh, 0);
        pthread_mutex_unlock(&sh->mu);
        for (struct pt_cache_entry *n; dead; dead = n) {
            n = dead->hnext;
            entry_free(dead);
        }
    }
}

uint32_t pt_cache_store_shards(const struct pt_cache_store *s)
{
    return s->nshards;
}

static bool vary_match(const struct pt_cache_entry *e, pt_cache_field_fn field, void *ud)
{
    for (uint32_t i = 0; i < e->nvary; i++) {
        pt_slice v = field ? field(ud, e->vary_names[i]) : (pt_slice){"", 0};
        if (!pt_slice_eq(v, e->vary_values[i]))
            return false;
    }
    return true;
}

static struct flight *find_flight(struct shard *sh, uint64_t hash, pt_slice key,
                                  struct flight ***where)
{
    struct flight **pp = &sh->flights;
    for (; *pp; pp = &(*pp)->next) {
        struct flight *f = *pp;
        if (f->hash == hash && f->klen == key.len && memcmp(f->key, key.p, key.len) == 0) {
            if (where)
                *where = pp;
            return f;
        }
    }
    return NULL;
}

static enum pt_cache_flight claim_flight(struct pt_cache_store *s, struct shard *sh, uint64_t hash,
                                         pt_slice key, uint64_t now_ms, uint64_t lock_timeout_ms,
                                         uint64_t *seq, uint64_t wait_bit)
{
    struct flight **where = NULL;
    struct flight *f = find_flight(sh, hash, key, &where);
    if (f && now_ms >= f->until_ms) {
        /* lost (its leader never ended it in time) or an old PASS mark */
        *where = f->next;
        free(f);
        f = NULL;
    }
    if (f) {
        if (f->pass)
            return PT_CACHE_PASS;
        if (*seq && *seq != f->seq)
            return PT_CACHE_NONE; /* the flight we waited on ended; a new one runs */
        *seq = f->seq;
        f->waiters |= wait_bit;
        return PT_CACHE_WAIT;
    }
    if (*seq)
        return PT_CACHE_NONE; /* ours ended without an entry: go upstream */
    f = malloc(sizeof(*f) + key.len);
    if (!f)
        return PT_CACHE_NONE;
    f->hash = hash;
    f->seq = atomic_fetch_add_explicit(&s->seq, 1, memory_order_relaxed);
    f->until_ms = now_ms + lock_timeout_ms;
    f->waiters = 0;
    f->pass = false;
    f->klen = key.len;
    memcpy(f->key, key.p, key.len);
    f->next = sh->flights;
    sh->flights = f;
    *seq = f->seq;
    return PT_CACHE_LEAD;
}

struct pt_cache_entry *pt_cache_lookup(struct pt_cache_store *s, uint64_t hash, pt_slice key,
                                       pt_cache_field_fn field, void *ud, uint64_t now_ms,
                                       bool claim, uint64_t lock_timeout_ms,
                                       enum pt_cache_flight *flight, uint64_t *seq,
                                       uint64_t wait_bit)
{
    struct shard *sh = shard_of(s, hash);
    struct pt_cache_entry *found = NULL;
    *flight = PT_CACHE_NONE;
    pthread_mutex_lock(&sh->mu);
    for (struct pt_cache_entry *e = *bucket(sh, hash); e; e = e->hnext) {
        if (e->hash == hash && pt_slice_eq(e->key, key) && vary_match(e, field, ud)) {
            found = e;
            break;
        }
    }
    if (found) {
        atomic_fetch_add_explicit(&found->refs, 1, memory_order_relaxed);
        lru_unlink(sh, found);
        lru_front(sh, found);
    }
    if (claim && (!found || !pt_cache_entry_fresh(found, now_ms)))
        *flight = claim_flight(s, sh, hash, key, now_ms, lock_timeout_ms, seq, wait_bit);
    pthread_mutex_unlock(&sh->mu);
    return found;
}

uint64_t pt_cache_flight_end(struct pt_cache_store *s, uint64_t hash, pt_slice key, uint64_t seq,
                             bool pass, uint64_t now_ms)
{
    struct shard *sh = shard_of(s, hash);
    uint64_t waiters = 0;
    pthread_mutex_lock(&sh->mu);
    struct flight **where = NULL;
    struct flight *f = find_flight(sh, hash, key, &where);
    if (f && f->seq == seq) {
        waiters = f->waiters;
        f->waiters = 0;
        if (pass) {
            f->pass = true;
            f->until_ms = now_ms + PT_CACHE_PASS_MS;
        } else {
            *where = f->next;
            free(f);
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return waiters;
}

/* ---- building an entry ---- */

static size_t put_size(const struct pt_cache_put *p)
{
    size_t n = sizeof(struct pt_cache_entry) + p->key.len + p->route.len + p->path.len +
               p->ctype.len + p->body_len + p->etag.len + p->last_modified.len;
    n += (size_t)(p->nfields + p->nvary) * 2 * sizeof(pt_slice);
    for (uint32_t i = 0; i < p->nfields; i++)
        n += p->names[i].len + p->values[i].len;
    for (uint32_t i = 0; i < p->nvary; i++)
        n += p->vary_names[i].len + p->vary_values[i].len;
    return n + 16;
}

static pt_slice put_bytes(char **at, pt_slice v)
{
    pt_slice out = {*at, v.len};
    if (v.len)
        memcpy(*at, v.p, v.len);
    *at += v.len;
    return out;
}

static struct pt_cache_entry *entry_build(const struct pt_cache_put *p, uint64_t hash, size_t size)
{
    struct pt_cache_entry *e = malloc(size);
    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    pt_slice *arr = (pt_slice *)(void *)(e + 1);
    pt_slice *names = arr, *values = arr + p->nfields;
    pt_slice *vn = values + p->nfields, *vv = vn + p->nvary;
    char *at = (char *)(vv + p->nvary);
    e->key = put_bytes(&at, p->key);
    e->route = put_bytes(&at, p->route);
    e->path = put_bytes(&at, p->path);
    e->ctype = put_bytes(&at, p->ctype);
    e->etag = put_bytes(&at, p->etag);
    e->last_modified = put_bytes(&at, p->last_modified);
    for (uint32_t i = 0; i < p->nfields; i++) {
        names[i] = put_bytes(&at, p->names[i]);
        values[i] = put_bytes(&at, p->values[i]);
    }
    for (uint32_t i = 0; i < p->nvary; i++) {
        vn[i] = put_bytes(&at, p->vary_names[i]);
        vv[i] = put_bytes(&at, p->vary_values[i]);
    }
    char *body = at;
    for (uint32_t i = 0; i < p->nbody; i++)
        put_bytes(&at, p->body[i]);
    e->body = (pt_slice){body, (size_t)(at - body)};
    e->names = names;
    e->values = values;
    e->nfields = p->nfields;
    e->vary_names = vn;
    e->vary_values = vv;
    e->nvary = p->nvary;
    e->status = p->status;
    e->stored_ms = p->now_ms;
    e->age0_s = p->age0_s;
    e->fresh_ms = p->fresh_ms;
    e->swr_ms = p->swr_ms;
    e->sie_ms = p->sie_ms;
    e->hash = hash;
    e->size = size + ENTRY_OVERHEAD;
    atomic_init(&e->refs, 1); /* the table's */
    return e;
}

/* Whether a and b are the same variant (same Vary names and values). */
static bool same_variant(const struct pt_cache_entry *a, const struct pt_cache_entry *b)
{
    if (a->nvary != b->nvary)
        return false;
    for (uint32_t i = 0; i < a->nvary; i++)
        if (!pt_slice_ieq(a->vary_names[i], b->vary_names[i]) ||
            !pt_slice_eq(a->vary_values[i], b->vary_values[i]))
            return false;
    return true;
}

int pt_cache_insert(struct pt_cache_store *s, uint64_t hash, const struct pt_cache_put *p)
{
    struct shard *sh = shard_of(s, hash);
    size_t size = put_size(p);
    pthread_mutex_lock(&sh->mu);
    size_t budget = sh->budget; /* a reload may resize it */
    pthread_mutex_unlock(&sh->mu);
    if (size + ENTRY_OVERHEAD > budget)
        return -E2BIG;
    /* the copy happens before the lock */
    struct pt_cache_entry *e = entry_build(p, hash, size);
    if (!e)
        return -ENOMEM;
    struct pt_cache_entry *dead[16];
    uint32_t ndead = 0;
    struct pt_cache_entry *overflow = NULL; /* more than dead[] holds: chained on hnext */
    pthread_mutex_lock(&sh->mu);
    e->shard = (uint32_t)(sh - s->shards);
    for (struct pt_cache_entry *o = *bucket(sh, hash), *n; o; o = n) {
        n = o->hnext;
        if (o->hash == hash && pt_slice_eq(o->key, e->key) && same_variant(o, e)) {
            struct pt_cache_entry *d = unlink_entry(sh, o);
            if (d && ndead < PT_ARRAY_LEN(dead))
                dead[ndead++] = d;
            else if (d) {
                d->hnext = overflow;
                overflow = d;
            }
        }
    }
    for (struct pt_cache_entry *d = shrink(sh, e->size), *n; d; d = n) {
        n = d->hnext;
        if (ndead < PT_ARRAY_LEN(dead))
            dead[ndead++] = d;
        else {
            d->hnext = overflow;
            overflow = d;
        }
    }
    struct pt_cache_entry **b = bucket(sh, hash);
    e->hnext = *b;
    *b = e;
    lru_front(sh, e);
    e->linked = true;
    sh->bytes += e->size;
    sh->entries++;
    sh->inserts++;
    pthread_mutex_unlock(&sh->mu);
    for (uint32_t i = 0; i < ndead; i++)
        entry_free(dead[i]);
    for (struct pt_cache_entry *n; overflow; overflow = n) {
        n = overflow->hnext;
        entry_free(overflow);
    }
    return 0;
}

static bool purge_match(const struct pt_cache_entry *e, const char *route, const char *prefix)
{
    if (route && !pt_slice_eq_cstr(e->route, route))
        return false;
    if (prefix) {
        size_t n = strlen(prefix);
        if (e->path.len < n || memcmp(e->path.p, prefix, n) != 0)
            return false;
    }
    return true;
}

uint64_t pt_cache_purge(struct pt_cache_store *s, const char *route, const char *prefix)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < s->nshards; i++) {
        struct shard *sh = &s->shards[i];
        struct pt_cache_entry *dead = NULL;
        pthread_mutex_lock(&sh->mu);
        for (struct pt_cache_entry *e = sh->lru_head, *next; e; e = next) {
            next = e->lnext;
            if (!purge_match(e, route, prefix))
                continue;
            struct pt_cache_entry *d = unlink_entry(sh, e);
            sh->purged++;
            n++;
            if (d) {
                d->hnext = dead;
                dead = d;
            }
        }
        pthread_mutex_unlock(&sh->mu);
        for (struct pt_cache_entry *next; dead; dead = next) {
            next = dead->hnext;
            entry_free(dead);
        }
    }
    return n;
}
