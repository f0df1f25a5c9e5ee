/*
 * buf.h — I/O buffers from a per-thread pool.
 *
 * A connection holds a buffer only while it has bytes in flight: idle
 * keep-alive connections give theirs back, so ten thousand idle clients
 * cost no buffer memory. Pools are per worker and lock-free by ownership
 * (one thread each). Buffers of the standard size are recycled through a
 * free list; larger ones (only needed when limits.max_header_bytes exceeds
 * the standard size) come from malloc.
 *
 * Layout: bytes [start, end) are valid data; [end, cap) is free space.
 */
#ifndef PT_CORE_BUF_H
#define PT_CORE_BUF_H

#include "core/common.h"

#define PT_BUF_SIZE (16u * 1024u)

struct pt_buf {
    struct pt_buf *next_free; /* pool free list link */
    uint32_t start, end, cap;
    char data[];
};

struct pt_bufpool {
    struct pt_buf *free;
    uint32_t nfree;
    uint32_t max_free;  /* beyond this, released buffers go back to malloc */
    uint64_t allocated; /* buffers currently handed out, for metrics */
};

void pt_bufpool_init(struct pt_bufpool *p, uint32_t max_free);
void pt_bufpool_destroy(struct pt_bufpool *p);
/* A buffer of at least `cap` bytes (PT_BUF_SIZE when 0); NULL on OOM. */
struct pt_buf *pt_buf_get(struct pt_bufpool *p, uint32_t cap);
void pt_buf_put(struct pt_bufpool *p, struct pt_buf *b);

static inline uint32_t pt_buf_len(const struct pt_buf *b)
{
    return b->end - b->start;
}

static inline uint32_t pt_buf_space(const struct pt_buf *b)
{
    return b->cap - b->end;
}

/* Moves valid data to the front so all free space is contiguous. */
static inline void pt_buf_compact(struct pt_buf *b)
{
    if (b->start == 0)
        return;
    uint32_t n = b->end - b->start;
    if (n)
        memmove(b->data, b->data + b->start, n);
    b->start = 0;
    b->end = n;
}

static inline void pt_buf_consume(struct pt_buf *b, uint32_t n)
{
    b->start += n;
    if (b->start == b->end)
        b->start = b->end = 0;
}

#endif
