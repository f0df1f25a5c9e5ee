/*
 * loop_uring.c — the io_uring backend of loop.h (io_backend: io_uring).
 *
 * Why: a syscall costs about 1 µs on the VMs we run on, and a proxied
 * request needs four (read and write on each side) plus its share of
 * epoll_wait. Here every operation of a loop turn is queued in the
 * submission ring and handed to the kernel by the single io_uring_enter
 * that also waits for the next completions: one syscall per turn, however
 * many requests the turn moved.
 *
 * Model, as seen by callers: the same edge-triggered readiness as epoll.
 *   - receive: each stream socket has one receive armed, into a buffer
 *     the kernel picks from a provided-buffer ring when bytes arrive (an
 *     idle connection holds no buffer). The completion raises EPOLLIN and
 *     the reader usually takes the bytes right there; whatever it leaves
 *     is copied out of the shared ring into a staging buffer of the
 *     socket's own, so readers that stall (a client that does not read
 *     its download) can never starve the other sockets of ring buffers.
 *     The next receive is armed only once the reader has taken everything,
 *     so a reader that stops reading stops the socket (flow control as
 *     with epoll), holding at most one buffer.
 *   - send: pt_io_sendv copies the bytes into a staging buffer and queues
 *     the send; one send per socket is in flight. A second call while it
 *     is gets EAGAIN, and its completion raises EPOLLOUT.
 *   - close: cancels the armed receive and queues IORING_OP_CLOSE behind
 *     any queued send in ring order, so bytes already "sent" go out first
 *     and the fd number is not reused under a queued send. A send still
 *     blocked on a peer that stopped reading is cancelled after
 *     PT_URING_CLOSE_GRACE_MS.
 *   - listeners and eventfds: multishot poll, the callback gets the mask.
 *
 * Completions carry a pointer to a pt_uop, never to the pt_io: when the io
 * goes away its ops are orphaned (op->io = NULL) and freed when their last
 * completion arrives, so no completion can reach freed memory.
 *
 * The ring is single-issuer with deferred task work: completion work runs
 * only inside our own io_uring_enter, never as an interrupt of the loop.
 */
#include "core/loop_impl.h"
#include "core/log.h"

#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define URING_SQ_ENTRIES 4096
#define URING_CQ_ENTRIES 16384
#define RB_COUNT 128u /* provided receive buffers; a power of two */
#define RB_SIZE 16384u
#define RB_GROUP 1
#define RQ_CAP 4       /* buffers one socket may have queued before it is paused */
#define SB_SIZE 16384u /* send staging buffer */
#define SB_KEEP 256u   /* staging buffers kept for reuse */
#define OPS_CHUNK 256u
#define CQE_BATCH 256u
#define PT_URING_CLOSE_GRACE_MS 10000
#define PT_URING_EXIT_FLUSH_MS 2000 /* a stopping worker waits this long for its last sends */

enum op_kind { OP_FREE = 0, OP_RECV, OP_SEND, OP_POLL };

struct pt_uop {
    struct pt_io *io; /* NULL once orphaned */
    struct pt_uop *next_free;
    char *sbuf;
    uint32_t soff, slen;
    uint32_t events; /* poll mask */
    int fd;
    uint8_t kind;
    bool multishot;
    struct pt_timer grace; /* orphaned send: give up after a while */
};

struct op_chunk {
    struct op_chunk *next;
    struct pt_uop ops[OPS_CHUNK];
};

struct pt_uring {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    char *rbufs;
    uint32_t rb_free; /* buffers the kernel may still pick */
    struct pt_uop *free_ops;
    struct op_chunk *chunks;
    char *sfree[SB_KEEP];
    uint32_t nsfree;
    struct pt_io *pending; /* receives to arm at the end of the turn (intrusive list) */
    struct pt_io *starved; /* receives that found no buffer (intrusive list) */
    uint32_t orphan_sends; /* sends still in flight for closed sockets */
};

/* ---- small pools ---- */

static struct pt_uop *op_get(struct pt_uring *u)
{
    if (!u->free_ops) {
        struct op_chunk *ch = calloc(1, sizeof(*ch));
        if (!ch)
            return NULL;
        ch->next = u->chunks;
        u->chunks = ch;
        for (uint32_t i = 0; i < OPS_CHUNK; i++) {
            ch->ops[i].next_free = u->free_ops;
            u->free_ops = &ch->ops[i];
        }
    }
    struct pt_uop *op = u->free_ops;
    u->free_ops = op->next_free;
    memset(op, 0, sizeof(*op));
    return op;
}

