/*
 * loop.h — a small edge-triggered epoll loop with a timer wheel.
 *
 * One loop per worker thread; nothing here is thread-safe and nothing needs
 * to be. Callers own their pt_io and pt_timer structs (embedded in their
 * connection objects); the loop only links them.
 *
 * Time: the loop reads the clock once per wakeup (pt_loop_now), so the
 * request path never needs a clock call of its own for timeouts.
 *
 * Callback rule (libuv's): a function that fails synchronously never calls
 * its callback.
 */
#ifndef PT_CORE_LOOP_H
#define PT_CORE_LOOP_H

#include "core/common.h"

#include <sys/epoll.h>

struct pt_loop;
struct pt_io;

typedef void (*pt_io_cb)(struct pt_loop *loop, struct pt_io *io, uint32_t events);

struct pt_io {
    int fd;
    pt_io_cb cb;
};

struct pt_timer;
typedef void (*pt_timer_cb)(struct pt_loop *loop, struct pt_timer *t);

/* An intrusive timer; zero-initialise before first use. */
struct pt_timer {
    struct pt_timer *next, *prev; /* wheel slot list; NULL when not armed */
    uint64_t expires_ms;
    pt_timer_cb cb;
};

#define PT_WHEEL_SLOTS 4096u /* power of two */
#define PT_WHEEL_TICK_MS 8u  /* resolution: timeouts fire within one tick late */

struct pt_loop {
    int epfd;
    uint64_t now_ms;                       /* monotonic ms, refreshed once per wakeup */
    uint64_t wheel_ms;                     /* time up to which the wheel has been processed */
    struct pt_timer slots[PT_WHEEL_SLOTS]; /* list heads (sentinels) */
    uint32_t armed;
};

int pt_loop_init(struct pt_loop *loop);
void pt_loop_destroy(struct pt_loop *loop);

/* Registers fd for `events` (EPOLLET is always added). 0 or -errno. */
int pt_loop_add(struct pt_loop *loop, struct pt_io *io, uint32_t events);
int pt_loop_mod(struct pt_loop *loop, struct pt_io *io, uint32_t events);
void pt_loop_del(struct pt_loop *loop, struct pt_io *io);

/* Waits up to max_wait_ms (bounded by the next timer), dispatches I/O
 * callbacks then expired timers. Returns the number of I/O events. */
int pt_loop_run_once(struct pt_loop *loop, int max_wait_ms);

static inline uint64_t pt_loop_now(const struct pt_loop *loop)
{
    return loop->now_ms;
}

/* Arms (or re-arms) `t` to fire after delay_ms. */
void pt_timer_arm(struct pt_loop *loop, struct pt_timer *t, uint64_t delay_ms, pt_timer_cb cb);
void pt_timer_cancel(struct pt_loop *loop, struct pt_timer *t);

static inline bool pt_timer_armed(const struct pt_timer *t)
{
    return t->next != NULL;
}

#endif
