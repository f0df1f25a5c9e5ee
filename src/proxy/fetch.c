/*
 * fetch.c — see fetch.h. A thin collector over the streaming client: the
 * body source is one slice, the sink copies into the arena.
 */
#include "proxy/fetch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static pt_slice body_peek(void *user, bool *eos)
{
    struct pt_fetch *f = user;
    *eos = true;
    return (pt_slice){f->body.p + f->body_off, f->body.len - f->body_off};
}

static void body_consumed(void *user, size_t n)
{
    struct pt_fetch *f = user;
    f->body_off += n;
}

/* The body buffer starts small (a large max_body costs nothing until a
 * body that large comes) and doubles in the arena, up to max_body. */
#define FETCH_BODY_FIRST 4096

static bool grow(struct pt_fetch *f, size_t need)
{
    if (need <= f->rcap)
        return true;
    size_t cap = f->rcap ? f->rcap : FETCH_BODY_FIRST;
    while (cap < need)
        cap *= 2;
    cap = PT_MIN(cap, f->max_body);
    char *p = pt_arena_alloc(f->arena, cap);
    if (!p)
        return false;
    if (f->rlen)
        memcpy(p, f->rbody, f->rlen);
    f->rbody = p;
    f->rcap = cap;
    return true;
}

/* Copies what the call has into the result, pumping it while that makes
 * progress; true when the response is complete. */
static bool collect(struct pt_fetch *f)
{
    struct pt_call *c = &f->call;
    for (;;) {
        if (c->phase == PT_CALL_FAILED)
            return false;
        while (pt_call_interim(c))
            pt_call_interim_done(c); /* 1xx heads mean nothing to a fetch */
        if (pt_call_head(c) && !f->head) {
            f->head = pt_call_head(c);
            f->status = f->head->status;
        }
        if (f->head) {
            bool eos = false;
            pt_slice s = pt_call_body_peek(c, &eos);
            size_t keep = f->rlen < f->max_body ? PT_MIN(s.len, f->max_body - f->rlen) : 0;
            if (keep && !grow(f, f->rlen + keep))
                keep = 0; /* out of memory: what did not fit counts as cut off */
            if (keep) {
                memcpy(f->rbody + f->rlen, s.p, keep);
                f->rlen += keep;
            }
            f->truncated |= keep < s.len;
            pt_call_body_consume(c, s.len);
            if (eos)
                return true;
        }
        if (pt_call_pump(c) == 0)
            return false;
    }
}

static void finish(struct pt_fetch *f)
{
    f->active = false;
    pt_timer_cancel(f->call.ob->loop, &f->deadline);
    if (f->call.phase == PT_CALL_FAILED) {
        f->fail = f->call.fail;
        f->fail_text = f->call.fail_text;
        pt_call_abort(&f->call);
    } else {
        pt_call_finish(&f->call);
    }
    f->done(f, f->user); /* last act */
}

static void on_wake(void *user)
{
    struct pt_fetch *f = user;
    if (!f->active)
        return;
    if (f->call.phase == PT_CALL_FAILED || collect(f)) {
        finish(f);
        return;
    }
    if (f->call.phase == PT_CALL_FAILED)
        finish(f);
}

static const struct pt_call_ops fetch_ops = {body_peek, body_consumed, on_wake};

static void deadline_passed(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_fetch *f = pt_container_of(t, struct pt_fetch, deadline);
    if (!f->active)
        return;
    /* The call may be between events (connecting, waiting): end it as a
     * timeout, as its own timer would have. */
    pt_call_expire(&f->call);
    finish(f);
}

