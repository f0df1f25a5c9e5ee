/*
 * filter.h — the plugin model (DESIGN.md §5).
 *
 * A filter is a static `struct pt_filter_def`: a name, a priority, a field
 * table that generic config code uses to parse and validate its YAML (so
 * every filter gets file:line:col errors for free), an optional compile
 * step, a per-request state size and up to four hooks. At load time each
 * route's effective filters are compiled into flat per-phase arrays
 * (`struct pt_chain`); a phase with no filters costs nothing.
 *
 * Ownership: a filter's config lives in the generation arena and is
 * read-only on workers. Per-request state lives in the request arena.
 * Hooks run on the worker that owns the request; they must not block.
 */
#ifndef PT_FILTERS_FILTER_H
#define PT_FILTERS_FILTER_H

#include "core/arena.h"
#include "core/cidr.h"
#include "http/headers.h"
#include "proxy/redis.h"

struct pt_tls;

#include <string.h>

/* ---- configuration field tables (parsed by generic code) ---- */

enum pt_field_type {
    PT_F_STRING,      /* const char *                      */
    PT_F_STRING_LIST, /* struct pt_strlist  (scalar or sequence) */
    PT_F_STRING_MAP,  /* struct pt_strmap   (mapping of scalars) */
    /* struct pt_strmap whose values are templates (template.h): `$` inside
     * an expanded `${ENV}` value arrives as `$$`, i.e. as literal text */
    PT_F_TEMPLATE_MAP,
    PT_F_BOOL,     /* bool                               */
    PT_F_INT,      /* int64_t                            */
    PT_F_DURATION, /* uint64_t milliseconds ("250ms", "5s") */
    PT_F_SIZE,     /* uint64_t bytes ("16KiB")          */
    PT_F_DOUBLE,   /* double                             */
    PT_F_UPSTREAM, /* const char *: an upstream's name; the loader checks it exists */
    PT_F_PERCENT,  /* double in [0, 100]: "10", 10, "10%" */
    PT_F_OBJECT,   /* a nested mapping read with `sub` into the struct at offset */
    /* const char *: an http:// URL for svc->call; the loader checks it and
     * has its host name (if it is one) resolved like a target's */
    PT_F_URL,
    /* struct pt_objlist: a sequence of mappings, each read with `sub` into
     * an item whose size is the `offset` of sub's {NULL} terminator
     * (PT_F_URL fields inside are registered like top-level ones) */
    PT_F_OBJECT_LIST,
    /* struct pt_jsonmap: a mapping of scalars meant as JSON values
     * (add_body_fields): like PT_F_TEMPLATE_MAP, and each value remembers
     * whether YAML wrote it plain (unquoted), so `42`, `true` or `null`
     * can stay a JSON number, boolean or null while "42" is a string */
    PT_F_JSON_MAP,
    /* struct pt_strlistmap: a mapping whose values are string lists (a
     * scalar stands for a one-item list): aggregate's `fields` per part */
    PT_F_STRLIST_MAP,
    /* struct pt_strmapmap: a mapping whose values are mappings of scalars:
     * aggregate's `rename` per part */
    PT_F_STRMAP_MAP,
};

struct pt_strlist {
    const char **v;
    uint32_t n;
};

struct pt_strmap {
    const char **keys;
    const char **values;
    uint32_t n;
};

/* PT_F_JSON_MAP: keys and value templates as in pt_strmap; plain[i]
 * when YAML wrote value i unquoted (a null value arrives as "null"). */
struct pt_jsonmap {
    const char **keys;
    const char **values;
    const bool *plain;
    uint32_t n;
};

struct pt_strlistmap {
    const char **keys;
    struct pt_strlist *values;
    uint32_t n;
};

struct pt_strmapmap {
    const char **keys;
    struct pt_strmap *values;
    uint32_t n;
};

/* PT_F_OBJECT_LIST: n items, each of the size pt_field_item_size gives. */
struct pt_objlist {
    void *v;
    uint32_t n;
};

