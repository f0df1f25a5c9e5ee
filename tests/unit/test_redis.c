/*
 * test_redis.c — the shared store's connection (proxy/redis.h) against a
 * real redis-server, started by the test on a free loopback port (a
 * declared dependency: scripts/deps.sh installs it), on both I/O
 * backends: pipelining, NOSCRIPT after SCRIPT FLUSH and after a restart,
 * AUTH and SELECT, timeouts, a stalled server, fail-fast while down, and
 * reconnecting. Assertions go through a second, plain hiredis client.
 */
#include "core/log.h"
#include "proxy/redis.h"
#include "unit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>

/* ---- the server ---- */

static pid_t srv_pid;
static int srv_port;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("free port");
        exit(2);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static redisContext *cli(void)
{
    struct timeval tv = {2, 0};
    return redisConnectWithTimeout("127.0.0.1", srv_port, tv);
}

/* Starts redis-server on srv_port (password: requirepass) and waits until
 * it answers PING. */
static void srv_start(const char *password)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", srv_port);
    srv_pid = fork();
    if (srv_pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 1);
        const char *argv[16] = {"redis-server", "--port",     port,     "--bind",
                                "127.0.0.1",    "--save",     "",       "--appendonly",
                                "no",           "--loglevel", "warning"};
        int n = 11;
        if (password) {
            argv[n++] = "--requirepass";
            argv[n++] = password;
        }
        argv[n] = NULL;
        execvp("redis-server", (char **)argv);
        fprintf(stderr,
                "test_redis: cannot run redis-server (%s): it is a declared dependency, "
                "install it with scripts/deps.sh (Debian package redis-server)\n",
                strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(srv_pid, &st, WNOHANG) == srv_pid) {
            fprintf(stderr, "test_redis: redis-server exited at start (status %d)\n", st);
            exit(2);
        }
        redisContext *c = cli();
        if (c && !c->err) {
            redisReply *rep = redisCommand(c, "PING");
            bool ok = rep && (rep->type == REDIS_REPLY_STATUS || rep->type == REDIS_REPLY_ERROR);
            if (rep)
                freeReplyObject(rep);
            redisFree(c);
            if (ok)
                return;
        } else if (c) {
            redisFree(c);
        }
        sleep_ms(10);
    }
    fprintf(stderr, "test_redis: redis-server did not come up on port %d\n", srv_port);
    exit(2);
}

static void srv_stop(void)
{
    if (srv_pid <= 0)
        return;
    kill(srv_pid, SIGCONT);
    kill(srv_pid, SIGKILL);
    waitpid(srv_pid, NULL, 0);
    srv_pid = 0;
}

/* One command on a plain client (AUTH first when password); the reply's
 * integer or -1; `str` gets a string reply. */
static long long srv_cmd(const char *password, char *str, size_t strlen_, const char *fmt,
                         const char *arg)
{
    redisContext *c = cli();
    long long v = -1;
    if (!c || c->err)
        goto out;
    if (password) {
        redisReply *a = redisCommand(c, "AUTH %s", password);
        if (a)
            freeReplyObject(a);
    }
    redisReply *rep = arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
    if (rep) {
        if (rep->type == REDIS_REPLY_INTEGER)
            v = rep->integer;
        if (str && (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS))
            snprintf(str, strlen_, "%s", rep->str);
        freeReplyObject(rep);
    }
out:
    if (c)
        redisFree(c);
    return v;
}

/* ---- the client under test ---- */

struct answer {
    int n;
    enum pt_redis_error err[256];
    int64_t v[256][2];
    uint32_t nints[256];
};

static void on_answer(void *ud, const struct pt_redis_result *res)
{
    struct answer *a = ud;
    int i = a->n++;
    if (i >= 256)
        return;
    a->err[i] = res->error;
    a->nints[i] = res->nints;
    for (uint32_t k = 0; k < res->nints && k < 2; k++)
        a->v[i][k] = res->ints[k];
}

/* Returns ARGV[1] and the key's new count: order and atomic work both show. */
static struct pt_redis_script echo_incr = {
    "return {tonumber(ARGV[1]), redis.call('INCR', KEYS[1])}", ""};

