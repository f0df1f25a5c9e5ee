/*
 * jwks.c — see jwks.h. The registry of remote sources is a list under one
 * mutex, touched only when a generation is compiled or destroyed (control
 * thread), never per request.
 */
#include "filters/jwks.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pt_jwks_source *registry;

/* ---- key sets ---- */

static struct pt_jwks_set *set_new(uint32_t n)
{
    struct pt_jwks_set *s = calloc(1, sizeof(*s) + sizeof(s->keys[0]) * (n ? n : 1));
    if (s)
        atomic_init(&s->refs, 1);
    return s;
}

int pt_jwks_parse(const char *json, size_t len, bool allow_oct, struct pt_jwks_set **out,
                  uint32_t *skipped, char *err, size_t errlen)
{
    *out = NULL;
    *skipped = 0;
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *keys = json_object_get(doc, "keys");
    struct pt_jwks_set *s = NULL;
    int rc = -1;
    if (!json_is_array(keys)) {
        snprintf(err, errlen, "%s",
                 doc ? "not a JWKS (a JSON object with a `keys` array)" : "not valid JSON");
        goto out;
    }
    s = set_new((uint32_t)json_array_size(keys));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    size_t i;
    const json_t *k;
    json_array_foreach(keys, i, k)
    {
        char why[96];
        struct pt_jwk *key = &s->keys[s->n];
        if (pt_jwk_parse(k, key, why, sizeof(why)) < 0) {
            (*skipped)++;
            continue;
        }
        if (key->secret && !allow_oct) {
            pt_jwk_clear(key);
            (*skipped)++;
            continue;
        }
        s->n++;
    }
    if (s->n == 0) {
        snprintf(err, errlen, "no usable key (%u skipped)", *skipped);
        goto out;
    }
    *out = s;
    s = NULL;
    rc = 0;
out:
    if (s)
        pt_jwks_set_unref(s);
    json_decref(doc);
    return rc;
}

struct pt_jwks_set *pt_jwks_from_secret(const uint8_t *secret, size_t len)
{
    struct pt_jwks_set *s = set_new(1);
    if (!s)
        return NULL;
    if (pt_jwk_from_secret(secret, len, &s->keys[0]) < 0) {
        free(s);
        return NULL;
    }
    s->n = 1;
    return s;
}

void pt_jwks_set_unref(struct pt_jwks_set *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < s->n; i++)
        pt_jwk_clear(&s->keys[i]);
    free(s);
}

const struct pt_jwk *pt_jwks_next(const struct pt_jwks_set *s, const char *kid, int alg,
                                  uint32_t *i)
{
    if (alg < 0)
        return NULL;
    /* A kid no key has falls back to the keys without one (a secret, a
     * JWKS that names none), never to a key that names another. */
    bool exact = kid && pt_jwks_has_kid(s, kid);
    for (; s && *i < s->n; (*i)++) {
        const struct pt_jwk *k = &s->keys[*i];
        if (!(k->algs & PT_JOSE_BIT(alg)))
            continue;
        if (exact && (!k->kid || strcmp(k->kid, kid) != 0))
            continue;
        if (kid && !exact && k->kid)
            continue;
        (*i)++;
        return k;
    }
    return NULL;
}

bool pt_jwks_has_kid(const struct pt_jwks_set *s, const char *kid)
{
    for (uint32_t i = 0; s && kid && i < s->n; i++)
        if (s->keys[i].kid && strcmp(s->keys[i].kid, kid) == 0)
            return true;
    return false;
}

/* ---- sources ---- */

static struct pt_jwks_source *source_new(void)
{
    struct pt_jwks_source *src = calloc(1, sizeof(*src));
    if (src && pthread_mutex_init(&src->mu, NULL) != 0) {
        free(src);
        return NULL;
    }
    return src;
}

static void source_free(struct pt_jwks_source *src)
{
    pt_jwks_set_unref(src->set);
    pthread_mutex_destroy(&src->mu);
    free(src->uri);
    free(src);
}