struct pt_field {
    const char *name; /* YAML key */
    enum pt_field_type type;
    size_t offset;              /* offsetof() into the filter's config struct */
    const struct pt_field *sub; /* PT_F_OBJECT(_LIST): the nested table, offsets
                                 * relative to the nested struct; NULL otherwise */
};

/* A PT_F_OBJECT_LIST item's size: its table's terminator carries it,
 * {NULL, 0, sizeof(struct item), NULL}. */
static inline size_t pt_field_item_size(const struct pt_field *f)
{
    const struct pt_field *t = f->sub;
    while (t->name)
        t++;
    return t->offset;
}

/* ---- the per-request view a filter sees ---- */

enum pt_filter_result {
    PT_FILTER_CONTINUE = 0, /* go on to the next filter */
    PT_FILTER_RESPOND,      /* stop; reply with ctx->respond_* (e.g. 401, 429) */
    PT_FILTER_SUSPEND,      /* async work started through ctx->svc; resume later */
    PT_FILTER_ERROR,        /* internal failure → 500 */
};

/* Who is calling, as the auth filters found out (DESIGN.md §4a): set by
 * ext_auth / jwt / key_auth / introspection / mtls_auth, read by acl,
 * rate_limit, the access log and metrics. Slices live in the request
 * arena or the generation; empty consumer = anonymous. */
struct pt_identity {
    pt_slice consumer;
    const pt_slice *groups;
    uint32_t ngroups;
    const char *source; /* the filter that set it ("ext_auth"), for logs */
    /* The challenges (WWW-Authenticate schemes) of optional auth filters
     * that found no credential of theirs and let the request pass on
     * (pt_auth_pass_anonymous, auth.h): what a later 401 (acl's, with
     * nobody identified) offers the client. Static strings. */
    const char *challenges[4];
    uint32_t nchallenges;
    /* The claims segment (base64url, as the client sent it) of the JWT
     * the jwt filter verified for this request; empty when none did.
     * Points into the request's own bytes: read by rate_limit's
     * `jwt:CLAIM` keys (pt_jwt_claim_string, jose.h). */
    pt_slice token_claims;
};

#define PT_FILTER_NOTES_MAX 4

/*
 * How a filter with a body hook uses one message's body, said in the hook
 * that sees the head (on_request for the request body, on_response_head
 * for the response body) by setting ctx->body_use; the runner resets it to
 * PT_BODY_CHANGE before each such hook. The exchange frames the body by
 * the strongest use of the filters that did not skip it:
 *   - every filter SKIP: the body streams as if the route had no body
 *     filter (no copy, the upstream's framing kept);
 *   - OBSERVE only: chunks pass through the filters, framing kept;
 *   - WHOLE (and no CHANGE): the filter takes the whole body and emits its
 *     result at end of stream (or gives up and emits the body unchanged):
 *     a response with a Content-Length has its head held until the
 *     result is known and gets the result's length; a chunked one stays
 *     chunked. The request body is gathered before dispatch (see
 *     on_request_body);
 *   - CHANGE (the default): chunks may change size: a known length is
 *     dropped and the response goes chunked.
 */
enum pt_body_use {
    PT_BODY_CHANGE = 0,
    PT_BODY_SKIP,
    PT_BODY_OBSERVE,
    PT_BODY_WHOLE,
};

struct pt_filter_ctx;
struct pt_chain;
struct pt_consumers;
struct pt_rl_table;
struct pt_cache_store;

/*
 * An outbound call a filter makes through the gateway's outbound client
 * (ext_auth's check, later JWKS and introspection). The response is
 * buffered: status, headers and up to max_body bytes of body, delivered
 * once to the done callback. Everything the request points at must stay
 * valid until the call is started (it is copied); results live in the
 * request arena and stay valid until the request ends.
 */