static void run_until(struct pt_loop *loop, const int *n, int want, int max_ms)
{
    uint64_t end = pt_now_ns() / 1000000 + (uint64_t)max_ms;
    while (*n < want && pt_now_ns() / 1000000 < end)
        pt_loop_run_once(loop, 10);
}

static void run_for(struct pt_loop *loop, int ms)
{
    uint64_t end = pt_now_ns() / 1000000 + (uint64_t)ms;
    while (pt_now_ns() / 1000000 < end)
        pt_loop_run_once(loop, 10);
}

static struct pt_redis_cmd *eval1(struct pt_redis *r, struct pt_arena *a, const char *key, int arg,
                                  uint64_t timeout_ms, struct answer *ans)
{
    char *num = pt_arena_sprintf(a, "%d", arg);
    pt_slice *k = pt_arena_alloc(a, sizeof(*k));
    pt_slice *v = pt_arena_alloc(a, sizeof(*v));
    *k = (pt_slice){key, strlen(key)};
    *v = (pt_slice){num, strlen(num)};
    struct pt_redis_eval_req req = {&echo_incr, k, 1, v, 1, timeout_ms, 0};
    return pt_redis_eval(r, &req, a, on_answer, ans);
}

static struct pt_redis_cfg cfg_for(const char *password, uint32_t db)
{
    char url[128], err[128];
    snprintf(url, sizeof(url), "redis://%s%s%s127.0.0.1:%d/%u", password ? ":" : "",
             password ? password : "", password ? "@" : "", srv_port, (unsigned)db);
    struct pt_redis_cfg cfg = {0};
    static struct pt_arena a;
    static bool init;
    if (!init) {
        pt_arena_init(&a, 4096);
        init = true;
    }
    int rc = pt_redis_parse_url(url, &cfg, err, sizeof(err),
                                (void *(*)(void *, size_t))pt_arena_alloc, &a);
    CHECK_MSG(rc == 0, "%s: %s", url, err);
    cfg.prefix = "portico:rl:";
    return cfg;
}

/* ---- the tests ---- */

static void test_pipelined_in_order(struct pt_loop *loop)
{
    struct pt_redis_cfg cfg = cfg_for(NULL, 0);
    struct pt_redis *r = pt_redis_new(loop, &cfg);
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    static struct answer ans;
    memset(&ans, 0, sizeof(ans));
    srv_cmd(NULL, NULL, 0, "DEL %s", "t:pipe");
    int issued = 0;
    for (int i = 0; i < 200; i++)
        issued += eval1(r, &a, "t:pipe", i, 2000, &ans) != NULL;
    CHECK_EQ_INT(issued, 200); /* queued behind the first connect */
    run_until(loop, &ans.n, 200, 3000);
    CHECK_EQ_INT(ans.n, 200);
    bool order = true;
    for (int i = 0; i < 200 && i < ans.n; i++)
        order &= ans.err[i] == PT_REDIS_OK && ans.nints[i] == 2 && ans.v[i][0] == i &&
                 ans.v[i][1] == i + 1;
    CHECK_MSG(order, "answers out of order or wrong");
    CHECK(pt_redis_connected(r));
    pt_redis_free(r);
    pt_arena_destroy(&a);
}

