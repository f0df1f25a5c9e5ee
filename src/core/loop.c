/*
 * loop.c — see loop.h.
 *
 * The timer wheel is hashed by expiry tick: arming and cancelling are O(1)
 * list operations. A timer further away than one wheel turn (~33 s) sits in
 * its slot and is skipped until its turn comes round; connection timeouts
 * are re-armed far more often than they fire, which is the case this shape
 * is good at.
 */
#include "core/loop_impl.h"

#include <errno.h>
#include <unistd.h>

#define MAX_EVENTS 256

static void slot_init(struct pt_timer *head)
{
    head->next = head->prev = head;
}

int pt_loop_init_backend(struct pt_loop *loop, enum pt_io_backend backend)
{
    loop->epfd = -1;
    loop->u = NULL;
    pt_loop_clock(loop);
    loop->wheel_ms = loop->now_ms;
    loop->armed = 0;
    loop->quiet_until_ms = 0;
    for (uint32_t i = 0; i < PT_WHEEL_SLOTS; i++)
        slot_init(&loop->slots[i]);
    if (backend == PT_IO_URING)
        return pt_uring_init(loop);
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    return loop->epfd < 0 ? -errno : 0;
}

int pt_loop_init(struct pt_loop *loop)
{
    return pt_loop_init_backend(loop, PT_IO_EPOLL);
}

void pt_loop_thread_start(struct pt_loop *loop)
{
    if (loop->u)
        pt_uring_thread_start(loop);
}

void pt_loop_flush(struct pt_loop *loop)
{
    if (loop->u)
        pt_uring_flush(loop);
}

void pt_loop_destroy(struct pt_loop *loop)
{
    if (loop->u)
        pt_uring_destroy(loop);
    if (loop->epfd >= 0)
        close(loop->epfd);
    loop->epfd = -1;
}

const char *const pt_io_backend_names[PT_IO_BACKENDS] = {"epoll", "io_uring"};

int pt_loop_add(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    if (loop->u)
        return pt_uring_add_poll(loop, io, events, true);
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0 ? -errno : 0;
}

int pt_loop_mod(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    if (loop->u) {
        pt_uring_del(loop, io);
        return pt_uring_add_poll(loop, io, events, true);
    }
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0 ? -errno : 0;
}