struct pt_filter_call_req {
    const char *upstream; /* upstream name in the request's generation, or NULL: */
    const char *url;      /* "http://127.0.0.1:8080/path?q": an IP literal, localhost, or
                           * a host name from a PT_F_URL field (resolved by the control
                           * thread); `path` is then ignored */
    pt_slice method;      /* default "GET" */
    pt_slice path;        /* origin-form target, query included */
    const struct pt_headers *headers; /* fields to send (NULL: none); Host is added
                                       * (the target's address) unless present */
    pt_slice body;                    /* sent with Content-Length when non-empty */
    uint64_t timeout_ms;              /* whole call: connect + answer; 0 = upstream's */
    size_t max_body;                  /* response body bytes kept; the rest is dropped */
};

enum pt_call_error {
    PT_CALL_OK = 0,
    PT_CALL_ERR_CONNECT,   /* refused / unreachable */
    PT_CALL_ERR_TIMEOUT,   /* no (complete) answer in time, or no connection in connect_timeout */
    PT_CALL_ERR_RESET,     /* closed or reset before a complete answer */
    PT_CALL_ERR_PROTOCOL,  /* an answer that is not valid HTTP/1.1 */
    PT_CALL_ERR_NO_TARGET, /* no healthy target, or no such upstream */
    PT_CALL_ERR_RESOURCES, /* the gateway's own limits (fds, memory) */
    PT_CALL_ERR_CANCELLED, /* a detached call stopped by the worker's shutdown */
};

struct pt_filter_call_res {
    enum pt_call_error error; /* PT_CALL_OK: status and the rest are set */
    const char *error_text;   /* static text for logs when error != OK */
    int status;
    struct pt_headers headers; /* response fields (request arena) */
    pt_slice body;             /* the first max_body bytes */
    bool truncated;            /* the body was longer than max_body */
};

/* Completion callbacks run on the request's worker, with the state of the
 * filter that started the work. They run at most once, and never after the
 * request was cancelled (the gateway cancels the pending work first). A
 * callback ends by calling ctx->resume exactly once, or by starting the
 * next piece of work (a timer to poll again, a call) and returning: the
 * suspension then goes on, under its first deadline. */
typedef void (*pt_filter_timer_cb)(struct pt_filter_ctx *ctx, void *state);
typedef void (*pt_filter_call_cb)(struct pt_filter_ctx *ctx, void *state,
                                  const struct pt_filter_call_res *res);
/* A fan-out call's completion (svc->fan_call): `tag` is what the filter
 * gave when it started that call. */
typedef void (*pt_filter_fan_cb)(struct pt_filter_ctx *ctx, void *state, uint32_t tag,
                                 const struct pt_filter_call_res *res);

/* A detached call's completion (svc->call_detached): on the worker that
 * started it, exactly once, with the result (its slices live until the
 * callback returns) and the loop clock; res->error is
 * PT_CALL_ERR_CANCELLED when the worker stops first. No request context:
 * the call outlives the request that started it. */
typedef void (*pt_filter_detached_cb)(void *arg, const struct pt_filter_call_res *res,
                                      uint64_t now_ms);

/* A script on the shared store (`cluster.redis`): the request and result
 * types are proxy/redis.h's. */
typedef void (*pt_filter_eval_cb)(struct pt_filter_ctx *ctx, void *state,
                                  const struct pt_redis_result *res);

/*
 * What the gateway lets a filter do (function pointers, so filters never
 * include a gateway header). A filter starts at most one piece of async
 * work per suspension, then returns PT_FILTER_SUSPEND; a start that fails
 * returns -errno and never calls its callback (libuv's rule).
 */
