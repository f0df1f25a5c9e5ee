/* floor_fwd — the benchmark's floor: a bare 1:1 TCP byte forwarder.
 *
 * Usage: floor_fwd [--io_uring] LISTEN_PORT BACKEND_PORT   (both on 127.0.0.1)
 *
 * Every accepted client gets its own backend connection, opened at accept
 * time and kept for the client's lifetime; bytes go across unparsed. One
 * thread, TCP_NODELAY, one read and one write per message: the fewest
 * syscalls and the least user-space work a proxy can have.
 *   - default: epoll, edge-triggered, a recv and a send syscall each.
 *   - --io_uring: the techniques portico's io_uring backend uses (single
 *     issuer, deferred task work, registered ring fd; one receive armed
 *     per socket; the turn's sends and receives submitted by the one
 *     io_uring_enter that waits), minus everything portico adds to them:
 *     provided buffers, staging copies, HTTP.
 *
 * No HTTP, no routing, no pooling, no timeouts, no half-close (an EOF on
 * either side closes both), so it is not a proxy anyone should run:
 * bench/run.sh measures it beside portico, HAProxy and nginx so that every
 * run shows how much of a figure is the kernel and the machine (loopback
 * TCP, vCPU wake-ups) rather than the proxy.
 *
 * The benchmark's messages are tiny, so writes complete at once. If one
 * does not (a peer not reading), the epoll forwarder waits for that peer
 * with poll(): correct, but it stalls every other connection meanwhile,
 * which a real proxy must never do; the io_uring one only stops reading
 * the side whose bytes are still being sent. */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static int *peer_of; /* fd -> the fd it forwards to, -1 when closed */
static size_t npeer;

static void die(const char *what)
{
    fprintf(stderr, "floor_fwd: %s: %s\n", what, strerror(errno));
    exit(1);
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void close_pair(int fd)
{
    int p = peer_of[fd];
    peer_of[fd] = -1;
    close(fd); /* also leaves the epoll set */
    if (p >= 0) {
        peer_of[p] = -1;
        close(p);
    }
}

/* Writes all of buf to fd, waiting for it when its buffer is full. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, -1) < 0 && errno != EINTR)
                return -1;
        } else if (!(w < 0 && errno == EINTR)) {
            return -1;
        }
    }
    return 0;
}

/* Opens the backend connection of the client c and pairs the two; -1 (and
 * c closed) when it cannot. A blocking connect on loopback completes at
 * once; the backend socket is left blocking for the caller to change. */
static int pair_up(int c, int backend_port)
{
    int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in ba = loopback(backend_port);
    if (b < 0 || (size_t)b >= npeer || (size_t)c >= npeer ||
        connect(b, (struct sockaddr *)&ba, sizeof(ba)) < 0) {
        perror("floor_fwd: backend connection");
        if (b >= 0)
            close(b);
        close(c);
        return -1;
    }
    nodelay(b);
    nodelay(c);
    peer_of[c] = b;
    peer_of[b] = c;
    return b;
}

static void on_accept(int ep, int ls, int backend_port)
{
    for (;;) {
        int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                perror("floor_fwd: accept");
            return;
        }
        int b = pair_up(c, backend_port);
        if (b < 0)
            continue;
        int on = 1;
        ioctl(b, FIONBIO, &on);
        struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET};
        e.data.fd = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        e.data.fd = b;
        epoll_ctl(ep, EPOLL_CTL_ADD, b, &e);
    }
}

/* Moves everything readable on fd to its peer. A read shorter than the
 * buffer emptied the socket: no extra read to see EAGAIN, unless the peer
 * also closed (ev has EPOLLRDHUP), whose EOF is read next. */
static void on_readable(int fd, uint32_t ev)
{
    bool hup = ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    static char buf[16384];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r > 0) {
            if (peer_of[fd] < 0 || write_all(peer_of[fd], buf, (size_t)r) < 0) {
                close_pair(fd);
                return;
            }
            if ((size_t)r < sizeof(buf) && !hup)
                return;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            if (r == 0 || errno != EAGAIN)
                close_pair(fd);
            return;
        }
    }
}

/* ---- the io_uring floor ----
 *
 * Each socket has its own receive buffer; the bytes received on one side
 * are sent to the other from that buffer, and the side's next receive is
 * armed when the send completed. user_data is fd << 2 | op. A pair whose
 * side saw EOF or an error is shut down both ways (so every armed op
 * completes) and closed when no op of the pair is left in flight. */
enum { U_ACCEPT = 0, U_RECV = 1, U_SEND = 2 };

struct uside {
    char *buf;
    int inflight; /* ops of this side still in the ring */
    bool dead;
};
static struct uside *uside;
static struct io_uring uring;

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&uring);
    if (!sqe) {
        io_uring_submit(&uring);
        sqe = io_uring_get_sqe(&uring);
        if (!sqe)
            die("io_uring submission queue full");
    }
    return sqe;
}

