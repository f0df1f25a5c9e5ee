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

struct pt_arena {
    struct pt_arena_block *head; /* current block (newest first) */
    size_t block_size;           /* default size of new blocks */
    size_t total;                /* bytes of all blocks, for metrics */
};

void pt_arena_init(struct pt_arena *a, size_t block_size);
void *pt_arena_alloc(struct pt_arena *a, size_t n); /* 16-byte aligned */
void *pt_arena_zalloc(struct pt_arena *a, size_t n);
char *pt_arena_strndup(struct pt_arena *a, const char *s, size_t n);
char *pt_arena_strdup(struct pt_arena *a, const char *s);
char *pt_arena_sprintf(struct pt_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Frees every block but the first, and rewinds it: cheap per-request reuse. */
void pt_arena_reset(struct pt_arena *a);
/* Frees everything. */
void pt_arena_destroy(struct pt_arena *a);

#endif