struct pt_filter_services {
    int (*timer)(struct pt_filter_ctx *ctx, uint64_t delay_ms, pt_filter_timer_cb cb);
    int (*call)(struct pt_filter_ctx *ctx, const struct pt_filter_call_req *req,
                pt_filter_call_cb cb);
    uint64_t (*now_ms)(struct pt_filter_ctx *ctx); /* the loop's clock */
    uint64_t (*random)(struct pt_filter_ctx *ctx); /* fast per-worker PRNG */
    /* A script on the shared store; the callback gets exactly one
     * result, on time or at req->timeout_ms (-ENOTCONN when the config
     * has no cluster.redis: never called back). */
    int (*eval)(struct pt_filter_ctx *ctx, const struct pt_redis_eval_req *req,
                pt_filter_eval_cb cb);
    /* One of several calls out at once (aggregate's fan-out): like `call`
     * (each is an ordinary outbound call, traced as its own span under
     * the filter's name), but any number may be pending together, each
     * completing on its own with the `tag` it was started with. The
     * filter stays suspended while any is out. A completion returns (more
     * are out), starts further fan calls (a dependent call) and returns,
     * or ends the wait with ctx->resume, which cancels every fan call
     * still out, as the request's end does. -EBUSY while a timer, call or
     * script is pending (and those return -EBUSY while a fan call is).
     * Unlike `call`, a fan call is a request of the upstream's like a
     * proxied one: it passes the upstream's gate first (-EAGAIN: its
     * circuit breaker is open; -EUSERS: its max_concurrent requests are
     * in flight; -EHOSTUNREACH: it has no healthy target; in each case it
     * was not contacted), its outcome counts for
     * the breaker, its time and retries go to the upstream's metrics, and
     * the time any is out is not the gateway's overhead. req->timeout_ms
     * 0 is the route's `timeout`, else the upstream's read timeout. While
     * any is out the suspension lasts past the latest one's own deadline
     * (suspend_deadline_ms is a floor), so each ends on its own timeout. */
    int (*fan_call)(struct pt_filter_ctx *ctx, const struct pt_filter_call_req *req, uint32_t tag,
                    pt_filter_fan_cb cb);
    /* A call that is not the request's pending work and outlives it (the
     * cache's background refresh): req as for `call`, except that with
     * neither `upstream` nor `url` it goes to the request's own upstream
     * (its balancer, pool, TLS and retries), and req->headers are copied
     * at the start. The request goes on at once (no suspension). It is
     * owned by the worker, bounded by req->timeout_ms (0: the upstream's
     * read timeout) and by PT_FILTER_DETACHED_MAX per worker, and keeps
     * the request's generation (so the filter's config) alive until cb
     * returns. 0, or -errno (cb never runs). */
    int (*call_detached)(struct pt_filter_ctx *ctx, const struct pt_filter_call_req *req,
                         pt_filter_detached_cb cb, void *arg);
    /* Suspends the request until `unpark` names this worker, or for at
     * most timeout_ms; cb then runs (and resumes, or parks again). A wake
     * may be for another parked request of the worker: cb checks. */
    int (*park)(struct pt_filter_ctx *ctx, uint64_t timeout_ms, pt_filter_timer_cb cb);
    /* This worker's bit in an unpark mask: 1 << (worker id % 64). */
    uint64_t (*worker_bit)(struct pt_filter_ctx *ctx);
    /* Any thread: wakes the parked requests of every worker in the mask
     * (an atomic flag and the worker's eventfd; no allocation). */
    void (*unpark)(uint64_t workers);
};

#define PT_FILTER_DETACHED_MAX 256

