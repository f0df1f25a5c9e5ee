/* test_client_retry.c — retries inside the outbound client
 * (client_retry.c), in process: a real epoll loop drives the calls, and
 * two loopback listeners (the upstream's two targets) are served by hand
 * on the same thread, so the test chooses which attempt fails and how.
 *
 * Covered: a reset retried on the other target with the held chunked
 * body sent again byte for byte (the caller consuming each byte once); a
 * POST whose bytes went out is not retried; a body past max_replay_body
 * is not either; a listed status is retried before the caller sees it;
 * per_try_timeout ends each attempt and the last one fails the call;
 * each attempt's outcome lands on its own target's cell and the active
 * count follows the request. */
#include "proxy/client.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>

static struct pt_loop loop;
static struct pt_bufpool bufs;
static struct pt_outbound ob;
static struct pt_arena arena;
static struct pt_upstream up;
static struct pt_target tg[2];
static struct pt_target_state cell[2];
static char addr[2][32];
static int lfd[2] = {-1, -1};

static void turn(void)
{
    pt_loop_run_once(&loop, 1);
    pt_outbound_reap(&ob);
}

static void env_open(void)
{
    CHECK(pt_loop_init(&loop) == 0);
    pt_bufpool_init(&bufs, 16);
    pt_outbound_init(&ob, &loop, &bufs);
    pt_arena_init(&arena, 16384);
    memset(&up, 0, sizeof(up));
    for (int i = 0; i < 2; i++) {
        lfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        if (bind(lfd[i], (struct sockaddr *)&sa, len) < 0 || listen(lfd[i], 16) < 0 ||
            getsockname(lfd[i], (struct sockaddr *)&sa, &len) < 0)
            abort();
        memset(&tg[i], 0, sizeof(tg[i]));
        memcpy(&tg[i].addr, &sa, sizeof(sa));
        tg[i].addrlen = sizeof(sa);
        snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%u", ntohs(sa.sin_port));
        tg[i].address = addr[i];
        tg[i].weight = 1;
        tg[i].index = (uint32_t)i;
        tg[i].state = &cell[i];
    }
    up.name = "retry";
    up.targets = tg;
    up.ntargets = 2;
    up.connect_timeout_ms = 1000;
    up.read_timeout_ms = 5000;
    up.keepalive = 0; /* every attempt on a connection of its own */
    up.retry.attempts = 2;
    up.retry.on = PT_RETRY_ON_CONNECT | PT_RETRY_ON_RESET | PT_RETRY_ON_TIMEOUT;
    pt_status_add(&up.retry.statuses, 503);
    up.retry.budget = 0.2;
    up.retry.max_replay_body = 64 * 1024;
    for (int st = 502; st <= 504; st++)
        pt_status_add(&up.failure_statuses, st);
}

static void env_close(void)
{
    pt_outbound_destroy(&ob);
    pt_loop_flush(&loop);
    pt_loop_destroy(&loop);
    pt_bufpool_destroy(&bufs);
    pt_arena_destroy(&arena);
    for (int i = 0; i < 2; i++)
        close(lfd[i]);
}

static void cells_clear(void)
{
    memset(cell, 0, sizeof(cell));
}

/* ---- the upstream side ---- */

/* Which listener has a connection waiting (-1: none), spinning the loop
 * until one does or `turns` pass. */
static int pending(int turns)
{
    for (int t = 0; t <= turns; t++) {
        for (int i = 0; i < 2; i++) {
            struct pollfd p = {.fd = lfd[i], .events = POLLIN};
            if (poll(&p, 1, 0) == 1)
                return i;
        }
        if (t < turns)
            turn();
    }
    return -1;
}

static char inbuf[1 << 17];
static size_t inlen;

/* Reads more of fd's request into inbuf until `end` is in it. */
static void read_until(int fd, const char *end)
{
    for (int t = 0; fd >= 0 && t < 3000; t++) {
        ssize_t r = recv(fd, inbuf + inlen, sizeof(inbuf) - inlen - 1, MSG_DONTWAIT);
        if (r > 0)
            inlen += (size_t)r;
        inbuf[inlen] = 0;
        if (memmem(inbuf, inlen, end, strlen(end)))
            break;
        turn();
    }
}