void pt_loop_del(struct pt_loop *loop, struct pt_io *io)
{
    if (loop->u)
        pt_uring_del(loop, io);
    else if (io->fd >= 0)
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

int pt_loop_add_stream(struct pt_loop *loop, struct pt_io *io, bool connecting)
{
    io->pending = 0;
    if (loop->u)
        return pt_uring_add_stream(loop, io, connecting);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0 ? -errno : 0;
}

void pt_io_connected(struct pt_loop *loop, struct pt_io *io)
{
    if (loop->u)
        pt_uring_connected(loop, io);
}

static struct pt_timer *slot_of(struct pt_loop *loop, uint64_t ms)
{
    return &loop->slots[(ms / PT_WHEEL_TICK_MS) & (PT_WHEEL_SLOTS - 1)];
}

void pt_timer_cancel(struct pt_loop *loop, struct pt_timer *t)
{
    if (!t->next)
        return;
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->next = t->prev = NULL;
    loop->armed--;
}

void pt_timer_arm(struct pt_loop *loop, struct pt_timer *t, uint64_t delay_ms, pt_timer_cb cb)
{
    pt_timer_cancel(loop, t);
    t->cb = cb;
    t->expires_ms = loop->now_ms + delay_ms;
    if (t->expires_ms < loop->quiet_until_ms)
        loop->quiet_until_ms = t->expires_ms;
    /* Never place a timer in a slot the wheel has already passed. */
    uint64_t at = t->expires_ms < loop->wheel_ms ? loop->wheel_ms : t->expires_ms;
    struct pt_timer *head = slot_of(loop, at);
    t->next = head;
    t->prev = head->prev;
    head->prev->next = t;
    head->prev = t;
    loop->armed++;
}

/* Walks the slots between the last processed tick and now, firing what is
 * due. A callback may arm or cancel any timer, including the next one in
 * the slot, so the walk restarts from the head after each firing. */
void pt_loop_run_timers(struct pt_loop *loop)
{
    uint64_t now = loop->now_ms;
    if (loop->armed == 0) {
        loop->wheel_ms = now;
        return;
    }
    uint64_t steps = (now - loop->wheel_ms) / PT_WHEEL_TICK_MS + 1;
    if (steps > PT_WHEEL_SLOTS)
        steps = PT_WHEEL_SLOTS;
    uint64_t tick_ms = loop->wheel_ms;
    for (uint64_t s = 0; s < steps; s++, tick_ms += PT_WHEEL_TICK_MS) {
        struct pt_timer *head = slot_of(loop, tick_ms);
        bool fired = true;
        while (fired) {
            fired = false;
            for (struct pt_timer *t = head->next; t != head; t = t->next) {
                if (t->expires_ms <= now) {
                    pt_timer_cancel(loop, t);
                    t->cb(loop, t);
                    fired = true;
                    break;
                }
            }
        }
    }
    loop->wheel_ms = now - (now % PT_WHEEL_TICK_MS);
}

/* Milliseconds until the earliest timer could be due, capped. Scans ahead
 * slot by slot; cheap because it stops at the first non-empty slot. */
int pt_loop_next_timeout(struct pt_loop *loop, int max_wait_ms)
{
    if (loop->armed == 0)
        return max_wait_ms;
    uint64_t limit = (uint64_t)(max_wait_ms < 0 ? 60000 : max_wait_ms);
    uint64_t now = loop->now_ms;
    /* The last scan proved no timer due before quiet_until_ms (arming an
     * earlier one lowers it): most turns need no scan at all. */
    if (loop->quiet_until_ms > now)
        return (int)PT_MIN(limit, loop->quiet_until_ms - now);
    for (uint64_t d = 0; d <= limit; d += PT_WHEEL_TICK_MS) {
        struct pt_timer *head = slot_of(loop, loop->wheel_ms + d);
        /* A slot also holds timers of later wheel turns (idle timeouts of
         * 60 s share slots with near ones): only a timer due in this turn
         * ends the wait, else idle connections would wake the loop every
         * tick. */
        for (struct pt_timer *t = head->next; t != head; t = t->next) {
            if (t->expires_ms <= loop->wheel_ms + d + PT_WHEEL_TICK_MS) {
                loop->quiet_until_ms = loop->wheel_ms + d;
                return t->expires_ms <= now ? 0 : (int)(t->expires_ms - now) + 1;
            }
        }
    }
    loop->quiet_until_ms = loop->wheel_ms + limit;
    return (int)limit;
}

int pt_loop_run_once(struct pt_loop *loop, int max_wait_ms)
{
    loop->turn++;
    if (loop->u)
        return pt_uring_run_once(loop, max_wait_ms);
    struct epoll_event evs[MAX_EVENTS];
    int timeout = pt_loop_next_timeout(loop, max_wait_ms);
    int n = epoll_wait(loop->epfd, evs, MAX_EVENTS, timeout);
    pt_loop_clock(loop);
    if (n < 0)
        n = 0; /* EINTR: just run timers */
    /* Two passes: every io learns its events first (pt_io_has_input), so
     * a handler early in the batch can see what a later one will read. */
    for (int i = 0; i < n; i++) {
        struct pt_io *io = evs[i].data.ptr;
        if (io)
            io->pending = evs[i].events;
    }
    for (int i = 0; i < n; i++) {
        struct pt_io *io = evs[i].data.ptr;
        if (!io)
            continue;
        uint32_t ev = io->pending;
        io->pending = 0;
        io->cb(loop, io, ev);
    }
    pt_loop_run_timers(loop);
    return n;
}

bool pt_io_peer_gone(struct pt_loop *loop, struct pt_io *io)
{
    if (io->fd < 0)
        return true;
    if (loop->u)
        return io->rlen == 0 && io->rerr != 0;
    char b;
    ssize_t n = recv(io->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

bool pt_io_input_waiting(struct pt_loop *loop, struct pt_io *io)
{
    if (io->fd < 0)
        return false;
    if (pt_io_has_input(loop, io))
        return true;
    if (loop->u)
        return false; /* a receive is armed: its completion will report */
    char b;
    ssize_t n = recv(io->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return !(n < 0 && errno == EAGAIN);
}