struct pt_filter_ctx {
    struct pt_arena *arena;         /* request arena: freed when the request ends */
    struct pt_headers *req_headers; /* forwarded upstream; editable in on_request */
    /* req_headers->f[0..req_fields_sent) are the fields the request
     * arrived with (and the gateway's forwarding fields), recorded before
     * the first filter ran: a field a filter hid stays there, dead, and
     * fields filters add come after. What the client sent, whatever
     * filters did since (the cache's Authorization rule). */
    uint32_t req_fields_sent;
    struct pt_headers *resp_headers; /* sent to the client; editable in on_response_head */
    int method_id;                   /* enum pt_method */
    pt_slice method, path;           /* path after routing rewrites */
    /* The query string (without '?') that goes upstream: a request filter
     * may replace it (with bytes in the request arena), e.g. to hide a
     * credential sent as a query parameter. */
    pt_slice query;
    pt_slice uri; /* the request target as the client sent it */
    /* The request path as the client sent it, normalised as routing saw
     * it (before strip_prefix / rewrite): what the client asked for. */
    pt_slice client_path;
    pt_slice scheme;    /* "http" / "https": the listener's */
    pt_slice authority; /* the routed host (Host or absolute-form) */
    pt_slice request_id;
    pt_slice remote_addr;          /* the real client's IP, text (gateway/exchange.h) */
    const struct pt_ip *remote_ip; /* the same, parsed; NULL when there is no IP */
    const pt_slice *param_names;   /* route path parameters */
    const pt_slice *param_values;
    uint32_t nparams;
    bool params_numbered;         /* see pt_param_lookup */
    int status;                   /* upstream status (response phases) */
    struct pt_identity *identity; /* the exchange's identity slot */
    /* The consumers of the request's pinned generation (consumers.h),
     * read-only; never NULL while a hook runs (an empty table when the
     * config has none). */
    const struct pt_consumers *consumers;
    /* The matched route's name (generation memory), for state keyed by
     * route (rate_limit). */
    const char *route_name;
    /* The route's filter chain (generation memory, read-only): which
     * filters run around this one (the cache's refresh checks whether a
     * response filter runs before it). */
    const struct pt_chain *chain;
    /* The filter whose request hook runs or last ran (its def->name): a
     * call it makes is traced under its name. */
    const char *running;
    /* The process's local rate-limit cells (filters/rl_table.h), shared by
     * every worker and kept across reloads; never NULL while a hook runs. */
    struct pt_rl_table *rl_table;
    /* The process's shared response cache (filters/cache_store.h), kept
     * across reloads like rl_table; never NULL while a hook runs. */
    struct pt_cache_store *cache_store;
    /* The client connection's TLS session (core/tls.h: pt_tls_get_info for
     * SNI and the verified client certificate); NULL on a plain
     * connection. */
    struct pt_tls *tls;
    /* Set by a filter returning PT_FILTER_RESPOND (or resuming with it).
     * Extra response headers go into resp_headers. */
    int respond_status;
    const char *respond_error;     /* the standard JSON body's `error` (NULL: the status's) */
    pt_slice respond_body;         /* empty → the standard JSON error body */
    pt_slice respond_content_type; /* empty → application/json */
    /* respond_body and respond_content_type are the answer as they are (a
     * relayed one: the cache's): an empty body stays empty (no JSON error
     * body), an empty content type sends no Content-Type. */
    bool respond_raw;
    /* A filter returning SUSPEND may set this: ms until the gateway gives
     * up on it (cancels the work, calls on_cancel, answers 504). 0: the
     * default, PT_FILTER_SUSPEND_DEFAULT_MS. Reset before each hook. */
    uint64_t suspend_deadline_ms;
    /* Notes for the access log line, `"<key>":"<value>"` each, and the
     * metrics (portico_filter_notes_total): static strings, JSON-safe
     * (e.g. introspection's cache result). Written with pt_filter_note
     * only: one per key, a later value for the same key replaces it. */
    struct {
        const char *key, *value;
    } notes[PT_FILTER_NOTES_MAX];
    uint32_t nnotes;
    /* enum pt_body_use: what the running hook says about the body it is
     * about to see (above). For the request body, WHOLE also needs
     * request_body_max. */
    uint8_t body_use;
    /* Runner-maintained: the response body's combined use (enum
     * pt_body_use) and the body filters that skip it (bit state_index;
     * filters past the 64th never skip). */
    uint8_t response_body_use;
    uint64_t response_body_skip;
    /* Request side: the filters that want the whole request body (bit
     * state_index), and how much of it the largest of them takes: the
     * exchange gathers up to that many bytes before dispatch; a longer
     * body is sent on unchanged (the hooks are not called). */
    uint64_t request_body_want;
    uint64_t request_body_max;
    /* Nanoseconds spent in each filter's hooks, indexed by state_index
     * (the chain runners add to it); NULL: not timed (metrics off). */
    uint64_t *hook_ns;
    const struct pt_filter_services *svc;
    /* Resumes the chain after PT_FILTER_SUSPEND: call exactly once, from
     * a completion callback. */
    void (*resume)(struct pt_filter_ctx *ctx, enum pt_filter_result r);
    void *owner; /* the gateway's exchange */
};

