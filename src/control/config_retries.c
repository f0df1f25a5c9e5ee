/*
 * config_retries.c — an upstream's `retries:` mapping (CONFIG.md,
 * docs/configuration.md): attempts, the conditions a retry is for, the
 * per-try timeout, the retry budget and the replay cap. Part of the
 * loader (config_int.h); walk_upstream set the defaults first.
 */
#include "control/config_int.h"

#include "proxy/balance.h"

static const char *const retry_keys[] = {"attempts",        "on", "per_try_timeout", "budget",
                                         "max_replay_body", NULL};
#define PT_MAX_REPLAY_BODY (16ull << 20)

static const char *const retry_words[] = {"connect_failure", "reset", "timeout"};

/* One entry of `on`: a condition word or a final status code 200..599
 * (only a final head is ever checked: a 1xx could never match). */
static void on_item(struct cfg *c, const struct pt_ynode *it, struct pt_retry_conf *r)
{
    const char *s = pt_cfg_want_str(&c->w, it, "each `on` entry");
    if (!s)
        return;
    if (s[0] >= '0' && s[0] <= '9') {
        uint64_t st;
        if (strlen(s) != 3 || !pt_cfg_parse_u64(s, &st) || st < 100 || st > 599) {
            err_at(c, it, "retry status `%s` must be a 3-digit HTTP status (200-599)", s);
            return;
        }
        if (st < 200) {
            err_at(c, it,
                   "retry status `%s` is informational (1xx): only a final status (200-599) can "
                   "be retried",
                   s);
            return;
        }
        pt_status_add(&r->statuses, (int)st);
        return;
    }
    for (uint32_t i = 0; i < PT_ARRAY_LEN(retry_words); i++) {
        if (strcmp(s, retry_words[i]) == 0) {
            r->on |= 1u << i; /* PT_RETRY_ON_CONNECT, _RESET, _TIMEOUT in order */
            return;
        }
    }
    char hint[96];
    err_at(c, it,
           "unknown retry condition `%s` (expected connect_failure, reset, timeout or a status "
           "code)%s",
           s, pt_cfg_did_you_mean(s, retry_words, PT_ARRAY_LEN(retry_words), hint, sizeof(hint)));
}

/* `on`: a list (or one entry) of conditions; it replaces the default. */
static void walk_on(struct cfg *c, const struct pt_ynode *n, struct pt_retry_conf *r)
{
    r->on = 0;
    memset(&r->statuses, 0, sizeof(r->statuses));
    if (n->kind == PT_YSCALAR && !n->is_null) {
        on_item(c, n, r);
        return;
    }
    if (!pt_cfg_want_seq(&c->w, n, "`on`"))
        return;
    for (uint32_t i = 0; i < n->n; i++)
        on_item(c, n->items[i], r);
}

void pt_cfg_walk_retries(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u)
{
    struct pt_retry_conf *r = &u->retry;
    /* The default conditions: connect_failure, reset, 502, 503, 504. */
    r->on = PT_RETRY_ON_CONNECT | PT_RETRY_ON_RESET;
    for (int st = 502; st <= 504; st++)
        pt_status_add(&r->statuses, st);
    if (!pt_cfg_want_map(&c->w, n, "`retries`"))
        return;
    const struct pt_ynode *v[5] = {0};
    pt_cfg_bind_keys(&c->w, n, retry_keys, NULL, "in retries", v, NULL);
    uint64_t x;
    if (v[0] && pt_cfg_want_uint(&c->w, v[0], "`attempts`", 1, PT_MAX_ATTEMPTS, &x))
        r->attempts = (uint32_t)x;
    if (v[1])
        walk_on(c, v[1], r);
    if (v[2]) {
        const char *s = v[2]->kind == PT_YSCALAR ? v[2]->str : NULL;
        if (s && strcmp(s, "none") == 0)
            r->per_try_timeout_ms = 0;
        else
            pt_cfg_want_duration(&c->w, v[2], "`per_try_timeout`", false, &r->per_try_timeout_ms);
    }
    double pct;
    if (v[3] && pt_cfg_want_percent(&c->w, v[3], "`budget`", &pct))
        r->budget = pct / 100.0;
    /* Held bytes live in the request's arena: a cap keeps a burst of
     * uploads from holding gigabytes. */
    if (v[4] && pt_cfg_want_size(&c->w, v[4], "`max_replay_body`", false, &r->max_replay_body) &&
        r->max_replay_body > PT_MAX_REPLAY_BODY)
        err_at(c, v[4], "`max_replay_body` is at most 16MiB (request bodies held in memory)");
}