int pt_fetch_start(struct pt_fetch *f, struct pt_outbound *ob, struct pt_call_req *req,
                   pt_slice body, size_t max_body, pt_fetch_done_cb done, void *user)
{
    memset(f, 0, sizeof(*f));
    f->body = body;
    f->max_body = max_body;
    f->arena = req->arena;
    f->done = done;
    f->user = user;
    f->rcap = PT_MIN(max_body, (size_t)FETCH_BODY_FIRST);
    f->rbody = pt_arena_alloc(req->arena, f->rcap ? f->rcap : 1);
    if (!f->rbody) {
        f->fail = PT_CALL_FAIL_RESOURCES;
        f->fail_text = "out of memory";
        return f->fail;
    }
    req->content_length = body.len ? (int64_t)body.len : -1;
    req->chunked = false;
    if (req->read_timeout_ms)
        pt_timer_arm(ob->loop, &f->deadline, req->read_timeout_ms, deadline_passed);
    int r = pt_call_start(&f->call, ob, req, &fetch_ops, f);
    if (r != 0) {
        pt_timer_cancel(ob->loop, &f->deadline);
        f->fail = f->call.fail;
        f->fail_text = f->call.fail_text;
        pt_call_abort(&f->call);
        return r;
    }
    f->active = true;
    return 0;
}

void pt_fetch_cancel(struct pt_fetch *f)
{
    if (!f->active)
        return;
    f->active = false;
    pt_timer_cancel(f->call.ob->loop, &f->deadline);
    pt_call_abort(&f->call);
}

int pt_fetch_split_url(const char *url, char *host, size_t hostlen, uint16_t *port,
                       pt_slice *authority, pt_slice *path, pt_slice *query)
{
    bool https = pt_fetch_url_https(url);
    if (!https && strncmp(url, "http://", 7) != 0)
        return -EINVAL;
    const char *h = url + (https ? 8 : 7);
    size_t hl = strcspn(h, "/?#"); /* the authority ends at the path, query or fragment */
    const char *slash = h[hl] ? h + hl : NULL;
    char buf[256];
    if (hl == 0 || hl >= sizeof(buf) || memchr(h, '@', hl))
        return -EINVAL;
    memcpy(buf, h, hl);
    buf[hl] = 0;
    char *pstr = NULL;
    char *name = buf;
    if (buf[0] == '[') {
        char *rb = strchr(buf, ']');
        if (!rb || (rb[1] && rb[1] != ':'))
            return -EINVAL;
        *rb = 0;
        name = buf + 1;
        pstr = rb[1] == ':' ? rb + 2 : NULL;
    } else {
        pstr = strrchr(buf, ':');
        if (pstr)
            *pstr++ = 0;
    }
    long pn = https ? 443 : 80;
    if (pstr) {
        if (!*pstr || strspn(pstr, "0123456789") != strlen(pstr) || strlen(pstr) > 5)
            return -EINVAL;
        pn = strtol(pstr, NULL, 10);
    }
    if (pn <= 0 || pn > 65535 || !*name || strlen(name) >= hostlen)
        return -EINVAL;
    memcpy(host, name, strlen(name) + 1);
    *port = (uint16_t)pn;
    *authority = (pt_slice){h, hl};
    /* A fragment never goes on the wire. */
    const char *rest = slash ? slash : "";
    size_t rl = strcspn(rest, "#");
    const char *q = memchr(rest, '?', rl);
    size_t pl = q ? (size_t)(q - rest) : rl;
    *path = pl ? (pt_slice){rest, pl} : PT_SLICE("/");
    *query = q ? (pt_slice){q + 1, rl - pl - 1} : (pt_slice){"", 0};
    return 0;
}

int pt_fetch_parse_url(const char *url, struct pt_arena *a, struct pt_target *t, pt_slice *path,
                       pt_slice *query)
{
    char host[256];
    uint16_t pn;
    pt_slice auth;
    if (pt_fetch_split_url(url, host, sizeof(host), &pn, &auth, path, query) < 0)
        return -EINVAL;
    memset(t, 0, sizeof(*t));
    const char *name = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&t->addr;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&t->addr;
    if (inet_pton(AF_INET, name, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(pn);
        t->addrlen = sizeof(*s4);
    } else if (inet_pton(AF_INET6, name, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(pn);
        t->addrlen = sizeof(*s6);
    } else {
        return -EINVAL; /* a host name: the generation's URL upstreams have it */
    }
    t->address = pt_arena_strndup(a, auth.p, auth.len);
    t->weight = 1;
    return t->address ? 0 : -ENOMEM;
}