#define PT_FILTER_SUSPEND_DEFAULT_MS 30000

/* Sets the note `key` (static strings): replaces that key's value, else
 * adds it; beyond PT_FILTER_NOTES_MAX keys a note is dropped. */
static inline void pt_filter_note(struct pt_filter_ctx *ctx, const char *key, const char *value)
{
    for (uint32_t i = 0; i < ctx->nnotes; i++)
        if (ctx->notes[i].key == key || strcmp(ctx->notes[i].key, key) == 0) {
            ctx->notes[i].value = value;
            return;
        }
    if (ctx->nnotes < PT_FILTER_NOTES_MAX) {
        ctx->notes[ctx->nnotes].key = key;
        ctx->notes[ctx->nnotes].value = value;
        ctx->nnotes++;
    }
}

/* ---- filter definitions ---- */

/* Where a compile hook reports what is wrong, one call per problem: the
 * field it is in (NULL: the filter as a whole) and, for a list item or a
 * mapping entry, that entry's name; `in_value` when the problem is in the
 * entry's value rather than its name. In a PT_F_OBJECT_LIST field the
 * entry is an item path: "#N" (the N-th item, 1-based), "#N.key" (that
 * item's key, or its value with in_value), "#N.key#K" (the K-th item of
 * that value when it is a list). The loader turns each report into a
 * file:line:col at that node. */
struct pt_filter_errs {
    void (*report)(struct pt_filter_errs *e, const char *field, const char *entry, bool in_value,
                   const char *msg);
    /* What the rest of the config provides, for checks that depend on
     * it: `cluster.redis` is set (rate_limit's `scope: cluster` needs it). */
    bool cluster_store;
};

struct pt_filter_def {
    const char *name;
    int priority; /* higher runs first within a phase; ties by name */
    /* An auth filter: it sets or reads the caller's identity (ext_auth,
     * jwt, key_auth, introspection, mtls_auth, acl). On a route with one,
     * the gateway removes every client-sent X-Consumer-* field before the
     * first filter runs, so only the gateway's own identity reaches the
     * upstream (pt_chain.strips_consumer). */
    bool auth;
    const struct pt_field *fields; /* terminated by {NULL} */
    size_t config_size;
    /* Optional: validate/compile the parsed config. Reports every problem
     * through errs and returns -1 if there was any; the loader adds
     * file:line:col. */
    int (*compile)(void *conf, struct pt_arena *a, struct pt_filter_errs *errs);
    size_t state_size; /* zeroed per request when > 0 */
    int (*on_request)(struct pt_filter_ctx *ctx, const void *conf, void *state);
    int (*on_response_head)(struct pt_filter_ctx *ctx, const void *conf, void *state);
    /* Optional: whether a field of an interim (1xx) response head must not
     * reach the client. Response filters edit the final head only; what
     * they remove there must not leak through a 103 either. */
    bool (*hides_interim_field)(const void *conf, pt_slice name);
    int (*on_response_body)(struct pt_filter_ctx *ctx, const void *conf, void *state,
                            pt_slice *chunk, bool eos);
    /* Optional: the whole request body, once, before dispatch, when this
     * filter's on_request set body_use = PT_BODY_WHOLE (and
     * request_body_max) and the body fits. *body may be replaced with
     * bytes in the request arena; it goes upstream with a Content-Length
     * of its new size (retries send the same bytes). CONTINUE or ERROR. */
    int (*on_request_body)(struct pt_filter_ctx *ctx, const void *conf, void *state,
                           pt_slice *body);
    /* Optional: whether this instance's config uses its body hooks
     * (on_request_body, on_response_body). NULL: whenever it has them. A
     * filter whose body rules are optional (request_transform with header
     * rules only) keeps such routes out of the body phases: zero cost. */
    bool (*uses_body)(const void *conf);
    void (*on_log)(struct pt_filter_ctx *ctx, const void *conf, void *state);
    /* Optional: the upstream call failed before a response head (connect
     * error, timeout, reset), or was refused before it started (the
     * circuit breaker is open, max_concurrent is reached); ctx->status
     * holds the 502/503/504 the gateway is about to answer. PT_FILTER_RESPOND answers with
     * ctx->respond_* instead (the cache's stale_if_error); anything else lets the error stand. Runs
     * only on that failure path. */
    int (*on_upstream_failure)(struct pt_filter_ctx *ctx, const void *conf, void *state);
    /* Optional: the request ends while this filter's work is pending
     * (client gone, drain, reload drain, suspend deadline). The gateway has
     * already cancelled the timer or call it started; release whatever
     * else the state holds. Never followed by a resume. */
    void (*on_cancel)(struct pt_filter_ctx *ctx, const void *conf, void *state);
};