static void test_noscript_after_flush(struct pt_loop *loop)
{
    struct pt_redis_cfg cfg = cfg_for(NULL, 0);
    struct pt_redis *r = pt_redis_new(loop, &cfg);
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    static struct answer ans;
    memset(&ans, 0, sizeof(ans));
    srv_cmd(NULL, NULL, 0, "DEL %s", "t:ns");
    eval1(r, &a, "t:ns", 0, 2000, &ans);
    run_until(loop, &ans.n, 1, 2000);
    char s[64] = "";
    srv_cmd(NULL, s, sizeof(s), "SCRIPT FLUSH", NULL);
    CHECK_STR(s, "OK");
    /* Several EVALSHAs in flight meet NOSCRIPT: each goes again as EVAL,
     * and a cancelled one is not resent. */
    struct pt_redis_cmd *cancelled = NULL;
    for (int i = 1; i <= 10; i++) {
        struct pt_redis_cmd *c = eval1(r, &a, "t:ns", i, 2000, &ans);
        if (i == 5)
            cancelled = c;
    }
    pt_redis_cancel(r, cancelled);
    run_until(loop, &ans.n, 10, 3000);
    run_for(loop, 50);
    CHECK_EQ_INT(ans.n, 10); /* 1 + 9: no callback for the cancelled one */
    bool ok = true;
    for (int i = 1; i < ans.n; i++)
        ok &= ans.err[i] == PT_REDIS_OK && ans.v[i][0] == (i < 5 ? i : i + 1);
    CHECK_MSG(ok, "answers after NOSCRIPT wrong");
    /* the script was cached again by the EVAL */
    CHECK_EQ_INT(srv_cmd(NULL, NULL, 0, "GET %s", "t:ns"), -1); /* a string, not an int */
    char cnt[32] = "";
    srv_cmd(NULL, cnt, sizeof(cnt), "GET %s", "t:ns");
    CHECK_STR(cnt, "10"); /* the cancelled call was not run twice, nor lost */
    pt_redis_free(r);
    pt_arena_destroy(&a);
}

static void test_auth_and_select(struct pt_loop *loop)
{
    srv_stop();
    srv_start("s3cret pass");
    struct pt_redis_cfg cfg = cfg_for("s3cret%20pass", 3);
    CHECK_STR(cfg.password, "s3cret pass");
    CHECK(strstr(cfg.url, "s3cret") == NULL);
    struct pt_redis *r = pt_redis_new(loop, &cfg);
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    static struct answer ans;
    memset(&ans, 0, sizeof(ans));
    eval1(r, &a, "t:db", 7, 2000, &ans);
    run_until(loop, &ans.n, 1, 2000);
    CHECK_EQ_INT(ans.n, 1);
    CHECK_EQ_INT(ans.err[0], PT_REDIS_OK);
    char v[32] = "";
    srv_cmd("s3cret pass", v, sizeof(v), "SELECT 3", NULL);
    redisContext *c = cli();
    redisReply *rep = redisCommand(c, "AUTH %s", "s3cret pass");
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 3");
    freeReplyObject(rep);
    rep = redisCommand(c, "GET t:db");
    CHECK(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, "1") == 0);
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 0");
    freeReplyObject(rep);
    rep = redisCommand(c, "EXISTS t:db");
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    freeReplyObject(rep);
    redisFree(c);
    pt_redis_free(r);

    /* A wrong password: the command fails, then the connection is down. */
    struct pt_redis_cfg bad = cfg_for("wrong", 0);
    r = pt_redis_new(loop, &bad);
    memset(&ans, 0, sizeof(ans));
    CHECK(eval1(r, &a, "t:x", 1, 2000, &ans) != NULL);
    run_until(loop, &ans.n, 1, 2000);
    CHECK_EQ_INT(ans.n, 1);
    CHECK_EQ_INT(ans.err[0], PT_REDIS_ERR_UNAVAILABLE);
    errno = 0;
    CHECK(eval1(r, &a, "t:x", 1, 2000, &ans) == NULL && errno == ENOTCONN);
    pt_redis_free(r);
    pt_arena_destroy(&a);
    srv_stop();
    srv_start(NULL);
}