static void op_put(struct pt_uring *u, struct pt_uop *op)
{
    op->kind = OP_FREE;
    op->io = NULL;
    op->next_free = u->free_ops;
    u->free_ops = op;
}

static char *sb_get(struct pt_uring *u)
{
    if (u->nsfree)
        return u->sfree[--u->nsfree];
    return malloc(SB_SIZE);
}

static void sb_put(struct pt_uring *u, char *b)
{
    if (u->nsfree < SB_KEEP)
        u->sfree[u->nsfree++] = b;
    else
        free(b);
}

static void rb_return(struct pt_uring *u, uint16_t bid)
{
    io_uring_buf_ring_add(u->br, u->rbufs + (size_t)bid * RB_SIZE, RB_SIZE, bid,
                          io_uring_buf_ring_mask(RB_COUNT), 0);
    io_uring_buf_ring_advance(u->br, 1);
    u->rb_free++;
}

/* A free submission slot. The ring only fills when a turn queues more
 * than URING_SQ_ENTRIES operations; then what is queued goes in now. */
static struct io_uring_sqe *get_sqe(struct pt_uring *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (pt_unlikely(!sqe)) {
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
        if (!sqe) {
            pt_error("io_uring: submission queue stuck full");
            abort();
        }
    }
    return sqe;
}

static void cancel_op(struct pt_uring *u, struct pt_uop *op)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
    io_uring_sqe_set_data64(sqe, 0);
}

static int reap(struct pt_loop *loop);
static void maybe_rearm(struct pt_loop *loop, struct pt_io *io);

/* ---- arming ---- */

/* A socket without a receive armed is parked on one of two lists:
 * "pending" until the end of the turn, "starved" until a provided buffer
 * is free. */
static struct pt_io **wait_list(struct pt_uring *u, uint8_t why)
{
    return why == PT_RW_PENDING ? &u->pending : &u->starved;
}

static void park(struct pt_uring *u, struct pt_io *io, uint8_t why)
{
    if (io->rwait)
        return;
    struct pt_io **head = wait_list(u, why);
    io->rwait = why;
    io->st_prev = NULL;
    io->st_next = *head;
    if (*head)
        (*head)->st_prev = io;
    *head = io;
}

static void unpark(struct pt_uring *u, struct pt_io *io)
{
    if (!io->rwait)
        return;
    if (io->st_prev)
        io->st_prev->st_next = io->st_next;
    else
        *wait_list(u, io->rwait) = io->st_next;
    if (io->st_next)
        io->st_next->st_prev = io->st_prev;
    io->st_next = io->st_prev = NULL;
    io->rwait = PT_RW_NONE;
}

static void arm_recv(struct pt_loop *loop, struct pt_io *io)
{
    struct pt_uring *u = loop->u;
    struct pt_uop *op = op_get(u);
    if (!op) {
        park(u, io, PT_RW_STARVED);
        return;
    }
    op->kind = OP_RECV;
    op->io = io;
    op->fd = io->fd;
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_recv(sqe, io->fd, NULL, RB_SIZE, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RB_GROUP;
    io_uring_sqe_set_data(sqe, op);
    io->op_recv = op;
}

static void submit_send(struct pt_uring *u, struct pt_uop *op)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_send(sqe, op->fd, op->sbuf + op->soff, op->slen - op->soff,
                       MSG_NOSIGNAL | MSG_WAITALL);
    io_uring_sqe_set_data(sqe, op);
}

static int arm_poll(struct pt_loop *loop, struct pt_io *io, uint32_t events, bool multishot)
{
    struct pt_uring *u = loop->u;
    struct pt_uop *op = op_get(u);
    if (!op)
        return -ENOMEM;
    op->kind = OP_POLL;
    op->io = io;
    op->fd = io->fd;
    op->events = events;
    op->multishot = multishot;
    struct io_uring_sqe *sqe = get_sqe(u);
    if (multishot)
        io_uring_prep_poll_multishot(sqe, io->fd, events);
    else
        io_uring_prep_poll_add(sqe, io->fd, events);
    io_uring_sqe_set_data(sqe, op);
    io->op_poll = op;
    return 0;
}

