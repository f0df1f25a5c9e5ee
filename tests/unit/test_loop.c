/* test_loop.c — stream-socket semantics of the event loop, run the same on
 * both backends (epoll and io_uring) over real loopback TCP connections:
 * staged receives handed out in pieces, EOF, sends that outgrow one call,
 * close and shutdown that still deliver what was sent, receives that find
 * the provided-buffer ring empty, and non-blocking connect. */
#include "core/loop.h"
#include "unit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>

struct side {
    struct pt_io io;
    uint32_t events; /* union of the events seen */
    int calls;
};

static void on_event(struct pt_loop *loop, struct pt_io *io, uint32_t ev)
{
    struct side *s = pt_container_of(io, struct side, io);
    s->events |= ev;
    s->calls++;
    (void)loop;
}

static int listener(struct sockaddr_in *sa)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(*sa);
    if (bind(l, (struct sockaddr *)sa, len) < 0 || listen(l, 512) < 0 ||
        getsockname(l, (struct sockaddr *)sa, &len) < 0)
        abort();
    return l;
}

/* A connected pair: *client is blocking (the test's peer), the returned
 * fd is non-blocking (the loop's side). */
static int pair(int l, const struct sockaddr_in *sa, int *client)
{
    *client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(*client, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
        abort();
    int fd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        abort();
    return fd;
}

static void spin(struct pt_loop *loop, int turns)
{
    for (int i = 0; i < turns; i++)
        pt_loop_run_once(loop, 5);
}

static bool readable_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

/* Reads from a blocking socket until `want` bytes or EOF; returns bytes. */
static size_t read_all(int fd, char *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        if (!readable_within(fd, 2000))
            break;
        ssize_t n = recv(fd, buf + got, want - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

/* A loop on backend `be` with one registered server-side stream socket
 * (fx->s) and its blocking client peer (fx->cl). */
struct fixture {
    struct pt_loop loop;
    struct sockaddr_in sa;
    int l, cl;
    struct side s;
};

static void fx_open(struct fixture *fx, enum pt_io_backend be)
{
    memset(fx, 0, sizeof(*fx));
    CHECK(pt_loop_init_backend(&fx->loop, be) == 0);
    pt_loop_thread_start(&fx->loop);
    fx->l = listener(&fx->sa);
    fx->s.io.fd = pair(fx->l, &fx->sa, &fx->cl);
    fx->s.io.cb = on_event;
    CHECK(pt_loop_add_stream(&fx->loop, &fx->s.io, false) == 0);
}

static void fx_close(struct fixture *fx)
{
    pt_io_close(&fx->loop, &fx->s.io);
    if (fx->cl >= 0)
        close(fx->cl);
    pt_loop_flush(&fx->loop);
    close(fx->l);
    pt_loop_destroy(&fx->loop);
}

static void test_recv_pieces_and_eof(enum pt_io_backend be)
{
    struct fixture fx;
    fx_open(&fx, be);
    struct pt_loop *loop = &fx.loop;
    struct side *s = &fx.s;
    char buf[8];
    spin(loop, 1);
    CHECK(pt_io_recv(loop, &s->io, buf, sizeof(buf)) < 0 && errno == EAGAIN);
    CHECK(send(fx.cl, "hello", 5, 0) == 5);
    for (int i = 0; i < 200 && !(s->events & EPOLLIN); i++)
        spin(loop, 1);
    CHECK(s->events & EPOLLIN);
    /* Handed out in pieces as small as the caller asks. */
    CHECK_EQ_INT(pt_io_recv(loop, &s->io, buf, 2), 2);
    CHECK(memcmp(buf, "he", 2) == 0);
    CHECK_EQ_INT(pt_io_recv(loop, &s->io, buf, 2), 2);
    CHECK(memcmp(buf, "ll", 2) == 0);
    CHECK_EQ_INT(pt_io_recv(loop, &s->io, buf, 8), 1);
    CHECK(buf[0] == 'o');
    CHECK(pt_io_recv(loop, &s->io, buf, 8) < 0 && errno == EAGAIN);
    /* The peer closes: EPOLLIN again, then recv says EOF. */
    s->events = 0;
    close(fx.cl);
    fx.cl = -1;
    for (int i = 0; i < 200 && !(s->events & EPOLLIN); i++)
        spin(loop, 1);
    CHECK(s->events & EPOLLIN);
    CHECK_EQ_INT(pt_io_recv(loop, &s->io, buf, 8), 0);
    pt_io_close(loop, &s->io);
    CHECK_EQ_INT(s->io.fd, -1);
    fx_close(&fx);
}

/* 1 MiB sent through EAGAIN / EPOLLOUT cycles arrives whole and in order;
 * then a close right after the last send still delivers everything. */
static void test_send_backpressure_then_close(enum pt_io_backend be)
{
    struct fixture fx;
    fx_open(&fx, be);
    struct pt_loop *loop = &fx.loop;
    struct side *s = &fx.s;
    int cl = fx.cl;
    size_t total = 1u << 20, off = 0, got = 0;
    char *out = malloc(total), *in = malloc(total);
    for (size_t i = 0; i < total; i++)
        out[i] = (char)(i * 7 + i / 251);
    int eagains = 0; /* bounds the loop */
    while (off < total || got < total) {
        if (off < total) {
            struct iovec iov[2] = {
                {out + off, (total - off) / 2},
                {out + off + (total - off) / 2, total - off - (total - off) / 2}};
            ssize_t w = pt_io_sendv(loop, &s->io, iov, (total - off) > 1 ? 2 : 1);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno == EAGAIN)
                eagains++;
            else
                break;
        }
        spin(loop, 1);
        /* Drain what is there without blocking the loop's progress. */
        while (got < total && readable_within(cl, 0)) {
            ssize_t n = recv(cl, in + got, total - got, MSG_DONTWAIT);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (off == total && got < total && !readable_within(cl, 0))
            spin(loop, 2);
        if (eagains > 1000000)
            break;
    }
    CHECK_EQ_INT(off, total);
    CHECK_EQ_INT(got, total);
    CHECK(memcmp(in, out, total) == 0);

    /* A peer that stops reading: sends end in EAGAIN, and once the peer
     * reads, EPOLLOUT says to go on. Everything accepted arrives. */
    size_t accepted = 0;
    int stuck = 0;
    for (int i = 0; i < 100000 && stuck < 5; i++) {
        struct iovec c = {out, 65536};
        ssize_t w = pt_io_sendv(loop, &s->io, &c, 1);
        if (w > 0) {
            accepted += (size_t)w;
            stuck = 0;
        } else {
            CHECK(errno == EAGAIN);
            stuck++;
        }
        spin(loop, 1);
    }
    CHECK_EQ_INT(stuck, 5);
    s->events = 0;
    size_t drained = 0;
    for (int i = 0; i < 2000 && !(s->events & EPOLLOUT); i++) {
        while (readable_within(cl, 0)) {
            ssize_t n = recv(cl, in, total, MSG_DONTWAIT);
            if (n <= 0)
                break;
            drained += (size_t)n;
        }
        spin(loop, 1);
    }
    CHECK(s->events & EPOLLOUT);
    while (drained < accepted && readable_within(cl, 1000)) {
        ssize_t n = recv(cl, in, total, MSG_DONTWAIT);
        if (n <= 0)
            break;
        drained += (size_t)n;
        spin(loop, 1);
    }
    CHECK_EQ_INT(drained, accepted);

    /* A response then an immediate close: the bytes still arrive, then EOF. */
    struct iovec iov = {out, 200000};
    size_t sent = 0;
    while (sent < 200000) {
        iov.iov_base = out + sent;
        iov.iov_len = 200000 - sent;
        ssize_t w = pt_io_sendv(loop, &s->io, &iov, 1);
        if (w > 0)
            sent += (size_t)w;
        spin(loop, 1);
        while (readable_within(cl, 0) && recv(cl, in, 65536, MSG_DONTWAIT) > 0)
            ;
    }
    (void)sent;
    struct iovec last = {(void *)"THE-END", 7};
    while (pt_io_sendv(loop, &s->io, &last, 1) < 0 && errno == EAGAIN)
        spin(loop, 1);
    pt_io_close(loop, &s->io);
    spin(loop, 2);
    /* Read to EOF, keeping the last 7 bytes. */
    char tail[16384], win[8] = {0};
    bool eof = false;
    while (readable_within(cl, 2000)) {
        ssize_t r = recv(cl, tail, sizeof(tail), 0);
        if (r <= 0) {
            eof = r == 0;
            break;
        }
        for (ssize_t i = 0; i < r; i++) {
            memmove(win, win + 1, 6);
            win[6] = tail[i];
        }
    }
    CHECK(eof);
    CHECK_MSG(memcmp(win, "THE-END", 7) == 0, "the last bytes before a close did not arrive");
    free(out);
    free(in);
    fx_close(&fx);
}

/* A reader that stops reading stops the socket: the peer's sends block
 * once kernel buffers are full, the loop holds a bounded amount, and
 * everything the peer sent arrives once the reader goes on. */
static void test_reader_stops(enum pt_io_backend be)
{
    struct fixture fx;
    fx_open(&fx, be);
    struct pt_loop *loop = &fx.loop;
    struct side *s = &fx.s;
    fcntl(fx.cl, F_SETFL, O_NONBLOCK);
    static char chunk[65536];
    size_t want = 64u << 20, sent = 0;
    int blocked = 0;
    while (sent < want && blocked < 20) {
        ssize_t w = send(fx.cl, chunk, sizeof(chunk), MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            blocked = 0;
        } else {
            blocked++;
        }
        spin(loop, 1);
    }
    CHECK_MSG(sent < want, "64 MiB went into a socket nobody reads");
    if (be == PT_IO_URING) /* one buffer's worth, and not in the shared ring */
        CHECK_MSG(s->io.rlen <= 16384 && !s->io.rring, "%u bytes held, in ring: %d",
                  (unsigned)s->io.rlen, s->io.rring);
    size_t got = 0;
    static char rbuf[16384];
    for (int i = 0; i < 100000 && got < sent; i++) {
        ssize_t n = pt_io_recv(loop, &s->io, rbuf, sizeof(rbuf));
        if (n > 0)
            got += (size_t)n;
        else
            spin(loop, 1);
    }
    CHECK_EQ_INT(got, sent);
    fx_close(&fx);
}

/* A new loop with `n` registered server-side sockets s[i] (their callback
 * only records events: nothing reads unless the test does) and their
 * blocking client peers cl[i]. Returns the listener. */
static int many_open(struct pt_loop *loop, enum pt_io_backend be, struct side *s, int *cl, int n)
{
    CHECK(pt_loop_init_backend(loop, be) == 0);
    pt_loop_thread_start(loop);
    struct sockaddr_in sa;
    int l = listener(&sa);
    for (int i = 0; i < n; i++) {
        memset(&s[i], 0, sizeof(s[i]));
        s[i].io.fd = pair(l, &sa, &cl[i]);
        s[i].io.cb = on_event;
        CHECK(pt_loop_add_stream(loop, &s[i].io, false) == 0);
    }
    return l;
}

static void many_close(struct pt_loop *loop, int l, struct side *s, int *cl, int n)
{
    for (int i = 0; i < n; i++) {
        pt_io_close(loop, &s[i].io);
        close(cl[i]);
    }
    pt_loop_flush(loop);
    close(l);
    pt_loop_destroy(loop);
}

/* Readers that stall (each socket has unread bytes) must not keep other
 * sockets from receiving: more stalled sockets than the io_uring backend
 * has ring buffers, then an unrelated socket's request still arrives. */
#define NSTALLED 200
static void test_stalled_readers_starve_nobody(enum pt_io_backend be)
{
    struct pt_loop loop;
    static struct side s[NSTALLED + 1];
    static int cl[NSTALLED + 1];
    int l = many_open(&loop, be, s, cl, NSTALLED + 1);
    for (int i = 0; i <= NSTALLED; i++)
        fcntl(cl[i], F_SETFL, O_NONBLOCK);
    spin(&loop, 2);
    static char chunk[65537];
    for (int i = 0; i < NSTALLED; i++) {
        CHECK(send(cl[i], chunk, sizeof(chunk), MSG_NOSIGNAL) > 0);
        spin(&loop, 1);
    }
    spin(&loop, 10);
    CHECK(send(cl[NSTALLED], "GET / HTTP/1.1\r\n\r\n", 18, 0) == 18);
    struct side *x = &s[NSTALLED];
    for (int i = 0; i < 300 && !(x->events & EPOLLIN); i++)
        spin(&loop, 1);
    CHECK_MSG(x->events & EPOLLIN, "a socket starved by %d stalled readers", NSTALLED);
    char buf[64];
    CHECK_EQ_INT(pt_io_recv(&loop, &x->io, buf, sizeof(buf)), 18);
    /* And the stalled ones still get everything once they read. */
    size_t total = 0;
    for (int i = 0; i < NSTALLED; i++) {
        for (int k = 0; k < 2000; k++) {
            static char rb[16384];
            ssize_t n = pt_io_recv(&loop, &s[i].io, rb, sizeof(rb));
            if (n > 0)
                total += (size_t)n;
            else if (total >= (size_t)(i + 1) * sizeof(chunk))
                break;
            else
                spin(&loop, 1);
        }
    }
    CHECK_EQ_INT(total, (size_t)NSTALLED * sizeof(chunk));
    many_close(&loop, l, s, cl, NSTALLED + 1);
}

/* A worker's last act: sends accepted, sockets closed, loop flushed on its
 * thread, then destroyed elsewhere. The peer must get every byte it was
 * sent and then EOF, even when it is slow to read; and a close queued
 * after a flush is not lost either (flush, close, flush, destroy). */
struct exit_ctx {
    struct pt_loop loop;
    struct side s, idle;
    size_t accepted;
};

static void *exit_thread(void *arg)
{
    struct exit_ctx *x = arg;
    struct pt_loop *loop = &x->loop;
    pt_loop_thread_start(loop);
    static char out[65536];
    memset(out, 'x', sizeof(out));
    int stuck = 0;
    for (int i = 0; i < 100000 && stuck < 5; i++) {
        struct iovec c = {out, sizeof(out)};
        ssize_t w = pt_io_sendv(loop, &x->s.io, &c, 1);
        if (w > 0) {
            x->accepted += (size_t)w;
            stuck = 0;
        } else {
            stuck++;
        }
        spin(loop, 1);
    }
    pt_io_close(loop, &x->s.io);
    pt_loop_flush(loop);
    pt_io_close(loop, &x->idle.io);
    pt_loop_flush(loop);
    return NULL;
}

struct reader_ctx {
    int fd;
    size_t got;
    bool eof;
};

static void *slow_reader(void *arg)
{
    struct reader_ctx *r = arg;
    static char in[1 << 16];
    usleep(300 * 1000); /* the worker is already flushing */
    while (readable_within(r->fd, 3000)) {
        ssize_t n = recv(r->fd, in, sizeof(in), 0);
        if (n <= 0) {
            r->eof = n == 0;
            break;
        }
        r->got += (size_t)n;
    }
    return NULL;
}

static void test_exit_flush(enum pt_io_backend be)
{
    static struct exit_ctx x;
    memset(&x, 0, sizeof(x));
    CHECK(pt_loop_init_backend(&x.loop, be) == 0);
    struct sockaddr_in sa;
    int l = listener(&sa), cl, cl2;
    x.s.io.fd = pair(l, &sa, &cl);
    x.s.io.cb = on_event;
    x.idle.io.fd = pair(l, &sa, &cl2);
    x.idle.io.cb = on_event;
    CHECK(pt_loop_add_stream(&x.loop, &x.s.io, false) == 0);
    CHECK(pt_loop_add_stream(&x.loop, &x.idle.io, false) == 0);
    pthread_t th, rd;
    struct reader_ctx r = {.fd = cl};
    pthread_create(&th, NULL, exit_thread, &x);
    usleep(100 * 1000);
    pthread_create(&rd, NULL, slow_reader, &r);
    pthread_join(th, NULL);
    pt_loop_destroy(&x.loop);
    pthread_join(rd, NULL);
    CHECK_MSG(r.got == x.accepted, "%zu of %zu accepted bytes arrived", r.got, x.accepted);
    CHECK(r.eof);
    CHECK_MSG(readable_within(cl2, 1000) && recv(cl2, &r, 1, 0) == 0,
              "a socket closed after the first flush was never closed");
    close(cl);
    close(cl2);
    close(l);
}

/* shutdown(SHUT_WR) after a send: the peer reads the bytes then EOF, and
 * the loop's side can still receive. */
static void test_shutdown_after_send(enum pt_io_backend be)
{
    struct fixture fx;
    fx_open(&fx, be);
    struct pt_loop *loop = &fx.loop;
    struct side *s = &fx.s;
    int cl = fx.cl;
    struct iovec iov = {(void *)"bye", 3};
    CHECK_EQ_INT(pt_io_sendv(loop, &s->io, &iov, 1), 3);
    CHECK_EQ_INT(pt_io_shutdown_wr(loop, &s->io), 0);
    spin(loop, 3);
    char buf[16];
    CHECK_EQ_INT(read_all(cl, buf, sizeof(buf)), 3);
    CHECK(memcmp(buf, "bye", 3) == 0);
    CHECK(send(cl, "late", 4, 0) == 4);
    s->events = 0;
    for (int i = 0; i < 200 && !(s->events & EPOLLIN); i++)
        spin(loop, 1);
    CHECK_EQ_INT(pt_io_recv(loop, &s->io, buf, sizeof(buf)), 4);
    fx_close(&fx);
}

/* More sockets with bytes waiting than the io_uring backend has receive
 * buffers, none read at first: every socket still gets its bytes once
 * readers consume (unread bytes leave the shared ring, and a receive that
 * found it empty is re-armed). */
#define NCONN 300
static void test_many_unread(enum pt_io_backend be)
{
    struct pt_loop loop;
    static struct side s[NCONN];
    static int cl[NCONN];
    int l = many_open(&loop, be, s, cl, NCONN);
    spin(&loop, 2);
    for (int i = 0; i < NCONN; i++) {
        char msg[32];
        int len = snprintf(msg, sizeof(msg), "conn-%d", i);
        CHECK(send(cl[i], msg, (size_t)len, 0) == len);
    }
    spin(&loop, 20);
    int done = 0;
    bool ok[NCONN] = {false};
    for (int round = 0; round < 400 && done < NCONN; round++) {
        for (int i = 0; i < NCONN; i++) {
            if (ok[i])
                continue;
            char buf[32], want[32];
            ssize_t n = pt_io_recv(&loop, &s[i].io, buf, sizeof(buf));
            if (n > 0) {
                int len = snprintf(want, sizeof(want), "conn-%d", i);
                CHECK_MSG(n == len && memcmp(buf, want, (size_t)len) == 0, "conn %d", i);
                ok[i] = true;
                done++;
            }
        }
        spin(&loop, 1);
    }
    CHECK_EQ_INT(done, NCONN);
    many_close(&loop, l, s, cl, NCONN);
}

/* Non-blocking connect: EPOLLOUT when done (with SO_ERROR 0), then data
 * flows; to a closed port, the event carries the refusal. */
static void test_connect(enum pt_io_backend be)
{
    struct pt_loop loop;
    CHECK(pt_loop_init_backend(&loop, be) == 0);
    pt_loop_thread_start(&loop);
    struct sockaddr_in sa;
    int l = listener(&sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    CHECK(rc == 0 || errno == EINPROGRESS);
    struct side s = {.io = {.fd = fd, .cb = on_event}};
    CHECK(pt_loop_add_stream(&loop, &s.io, rc != 0) == 0);
    for (int i = 0; i < 200 && !(s.events & EPOLLOUT); i++)
        spin(&loop, 1);
    CHECK(s.events & EPOLLOUT);
    int soerr = -1;
    socklen_t sl = sizeof(soerr);
    CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0);
    pt_io_connected(&loop, &s.io);
    int srv = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    CHECK(srv >= 0);
    CHECK(send(srv, "pong", 4, 0) == 4);
    s.events = 0;
    for (int i = 0; i < 200 && !(s.events & EPOLLIN); i++)
        spin(&loop, 1);
    char buf[8];
    CHECK_EQ_INT(pt_io_recv(&loop, &s.io, buf, sizeof(buf)), 4);
    pt_io_close(&loop, &s.io);
    close(srv);

    /* Refused: the listener is gone. */
    close(l);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (rc < 0 && errno == EINPROGRESS) {
        struct side r = {.io = {.fd = fd, .cb = on_event}};
        CHECK(pt_loop_add_stream(&loop, &r.io, true) == 0);
        for (int i = 0; i < 200 && !r.events; i++)
            spin(&loop, 1);
        CHECK(r.events & (EPOLLERR | EPOLLHUP));
        CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == ECONNREFUSED);
        pt_io_close(&loop, &r.io);
    } else {
        CHECK(rc < 0 && errno == ECONNREFUSED);
        close(fd);
    }
    pt_loop_flush(&loop);
    pt_loop_destroy(&loop);
}

int main(void)
{
    enum pt_io_backend backends[] = {PT_IO_EPOLL, PT_IO_URING};
    for (int b = 0; b < 2; b++) {
        struct pt_loop probe;
        int rc = pt_loop_init_backend(&probe, backends[b]);
        if (rc < 0) {
            /* epoll must work; io_uring is optional and may be refused
             * (old kernel, kernel.io_uring_disabled, seccomp): say so. */
            CHECK_MSG(backends[b] == PT_IO_URING, "epoll unavailable: %s", strerror(-rc));
            fprintf(stderr, "test_loop: io_uring cases SKIPPED: the kernel refuses it (%s)\n",
                    strerror(-rc));
            continue;
        }
        pt_loop_destroy(&probe);
        test_recv_pieces_and_eof(backends[b]);
        test_send_backpressure_then_close(backends[b]);
        test_shutdown_after_send(backends[b]);
        test_reader_stops(backends[b]);
        test_stalled_readers_starve_nobody(backends[b]);
        test_exit_flush(backends[b]);
        test_many_unread(backends[b]);
        test_connect(backends[b]);
    }
    return unit_report("test_loop");
}