struct pt_jwks_source *pt_jwks_source_get(const char *uri)
{
    pthread_mutex_lock(&registry_mu);
    struct pt_jwks_source *src = registry;
    while (src && strcmp(src->uri, uri) != 0)
        src = src->next;
    if (src) {
        src->refs++;
    } else if ((src = source_new())) {
        src->uri = strdup(uri);
        if (!src->uri) {
            source_free(src);
            src = NULL;
        } else {
            src->refs = 1;
            src->next = registry;
            registry = src;
        }
    }
    pthread_mutex_unlock(&registry_mu);
    return src;
}

struct pt_jwks_source *pt_jwks_source_static(struct pt_jwks_set *set)
{
    struct pt_jwks_source *src = source_new();
    if (!src)
        return NULL;
    src->set = set;
    atomic_store(&src->set_seq, 1);
    return src;
}

void pt_jwks_source_put(void *arg)
{
    struct pt_jwks_source *src = arg;
    if (!src)
        return;
    if (!src->uri) {
        source_free(src);
        return;
    }
    pthread_mutex_lock(&registry_mu);
    bool last = --src->refs == 0;
    if (last)
        for (struct pt_jwks_source **p = &registry; *p; p = &(*p)->next)
            if (*p == src) {
                *p = src->next;
                break;
            }
    pthread_mutex_unlock(&registry_mu);
    /* No generation names it any more, so no request can hold it: a
     * request pins its generation until it ends (DESIGN.md §3). */
    if (last)
        source_free(src);
}

struct pt_jwks_set *pt_jwks_acquire(struct pt_jwks_source *src)
{
    pthread_mutex_lock(&src->mu);
    struct pt_jwks_set *s = src->set;
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&src->mu);
    return s;
}

enum pt_jwks_need pt_jwks_need(struct pt_jwks_source *src, bool unknown_kid, bool verified,
                               uint64_t now_ms)
{
    if (!src->uri)
        return PT_JWKS_NEED_NONE;
    bool backing_off = now_ms < atomic_load_explicit(&src->retry_at_ms, memory_order_relaxed);
    bool lost = atomic_load_explicit(&src->lost, memory_order_acquire);
    if (atomic_load_explicit(&src->set_seq, memory_order_acquire) == 0)
        return lost ? PT_JWKS_NEED_TAKEOVER : backing_off ? PT_JWKS_NEED_NONE : PT_JWKS_NEED_FIRST;
    bool due =
        !backing_off && now_ms >= atomic_load_explicit(&src->refresh_at_ms, memory_order_relaxed);
    if (verified)
        return due ? PT_JWKS_NEED_REFRESH : PT_JWKS_NEED_NONE;
    if (unknown_kid) {
        uint64_t last = atomic_load_explicit(&src->kid_fetch_ms, memory_order_relaxed);
        if (!last || now_ms >= last + PT_JWKS_KID_REFETCH_MS)
            return PT_JWKS_NEED_KID;
        if (lost)
            return PT_JWKS_NEED_TAKEOVER;
    }
    return due ? PT_JWKS_NEED_REFRESH : PT_JWKS_NEED_NONE;
}

static bool takeover_allowed(struct pt_jwks_source *src, uint64_t now_ms)
{
    uint64_t last = atomic_load_explicit(&src->takeover_ms, memory_order_relaxed);
    if (!atomic_load_explicit(&src->lost, memory_order_acquire) ||
        (last && now_ms < last + PT_JWKS_TAKEOVER_MS))
        return false;
    atomic_store_explicit(&src->takeover_ms, now_ms ? now_ms : 1, memory_order_relaxed);
    return true;
}

bool pt_jwks_begin_fetch(struct pt_jwks_source *src, enum pt_jwks_need why, uint64_t now_ms)
{
    if (atomic_exchange_explicit(&src->fetching, true, memory_order_acq_rel))
        return false;
    bool ok = true;
    if (why == PT_JWKS_NEED_KID) {
        /* Re-check under the flight: another worker may just have spent
         * the budget and finished. */
        uint64_t last = atomic_load_explicit(&src->kid_fetch_ms, memory_order_relaxed);
        ok = !last || now_ms >= last + PT_JWKS_KID_REFETCH_MS;
        if (ok)
            atomic_store_explicit(&src->kid_fetch_ms, now_ms ? now_ms : 1, memory_order_relaxed);
    } else if (why == PT_JWKS_NEED_TAKEOVER) {
        /* Under the flight too: the lost fetch may have been taken over
         * and finished meanwhile. */
        ok = takeover_allowed(src, now_ms);
    }
    if (!ok) {
        atomic_store_explicit(&src->fetching, false, memory_order_release);
        return false;
    }
    atomic_store_explicit(&src->lost, false, memory_order_release);
    return true;
}