static void io_reset(struct pt_io *io)
{
    io->op_recv = io->op_send = io->op_poll = NULL;
    io->rdata = NULL;
    io->rlen = 0;
    io->rbid = 0;
    io->rring = false;
    io->rstage = NULL;
    io->st_next = io->st_prev = NULL;
    io->want_out = io->shut_pending = false;
    io->rwait = PT_RW_NONE;
    io->rerr = io->serr = 0;
}

/* ---- the loop.h entry points ---- */

int pt_uring_init(struct pt_loop *loop)
{
    struct pt_uring *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED |
              IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
    p.cq_entries = URING_CQ_ENTRIES;
    int rc = io_uring_queue_init_params(URING_SQ_ENTRIES, &u->ring, &p);
    if (rc < 0) {
        free(u);
        return rc;
    }
    if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
        io_uring_queue_exit(&u->ring);
        free(u);
        return -EOPNOTSUPP;
    }
    u->br_bytes = RB_COUNT * sizeof(struct io_uring_buf);
    u->br = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    /* Buffer memory is only touched when bytes land in it. */
    u->rbufs = mmap(NULL, (size_t)RB_COUNT * RB_SIZE, PROT_READ | PROT_WRITE,
                    MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (u->br == MAP_FAILED || u->rbufs == MAP_FAILED) {
        rc = -ENOMEM;
        goto fail;
    }
    io_uring_buf_ring_init(u->br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)u->br;
    reg.ring_entries = RB_COUNT;
    reg.bgid = RB_GROUP;
    rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (rc < 0)
        goto fail;
    for (uint16_t i = 0; i < RB_COUNT; i++)
        rb_return(u, i);
    loop->u = u;
    return 0;
fail:
    if (u->br != MAP_FAILED && u->br)
        munmap(u->br, u->br_bytes);
    if (u->rbufs != MAP_FAILED && u->rbufs)
        munmap(u->rbufs, (size_t)RB_COUNT * RB_SIZE);
    io_uring_queue_exit(&u->ring);
    free(u);
    return rc;
}

void pt_uring_thread_start(struct pt_loop *loop)
{
    /* The enabling thread becomes the ring's single issuer. */
    /* Debian's liburing 2.3 declares io_uring_enable_rings but does not
     * export it: the register call itself is one line. */
    long rc = syscall(__NR_io_uring_register, loop->u->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
                      NULL, 0);
    if (rc < 0) {
        pt_error("io_uring: enabling the ring failed: %s", strerror(errno));
        abort();
    }
    io_uring_register_ring_fd(&loop->u->ring); /* optional: saves an fd lookup per enter */
}

void pt_uring_flush(struct pt_loop *loop)
{
    /* Bytes callers were told were sent may still wait in staging buffers
     * (a slow peer), and only this thread can push them on: keep running
     * the ring until they are out or PT_URING_EXIT_FLUSH_MS passed. Running
     * the completion work also lets cancelled polls release their sockets
     * (a stopping worker must not keep accepting into a dead backlog).
     * Receives parked for the end of a turn are never armed here: nothing
     * is read any more. */
    struct pt_uring *u = loop->u;
    uint64_t deadline = pt_now_ms() + PT_URING_EXIT_FLUSH_MS;
    io_uring_submit_and_get_events(&u->ring);
    reap(loop);
    while (u->orphan_sends > 0 && pt_now_ms() < deadline) {
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000};
        struct io_uring_cqe *cqe = NULL;
        io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
        reap(loop);
    }
    io_uring_submit_and_get_events(&u->ring); /* closes queued by the last completions */
}

void pt_uring_destroy(struct pt_loop *loop)
{
    struct pt_uring *u = loop->u;
    io_uring_queue_exit(&u->ring); /* cancels whatever is still in flight */
    for (struct op_chunk *ch = u->chunks; ch;) {
        for (uint32_t i = 0; i < OPS_CHUNK; i++)
            if (ch->ops[i].kind == OP_SEND)
                free(ch->ops[i].sbuf);
        struct op_chunk *next = ch->next;
        free(ch);
        ch = next;
    }
    for (uint32_t i = 0; i < u->nsfree; i++)
        free(u->sfree[i]);
    munmap(u->br, u->br_bytes);
    munmap(u->rbufs, (size_t)RB_COUNT * RB_SIZE);
    free(u);
    loop->u = NULL;
}

