/*
 * rate_limit_cluster.c — `scope: cluster`: the decision on the shared
 * store (rate_limit_int.h), one atomic Lua script per request over all
 * of the route's limits, and what happens when the store does not answer.
 *
 * The script is the whole decision: it reads the clock (Redis `TIME`, one
 * clock for every node), reads every limit's state, decides every limit
 * with the same arithmetic as pt_rl_gcra_decide / pt_rl_sw_decide, and
 * only when all of them admit, writes them all, each with a TTL. Redis
 * runs a script alone, so no other decision sees a half-written state and
 * nothing is ever read by one command and written by another (the
 * read-then-write race of Kong#5311 and APISIX#12592). A refusal writes
 * nothing: it costs no limit anything.
 *
 * Keys are the same on every node: prefix (added by the gateway), route,
 * the limit's id, the state's shape — "g" (gcra: a string, the TAT) or
 * "s<period in s>" (sliding window: a hash of window counts) — and the
 * key value: "=" and the value as it is, or "#" and its SHA-256 in hex
 * when longer than RL_KEY_VALUE_MAX, so a key stays bounded whatever a
 * client sends and the two forms never meet. A reload that changes a
 * limit's rate or burst keeps its key (and its state); one that changes
 * the algorithm or a window's period starts a new key, never reading a
 * state of the other shape (WRONGTYPE). Each key is built once, with
 * room in front for the gateway's prefix (RL_KEY_HEADROOM).
 *
 * Numbers: Lua's are doubles, exact to 2^53. Times are in µs (now ≈ 2^51
 * µs since 1970), GCRA's interval T = period / N in whole µs, rounded
 * down (the filter refuses T below 100 µs, so the rounding admits at most
 * 1 % above the rate; none when period / N is a whole number of µs),
 * and a bucket C × T is kept below 2^53 µs by the limits the filter
 * accepts (a limit's refill time is at most a day, C at most 2^20 for a
 * sliding window). Numbers go back to Redis through string.format("%.0f"),
 * never tostring, which keeps only 14 digits.
 */
#include "filters/rate_limit_int.h"

#include "core/log.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#define RL_KEY_VALUE_MAX 200
/* Bytes before each key for the gateway's prefix (the default
 * "portico:rl:" is 11); a longer prefix is copied in front instead. */
#define RL_KEY_HEADROOM 32
#define RL_ARGS_PER_LIMIT 4

/* KEYS[i]: limit i's state. ARGV[4i-3..4i]: algorithm (0 gcra, 1
 * sliding_window), capacity C, period in ms, GCRA interval T in µs.
 * Returns {all admitted, then per limit: admitted, remaining, reset_ms,
 * retry_ms}; on a refusal, an admitting limit answers without the charge
 * that did not happen (as pt_rl_table_take). */
