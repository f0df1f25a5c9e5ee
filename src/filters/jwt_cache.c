/*
 * jwt_cache.c — see jwt_cache.h.
 */
#include "filters/jwt_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 16
/* A guess at an entry's typical size, to size the hash tables. */
#define TYPICAL_ENTRY 256

struct entry {
    struct entry *hnext;       /* bucket chain */
    struct entry *prev, *next; /* LRU: head is the most recent */
    uint8_t key[PT_JWT_CACHE_KEY];
    int64_t not_before, expire_at;
    uint32_t provider;
    uint64_t set_seq;
    size_t size; /* accounted bytes: this struct and the blob */
    size_t blob_len;
    char blob[];
};

struct shard {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t mask;
    struct entry *head, *tail;
    size_t bytes, budget, count;
};

struct pt_jwt_cache {
    struct shard shards[SHARDS];
};

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

struct pt_jwt_cache *pt_jwt_cache_new(size_t budget)
{
    struct pt_jwt_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    size_t nb = pow2_at_least(budget / SHARDS / TYPICAL_ENTRY);
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &c->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->buckets = calloc(nb, sizeof(*s->buckets));
        s->mask = nb - 1;
        s->budget = budget / SHARDS;
        if (!s->buckets) {
            for (int j = 0; j <= i; j++) {
                free(c->shards[j].buckets);
                pthread_mutex_destroy(&c->shards[j].mu);
            }
            free(c);
            return NULL;
        }
    }
    return c;
}

void pt_jwt_cache_free(void *cache)
{
    struct pt_jwt_cache *c = cache;
    if (!c)
        return;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &c->shards[i];
        for (struct entry *e = s->head, *n; e; e = n) {
            n = e->next;
            free(e);
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->mu);
    }
    free(c);
}

/* The key is a SHA-256: its bytes are already uniform. */
static struct shard *shard_of(struct pt_jwt_cache *c, const uint8_t *key)
{
    return &c->shards[key[0] % SHARDS];
}

static size_t bucket_of(const struct shard *s, const uint8_t *key)
{
    size_t h;
    memcpy(&h, key + 8, sizeof(h));
    return h & s->mask;
}

static struct entry **find_slot(struct shard *s, const uint8_t *key)
{
    struct entry **p = &s->buckets[bucket_of(s, key)];
    while (*p && memcmp((*p)->key, key, PT_JWT_CACHE_KEY) != 0)
        p = &(*p)->hnext;
    return p;
}

static void lru_unlink(struct shard *s, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct shard *s, struct entry *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head)
        s->head->prev = e;
    s->head = e;
    if (!s->tail)
        s->tail = e;
}

/* Unlinks e everywhere; the caller frees it (outside the lock). */
static void drop(struct shard *s, struct entry *e)
{
    struct entry **p = find_slot(s, e->key);
    if (*p == e)
        *p = e->hnext;
    lru_unlink(s, e);
    s->bytes -= e->size;
    s->count--;
}

bool pt_jwt_cache_get(struct pt_jwt_cache *c, const uint8_t key[PT_JWT_CACHE_KEY], int64_t now_s,
                      struct pt_arena *a, struct pt_jwt_cached *out)
{
    struct shard *s = shard_of(c, key);
    struct entry *dead = NULL;
    bool hit = false;
    pthread_mutex_lock(&s->mu);
    struct entry *e = *find_slot(s, key);
    if (e && now_s >= e->expire_at) {
        drop(s, e);
        dead = e;
    } else if (e) {
        char *blob = pt_arena_alloc(a, e->blob_len ? e->blob_len : 1);
        if (blob) {
            memcpy(blob, e->blob, e->blob_len);
            out->not_before = e->not_before;
            out->expire_at = e->expire_at;
            out->provider = e->provider;
            out->set_seq = e->set_seq;
            out->blob = (pt_slice){blob, e->blob_len};
            lru_unlink(s, e);
            lru_push(s, e);
            hit = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    free(dead);
    return hit;
}

void pt_jwt_cache_put(struct pt_jwt_cache *c, const uint8_t key[PT_JWT_CACHE_KEY],
                      const struct pt_jwt_cached *v)
{
    struct shard *s = shard_of(c, key);
    size_t size = sizeof(struct entry) + v->blob.len;
    if (size > s->budget)
        return;
    struct entry *e = malloc(size);
    if (!e)
        return;
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key, PT_JWT_CACHE_KEY);
    e->not_before = v->not_before;
    e->expire_at = v->expire_at;
    e->provider = v->provider;
    e->set_seq = v->set_seq;
    e->size = size;
    e->blob_len = v->blob.len;
    memcpy(e->blob, v->blob.p, v->blob.len);

    struct entry *evicted = NULL; /* freed after the lock, linked by hnext */
    pthread_mutex_lock(&s->mu);
    struct entry *old = *find_slot(s, key);
    if (old) {
        drop(s, old);
        old->hnext = evicted;
        evicted = old;
    }
    while (s->bytes + size > s->budget && s->tail) {
        struct entry *t = s->tail;
        drop(s, t);
        t->hnext = evicted;
        evicted = t;
    }
    struct entry **slot = find_slot(s, key);
    e->hnext = *slot;
    *slot = e;
    lru_push(s, e);
    s->bytes += size;
    s->count++;
    pthread_mutex_unlock(&s->mu);
    while (evicted) {
        struct entry *n = evicted->hnext;
        free(evicted);
        evicted = n;
    }
}

void pt_jwt_cache_usage(struct pt_jwt_cache *c, size_t *entries, size_t *bytes)
{
    *entries = *bytes = 0;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        *entries += s->count;
        *bytes += s->bytes;
        pthread_mutex_unlock(&s->mu);
    }
}
