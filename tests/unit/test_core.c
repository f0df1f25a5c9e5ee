/* test_core.c — the event loop's timer wheel, arenas with block pools, and
 * the buffer pool. */
#include "core/arena.h"
#include "core/buf.h"
#include "core/loop.h"
#include "core/loop_impl.h"
#include "unit.h"

#include <sys/socket.h>
#include <unistd.h>

static int fired[16];
static int nfired;

static void on_timer(struct pt_loop *loop, struct pt_timer *t)
{
    (void)loop;
    fired[nfired++] = (int)(t->expires_ms % 100000);
}

/* Real-time variant: short timers fire in expiry order, a cancelled one
 * never fires, and one re-armed from its own callback fires again. */
static int rearmed;
static void on_rearm(struct pt_loop *loop, struct pt_timer *t)
{
    if (++rearmed < 3)
        pt_timer_arm(loop, t, 5, on_rearm);
}

static void test_timers_realtime(void)
{
    struct pt_loop loop;
    CHECK(pt_loop_init(&loop) == 0);
    struct pt_timer a = {0}, b = {0}, c = {0}, far = {0}, r = {0};
    nfired = 0;
    pt_timer_arm(&loop, &a, 40, on_timer);
    pt_timer_arm(&loop, &b, 10, on_timer);
    pt_timer_arm(&loop, &c, 20, on_timer);
    pt_timer_arm(&loop, &far, 40000, on_timer);
    pt_timer_arm(&loop, &r, 5, on_rearm);
    pt_timer_cancel(&loop, &c);
    uint64_t ea = a.expires_ms % 100000, eb = b.expires_ms % 100000;
    uint64_t start = pt_now_ms();
    while (pt_now_ms() - start < 120)
        pt_loop_run_once(&loop, 10);
    CHECK_EQ_INT(nfired, 2);
    CHECK_EQ_INT(fired[0], (int)eb); /* b (10 ms) before a (40 ms) */
    CHECK_EQ_INT(fired[1], (int)ea);
    CHECK(!pt_timer_armed(&a) && !pt_timer_armed(&b) && !pt_timer_armed(&c));
    CHECK(pt_timer_armed(&far)); /* 40 s away: still waiting, not fired early */
    CHECK_EQ_INT(rearmed, 3);
    CHECK_EQ_INT(loop.armed, 1);
    pt_timer_cancel(&loop, &far);
    CHECK_EQ_INT(loop.armed, 0);
    pt_loop_destroy(&loop);
}

/* The loop caches "no timer due before X" between scans; arming an earlier
 * timer must shorten the next wait at once. */
static void test_timer_wait_cache(void)
{
    struct pt_loop loop;
    CHECK(pt_loop_init(&loop) == 0);
    struct pt_timer far = {0}, near = {0};
    pt_timer_arm(&loop, &far, 30000, on_timer);
    int w = pt_loop_next_timeout(&loop, 1000);
    CHECK_MSG(w >= 990 && w <= 1000, "wait %d", w);
    w = pt_loop_next_timeout(&loop, 1000); /* from the cache */
    CHECK_MSG(w >= 990 && w <= 1000, "wait %d", w);
    pt_timer_arm(&loop, &near, 50, on_timer);
    w = pt_loop_next_timeout(&loop, 1000);
    CHECK_MSG(w >= 40 && w <= 51, "wait %d after arming a 50 ms timer", w);
    pt_timer_cancel(&loop, &near);
    pt_timer_cancel(&loop, &far);
    pt_loop_destroy(&loop);
}

/* The loop dispatches I/O readiness to the registered pt_io. */
static int io_calls;
static void on_io(struct pt_loop *loop, struct pt_io *io, uint32_t ev)
{
    (void)loop;
    char buf[16];
    if (ev & EPOLLIN)
        io_calls += (int)read(io->fd, buf, sizeof(buf));
}

static void test_io(void)
{
    struct pt_loop loop;
    CHECK(pt_loop_init(&loop) == 0);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    struct pt_io io = {.fd = sv[0], .cb = on_io};
    CHECK(pt_loop_add(&loop, &io, EPOLLIN) == 0);
    CHECK(write(sv[1], "hello", 5) == 5);
    io_calls = 0;
    CHECK(pt_loop_run_once(&loop, 100) == 1);
    CHECK_EQ_INT(io_calls, 5);
    pt_loop_del(&loop, &io);
    close(sv[0]);
    close(sv[1]);
    pt_loop_destroy(&loop);
}

static void test_arena_pool(void)
{
    struct pt_arena_pool pool = {.max_free = 4};
    struct pt_arena a;
    pt_arena_init_pooled(&a, 1024, &pool);
    char *p = pt_arena_alloc(&a, 100);
    CHECK(p != NULL && ((uintptr_t)p & 15) == 0);
    for (int i = 0; i < 20; i++) /* spills into more blocks */
        CHECK(pt_arena_alloc(&a, 200) != NULL);
    char *big = pt_arena_alloc(&a, 5000); /* one-off large block */
    CHECK(big != NULL);
    memset(big, 'x', 5000);
    CHECK(a.total >= 5000 + 4 * 1024);
    pt_arena_release(&a);
    CHECK(a.head == NULL && a.total == 0);
    CHECK_EQ_INT(pool.nfree, 4); /* capped; the 5000-byte block went to free() */
    /* Reuse takes blocks from the pool. */
    CHECK(pt_arena_alloc(&a, 10) != NULL);
    CHECK_EQ_INT(pool.nfree, 3);
    char *s = pt_arena_sprintf(&a, "%s-%d", "gen", 42);
    CHECK_STR(s, "gen-42");
    CHECK_STR(pt_arena_strndup(&a, "abcdef", 3), "abc");
    pt_arena_release(&a);
    pt_arena_pool_destroy(&pool);
    CHECK_EQ_INT(pool.nfree, 0);
}

static void test_bufpool(void)
{
    struct pt_bufpool bp;
    pt_bufpool_init(&bp, 2);
    struct pt_buf *a = pt_buf_get(&bp, 0), *b = pt_buf_get(&bp, 0), *c = pt_buf_get(&bp, 0);
    CHECK(a && b && c && a->cap == PT_BUF_SIZE);
    struct pt_buf *big = pt_buf_get(&bp, PT_BUF_SIZE * 2);
    CHECK(big && big->cap == PT_BUF_SIZE * 2);
    CHECK_EQ_INT(bp.allocated, 4);
    memcpy(a->data, "0123456789", 10);
    a->end = 10;
    pt_buf_consume(a, 4);
    CHECK_EQ_INT(pt_buf_len(a), 6);
    pt_buf_compact(a);
    CHECK(a->start == 0 && memcmp(a->data, "456789", 6) == 0);
    pt_buf_consume(a, 6);
    CHECK(a->start == 0 && a->end == 0); /* emptied buffers rewind */
    pt_buf_put(&bp, a);
    pt_buf_put(&bp, b);
    pt_buf_put(&bp, c); /* over max_free: freed */
    pt_buf_put(&bp, big);
    CHECK_EQ_INT(bp.nfree, 2);
    CHECK_EQ_INT(bp.allocated, 0);
    CHECK(pt_buf_get(&bp, 0) == b); /* LIFO reuse: warm in cache */
    pt_buf_put(&bp, b);
    pt_bufpool_destroy(&bp);
}

int main(void)
{
    test_timers_realtime();
    test_timer_wait_cache();
    test_io();
    test_arena_pool();
    test_bufpool();
    return unit_report("core");
}
