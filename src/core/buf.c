/* buf.c — see buf.h. */
#include "core/buf.h"

#include <stdlib.h>

void pt_bufpool_init(struct pt_bufpool *p, uint32_t max_free)
{
    p->free = NULL;
    p->nfree = 0;
    p->max_free = max_free;
    p->allocated = 0;
}

void pt_bufpool_destroy(struct pt_bufpool *p)
{
    while (p->free) {
        struct pt_buf *b = p->free;
        p->free = b->next_free;
        free(b);
    }
    p->nfree = 0;
}

struct pt_buf *pt_buf_get(struct pt_bufpool *p, uint32_t cap)
{
    struct pt_buf *b;
    if (cap <= PT_BUF_SIZE && p->free) {
        b = p->free;
        p->free = b->next_free;
        p->nfree--;
    } else {
        uint32_t sz = cap > PT_BUF_SIZE ? cap : PT_BUF_SIZE;
        b = malloc(sizeof(*b) + sz);
        if (!b)
            return NULL;
        b->cap = sz;
    }
    b->next_free = NULL;
    b->start = b->end = 0;
    p->allocated++;
    return b;
}

void pt_buf_put(struct pt_bufpool *p, struct pt_buf *b)
{
    if (!b)
        return;
    p->allocated--;
    if (b->cap == PT_BUF_SIZE && p->nfree < p->max_free) {
        b->next_free = p->free;
        p->free = b;
        p->nfree++;
    } else {
        free(b);
    }
}
