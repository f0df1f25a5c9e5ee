/*
 * demo_ws.c - the demo backend's WebSocket echo (GET /ws/echo, RFC 6455).
 *
 * demo_backend.c parses the handshake request and hands the socket over;
 * each session then runs on a thread of its own with blocking I/O (a test
 * tool: a few sessions at a time, simplest to get right). Like the rest of
 * the demo backend it shares no code with the gateway (libcrypto only for
 * SHA-1 and base64).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

bool demo_ws_start(int fd, const char *key, size_t kl, char *pend, size_t npend, char *hdrs,
                   size_t hl);

/* GET /ws/echo with Upgrade: websocket (RFC 6455): the connection leaves
 * the worker's epoll and gets a thread of its own with blocking I/O (a
 * test tool: a few sessions at a time). It echoes text and binary
 * messages (fragmented ones reassembled, up to WS_MAX), answers a ping
 * with a pong, echoes a close frame's code and reason, and closes. A text
 * message "__headers" is answered with the handshake's request fields as
 * JSON; "__close:CODE" makes the backend close first with CODE. */
#define WS_MAX (64u << 20)

struct ws_sess {
    int fd;
    size_t npend, pos;
    char *pend; /* bytes that came behind the handshake */
    char *hdrs; /* the handshake's fields, JSON */
    size_t hdrs_len;
};

static bool ws_read(struct ws_sess *s, void *dst, size_t n)
{
    char *d = dst;
    while (n && s->pos < s->npend) {
        *d++ = s->pend[s->pos++];
        n--;
    }
    while (n) {
        ssize_t k = read(s->fd, d, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        d += k;
        n -= (size_t)k;
    }
    return true;
}

static bool ws_write_all(int fd, const void *p, size_t n)
{
    const char *q = p;
    while (n) {
        ssize_t k = write(fd, q, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        q += k;
        n -= (size_t)k;
    }
    return true;
}

static bool ws_send(int fd, int op, const void *p, size_t n)
{
    unsigned char h[10];
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | op);
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    return ws_write_all(fd, h, hl) && ws_write_all(fd, p, n);
}

static void ws_close_with(int fd, unsigned code, const char *reason)
{
    char p[125];
    size_t rl = strlen(reason) > 123 ? 123 : strlen(reason);
    p[0] = (char)(code >> 8);
    p[1] = (char)code;
    memcpy(p + 2, reason, rl);
    ws_send(fd, 8, p, 2 + rl);
}

/* One frame: opcode, fin, payload (unmasked into *buf at *len). */
static bool ws_frame(struct ws_sess *s, int *op, bool *fin, char **buf, size_t *len, size_t *cap)
{
    unsigned char h[2], ext[8], mask[4];
    if (!ws_read(s, h, 2))
        return false;
    *fin = h[0] & 0x80;
    *op = h[0] & 0x0f;
    uint64_t n = h[1] & 0x7f;
    if (n == 126 || n == 127) {
        size_t k = n == 126 ? 2 : 8;
        if (!ws_read(s, ext, k))
            return false;
        n = 0;
        for (size_t i = 0; i < k; i++)
            n = n << 8 | ext[i];
    }
    if (!(h[1] & 0x80) || n > WS_MAX || *len + n > WS_MAX) {
        ws_close_with(s->fd, !(h[1] & 0x80) ? 1002 : 1009, "");
        return false;
    }
    if (!ws_read(s, mask, 4))
        return false;
    if (*len + n > *cap) {
        *cap = (size_t)(*len + n);
        char *nb = realloc(*buf, *cap);
        if (!nb)
            return false;
        *buf = nb;
    }
    char *p = *buf + *len;
    if (!ws_read(s, p, (size_t)n))
        return false;
    for (uint64_t i = 0; i < n; i++)
        p[i] ^= (char)mask[i & 3];
    *len += (size_t)n;
    return true;
}

static void *ws_main(void *arg)
{
    struct ws_sess *s = arg;
    char *msg = NULL, *ctl = NULL;
    size_t mlen = 0, mcap = 0, clen, ccap = 0;
    int mop = 0;
    for (;;) {
        int op;
        bool fin;
        /* Data fragments append to msg; a control frame (allowed between
         * fragments) is moved out to ctl. */
        size_t before = mlen;
        if (!ws_frame(s, &op, &fin, &msg, &mlen, &mcap))
            break;
        if (op >= 8) { /* control: move its payload out of the message */
            clen = mlen - before;
            if (clen > ccap) {
                ccap = clen;
                char *nc = realloc(ctl, ccap);
                if (!nc)
                    break;
                ctl = nc;
            }
            memcpy(ctl, msg + before, clen);
            mlen = before;
            if (op == 9 && !ws_send(s->fd, 10, ctl, clen))
                break;
            if (op == 8) {
                ws_send(s->fd, 8, ctl, clen); /* the same code and reason back */
                break;
            }
            continue;
        }
        if (op != 0)
            mop = op;
        if (!fin)
            continue;
        if (mop == 1 && mlen == 9 && !memcmp(msg, "__headers", 9)) {
            if (!ws_send(s->fd, 1, s->hdrs, s->hdrs_len))
                break;
        } else if (mop == 1 && mlen > 8 && !memcmp(msg, "__close:", 8)) {
            char code[8] = {0};
            memcpy(code, msg + 8, mlen - 8 < 7 ? mlen - 8 : 7);
            ws_close_with(s->fd, (unsigned)atoi(code), "backend closes");
            /* wait for the peer's close (or EOF), then close */
            size_t l2 = 0, c2 = 0;
            char *b2 = NULL;
            while (ws_frame(s, &op, &fin, &b2, &l2, &c2) && op != 8)
                l2 = 0;
            free(b2);
            break;
        } else if (!ws_send(s->fd, mop, msg, mlen)) {
            break;
        }
        mlen = 0;
    }
    shutdown(s->fd, SHUT_WR);
    char sink[4096];
    struct timeval tv = {2, 0};
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (read(s->fd, sink, sizeof sink) > 0)
        ;
    close(s->fd);
    free(msg);
    free(ctl);
    free(s->pend);
    free(s->hdrs);
    free(s);
    return NULL;
}

static void ws_accept_value(const char *key, size_t kl, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[128 + sizeof guid];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdl = 0;
    kl = kl > 128 ? 128 : kl;
    memcpy(in, key, kl);
    memcpy(in + kl, guid, sizeof guid - 1);
    EVP_Digest(in, kl + sizeof guid - 1, md, &mdl, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdl);
}

bool demo_ws_start(int fd, const char *key, size_t kl, char *pend, size_t npend, char *hdrs,
                   size_t hl)
{
    struct ws_sess *s = calloc(1, sizeof *s);
    char acc[29] = {0};
    ws_accept_value(key, kl, acc);
    int sfd = dup(fd);
    if (!s || sfd < 0) {
        if (sfd >= 0)
            close(sfd);
        free(s);
        free(pend);
        free(hdrs);
        return false;
    }
    *s = (struct ws_sess){.fd = sfd, .pend = pend, .npend = npend, .hdrs = hdrs, .hdrs_len = hl};
    int fl = fcntl(sfd, F_GETFL);
    fcntl(sfd, F_SETFL, fl & ~O_NONBLOCK);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     acc);
    pthread_t tid;
    if (!ws_write_all(sfd, head, (size_t)n) || pthread_create(&tid, NULL, ws_main, s) != 0) {
        close(sfd);
        free(s->pend);
        free(s->hdrs);
        free(s);
        return false;
    }
    pthread_detach(tid);
    return true;
}
