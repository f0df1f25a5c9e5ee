/* floor_fwd — the benchmark's floor: a bare 1:1 TCP byte forwarder.
 *
 * Usage: floor_fwd LISTEN_PORT BACKEND_PORT   (both on 127.0.0.1)
 *
 * Every accepted client gets its own backend connection, opened at accept
 * time and kept for the client's lifetime; bytes go across unparsed. One
 * thread, epoll, edge-triggered, TCP_NODELAY, one read and one write per
 * message: the fewest syscalls and the least user-space work a proxy can
 * have. No HTTP, no routing, no pooling, no timeouts, no half-close (an EOF
 * on either side closes both), so it is not a proxy
 * anyone should run: bench/run.sh measures it beside portico, HAProxy and
 * nginx so that every run shows how much of a figure is the kernel and the
 * machine (loopback TCP, vCPU wake-ups) rather than the proxy.
 *
 * The benchmark's messages are tiny, so writes complete at once; if one
 * does not (a peer not reading), the forwarder waits for that peer with
 * poll(): correct, but it stalls every other connection meanwhile, which
 * a real proxy must never do. */
#include <arpa/inet.h>
#include <errno.h>
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

static void on_accept(int ep, int ls, int backend_port)
{
    for (;;) {
        int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                perror("floor_fwd: accept");
            return;
        }
        /* A blocking connect on loopback completes at once. */
        int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in ba = loopback(backend_port);
        if (b < 0 || (size_t)b >= npeer || (size_t)c >= npeer ||
            connect(b, (struct sockaddr *)&ba, sizeof(ba)) < 0) {
            perror("floor_fwd: backend connection");
            if (b >= 0)
                close(b);
            close(c);
            continue;
        }
        int on = 1;
        ioctl(b, FIONBIO, &on);
        nodelay(b);
        nodelay(c);
        peer_of[c] = b;
        peer_of[b] = c;
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

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floor_fwd LISTEN_PORT BACKEND_PORT\n");
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