uint64_t pt_jwks_ttl_ms(pt_slice cc)
{
    uint64_t ttl = PT_JWKS_MIN_TTL_MS;
    for (size_t i = 0; i + 8 <= cc.len; i++) {
        if (strncasecmp(cc.p + i, "max-age=", 8) != 0 || (i && isalnum((unsigned char)cc.p[i - 1])))
            continue;
        uint64_t s = 0;
        size_t j = i + 8;
        bool digits = false;
        for (; j < cc.len && isdigit((unsigned char)cc.p[j]); j++, digits = true)
            s = s > 100000000 ? s : s * 10 + (uint64_t)(cc.p[j] - '0');
        if (digits)
            ttl = s * 1000;
        break;
    }
    if (ttl < PT_JWKS_MIN_TTL_MS)
        ttl = PT_JWKS_MIN_TTL_MS;
    if (ttl > PT_JWKS_MAX_TTL_MS)
        ttl = PT_JWKS_MAX_TTL_MS;
    return ttl;
}

static void fetch_failed(struct pt_jwks_source *src, uint64_t now_ms)
{
    uint32_t f = atomic_fetch_add_explicit(&src->failures, 1, memory_order_relaxed);
    uint64_t backoff = PT_JWKS_RETRY_MIN_MS << (f < 6 ? f : 6);
    if (backoff > PT_JWKS_RETRY_MAX_MS)
        backoff = PT_JWKS_RETRY_MAX_MS;
    atomic_store_explicit(&src->retry_at_ms, now_ms + backoff, memory_order_relaxed);
}

int pt_jwks_end_fetch(struct pt_jwks_source *src, uint64_t now_ms, int status, pt_slice body,
                      pt_slice cache_control, char *err, size_t errlen)
{
    struct pt_jwks_set *set = NULL;
    uint32_t skipped = 0;
    int rc = -1;
    if (status != 200)
        snprintf(err, errlen, "the JWKS endpoint answered %d", status);
    else if (pt_jwks_parse(body.p, body.len, false, &set, &skipped, err, errlen) == 0)
        rc = 0;
    if (rc == 0) {
        uint64_t ttl = pt_jwks_ttl_ms(cache_control);
        pthread_mutex_lock(&src->mu);
        struct pt_jwks_set *old = src->set;
        src->set = set;
        pthread_mutex_unlock(&src->mu);
        pt_jwks_set_unref(old); /* freed when its last reader lets go */
        atomic_fetch_add_explicit(&src->set_seq, 1, memory_order_release);
        /* Refresh ahead: at 90% of the lifetime. */
        atomic_store_explicit(&src->refresh_at_ms, now_ms + ttl - ttl / 10, memory_order_relaxed);
        atomic_store_explicit(&src->retry_at_ms, 0, memory_order_relaxed);
        atomic_store_explicit(&src->failures, 0, memory_order_relaxed);
        if (skipped)
            snprintf(err, errlen, "%u unusable key(s) skipped", skipped);
        else if (errlen)
            err[0] = 0;
    } else {
        fetch_failed(src, now_ms);
    }
    atomic_fetch_add_explicit(&src->fetches, 1, memory_order_relaxed);
    atomic_store_explicit(&src->lost, false, memory_order_release);
    atomic_fetch_add_explicit(&src->done_seq, 1, memory_order_release);
    atomic_store_explicit(&src->fetching, false, memory_order_release);
    return rc;
}

void pt_jwks_abort_fetch(struct pt_jwks_source *src)
{
    /* The kid budget stays spent; the fetch is owed to whoever needs it
     * next (a waiter, a request with an unknown kid), once per
     * PT_JWKS_TAKEOVER_MS: a client that hangs up can neither stop the
     * gateway learning new keys nor make it fetch more often than that. */
    atomic_store_explicit(&src->lost, true, memory_order_release);
    atomic_fetch_add_explicit(&src->done_seq, 1, memory_order_release);
    atomic_store_explicit(&src->fetching, false, memory_order_release);
}