/* Accepts on listener i and reads until `end` arrived; returns the fd. */
static int serve_until(int i, const char *end)
{
    int fd = -1;
    for (int t = 0; t < 3000 && fd < 0; t++) {
        fd = accept4(lfd[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            turn();
    }
    inlen = 0;
    read_until(fd, end);
    return fd;
}

/* ---- the caller side ---- */

struct caller {
    struct pt_call c;
    const char *body;
    size_t len, off;  /* body[off..len) on offer, all of it */
    size_t avail;     /* when nonzero: only body[off..avail) is on offer yet */
    size_t consumed;  /* bytes body_consumed was told of, in all */
    int first_status; /* the first final head the caller saw */
    bool eos;
};

static pt_slice body_peek(void *user, bool *eos)
{
    struct caller *u = user;
    size_t end = u->avail ? u->avail : u->len;
    *eos = end == u->len;
    return (pt_slice){u->body ? u->body + u->off : "", end - u->off};
}

static void body_consumed(void *user, size_t n)
{
    struct caller *u = user;
    u->off += n;
    u->consumed += n;
}

static void pull(struct caller *u)
{
    for (int g = 0; g < 1000; g++) {
        if (u->c.phase == PT_CALL_FAILED)
            return;
        const struct pt_call_head *h = pt_call_head(&u->c);
        if (h) {
            if (!u->first_status)
                u->first_status = h->status;
            bool eos = false;
            pt_slice s = pt_call_body_peek(&u->c, &eos);
            pt_call_body_consume(&u->c, s.len);
            u->eos |= eos;
        }
        if (pt_call_pump(&u->c) == 0)
            return;
    }
}

static void on_wake(void *user)
{
    pull(user);
}

static const struct pt_call_ops ops = {body_peek, body_consumed, on_wake};

static int start(struct caller *u, const char *method, int mid, const char *body, bool chunked)
{
    memset(u, 0, sizeof(*u));
    u->body = body;
    u->len = body ? strlen(body) : 0;
    struct pt_call_req r = {
        .up = &up,
        .rand = 12345,
        .method = {method, strlen(method)},
        .method_id = mid,
        .path = PT_SLICE("/r"),
        .add_host = true,
        .content_length = body && !chunked ? (int64_t)u->len : -1,
        .chunked = body && chunked,
        .pool_idle_ms = 10000,
        .arena = &arena,
        .max_headers = 32,
    };
    int rc = pt_call_start(&u->c, &ob, &r, &ops, u);
    if (rc == 0)
        pull(u);
    return rc;
}

#define SPIN_UNTIL(cond)                                                                           \
    do {                                                                                           \
        for (int spin_ = 0; spin_ < 3000 && !(cond); spin_++)                                      \
            turn();                                                                                \
    } while (0)

static const char OK[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/* ---- tests ---- */

/* A PUT with a chunked body: the first target reads it all and closes;
 * the other one gets the same head and the same body bytes. */
static void test_reset_replays_held_body(void)
{
    cells_clear();
    static char body[20000];
    for (size_t i = 0; i < sizeof(body) - 1; i++)
        body[i] = (char)('a' + i % 26);
    struct caller u;
    CHECK_EQ_INT(start(&u, "PUT", PT_METHOD_PUT, body, true), 0);
    int a = pending(3000);
    CHECK(a >= 0);
    int fa = serve_until(a, "\r\n0\r\n\r\n");
    CHECK(memmem(inbuf, inlen, "PUT /r HTTP/1.1\r\n", 17) != NULL);
    close(fa); /* no answer: the attempt fails as a reset */
    int b = pending(3000);
    CHECK_EQ_INT(b, 1 - a); /* another target */
    int fb = serve_until(b, "\r\n0\r\n\r\n");
    /* De-chunk what the second target got and compare. */
    const char *p = strstr(inbuf, "\r\n\r\n");
    CHECK(p != NULL);
    static char got[sizeof(body)];
    size_t gl = 0;
    for (p = p ? p + 4 : inbuf; p && *p;) {
        char *e;
        unsigned long n = strtoul(p, &e, 16);
        if (n == 0 || e[0] != '\r')
            break;
        p = e + 2;
        if (gl + n < sizeof(got))
            memcpy(got + gl, p, n);
        gl += n;
        p += n + 2;
    }
    CHECK_EQ_INT(gl, strlen(body));
    CHECK(gl == strlen(body) && memcmp(got, body, gl) == 0);
    CHECK(send(fb, OK, strlen(OK), MSG_NOSIGNAL) > 0);
    SPIN_UNTIL(u.eos || u.c.phase == PT_CALL_FAILED);
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_NONE);
    CHECK_EQ_INT(u.first_status, 200);
    CHECK_EQ_INT(u.c.attempts, 2);
    CHECK(u.c.target == &tg[b]);
    CHECK_EQ_INT(u.consumed, strlen(body)); /* each byte taken from the caller once */
    /* The failed attempt counts against its own target, not the other. */
    CHECK_EQ_INT(atomic_load(&cell[a].call_failures), 1);
    CHECK_EQ_INT(atomic_load(&cell[b].call_failures), 0);
    CHECK_EQ_INT(atomic_load(&cell[a].active), 0);
    CHECK_EQ_INT(atomic_load(&cell[b].active), 1);
    pt_call_finish(&u.c);
    CHECK_EQ_INT(atomic_load(&cell[b].active), 0);
    close(fb);
    turn();
}

/* A POST whose bytes went out, and a PUT past max_replay_body: a reset
 * ends the call; nothing goes to the other target. */
static void test_unsafe_requests_are_not_retried(void)
{
    static char big[4096];
    memset(big, 'x', sizeof(big) - 1);
    struct {
        const char *method;
        int mid;
        uint64_t cap;
    } cases[] = {{"POST", PT_METHOD_POST, 64 * 1024}, {"PUT", PT_METHOD_PUT, 1024}};
    for (size_t k = 0; k < 2; k++) {
        cells_clear();
        up.retry.max_replay_body = cases[k].cap;
        struct caller u;
        CHECK_EQ_INT(start(&u, cases[k].method, cases[k].mid, big, false), 0);
        int a = pending(3000);
        CHECK(a >= 0);
        /* Read until body bytes (the body is all 'x') have arrived: the
         * request has started streaming, then the connection drops. */
        int fa = serve_until(a, "xxxxxxxxxx");
        close(fa);
        SPIN_UNTIL(u.c.phase == PT_CALL_FAILED);
        CHECK_MSG(u.c.fail == PT_CALL_FAIL_RESET || u.c.fail == PT_CALL_FAIL_WRITE, "case %zu: %d",
                  k, (int)u.c.fail);
        CHECK_EQ_INT(u.c.attempts, 1);
        CHECK_EQ_INT(pending(5), -1);
        pt_call_abort(&u.c);
        CHECK_EQ_INT(atomic_load(&cell[a].active), 0);
        turn();
    }
    up.retry.max_replay_body = 64 * 1024;
}

/* A listed status (503) from the first target: the caller sees only the
 * second target's answer. A status not listed (500) is delivered. */
static void test_listed_status_is_retried_unseen(void)
{
    cells_clear();
    struct caller u;
    CHECK_EQ_INT(start(&u, "GET", PT_METHOD_GET, NULL, false), 0);
    int a = pending(3000);
    int fa = serve_until(a, "\r\n\r\n");
    const char *busy = "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy";
    CHECK(send(fa, busy, strlen(busy), MSG_NOSIGNAL) > 0);
    int b = pending(3000);
    CHECK_EQ_INT(b, 1 - a);
    int fb = serve_until(b, "\r\n\r\n");
    CHECK(send(fb, OK, strlen(OK), MSG_NOSIGNAL) > 0);
    SPIN_UNTIL(u.eos || u.c.phase == PT_CALL_FAILED);
    CHECK_EQ_INT(u.first_status, 200);
    CHECK_EQ_INT(u.c.attempts, 2);
    CHECK_EQ_INT(atomic_load(&cell[a].call_failures), 1); /* 503 is a failure status */
    pt_call_finish(&u.c);
    close(fa);
    close(fb);
    turn();

    CHECK_EQ_INT(start(&u, "GET", PT_METHOD_GET, NULL, false), 0);
    a = pending(3000);
    fa = serve_until(a, "\r\n\r\n");
    const char *err = "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n";
    CHECK(send(fa, err, strlen(err), MSG_NOSIGNAL) > 0);
    SPIN_UNTIL(u.eos || u.c.phase == PT_CALL_FAILED);
    CHECK_EQ_INT(u.first_status, 500);
    CHECK_EQ_INT(u.c.attempts, 1);
    CHECK_EQ_INT(pending(5), -1);
    pt_call_finish(&u.c);
    close(fa);
    turn();
}

/* per_try_timeout: neither target answers; each attempt ends at its own
 * deadline and the last one fails the call as a timeout. */
static void test_per_try_timeout(void)
{
    cells_clear();
    up.retry.per_try_timeout_ms = 50;
    struct caller u;
    CHECK_EQ_INT(start(&u, "GET", PT_METHOD_GET, NULL, false), 0);
    int a = pending(3000);
    int fa = serve_until(a, "\r\n\r\n");
    int b = pending(3000);
    CHECK_EQ_INT(b, 1 - a);
    int fb = serve_until(b, "\r\n\r\n");
    SPIN_UNTIL(u.c.phase == PT_CALL_FAILED);
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_TIMEOUT);
    CHECK_STR(u.c.fail_text, "upstream per-try timeout");
    CHECK_EQ_INT(u.c.attempts, 2);
    CHECK_EQ_INT(atomic_load(&cell[0].call_failures), 1);
    CHECK_EQ_INT(atomic_load(&cell[1].call_failures), 1);
    pt_call_abort(&u.c);
    close(fa);
    close(fb);
    up.retry.per_try_timeout_ms = 0;
    turn();
}

/* Waits about `ms` of loop time, turning the loop. */
static void spin_ms(uint64_t ms)
{
    uint64_t until = loop.now_ms + ms;
    while (loop.now_ms < until)
        turn();
}

/* per_try_timeout bounds the wait for the response head once the whole
 * request is out, not the upload: a body that keeps flowing for several
 * per-try periods reaches the target, and the deadline then starts over
 * for the answer (an answer that never comes is a per-try timeout). */
static void test_per_try_timeout_spares_a_flowing_upload(void)
{
    cells_clear();
    up.retry.per_try_timeout_ms = 60;
    static const char body[] = "0123456789";
    for (int answer = 1; answer >= 0; answer--) {
        struct caller u;
        memset(&u, 0, sizeof(u));
        CHECK_EQ_INT(start(&u, "PUT", PT_METHOD_PUT, body, false), 0);
        u.avail = 1; /* one byte now, then one every 25 ms */
        pt_call_pump(&u.c);
        int a = pending(3000);
        CHECK(a >= 0);
        int fa = serve_until(a, "\r\n\r\n0");
        for (size_t k = 2; k <= sizeof(body) - 1; k++) {
            spin_ms(25);
            CHECK_MSG(u.c.phase != PT_CALL_FAILED, "failed at byte %zu: %s", k, u.c.fail_text);
            if (u.c.phase == PT_CALL_FAILED)
                break;
            u.avail = k;
            pt_call_pump(&u.c);
        }
        read_until(fa, "9");
        CHECK(memmem(inbuf, inlen, "\r\n\r\n0123456789", 14) != NULL);
        CHECK(u.c.sent_all);
        if (answer) {
            CHECK(send(fa, OK, strlen(OK), MSG_NOSIGNAL) > 0);
            SPIN_UNTIL(u.eos || u.c.phase == PT_CALL_FAILED);
            CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_NONE);
            CHECK_EQ_INT(u.first_status, 200);
            CHECK_EQ_INT(u.c.attempts, 1);
            pt_call_finish(&u.c);
        } else {
            /* Retried (the body is held), then the last attempt's
             * deadline after its own upload ends the call. */
            int b = pending(3000);
            CHECK_EQ_INT(b, 1 - a);
            int fb = serve_until(b, "0123456789");
            SPIN_UNTIL(u.c.phase == PT_CALL_FAILED);
            CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_TIMEOUT);
            CHECK_STR(u.c.fail_text, "upstream per-try timeout");
            CHECK_EQ_INT(u.c.attempts, 2);
            pt_call_abort(&u.c);
            close(fb);
        }
        close(fa);
        turn();
    }
    up.retry.per_try_timeout_ms = 0;
}