int pt_uring_add_poll(struct pt_loop *loop, struct pt_io *io, uint32_t events, bool multishot)
{
    io_reset(io);
    return arm_poll(loop, io, events & ~(uint32_t)EPOLLET, multishot);
}

void pt_uring_del(struct pt_loop *loop, struct pt_io *io)
{
    struct pt_uring *u = loop->u;
    if (io->op_poll) {
        io->op_poll->io = NULL;
        cancel_op(u, io->op_poll);
        io->op_poll = NULL;
    }
}

int pt_uring_add_stream(struct pt_loop *loop, struct pt_io *io, bool connecting)
{
    io_reset(io);
    if (connecting)
        return arm_poll(loop, io, POLLOUT, false);
    maybe_rearm(loop, io); /* at the end of the turn, like every receive */
    return 0;
}

void pt_uring_connected(struct pt_loop *loop, struct pt_io *io)
{
    maybe_rearm(loop, io);
}

static bool wants_recv(const struct pt_io *io)
{
    return !io->op_recv && !io->rlen && !io->rerr && !io->rwait && io->fd >= 0 && !io->op_poll;
}

/* Queues the next receive once everything received was taken. It is armed
 * when the turn ends, behind the turn's sends: the kernel runs a
 * submission's entries in order, and a receive on an empty socket (a
 * recvmsg that finds nothing, then a poll arm) placed before the send that
 * carries a request on would delay that request by its cost. */
static void maybe_rearm(struct pt_loop *loop, struct pt_io *io)
{
    if (wants_recv(io))
        park(loop->u, io, PT_RW_PENDING);
}

/* Arms the receives queued this turn. */
static void arm_pending(struct pt_loop *loop)
{
    struct pt_uring *u = loop->u;
    while (u->pending) {
        struct pt_io *io = u->pending;
        unpark(u, io);
        if (wants_recv(io))
            arm_recv(loop, io);
    }
}

/* Gives back the buffer the received bytes were in. */
static void release_rx(struct pt_uring *u, struct pt_io *io)
{
    if (io->rring)
        rb_return(u, io->rbid);
    else if (io->rstage)
        sb_put(u, io->rstage);
    io->rring = false;
    io->rstage = NULL;
    io->rdata = NULL;
    io->rlen = 0;
}

/* Moves bytes the reader left out of the shared ring. */
static void unring(struct pt_uring *u, struct pt_io *io)
{
    char *b = sb_get(u);
    if (!b)
        return; /* out of memory: they stay in the ring until read */
    memcpy(b, io->rdata, io->rlen);
    rb_return(u, io->rbid);
    io->rring = false;
    io->rstage = b;
    io->rdata = b;
}

ssize_t pt_uring_recv(struct pt_loop *loop, struct pt_io *io, void *buf, size_t len)
{
    if (io->rlen) {
        size_t n = len < io->rlen ? len : io->rlen;
        memcpy(buf, io->rdata, n);
        io->rdata += n;
        io->rlen -= (uint32_t)n;
        if (io->rlen == 0) {
            release_rx(loop->u, io);
            maybe_rearm(loop, io);
        }
        return (ssize_t)n;
    }
    if (io->rerr) {
        if (io->rerr == PT_IO_EOF)
            return 0;
        errno = io->rerr;
        return -1;
    }
    maybe_rearm(loop, io);
    errno = EAGAIN;
    return -1;
}

ssize_t pt_uring_sendv(struct pt_loop *loop, struct pt_io *io, const struct iovec *iov, int n)
{
    struct pt_uring *u = loop->u;
    if (io->serr) {
        errno = io->serr;
        return -1;
    }
    if (io->op_send) {
        io->want_out = true;
        errno = EAGAIN;
        return -1;
    }
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    size_t take = total < SB_SIZE ? total : SB_SIZE;
    char *b = sb_get(u);
    struct pt_uop *op = b ? op_get(u) : NULL;
    if (!op) {
        free(b);
        errno = ENOMEM;
        return -1;
    }
    size_t off = 0;
    for (int i = 0; i < n && off < take; i++) {
        size_t c = iov[i].iov_len < take - off ? iov[i].iov_len : take - off;
        memcpy(b + off, iov[i].iov_base, c);
        off += c;
    }
    op->kind = OP_SEND;
    op->io = io;
    op->fd = io->fd;
    op->sbuf = b;
    op->slen = (uint32_t)take;
    submit_send(u, op);
    io->op_send = op;
    if (take < total)
        io->want_out = true;
    return (ssize_t)take;
}

