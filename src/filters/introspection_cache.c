/*
 * introspection_cache.c — see introspection_cache.h.
 *
 * Each shard is a chained hash (the key is a SHA-256, so its first bytes
 * are already a good hash) plus an LRU list, behind one mutex. Entries
 * past every TTL stay until the LRU pushes them out or a lookup reuses
 * them: the bounds, not a sweeper, keep the table small.
 */
#include "filters/introspection_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SHARD_ENTRIES (PT_ICACHE_MAX_ENTRIES / PT_ICACHE_SHARDS)
#define SHARD_BYTES (PT_ICACHE_MAX_BYTES / PT_ICACHE_SHARDS)
#define SHARD_BUCKETS 512u /* power of two */

/* How the latest flight of an entry ended. */
enum outcome {
    OUT_NONE,
    OUT_OK,     /* an answer was stored (or was too big to keep) */
    OUT_FAILED, /* the IdP failed: its waiters fail too */
    OUT_LOST,   /* the leader went away: a waiter takes over */
};

struct entry {
    struct entry *hnext;         /* hash chain */
    struct entry *newer, *older; /* LRU list */
    uint8_t key[PT_ICACHE_KEY_LEN];
    bool has_answer, active;
    bool flying;                /* a flight is under way */
    enum outcome done;          /* how flight done_seq ended */
    uint64_t stored_ms, exp_ms; /* the answer's */
    uint64_t flight_seq, flight_start_ms;
    uint64_t done_seq;
    /* The answer's consumer and groups: u32 consumer length, u32 group
     * count, the consumer's bytes, then each group as u32 length + bytes. */
    char *blob;
    uint32_t blob_len;
};

struct shard {
    pthread_mutex_t mu;
    struct entry *buckets[SHARD_BUCKETS];
    struct entry *newest, *oldest;
    uint32_t count;
    size_t bytes;
};

static struct shard shards[PT_ICACHE_SHARDS];
static pthread_once_t shards_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t next_seq = 1;

static void shards_init(void)
{
    for (uint32_t i = 0; i < PT_ICACHE_SHARDS; i++)
        pthread_mutex_init(&shards[i].mu, NULL);
}

static uint64_t key_hash(const uint8_t *key)
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return h;
}

/* Locks and returns the key's shard; *bucket is the key's chain head. */
static struct shard *shard_lock(const uint8_t *key, struct entry ***bucket)
{
    pthread_once(&shards_once, shards_init);
    uint64_t h = key_hash(key);
    struct shard *s = &shards[h % PT_ICACHE_SHARDS];
    *bucket = &s->buckets[(h / PT_ICACHE_SHARDS) % SHARD_BUCKETS];
    pthread_mutex_lock(&s->mu);
    return s;
}

static struct entry *find(struct entry **bucket, const uint8_t *key)
{
    for (struct entry *e = *bucket; e; e = e->hnext)
        if (memcmp(e->key, key, PT_ICACHE_KEY_LEN) == 0)
            return e;
    return NULL;
}

/* ---- LRU ---- */

