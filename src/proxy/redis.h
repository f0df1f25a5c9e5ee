/*
 * redis.h — one worker's connection to the shared store (`cluster.redis`,
 * DESIGN.md §6, §7), asynchronous on the worker's own loop.
 *
 * hiredis (Debian's 0.14) supplies the protocol: commands are formatted
 * with redisFormatCommandArgv and replies parsed by its redisReader. The
 * socket is ours, a pt_io stream on the worker's loop, so it runs on both
 * I/O backends (hiredis's async context reads and writes the fd itself,
 * which the io_uring backend forbids) and a worker never blocks: connect,
 * AUTH and SELECT are pipelined ahead of the first command. Commands are
 * pipelined: each goes out as soon as it is issued, and replies come back
 * in order, matched to a FIFO of pending commands. hiredis allocates one
 * reply object per answer (accepted: about 0.3 µs; freed at once).
 *
 * Timeouts are our own timers: a command not answered within its timeout
 * gets PT_REDIS_ERR_TIMEOUT and its reply, when it comes, is dropped. A
 * connection that is refused, reset, or leaves a command unanswered for a
 * second is closed (every pending command fails with UNAVAILABLE) and
 * retried with backoff: 100 ms doubling to 5 s (each delay ±20 % at
 * random, so workers and instances do not reconnect in lockstep), back to
 * 100 ms once a connection works. While down, commands fail at once (UNAVAILABLE), so a
 * request never waits for a store that is known to be away. Each change
 * of state (lost, restored) is logged once.
 *
 * Scripts: EVALSHA first; a NOSCRIPT answer (a restarted or flushed
 * server) resends the same command as EVAL with the text, which also
 * caches it again.
 *
 * Ownership: the worker owns its connection (pt_redis_new / _free, on the
 * worker's thread). Callbacks run on that thread, at most once each, never
 * after pt_redis_cancel or pt_redis_free.
 */
#ifndef PT_PROXY_REDIS_H
#define PT_PROXY_REDIS_H

#include "core/arena.h"
#include "core/loop.h"

#include <sys/socket.h>

/* `cluster.redis: redis://[:password@]host:port/db`, parsed by the
 * loader; host resolved when the config loads. */
struct pt_redis_cfg {
    const char *url; /* for logs and the admin API: the password shows as `***` */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *password; /* NULL: no AUTH */
    uint32_t db;          /* SELECT when not 0 */
    const char *prefix;   /* `cluster.redis_prefix`, default "portico:rl:" */
};

#define PT_REDIS_DEFAULT_PREFIX "portico:rl:"

/* Parses the URL into cfg (strings allocated with `alloc(ud, size)`). 0,
 * or -1 with a reason in err. */
int pt_redis_parse_url(const char *url, struct pt_redis_cfg *cfg, char *err, size_t errlen,
                       void *(*alloc)(void *ud, size_t size), void *ud);

/* One Lua script, run with EVALSHA (EVAL with the text after NOSCRIPT).
 * It must answer an integer or an array of integers. */
struct pt_redis_script {
    const char *text;
    char sha1[41]; /* lowercase hex SHA-1 of text (pt_redis_script_init) */
};

struct pt_redis_eval_req {
    const struct pt_redis_script *script;
    const pt_slice *keys; /* KEYS[1..nkeys] */
    uint32_t nkeys;
    const pt_slice *args; /* ARGV[1..nargs] */
    uint32_t nargs;
    uint64_t timeout_ms; /* no answer by then: PT_REDIS_ERR_TIMEOUT */
    /* Writable bytes in front of every keys[i].p (the caller's arena):
     * a key prefix that fits is written there instead of copying the key
     * (the gateway's svc->eval). 0: none. */
    uint32_t key_headroom;
};

enum pt_redis_error {
    PT_REDIS_OK = 0,
    PT_REDIS_ERR_UNAVAILABLE, /* no connection (down, reconnecting, no cluster.redis) */
    PT_REDIS_ERR_TIMEOUT,     /* no answer within timeout_ms */
    PT_REDIS_ERR_REPLY,       /* an error reply, or a reply that is not integers */
};

struct pt_redis_result {
    enum pt_redis_error error;
    const char *error_text; /* static or arena text, for logs */
    const int64_t *ints;    /* the integer, or the array's integers (arena) */
    uint32_t nints;
};

/* Fills s->sha1 from s->text. */
void pt_redis_script_init(struct pt_redis_script *s);

struct pt_redis;
struct pt_redis_cmd; /* one pending command */

typedef void (*pt_redis_cb)(void *ud, const struct pt_redis_result *res);

/* A connection for cfg (copied), connecting on first use. NULL when out
 * of memory. */
struct pt_redis *pt_redis_new(struct pt_loop *loop, const struct pt_redis_cfg *cfg);
/* Closes it; pending commands are dropped without callbacks. Not from
 * inside one of the loop's I/O callbacks: the connection's pt_io must
 * outlive the loop turn it was closed in (the worker frees connections
 * between turns). */
void pt_redis_free(struct pt_redis *r);
/* The URL the connection was made for, as shown (the password is
 * never in it: `redis://:***@host:port/db`). */
const char *pt_redis_url(const struct pt_redis *r);
bool pt_redis_connected(const struct pt_redis *r);
/* Whether r talks to the server cfg names, as cfg says to (address,
 * password, database): a reload that changes none keeps the connection. */
bool pt_redis_same_cfg(const struct pt_redis *r, const struct pt_redis_cfg *cfg);
/* Some caller still waits for a callback (a retired connection is freed
 * once none does: at most the longest timeout later). */
bool pt_redis_waiting(const struct pt_redis *r);

/*
 * Runs a script. The result's ints live in `arena` (the caller's request
 * arena; it must outlive the callback). req's keys and args (not req
 * itself) must stay as they are while the caller waits: a NOSCRIPT answer
 * sends them again, as EVAL. Returns the pending command
 * (for pt_redis_cancel) or NULL with errno set, never calling back then:
 * ENOTCONN while the connection is down (the caller applies its failure
 * mode at once), ENOMEM.
 */
struct pt_redis_cmd *pt_redis_eval(struct pt_redis *r, const struct pt_redis_eval_req *req,
                                   struct pt_arena *arena, pt_redis_cb cb, void *ud);
/* The caller is gone: no callback; the reply, when it comes, is dropped. */
void pt_redis_cancel(struct pt_redis *r, struct pt_redis_cmd *c);

#endif