int pt_uring_shutdown_wr(struct pt_loop *loop, struct pt_io *io)
{
    (void)loop;
    if (io->op_send) {
        io->shut_pending = true; /* after the bytes in flight */
        return 0;
    }
    return shutdown(io->fd, SHUT_WR);
}

static void grace_expired(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_uop *op = pt_container_of(t, struct pt_uop, grace);
    cancel_op(loop->u, op);
}

void pt_uring_close(struct pt_loop *loop, struct pt_io *io, bool abort)
{
    struct pt_uring *u = loop->u;
    if (io->op_recv) {
        io->op_recv->io = NULL;
        cancel_op(u, io->op_recv);
    }
    if (io->op_poll) {
        io->op_poll->io = NULL;
        cancel_op(u, io->op_poll);
    }
    if (io->rlen || io->rstage || io->rring)
        release_rx(u, io);
    unpark(u, io);
    if (io->op_send) {
        /* Let it finish (a response before a close), within bounds; an
         * abort cancels it now (queued ahead of the close). */
        io->op_send->io = NULL;
        u->orphan_sends++;
        pt_timer_arm(loop, &io->op_send->grace, PT_URING_CLOSE_GRACE_MS, grace_expired);
        if (abort)
            cancel_op(u, io->op_send);
    }
    /* Queued behind any send of this fd: ring order is issue order. */
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_close(sqe, io->fd);
    io_uring_sqe_set_data64(sqe, 0);
    io_reset(io);
}

/* ---- completions ---- */

static int on_recv(struct pt_loop *loop, struct pt_uop *op, int32_t res, uint32_t flags)
{
    struct pt_uring *u = loop->u;
    struct pt_io *io = op->io;
    bool has_buf = flags & IORING_CQE_F_BUFFER;
    uint16_t bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
    op_put(u, op);
    if (has_buf)
        u->rb_free--;
    if (has_buf && (!io || res <= 0))
        rb_return(u, bid); /* nothing to keep */
    if (!io)
        return 0;
    io->op_recv = NULL;
    io->pending = 0;
    uint32_t ev;
    if (res > 0 && has_buf) {
        io->rdata = u->rbufs + (size_t)bid * RB_SIZE;
        io->rlen = (uint32_t)res;
        io->rbid = bid;
        io->rring = true;
        io->cb(loop, io, EPOLLIN);
        /* The reader usually took everything. What it left must not pin
         * the shared ring (the io is valid until the turn ends, and a
         * close in the callback reset it). */
        if (io->rring && io->rlen)
            unring(u, io);
        return 1;
    }
    if (res == 0) {
        io->rerr = PT_IO_EOF;
        ev = EPOLLIN | EPOLLRDHUP;
    } else if (res == -ENOBUFS) {
        park(u, io, PT_RW_STARVED);
        return 0;
    } else if (res == -EINTR || res == -EAGAIN || res == -ECANCELED) {
        maybe_rearm(loop, io);
        return 0;
    } else {
        io->rerr = res < 0 ? -res : EIO;
        ev = EPOLLIN | EPOLLERR | EPOLLHUP;
    }
    io->cb(loop, io, ev);
    return 1;
}

static int on_send(struct pt_loop *loop, struct pt_uop *op, int32_t res)
{
    struct pt_uring *u = loop->u;
    struct pt_io *io = op->io;
    pt_timer_cancel(loop, &op->grace);
    if (io && res >= 0 && op->soff + (uint32_t)res < op->slen) {
        /* Short without an error (a signal): send the rest. An orphaned
         * send is never resubmitted: its fd may be closed and reused. */
        op->soff += (uint32_t)res;
        submit_send(u, op);
        return 0;
    }
    sb_put(u, op->sbuf);
    op_put(u, op);
    if (!io) {
        u->orphan_sends--;
        return 0;
    }
    io->op_send = NULL;
    uint32_t ev = 0;
    if (res < 0) {
        io->serr = -res;
        ev = EPOLLOUT | EPOLLERR;
    }
    if (io->shut_pending) {
        io->shut_pending = false;
        if (!io->serr)
            shutdown(io->fd, SHUT_WR);
    }
    if (io->want_out || ev) {
        io->want_out = false;
        io->cb(loop, io, ev | EPOLLOUT);
        return 1;
    }
    return 0;
}

