/* test_loop_churn.c — randomised churn on both loop backends: peers send
 * position-patterned byte streams, the loop side reads random amounts
 * (sometimes not at all), sends, shuts down, closes and reopens sockets.
 * Every byte read on either side must be the next one of its stream, which
 * catches a buffer returned twice or reused while still read; `make test`
 * also runs it under ASan for use-after-free. */
#include "core/loop.h"
#include "unit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>

#define N 64
struct slot {
    struct pt_io io;
    int cl;
    uint64_t sent, got; /* byte counters of the peer->loop stream */
    uint64_t out, in;   /* loop->peer stream */
    bool eof, open;
    int calls;
};
static struct slot S[N];
static int L;
static struct sockaddr_in SA;
static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}
static void on_event(struct pt_loop *loop, struct pt_io *io, uint32_t ev)
{
    struct slot *s = pt_container_of(io, struct slot, io);
    s->calls++;
    (void)loop;
    (void)ev;
}
static void open_slot(struct pt_loop *loop, struct slot *s)
{
    memset(s, 0, sizeof(*s));
    s->cl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    connect(s->cl, (struct sockaddr *)&SA, sizeof(SA));
    struct pollfd p = {.fd = L, .events = POLLIN};
    poll(&p, 1, 1000);
    s->io.fd = accept4(L, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (s->io.fd < 0)
        abort();
    s->io.cb = on_event;
    CHECK(pt_loop_add_stream(loop, &s->io, false) == 0);
    s->open = true;
}
static unsigned char pat(uint64_t i)
{
    return (unsigned char)(i * 131 + (i >> 9));
}

static void churn(enum pt_io_backend be)
{
    struct pt_loop loop;
    CHECK(pt_loop_init_backend(&loop, be) == 0);
    pt_loop_thread_start(&loop);
    rng = 88172645463325252ull;
    L = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    SA.sin_family = AF_INET;
    SA.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(SA);
    bind(L, (struct sockaddr *)&SA, len);
    listen(L, 512);
    getsockname(L, (struct sockaddr *)&SA, &len);
    for (int i = 0; i < N; i++)
        open_slot(&loop, &S[i]);
    static unsigned char buf[200000];
    long bad = 0, reopen = 0;
    for (int turn = 0; turn < 20000; turn++) {
        for (int k = 0; k < 8; k++) {
            struct slot *s = &S[rnd() % N];
            uint32_t a = rnd() % 100;
            if (a < 35) { /* peer sends */
                size_t n = 1 + rnd() % 40000;
                for (size_t j = 0; j < n; j++)
                    buf[j] = pat(s->sent + j);
                ssize_t w = send(s->cl, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0)
                    s->sent += (uint64_t)w;
            } else if (a < 70) { /* loop reads */
                size_t n = 1 + rnd() % 70000;
                ssize_t r = pt_io_recv(&loop, &s->io, buf, n);
                if (r > 0) {
                    for (ssize_t j = 0; j < r; j++)
                        if (buf[j] != pat(s->got + (uint64_t)j)) {
                            bad++;
                            break;
                        }
                    s->got += (uint64_t)r;
                }
            } else if (a < 85) { /* loop sends */
                size_t n = 1 + rnd() % 40000;
                for (size_t j = 0; j < n; j++)
                    buf[j] = pat(s->out + j + 7);
                struct iovec iov[2] = {{buf, n / 2}, {buf + n / 2, n - n / 2}};
                ssize_t w = pt_io_sendv(&loop, &s->io, iov, 2);
                if (w > 0)
                    s->out += (uint64_t)w;
            } else if (a < 93) { /* peer reads */
                ssize_t r = recv(s->cl, buf, sizeof(buf), MSG_DONTWAIT);
                if (r > 0) {
                    for (ssize_t j = 0; j < r; j++)
                        if (buf[j] != pat(s->in + (uint64_t)j + 7)) {
                            bad++;
                            break;
                        }
                    s->in += (uint64_t)r;
                }
            } else if (a < 95) {
                pt_io_shutdown_wr(&loop, &s->io);
            } else { /* close and reopen */
                pt_io_close(&loop, &s->io);
                close(s->cl);
                open_slot(&loop, s);
                reopen++;
            }
        }
        pt_loop_run_once(&loop, 0);
    }
    CHECK_MSG(bad == 0, "%ld corrupted reads", bad);
    CHECK(reopen > 100); /* the close/reopen path really ran */
    for (int i = 0; i < N; i++) {
        pt_io_close(&loop, &S[i].io);
        close(S[i].cl);
    }
    pt_loop_flush(&loop);
    pt_loop_destroy(&loop);
    close(L);
}

int main(void)
{
    churn(PT_IO_EPOLL);
    struct pt_loop probe;
    int rc = pt_loop_init_backend(&probe, PT_IO_URING);
    if (rc == 0) {
        pt_loop_destroy(&probe);
        churn(PT_IO_URING);
    } else {
        fprintf(stderr, "test_loop_churn: io_uring SKIPPED: the kernel refuses it (%s)\n",
                strerror(-rc));
    }
    return unit_report("test_loop_churn");
}
