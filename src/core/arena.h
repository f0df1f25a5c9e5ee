/*
 * arena.h — bump allocator for data that dies together.
 *
 * Two uses: a config generation (everything it owns lives in one arena and
 * is freed at once when the last worker has moved past it), and a request
 * (headers added by filters, rewritten paths, templated values), reset when
 * the request ends. Allocation never fails silently: it returns NULL only
 * when the system is out of memory.
 *
 * Ownership: the arena owns every block it hands out; nothing allocated
 * from it may be freed individually.
 */
#ifndef PT_CORE_ARENA_H
#define PT_CORE_ARENA_H

#include "core/common.h"

struct pt_arena_block;
struct pt_arena_defer;

/* An optional per-thread cache of standard-size blocks: arenas that come
 * and go with requests take blocks from it and give them back, so an idle
 * connection holds no arena memory and a busy one never calls malloc. */
struct pt_arena_pool {
    struct pt_arena_block *free;
    uint32_t nfree, max_free;
};

struct pt_arena {
    struct pt_arena_block *head;   /* current block (newest first) */
    size_t block_size;             /* default size of new blocks */
    size_t total;                  /* bytes of all blocks, for metrics */
    struct pt_arena_pool *pool;    /* where standard blocks come from; may be NULL */
    struct pt_arena_defer *defers; /* run when the blocks go (pt_arena_defer) */
};

void pt_arena_init(struct pt_arena *a, size_t block_size);
/* Like pt_arena_init, with blocks of `block_size` drawn from `pool`. */
void pt_arena_init_pooled(struct pt_arena *a, size_t block_size, struct pt_arena_pool *pool);
/* Gives every block back (to the pool, or to malloc): the arena is empty
 * and holds no memory, and can be used again. */
void pt_arena_release(struct pt_arena *a);
void pt_arena_pool_destroy(struct pt_arena_pool *p);
void *pt_arena_alloc(struct pt_arena *a, size_t n); /* 16-byte aligned */
void *pt_arena_zalloc(struct pt_arena *a, size_t n);
char *pt_arena_strndup(struct pt_arena *a, const char *s, size_t n);
char *pt_arena_strdup(struct pt_arena *a, const char *s);
char *pt_arena_sprintf(struct pt_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Runs fn(arg) when the arena's memory goes (release, reset or destroy),
 * newest first, before any block is freed: what a generation holds outside
 * its arena (a shared cache's reference, say) is let go with it. The record
 * lives in the arena. 0 or -ENOMEM (fn is then not registered). */
int pt_arena_defer(struct pt_arena *a, void (*fn)(void *arg), void *arg);
/* Frees every block but the first, and rewinds it: cheap per-request reuse. */
void pt_arena_reset(struct pt_arena *a);
/* Frees everything. */
void pt_arena_destroy(struct pt_arena *a);

#endif