static void test_timeout_stall_and_recovery(struct pt_loop *loop)
{
    struct pt_redis_cfg cfg = cfg_for(NULL, 0);
    struct pt_redis *r = pt_redis_new(loop, &cfg);
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    static struct answer ans;
    memset(&ans, 0, sizeof(ans));
    eval1(r, &a, "t:to", 0, 2000, &ans);
    run_until(loop, &ans.n, 1, 2000);
    CHECK(pt_redis_connected(r));
    kill(srv_pid, SIGSTOP);
    CHECK(eval1(r, &a, "t:to", 1, 50, &ans) != NULL);
    run_until(loop, &ans.n, 2, 1000);
    CHECK_EQ_INT(ans.n, 2);
    CHECK_EQ_INT(ans.err[1], PT_REDIS_ERR_TIMEOUT);
    /* Unanswered for a second: the connection is reset, and while it is
     * down commands fail at once. */
    run_for(loop, 1100);
    CHECK(!pt_redis_connected(r));
    errno = 0;
    CHECK(eval1(r, &a, "t:to", 2, 50, &ans) == NULL && errno == ENOTCONN);
    kill(srv_pid, SIGCONT);
    /* back within the backoff (100 ms, then 200 ms, ...) */
    uint64_t end = pt_now_ns() / 1000000 + 3000;
    while (!pt_redis_connected(r) && pt_now_ns() / 1000000 < end)
        pt_loop_run_once(loop, 10);
    CHECK(pt_redis_connected(r));
    CHECK(eval1(r, &a, "t:to", 3, 1000, &ans) != NULL);
    run_until(loop, &ans.n, 3, 2000);
    CHECK_EQ_INT(ans.n, 3);
    CHECK_EQ_INT(ans.err[2], PT_REDIS_OK);
    CHECK_EQ_INT(ans.v[2][0], 3);
    pt_redis_free(r);
    pt_arena_destroy(&a);
}

static void test_down_fails_fast_then_reconnects(struct pt_loop *loop)
{
    struct pt_redis_cfg cfg = cfg_for(NULL, 0);
    struct pt_redis *r = pt_redis_new(loop, &cfg);
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    static struct answer ans;
    memset(&ans, 0, sizeof(ans));
    eval1(r, &a, "t:rc", 0, 2000, &ans);
    run_until(loop, &ans.n, 1, 2000);
    CHECK_EQ_INT(ans.err[0], PT_REDIS_OK);
    srv_stop();
    /* The pending command fails UNAVAILABLE as the connection drops. */
    CHECK(eval1(r, &a, "t:rc", 1, 2000, &ans) != NULL);
    run_until(loop, &ans.n, 2, 2000);
    CHECK_EQ_INT(ans.n, 2);
    CHECK_EQ_INT(ans.err[1], PT_REDIS_ERR_UNAVAILABLE);
    errno = 0;
    CHECK(eval1(r, &a, "t:rc", 2, 2000, &ans) == NULL && errno == ENOTCONN);
    run_for(loop, 400); /* a few refused retries */
    errno = 0;
    CHECK(eval1(r, &a, "t:rc", 2, 2000, &ans) == NULL && errno == ENOTCONN);
    /* Restarted (no scripts cached): back after the backoff, EVALSHA
     * answered NOSCRIPT and resent as EVAL. */
    srv_start(NULL);
    uint64_t end = pt_now_ns() / 1000000 + 6000;
    while (!pt_redis_connected(r) && pt_now_ns() / 1000000 < end)
        pt_loop_run_once(loop, 10);
    CHECK(pt_redis_connected(r));
    CHECK(eval1(r, &a, "t:rc", 9, 1000, &ans) != NULL);
    run_until(loop, &ans.n, 3, 2000);
    CHECK_EQ_INT(ans.n, 3);
    CHECK_EQ_INT(ans.err[2], PT_REDIS_OK);
    CHECK_EQ_INT(ans.v[2][0], 9);
    CHECK_EQ_INT(ans.v[2][1], 1);
    pt_redis_free(r);
    pt_arena_destroy(&a);
}

