/*
 * loop_impl.h — what loop.c (timers, epoll) and loop_uring.c (the io_uring
 * backend) share. Not for use outside src/core.
 */
#ifndef PT_CORE_LOOP_IMPL_H
#define PT_CORE_LOOP_IMPL_H

#include "core/loop.h"

/* Reads the clock: once per wakeup. */
static inline void pt_loop_clock(struct pt_loop *loop)
{
    loop->now_ns = pt_now_ns();
    loop->now_ms = loop->now_ns / 1000000u;
}

/* Milliseconds the loop may sleep: max_wait_ms bounded by the next timer. */
int pt_loop_next_timeout(struct pt_loop *loop, int max_wait_ms);
/* Fires the timers due at loop->now_ms. */
void pt_loop_run_timers(struct pt_loop *loop);

int pt_uring_init(struct pt_loop *loop);
void pt_uring_thread_start(struct pt_loop *loop);
void pt_uring_flush(struct pt_loop *loop);
void pt_uring_destroy(struct pt_loop *loop);
int pt_uring_add_poll(struct pt_loop *loop, struct pt_io *io, uint32_t events, bool multishot);
void pt_uring_del(struct pt_loop *loop, struct pt_io *io);
int pt_uring_add_stream(struct pt_loop *loop, struct pt_io *io, bool connecting);
void pt_uring_connected(struct pt_loop *loop, struct pt_io *io);
int pt_uring_run_once(struct pt_loop *loop, int max_wait_ms);

#endif