static const char rl_script_text[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local now_ms = math.floor(now / 1000)\n"
    "local function fit(prev, need, c, w, from)\n"
    "  if prev == 0 then return from end\n"
    "  local slack = math.floor((c - need) * w / prev)\n"
    "  local e = 0\n"
    "  if slack < w then e = w - slack end\n"
    "  if e > from then return e end\n"
    "  return from\n"
    "end\n"
    "local out, put, unc, all = {0}, {}, {}, true\n"
    "for i = 1, #KEYS do\n"
    "  local a, c = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i-2])\n"
    "  local w, iv = tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i])\n"
    "  local ok, rem, reset, retry = 0, 0, 0, 0\n"
    "  if a == 0 then\n"
    "    local tat = tonumber(redis.call('GET', KEYS[i])) or 0\n"
    "    local base = math.max(tat, now)\n"
    "    local after = base - now + iv\n"
    "    local bucket = c * iv\n"
    "    if after <= bucket then\n"
    "      ok, rem, reset = 1, math.floor((bucket - after) / iv), math.ceil(after / 1000)\n"
    "      put[i], unc[i] = base + iv, math.ceil((base - now) / 1000)\n"
    "    else\n"
    "      reset = math.ceil((base - now) / 1000)\n"
    "      retry = math.max(1, math.ceil((after - bucket) / 1000))\n"
    "    end\n"
    "  else\n"
    "    local win = math.floor(now_ms / w)\n"
    "    local e = now_ms - win * w\n"
    "    local h = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')\n"
    "    local hw, prev, cur = tonumber(h[1]), 0, 0\n"
    "    if hw == win then\n"
    "      prev, cur = tonumber(h[3]) or 0, tonumber(h[2]) or 0\n"
    "    elseif hw == win - 1 then\n"
    "      prev = tonumber(h[2]) or 0\n"
    "    end\n"
    "    local held, room = prev * (w - e), c * w\n"
    "    reset = w - e\n"
    "    if held + (cur + 1) * w <= room then\n"
    "      ok, rem = 1, math.floor((room - held) / w) - (cur + 1)\n"
    "      put[i], unc[i] = {win, cur + 1, prev}, reset\n"
    "    else\n"
    "      local wait\n"
    "      if cur + 1 <= c then wait = fit(prev, cur + 1, c, w, e) - e\n"
    "      else wait = (w - e) + fit(cur, 1, c, w, 0) end\n"
    "      retry = math.max(1, wait)\n"
    "    end\n"
    "  end\n"
    "  if ok == 0 then all = false end\n"
    "  out[4*i-2], out[4*i-1], out[4*i], out[4*i+1] = ok, rem, reset, retry\n"
    "end\n"
    "if not all then\n"
    "  for i = 1, #KEYS do\n"
    "    if out[4*i-2] == 1 then out[4*i-1], out[4*i] = out[4*i-1] + 1, unc[i] end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "out[1] = 1\n"
    "for i = 1, #KEYS do\n"
    "  local w, p = tonumber(ARGV[4*i-1]), put[i]\n"
    "  if tonumber(ARGV[4*i-3]) == 0 then\n"
    "    local ttl = math.max(1, math.ceil((p - now) / 1000))\n"
    "    redis.call('SET', KEYS[i], string.format('%.0f', p), 'PX', string.format('%.0f', ttl))\n"
    "  else\n"
    "    redis.call('HSET', KEYS[i], 'w', string.format('%.0f', p[1]),\n"
    "               'c', string.format('%.0f', p[2]), 'p', string.format('%.0f', p[3]))\n"
    "    redis.call('PEXPIRE', KEYS[i], string.format('%.0f', 2 * w))\n"
    "  end\n"
    "end\n"
    "return out\n";

static struct pt_redis_script rl_script = {rl_script_text, ""};
static pthread_once_t rl_script_once = PTHREAD_ONCE_INIT;

static void rl_script_init(void)
{
    pt_redis_script_init(&rl_script);
}

const struct pt_redis_script *pt_rl_cluster_script(void)
{
    pthread_once(&rl_script_once, rl_script_init);
    return &rl_script;
}

/* A streak of store failures is logged once, when it starts and when it
 * ends: process-wide, whichever worker sees it first. */
static _Atomic bool rl_store_failing;

static const char *const mode_names[] = {"local", "allow", "deny"};

/* ---- the request ---- */

static pt_slice u64_text(struct pt_arena *a, uint64_t v)
{
    char *b = pt_arena_alloc(a, 24);
    if (!b)
        return (pt_slice){NULL, 0};
    return (pt_slice){b, (size_t)snprintf(b, 24, "%llu", (unsigned long long)v)};
}

/* route ":" id ":" shape ("=" value | "#" sha256-hex(value)), without
 * the prefix (the gateway writes it into the RL_KEY_HEADROOM bytes in
 * front). shape: "g" (gcra) or "s" and the window in seconds. */
static int key_of(struct pt_arena *a, const char *route, const struct rl_limit *l, pt_slice value,
                  pt_slice *out)
{
    size_t rlen = strlen(route);
    bool hashed = value.len > RL_KEY_VALUE_MAX;
    size_t vlen = hashed ? 64 : value.len;
    char shape[16];
    size_t slen = l->params.algorithm == PT_RL_GCRA
                      ? (size_t)snprintf(shape, sizeof(shape), "g")
                      : (size_t)snprintf(shape, sizeof(shape), "s%llu",
                                         (unsigned long long)(l->params.period_ms / 1000u));
    char *k = pt_arena_alloc(a, RL_KEY_HEADROOM + rlen + l->id.len + slen + vlen + 4);
    if (!k)
        return -ENOMEM;
    k += RL_KEY_HEADROOM;
    size_t n = 0;
    memcpy(k, route, rlen);
    n += rlen;
    k[n++] = ':';
    memcpy(k + n, l->id.p, l->id.len);
    n += l->id.len;
    k[n++] = ':';
    memcpy(k + n, shape, slen);
    n += slen;
    k[n++] = hashed ? '#' : '=';
    if (hashed) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        static const char hex[] = "0123456789abcdef";
        if (!EVP_Digest(value.p, value.len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
            return -EIO;
        for (unsigned int i = 0; i < 32; i++) {
            k[n++] = hex[md[i] >> 4];
            k[n++] = hex[md[i] & 15];
        }
    } else if (value.len) {
        memcpy(k + n, value.p, value.len);
        n += value.len;
    }
    *out = (pt_slice){k, n};
    return 0;
}

static int build_request(struct pt_filter_ctx *ctx, const struct rl_conf *conf,
                         const struct rl_state *st, struct pt_redis_eval_req *req)
{
    uint32_t n = conf->nlim;
    pt_slice *keys = pt_arena_alloc(ctx->arena, sizeof(*keys) * n);
    pt_slice *args = pt_arena_alloc(ctx->arena, sizeof(*args) * n * RL_ARGS_PER_LIMIT);
    if (!keys || !args)
        return -ENOMEM;
    const char *route = ctx->route_name ? ctx->route_name : "";
    for (uint32_t i = 0; i < n; i++) {
        const struct rl_limit *l = &conf->lim[i];
        const struct pt_rl_params *p = &l->params;
        if (key_of(ctx->arena, route, l, st->values[i], &keys[i]) < 0)
            return -ENOMEM;
        uint64_t iv_us = p->period_ms * 1000u / p->count;
        pt_slice *a = &args[i * RL_ARGS_PER_LIMIT];
        a[0] = p->algorithm == PT_RL_GCRA ? PT_SLICE("0") : PT_SLICE("1");
        a[1] = u64_text(ctx->arena, p->capacity);
        a[2] = u64_text(ctx->arena, p->period_ms);
        a[3] = u64_text(ctx->arena, iv_us ? iv_us : 1);
        if (!a[1].p || !a[2].p || !a[3].p)
            return -ENOMEM;
    }
    *req = (struct pt_redis_eval_req){
        pt_rl_cluster_script(), keys,           n, args, n * RL_ARGS_PER_LIMIT,
        conf->store_timeout_ms, RL_KEY_HEADROOM};
    return 0;
}

static const char *why_of(enum pt_redis_error e)
{
    switch (e) {
    case PT_REDIS_ERR_TIMEOUT:
        return "no answer in time";
    case PT_REDIS_ERR_REPLY:
        return "an error reply";
    default:
        return "unavailable";
    }
}

static void on_answer(struct pt_filter_ctx *ctx, void *state, const struct pt_redis_result *res)
{
    struct rl_state *st = state;
    const struct rl_conf *conf = st->conf;
    int r;
    if (res->error != PT_REDIS_OK) {
        r = pt_rl_store_failed(ctx, conf, st,
                               res->error_text ? res->error_text : why_of(res->error));
    } else if (res->nints != 1 + RL_ARGS_PER_LIMIT * conf->nlim) {
        r = pt_rl_store_failed(ctx, conf, st, "a reply of the wrong length");
    } else {
        if (pt_unlikely(atomic_load_explicit(&rl_store_failing, memory_order_relaxed)) &&
            atomic_exchange(&rl_store_failing, false))
            pt_info("rate_limit: the shared store answers again: cluster limits are exact again");
        for (uint32_t i = 0; i < conf->nlim; i++) {
            const int64_t *v = &res->ints[1 + RL_ARGS_PER_LIMIT * i];
            st->res[i] = (struct pt_rl_result){
                .admitted = v[0] == 1,
                .limit = conf->lim[i].params.capacity,
                .remaining = v[1] > 0 ? (uint64_t)v[1] : 0,
                .reset_ms = v[2] > 0 ? (uint64_t)v[2] : 0,
                .retry_ms = v[3] > 0 ? (uint64_t)v[3] : 0,
            };
        }
        r = pt_rl_finish(ctx, conf, st, res->ints[0] == 1);
    }
    ctx->resume(ctx, r);
}

int pt_rl_cluster_take(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st)
{
    struct pt_redis_eval_req req;
    st->conf = conf;
    if (build_request(ctx, conf, st, &req) < 0)
        return PT_FILTER_ERROR;
    int rc = ctx->svc->eval(ctx, &req, on_answer);
    if (rc < 0)
        return pt_rl_store_failed(ctx, conf, st,
                                  rc == -ENOTCONN ? "unavailable" : "cannot send to it");
    /* The store's own timeout answers first; this only backs it up. */
    ctx->suspend_deadline_ms = conf->store_timeout_ms + 1000;
    return PT_FILTER_SUSPEND;
}

/* ---- the store failed ---- */

int pt_rl_store_failed(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st,
                       const char *why)
{
    if (!atomic_load_explicit(&rl_store_failing, memory_order_relaxed) &&
        !atomic_exchange(&rl_store_failing, true))
        pt_warn("rate_limit: the shared store failed (%s): on_store_failure applies (route %s: %s) "
                "until it answers again",
                why, ctx->route_name ? ctx->route_name : "?", mode_names[conf->on_failure]);
    switch (conf->on_failure) {
    case RL_FAIL_ALLOW:
        st->outcome = "store_failure_allow";
        st->decided = false; /* no RateLimit-* without a decision */
        pt_filter_note(ctx, "rate_limit", st->outcome);
        return PT_FILTER_CONTINUE;
    case RL_FAIL_DENY:
        st->outcome = "store_failure_deny";
        st->decided = false;
        pt_filter_note(ctx, "rate_limit", st->outcome);
        if (pt_headers_set(ctx->resp_headers, ctx->arena, PT_SLICE("Retry-After"), PT_SLICE("1")) <
            0)
            return PT_FILTER_ERROR;
        ctx->respond_status = 503;
        ctx->respond_error = "rate limit store unavailable";
        return PT_FILTER_RESPOND;
    case RL_FAIL_LOCAL:
        break;
    }
    st->outcome = "store_failure_local";
    return pt_rl_local_take(ctx, conf, st);
}