static void u_recv(int fd)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv(sqe, fd, uside[fd].buf, 16384, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)fd << 2 | U_RECV);
    uside[fd].inflight++;
}

static void u_accept(int ls)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_accept(sqe, ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, (uint64_t)ls << 2 | U_ACCEPT);
}

static void u_kill(int fd)
{
    int p = peer_of[fd];
    if (!uside[fd].dead) {
        uside[fd].dead = uside[p].dead = true;
        shutdown(fd, SHUT_RDWR);
        shutdown(p, SHUT_RDWR);
    }
    if (uside[fd].inflight == 0 && uside[p].inflight == 0) {
        free(uside[fd].buf);
        free(uside[p].buf);
        memset(&uside[fd], 0, sizeof(uside[fd]));
        memset(&uside[p], 0, sizeof(uside[p]));
        peer_of[fd] = peer_of[p] = -1;
        close(fd);
        close(p);
    }
}

static void u_accepted(int c, int backend_port)
{
    /* io_uring does not care whether the backend socket blocks. */
    int b = pair_up(c, backend_port);
    if (b < 0)
        return;
    uside[c].buf = malloc(16384);
    uside[b].buf = malloc(16384);
    if (!uside[c].buf || !uside[b].buf)
        die("malloc");
    u_recv(c);
    u_recv(b);
}

static void run_uring(int ls, int backend_port)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = 8192;
    int rc = io_uring_queue_init_params(2048, &uring, &p);
    if (rc < 0) {
        errno = -rc;
        die("io_uring_queue_init");
    }
    io_uring_register_ring_fd(&uring);
    uside = calloc(npeer, sizeof(*uside));
    if (!uside)
        die("calloc");
    u_accept(ls);
    for (;;) {
        struct io_uring_cqe *cqe;
        rc = io_uring_submit_and_wait(&uring, 1);
        if (rc < 0 && rc != -EINTR && rc != -ETIME) {
            errno = -rc;
            die("io_uring_submit_and_wait");
        }
        unsigned head, n = 0;
        io_uring_for_each_cqe(&uring, head, cqe)
        {
            n++;
            int fd = (int)(cqe->user_data >> 2), res = cqe->res;
            switch (cqe->user_data & 3) {
            case U_ACCEPT:
                if (res >= 0)
                    u_accepted(res, backend_port);
                else if (res != -EAGAIN && res != -EINTR && res != -ECONNABORTED)
                    fprintf(stderr, "floor_fwd: accept: %s\n", strerror(-res));
                u_accept(fd);
                break;
            case U_RECV: {
                uside[fd].inflight--;
                int to = peer_of[fd];
                if (res <= 0 || uside[fd].dead) {
                    u_kill(fd);
                    break;
                }
                /* The send carries this side's buffer: the side's next
                 * receive waits for it. MSG_WAITALL: all of it or an error. */
                struct io_uring_sqe *sqe = sqe_get();
                io_uring_prep_send(sqe, to, uside[fd].buf, (size_t)res, MSG_NOSIGNAL | MSG_WAITALL);
                io_uring_sqe_set_data64(sqe, (uint64_t)fd << 2 | U_SEND);
                uside[fd].inflight++;
                break;
            }
            case U_SEND:
                uside[fd].inflight--;
                if (res < 0 || uside[fd].dead)
                    u_kill(fd);
                else
                    u_recv(fd);
                break;
            }
        }
        io_uring_cq_advance(&uring, n);
    }
}

int main(int argc, char **argv)
{
    bool use_uring = argc == 4 && strcmp(argv[1], "--io_uring") == 0;
    if (use_uring) {
        argc--;
        argv++;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: floor_fwd [--io_uring] LISTEN_PORT BACKEND_PORT\n");
        return 2;
    }
    int lport = atoi(argv[1]), bport = atoi(argv[2]);
    if (lport <= 0 || lport > 65535 || bport <= 0 || bport > 65535) {
        fprintf(stderr, "floor_fwd: ports must be 1-65535\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit");
    npeer =
        rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1u << 20) : (size_t)rl.rlim_cur;
    peer_of = malloc(npeer * sizeof(*peer_of));
    if (!peer_of)
        die("malloc");
    memset(peer_of, 0xff, npeer * sizeof(*peer_of));

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in la = loopback(lport);
    if (ls < 0 || bind(ls, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(ls, 4096) < 0)
        die("listen");
    if (use_uring) {
        fprintf(stderr, "floor_fwd (io_uring) listening on 127.0.0.1:%d -> 127.0.0.1:%d\n", lport,
                bport);
        run_uring(ls, bport);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event le = {.events = EPOLLIN};
    le.data.fd = ls;
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &le);
    fprintf(stderr, "floor_fwd listening on 127.0.0.1:%d -> 127.0.0.1:%d\n", lport, bport);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls)
                on_accept(ep, ls, bport);
            else if (peer_of[fd] >= 0)
                on_readable(fd, evs[i].events);
        }
    }
}