static int on_poll(struct pt_loop *loop, struct pt_uop *op, int32_t res, uint32_t flags)
{
    struct pt_uring *u = loop->u;
    struct pt_io *io = op->io;
    if (!(flags & IORING_CQE_F_MORE)) {
        /* A listener's poll that ended for any reason but our cancel or a
         * dead fd is armed again: a listener must not go deaf. */
        bool rearm = io && op->multishot && res != -ECANCELED && res != -EBADF;
        uint32_t events = op->events;
        op_put(u, op);
        if (io) {
            io->op_poll = NULL;
            if (rearm)
                arm_poll(loop, io, events, true);
        }
    }
    if (!io || res == -ECANCELED)
        return 0;
    io->cb(loop, io, res < 0 ? (uint32_t)(EPOLLERR | EPOLLHUP) : (uint32_t)res);
    return 1;
}

/* Handles every completion there is; returns the events raised. */
static int reap(struct pt_loop *loop)
{
    struct pt_uring *u = loop->u;
    int events = 0;
    for (;;) {
        struct io_uring_cqe *batch[CQE_BATCH];
        struct {
            uint64_t ud;
            int32_t res;
            uint32_t flags;
        } got[CQE_BATCH];
        unsigned n = io_uring_peek_batch_cqe(&u->ring, batch, CQE_BATCH);
        if (n == 0)
            break;
        /* Copy out and release the slots first: handlers queue new work. */
        for (unsigned i = 0; i < n; i++) {
            got[i].ud = batch[i]->user_data;
            got[i].res = batch[i]->res;
            got[i].flags = batch[i]->flags;
        }
        io_uring_cq_advance(&u->ring, n);
        /* Every receiving io learns of its completion first (see
         * pt_io.pending), then the completions are handled in order. */
        for (unsigned i = 0; i < n; i++) {
            struct pt_uop *op = (struct pt_uop *)(uintptr_t)got[i].ud;
            if (op && op->kind == OP_RECV && op->io)
                op->io->pending |= EPOLLIN;
        }
        for (unsigned i = 0; i < n; i++) {
            struct pt_uop *op = (struct pt_uop *)(uintptr_t)got[i].ud;
            if (!op)
                continue; /* cancel / close: nothing to do */
            switch (op->kind) {
            case OP_RECV:
                events += on_recv(loop, op, got[i].res, got[i].flags);
                break;
            case OP_SEND:
                events += on_send(loop, op, got[i].res);
                break;
            case OP_POLL:
                events += on_poll(loop, op, got[i].res, got[i].flags);
                break;
            default:
                break;
            }
        }
    }
    /* Receives that found the buffer ring empty retry once buffers came
     * back; each at most once per turn (one that fails again waits). */
    if (u->starved && u->rb_free) {
        struct pt_io *list = u->starved;
        u->starved = NULL;
        while (list) {
            struct pt_io *io = list;
            list = io->st_next;
            io->st_next = io->st_prev = NULL;
            io->rwait = PT_RW_NONE;
            maybe_rearm(loop, io);
        }
    }
    return events;
}

int pt_uring_run_once(struct pt_loop *loop, int max_wait_ms)
{
    struct pt_uring *u = loop->u;
    int timeout = pt_loop_next_timeout(loop, max_wait_ms);
    struct __kernel_timespec ts = {.tv_sec = timeout / 1000,
                                   .tv_nsec = (long long)(timeout % 1000) * 1000000};
    struct io_uring_cqe *cqe = NULL;
    arm_pending(loop);
    /* The one syscall of the turn: submit everything queued, then wait. */
    io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, timeout < 0 ? NULL : &ts, NULL);
    pt_loop_clock(loop);
    int events = reap(loop);
    pt_loop_run_timers(loop);
    return events;
}
