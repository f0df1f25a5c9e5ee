/* arena.c — see arena.h. Blocks are malloc'd; the request arena keeps its
 * first block across resets, so steady-state requests never call malloc. */
#include "core/arena.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Pooled blocks are poisoned under ASan: a block that went back to the
 * pool is as dead as a freed one, and without this a use after
 * pt_arena_release (a transaction read after its connection closed) is
 * invisible to the sanitizer builds. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct pt_arena_defer {
    struct pt_arena_defer *next; /* older */
    void (*fn)(void *arg);
    void *arg;
};

struct pt_arena_block {
    struct pt_arena_block *next;
    size_t size; /* usable bytes in data[] */
    size_t used;
    _Alignas(16) char data[];
};

void pt_arena_init(struct pt_arena *a, size_t block_size)
{
    a->head = NULL;
    a->block_size = block_size ? block_size : 4096;
    a->total = 0;
    a->pool = NULL;
    a->defers = NULL;
}

void pt_arena_init_pooled(struct pt_arena *a, size_t block_size, struct pt_arena_pool *pool)
{
    pt_arena_init(a, block_size);
    a->pool = pool;
}

static struct pt_arena_block *block_new(struct pt_arena *a, size_t sz)
{
    struct pt_arena_pool *p = a->pool;
    if (p && sz == a->block_size && p->free) {
        struct pt_arena_block *b = p->free;
        UNPOISON(b->data, b->size);
        p->free = b->next;
        p->nfree--;
        return b;
    }
    struct pt_arena_block *b = malloc(sizeof(*b) + sz);
    if (b)
        b->size = sz;
    return b;
}

static void block_free(struct pt_arena *a, struct pt_arena_block *b)
{
    struct pt_arena_pool *p = a->pool;
    if (p && b->size == a->block_size && p->nfree < p->max_free) {
        b->next = p->free;
        p->free = b;
        p->nfree++;
        POISON(b->data, b->size);
        return;
    }
    free(b);
}

/* The deferred calls first: they may read what the arena holds. */
static void run_defers(struct pt_arena *a)
{
    while (a->defers) {
        struct pt_arena_defer *d = a->defers;
        a->defers = d->next;
        d->fn(d->arg);
    }
}

int pt_arena_defer(struct pt_arena *a, void (*fn)(void *arg), void *arg)
{
    struct pt_arena_defer *d = pt_arena_alloc(a, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->fn = fn;
    d->arg = arg;
    d->next = a->defers;
    a->defers = d;
    return 0;
}

void pt_arena_release(struct pt_arena *a)
{
    run_defers(a);
    struct pt_arena_block *b = a->head;
    while (b) {
        struct pt_arena_block *next = b->next;
        block_free(a, b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}

void pt_arena_pool_destroy(struct pt_arena_pool *p)
{
    while (p->free) {
        struct pt_arena_block *b = p->free;
        p->free = b->next;
        UNPOISON(b->data, b->size);
        free(b);
    }
    p->nfree = 0;
}

void *pt_arena_alloc(struct pt_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct pt_arena_block *b = a->head;
    if (pt_unlikely(!b || b->size - b->used < n)) {
        size_t sz = n > a->block_size ? n : a->block_size;
        struct pt_arena_block *nb = block_new(a, sz);
        if (!nb)
            return NULL;
        nb->used = 0;
        a->total += sz;
        /* A big one-off allocation goes behind the current block so the
         * current block's free space stays usable. */
        if (b && n > a->block_size) {
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            a->head = nb;
        }
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

void *pt_arena_zalloc(struct pt_arena *a, size_t n)
{
    void *p = pt_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *pt_arena_strndup(struct pt_arena *a, const char *s, size_t n)
{
    char *p = pt_arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

char *pt_arena_strdup(struct pt_arena *a, const char *s)
{
    return pt_arena_strndup(a, s, strlen(s));
}

char *pt_arena_sprintf(struct pt_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = pt_arena_alloc(a, (size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void pt_arena_reset(struct pt_arena *a)
{
    run_defers(a);
    struct pt_arena_block *b = a->head;
    if (!b)
        return;
    /* Keep the last (oldest) normal-sized block: it is the one a fresh
     * request would allocate first anyway. */
    struct pt_arena_block *keep = NULL;
    while (b) {
        struct pt_arena_block *next = b->next;
        if (!keep && !next && b->size == a->block_size) {
            keep = b;
        } else {
            a->total -= b->size;
            block_free(a, b);
        }
        b = next;
    }
    a->head = keep;
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
    }
}

void pt_arena_destroy(struct pt_arena *a)
{
    pt_arena_release(a);
}