static void test_error_reply(struct pt_loop *loop)
{
    static struct pt_redis_script bad = {"return redis.call('NOSUCHCOMMAND')", ""};
    static struct pt_redis_script str = {"return 'text'", ""};
    pt_redis_script_init(&bad);
    pt_redis_script_init(&str);
    struct pt_redis_cfg cfg = cfg_for(NULL, 0);
    struct pt_redis *r = pt_redis_new(loop, &cfg);
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    static struct answer ans;
    memset(&ans, 0, sizeof(ans));
    struct pt_redis_eval_req req = {&bad, NULL, 0, NULL, 0, 1000, 0};
    CHECK(pt_redis_eval(r, &req, &a, on_answer, &ans) != NULL);
    req.script = &str;
    CHECK(pt_redis_eval(r, &req, &a, on_answer, &ans) != NULL);
    CHECK(eval1(r, &a, "t:er", 4, 1000, &ans) != NULL);
    run_until(loop, &ans.n, 3, 2000);
    CHECK_EQ_INT(ans.n, 3);
    /* The two new scripts met NOSCRIPT and went again as EVAL, behind the
     * third call (whose script was cached): it answers first. */
    CHECK_EQ_INT(ans.err[0], PT_REDIS_OK);
    CHECK_EQ_INT(ans.v[0][0], 4);
    CHECK_EQ_INT(ans.err[1], PT_REDIS_ERR_REPLY);
    CHECK_EQ_INT(ans.err[2], PT_REDIS_ERR_REPLY);
    run_for(loop, 20);
    CHECK_EQ_INT(ans.n, 3);
    CHECK(pt_redis_connected(r)); /* an error reply leaves the connection good */
    pt_redis_free(r);
    pt_arena_destroy(&a);
}

static void test_parse_url(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    void *(*al)(void *, size_t) = (void *(*)(void *, size_t))pt_arena_alloc;
    struct pt_redis_cfg c;
    char err[160];
    memset(&c, 0, sizeof(c));
    CHECK(pt_redis_parse_url("redis://127.0.0.1", &c, err, sizeof(err), al, &a) == 0);
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&c.addr)->sin_port), 6379);
    CHECK_EQ_INT(c.db, 0);
    CHECK(c.password == NULL);
    CHECK_STR(c.url, "redis://127.0.0.1:6379/0");
    CHECK(pt_redis_parse_url("redis://:pw@localhost:7000/2", &c, err, sizeof(err), al, &a) == 0);
    CHECK_STR(c.password, "pw");
    CHECK_EQ_INT(c.db, 2);
    CHECK_STR(c.url, "redis://:***@localhost:7000/2");
    CHECK(pt_redis_parse_url("redis://[::1]:7001/", &c, err, sizeof(err), al, &a) == 0);
    CHECK_EQ_INT(c.addr.ss_family, AF_INET6);
    const char *bad[] = {"http://127.0.0.1",
                         "redis://",
                         "redis://127.0.0.1:0",
                         "redis://127.0.0.1:99999",
                         "redis://127.0.0.1/x",
                         "redis://user:pw@127.0.0.1",
                         "redis://:@127.0.0.1",
                         "redis://127.0.0.1:6379/0?x=1",
                         "redis://no-such-host.invalid",
                         "redis://:%zz@127.0.0.1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK_MSG(pt_redis_parse_url(bad[i], &c, err, sizeof(err), al, &a) < 0 && err[0],
                  "%s accepted", bad[i]);
    }
    struct pt_redis_script s = {"return 1", ""};
    pt_redis_script_init(&s);
    CHECK_STR(s.sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    pt_arena_destroy(&a);
}

static void run_backend(enum pt_io_backend b)
{
    struct pt_loop loop;
    if (pt_loop_init_backend(&loop, b) < 0) {
        printf("test_redis: %s backend unavailable here, skipped\n", pt_io_backend_names[b]);
        return;
    }
    pt_loop_thread_start(&loop);
    test_pipelined_in_order(&loop);
    test_noscript_after_flush(&loop);
    test_error_reply(&loop);
    test_auth_and_select(&loop);
    test_timeout_stall_and_recovery(&loop);
    test_down_fails_fast_then_reconnects(&loop);
    run_for(&loop, 20);
    pt_loop_destroy(&loop);
}

int main(void)
{
    pt_log_min_level = PT_LOG_ERROR;
    signal(SIGPIPE, SIG_IGN);
    pt_redis_script_init(&echo_incr);
    test_parse_url();
    srv_port = free_port();
    srv_start(NULL);
    run_backend(PT_IO_EPOLL);
    run_backend(PT_IO_URING);
    srv_stop();
    return unit_report("test_redis");
}