/* One enabled filter on one route. */
struct pt_filter_inst {
    const struct pt_filter_def *def;
    const void *conf;
    uint32_t state_index; /* slot in the per-request state array */
};

/* A route's compiled chain: flat arrays per phase, in run order. */
struct pt_chain {
    const struct pt_filter_inst *all; /* every enabled filter, run order */
    uint32_t n_all;
    const struct pt_filter_inst **request;
    uint32_t n_request;
    const struct pt_filter_inst **response_head;
    uint32_t n_response_head;
    const struct pt_filter_inst **response_body;
    uint32_t n_response_body;
    const struct pt_filter_inst **log;
    uint32_t n_log;
    const struct pt_filter_inst **request_body;
    uint32_t n_request_body;
    bool strips_consumer; /* some filter of the chain is an auth filter (def->auth) */
};

/* Registry (registry.c): every known filter, by name. */
extern const struct pt_filter_def *const pt_filter_registry[];
extern const size_t pt_filter_registry_len;
const struct pt_filter_def *pt_filter_find(const char *name);

/* Builds a chain from enabled instances (any order); sorts by priority
 * then name. Allocates in `a`. Returns 0 or -ENOMEM. */
int pt_chain_build(struct pt_chain *c, struct pt_filter_inst *inst, uint32_t n, struct pt_arena *a);

/*
 * Chain runner with a resumable cursor (nginx phase-engine style). Runs
 * phase `insts[*cursor..n)`; returns the first non-CONTINUE result and
 * leaves *cursor at the filter that returned it (+1 for SUSPEND, so a
 * resume continues after it). `states` is the per-request state array.
 */
int pt_chain_run_request(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states,
                         uint32_t *cursor);
int pt_chain_run_response_head(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states);
/* Runs every body filter over one chunk (each may replace *chunk with
 * bytes of its own, in the request arena); stops at the first result that
 * is not CONTINUE (SUSPEND counts as ERROR: body filters do not wait). */
int pt_chain_run_response_body(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states,
                               pt_slice *chunk, bool eos);
/* Runs the request-body hooks of the filters in ctx->request_body_want
 * over the gathered body; stops at the first result that is not CONTINUE. */
int pt_chain_run_request_body(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states,
                              pt_slice *body);
/* The request body outgrew request_body_max while it was gathered: it goes
 * upstream unchanged, and each filter that wanted it notes `too_large`. */
void pt_chain_request_body_too_large(const struct pt_chain *c, struct pt_filter_ctx *ctx);
void pt_chain_run_log(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states);
/* Whether some response filter of the chain hides this field of a 1xx head. */
bool pt_chain_hides_interim_field(const struct pt_chain *c, pt_slice name);
/* Allocates zeroed state for every filter that wants some. */
void **pt_chain_states(const struct pt_chain *c, struct pt_arena *a);

/* A route path parameter by name. With `numbered` (a path_regex route,
 * whose params are its groups in order) a decimal name is also a group
 * number: "1" is the first group, named or not. NULL p when there is none. */
pt_slice pt_param_lookup(const pt_slice *names, const pt_slice *values, uint32_t n, bool numbered,
                         pt_slice name);

#endif