/* A per-try deadline that ends an attempt still connecting (connect_timeout
 * is longer) is a connect timeout: retried under connect_failure alone.
 * The target is a listener whose accept queue is full, so a connect to
 * it hangs (its SYNs are dropped). */
static void test_per_try_timeout_while_connecting_is_a_connect_timeout(void)
{
    int h = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int fill = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(h, (struct sockaddr *)&sa, len) < 0 || listen(h, 0) < 0 ||
        getsockname(h, (struct sockaddr *)&sa, &len) < 0 ||
        connect(fill, (struct sockaddr *)&sa, len) < 0)
        abort();
    struct pt_target ht = tg[0];
    memcpy(&ht.addr, &sa, sizeof(sa));
    ht.address = "hang";
    ht.name = NULL;
    struct pt_upstream saved = up;
    up.targets = &ht;
    up.ntargets = 1;
    up.connect_timeout_ms = 5000;
    up.retry.on = PT_RETRY_ON_CONNECT;
    up.retry.per_try_timeout_ms = 50;
    cells_clear();
    struct caller u;
    CHECK_EQ_INT(start(&u, "GET", PT_METHOD_GET, NULL, false), 0);
    SPIN_UNTIL(u.c.phase == PT_CALL_FAILED);
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_CONNECT_TO);
    CHECK_STR(u.c.fail_text, "upstream connect timeout (per-try)");
    CHECK_EQ_INT(u.c.attempts, 2);
    CHECK_EQ_INT(atomic_load(&cell[0].call_failures), 2);
    pt_call_abort(&u.c);
    up = saved;
    close(fill);
    close(h);
    turn();
}

int main(void)
{
    env_open();
    test_reset_replays_held_body();
    test_unsafe_requests_are_not_retried();
    test_listed_status_is_retried_unseen();
    test_per_try_timeout();
    test_per_try_timeout_spares_a_flowing_upload();
    test_per_try_timeout_while_connecting_is_a_connect_timeout();
    env_close();
    return unit_report("client_retry");
}