static void lru_unlink(struct shard *s, struct entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push(struct shard *s, struct entry *e)
{
    e->older = s->newest;
    e->newer = NULL;
    if (s->newest)
        s->newest->newer = e;
    s->newest = e;
    if (!s->oldest)
        s->oldest = e;
}

static void touch(struct shard *s, struct entry *e)
{
    if (s->newest != e) {
        lru_unlink(s, e);
        lru_push(s, e);
    }
}

static void entry_free(struct shard *s, struct entry *e)
{
    uint64_t h = key_hash(e->key);
    struct entry **pp = &s->buckets[(h / PT_ICACHE_SHARDS) % SHARD_BUCKETS];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    lru_unlink(s, e);
    s->count--;
    s->bytes -= sizeof(*e) + e->blob_len;
    free(e->blob);
    free(e);
}

/* Makes room for `extra` bytes and one entry: the least recently used
 * entries without a flight go first. Entries in flight are never evicted
 * (their waiters poll them); there are at most as many as requests. */
static void make_room(struct shard *s, size_t extra, struct entry *keep)
{
    struct entry *e = s->oldest;
    while (e && (s->count >= SHARD_ENTRIES || s->bytes + extra > SHARD_BYTES)) {
        struct entry *next = e->newer;
        if (!e->flying && e != keep)
            entry_free(s, e);
        e = next;
    }
}

static struct entry *entry_new(struct shard *s, struct entry **bucket, const uint8_t *key)
{
    make_room(s, sizeof(struct entry), NULL);
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    memcpy(e->key, key, PT_ICACHE_KEY_LEN);
    e->hnext = *bucket;
    *bucket = e;
    lru_push(s, e);
    s->count++;
    s->bytes += sizeof(*e);
    return e;
}

/* ---- answers in and out ---- */

static uint64_t fresh_until(const struct entry *e, const struct pt_icache_ttl *t)
{
    uint64_t until = e->stored_ms + (e->active ? t->positive_ms : t->negative_ms);
    if (e->active && e->exp_ms && e->exp_ms < until)
        until = e->exp_ms;
    return until;
}

static uint64_t stale_until(const struct entry *e, const struct pt_icache_ttl *t)
{
    uint64_t until = e->stored_ms + (e->active ? t->positive_ms : t->negative_ms) + t->stale_ms;
    if (e->active && e->exp_ms && e->exp_ms < until)
        until = e->exp_ms;
    return until;
}

static bool is_fresh(const struct entry *e, uint64_t now, const struct pt_icache_ttl *t)
{
    return e->has_answer && now < fresh_until(e, t);
}

static uint32_t get_u32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static void put_u32(char *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* Copies e's answer into the arena. false when out of memory. */
static bool copy_out(const struct entry *e, struct pt_arena *a, struct pt_icache_answer *out)
{
    *out = (struct pt_icache_answer){.active = e->active, .exp_ms = e->exp_ms};
    if (!e->active)
        return true;
    char *b = pt_arena_alloc(a, e->blob_len ? e->blob_len : 1);
    if (!b)
        return false;
    memcpy(b, e->blob, e->blob_len);
    uint32_t clen = get_u32(b), ng = get_u32(b + 4);
    size_t off = 8;
    out->consumer = (pt_slice){b + off, clen};
    off += clen;
    pt_slice *g = pt_arena_alloc(a, sizeof(*g) * (ng ? ng : 1));
    if (!g)
        return false;
    for (uint32_t i = 0; i < ng; i++) {
        uint32_t len = get_u32(b + off);
        g[i] = (pt_slice){b + off + 4, len};
        off += 4 + len;
    }
    out->groups = g;
    out->ngroups = ng;
    return true;
}

/* Packs an active answer; NULL when it is too big to keep or out of memory. */
static char *pack(const struct pt_icache_answer *ans, uint32_t *len)
{
    size_t n = 8 + ans->consumer.len;
    for (uint32_t i = 0; i < ans->ngroups; i++)
        n += 4 + ans->groups[i].len;
    if (n > PT_ICACHE_MAX_BLOB || ans->ngroups > PT_ICACHE_MAX_GROUPS)
        return NULL;
    char *b = malloc(n);
    if (!b)
        return NULL;
    put_u32(b, (uint32_t)ans->consumer.len);
    put_u32(b + 4, ans->ngroups);
    size_t off = 8;
    if (ans->consumer.len)
        memcpy(b + off, ans->consumer.p, ans->consumer.len);
    off += ans->consumer.len;
    for (uint32_t i = 0; i < ans->ngroups; i++) {
        put_u32(b + off, (uint32_t)ans->groups[i].len);
        if (ans->groups[i].len)
            memcpy(b + off + 4, ans->groups[i].p, ans->groups[i].len);
        off += 4 + ans->groups[i].len;
    }
    *len = (uint32_t)n;
    return b;
}

static void start_flight(struct entry *e, uint64_t now, uint64_t *seq)
{
    e->flying = true;
    e->flight_start_ms = now;
    e->flight_seq = atomic_fetch_add_explicit(&next_seq, 1, memory_order_relaxed);
    *seq = e->flight_seq;
}

/* ---- the API ---- */

/* lookup and await in one: `waiting` says *seq names a flight the caller
 * waits for. */
static enum pt_icache_result look(const uint8_t *key, uint64_t now, const struct pt_icache_ttl *t,
                                  struct pt_arena *a, struct pt_icache_answer *out, uint64_t *seq,
                                  bool waiting)
{
    struct entry **bucket;
    struct shard *s = shard_lock(key, &bucket);
    enum pt_icache_result r;
    struct entry *e = find(bucket, key);
    if (!e) {
        e = entry_new(s, bucket, key);
        if (!e) {
            r = PT_ICACHE_NOMEM;
            goto out;
        }
    }
    touch(s, e);
    if (is_fresh(e, now, t)) {
        r = copy_out(e, a, out) ? PT_ICACHE_HIT : PT_ICACHE_NOMEM;
    } else if (e->flying &&
               (now < e->flight_start_ms || now - e->flight_start_ms < t->flight_timeout_ms)) {
        /* A clock behind the leader's (another worker's loop) is still
         * within the flight: the unsigned difference would wrap. */
        *seq = e->flight_seq;
        r = PT_ICACHE_WAIT;
    } else if (waiting && e->done_seq == *seq && e->done == OUT_FAILED) {
        bool stale = e->has_answer && now < stale_until(e, t);
        r = stale ? copy_out(e, a, out) ? PT_ICACHE_STALE : PT_ICACHE_NOMEM : PT_ICACHE_FAILED;
    } else {
        /* Nothing fresh and nobody asking (or the last flight was lost):
         * this request asks. A timed-out flight's leader still reports,
         * but only for the sequence number it holds. */
        start_flight(e, now, seq);
        r = PT_ICACHE_LEAD;
    }
out:
    pthread_mutex_unlock(&s->mu);
    return r;
}

enum pt_icache_result pt_icache_lookup(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t now_ms,
                                       const struct pt_icache_ttl *ttl, struct pt_arena *a,
                                       struct pt_icache_answer *out, uint64_t *seq)
{
    return look(key, now_ms, ttl, a, out, seq, false);
}

enum pt_icache_result pt_icache_await(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t now_ms,
                                      const struct pt_icache_ttl *ttl, struct pt_arena *a,
                                      struct pt_icache_answer *out, uint64_t *seq)
{
    return look(key, now_ms, ttl, a, out, seq, true);
}

/* Ends flight `seq` of e (if it is still the one under way). */
static void end_flight(struct entry *e, uint64_t seq, enum outcome how)
{
    if (e->flying && e->flight_seq == seq) {
        e->flying = false;
        e->done = how;
        e->done_seq = seq;
    }
}

void pt_icache_store(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t seq, uint64_t now_ms,
                     const struct pt_icache_answer *ans)
{
    uint32_t blen = 0;
    /* Packed before the lock: the malloc is not the shard's business. */
    char *blob = ans->active ? pack(ans, &blen) : NULL;
    struct entry **bucket;
    struct shard *s = shard_lock(key, &bucket);
    struct entry *e = find(bucket, key);
    if (!e)
        e = entry_new(s, bucket, key); /* evicted meanwhile: keep the answer anyway */
    if (!e) {
        free(blob);
        goto out;
    }
    s->bytes -= e->blob_len;
    free(e->blob);
    e->blob = blob;
    e->blob_len = blen;
    s->bytes += blen;
    /* An active answer that could not be packed is not kept: the next
     * request asks again. */
    e->has_answer = !ans->active || blob;
    e->active = ans->active;
    e->stored_ms = now_ms;
    e->exp_ms = ans->exp_ms;
    end_flight(e, seq, OUT_OK);
    touch(s, e);
    if (s->bytes > SHARD_BYTES)
        make_room(s, 0, e);
out:
    pthread_mutex_unlock(&s->mu);
}

enum pt_icache_result pt_icache_fail(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t seq,
                                     uint64_t now_ms, const struct pt_icache_ttl *ttl,
                                     struct pt_arena *a, struct pt_icache_answer *out)
{
    struct entry **bucket;
    struct shard *s = shard_lock(key, &bucket);
    enum pt_icache_result r = PT_ICACHE_FAILED;
    struct entry *e = find(bucket, key);
    if (e) {
        end_flight(e, seq, OUT_FAILED);
        if (e->has_answer && now_ms < stale_until(e, ttl))
            r = copy_out(e, a, out) ? PT_ICACHE_STALE : PT_ICACHE_NOMEM;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

void pt_icache_abandon(const uint8_t key[PT_ICACHE_KEY_LEN], uint64_t seq)
{
    struct entry **bucket;
    struct shard *s = shard_lock(key, &bucket);
    struct entry *e = find(bucket, key);
    if (e)
        end_flight(e, seq, OUT_LOST);
    pthread_mutex_unlock(&s->mu);
}

void pt_icache_usage(uint64_t *entries, uint64_t *bytes)
{
    pthread_once(&shards_once, shards_init);
    *entries = 0;
    *bytes = 0;
    for (uint32_t i = 0; i < PT_ICACHE_SHARDS; i++) {
        pthread_mutex_lock(&shards[i].mu);
        *entries += shards[i].count;
        *bytes += shards[i].bytes;
        pthread_mutex_unlock(&shards[i].mu);
    }
}

void pt_icache_clear(void)
{
    pthread_once(&shards_once, shards_init);
    for (uint32_t i = 0; i < PT_ICACHE_SHARDS; i++) {
        pthread_mutex_lock(&shards[i].mu);
        while (shards[i].oldest)
            entry_free(&shards[i], shards[i].oldest);
        pthread_mutex_unlock(&shards[i].mu);
    }
}
