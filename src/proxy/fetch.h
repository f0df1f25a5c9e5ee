/*
 * fetch.h — a buffered outbound call: a small request body sent whole, the
 * response collected (status, head, up to max_body bytes of body) and
 * handed over once. What filters (ext_auth; later JWKS, introspection)
 * and the health checker use; proxying streams with client.h instead.
 *
 * Ownership: the caller owns the struct pt_fetch (often in a request
 * arena) and everything the request points at until done runs or
 * pt_fetch_cancel returns. The result's slices live in `arena`. done runs
 * at most once, never after pt_fetch_cancel, and is the fetch's last act
 * (the caller may free it inside). A start that fails returns non-zero
 * and never calls done.
 */
#ifndef PT_PROXY_FETCH_H
#define PT_PROXY_FETCH_H

#include "proxy/client.h"

struct pt_fetch;
typedef void (*pt_fetch_done_cb)(struct pt_fetch *f, void *user);

struct pt_fetch {
    struct pt_call call;
    struct pt_timer deadline; /* the whole fetch, connect included */
    pt_slice body;            /* request body */
    size_t body_off;
    size_t max_body;
    struct pt_arena *arena;
    pt_fetch_done_cb done;
    void *user;
    bool active;
    /* result */
    enum pt_call_fail fail; /* NONE: status and the rest are set */
    const char *fail_text;
    int status;
    const struct pt_call_head *head;
    char *rbody; /* grows in the arena as the body comes, up to max_body */
    size_t rlen, rcap;
    bool truncated;
};

/* req->content_length/chunked are set from `body`. With req->read_timeout_ms
 * set, it bounds the whole fetch too, connect included (a connect timeout
 * longer than it is cut to it). 0 or a pt_call_fail (> 0): then
 * f->fail_text says why. */
int pt_fetch_start(struct pt_fetch *f, struct pt_outbound *ob, struct pt_call_req *req,
                   pt_slice body, size_t max_body, pt_fetch_done_cb done, void *user);
/* Stops it; done will not run. Idempotent. */
void pt_fetch_cancel(struct pt_fetch *f);

/* An https:// URL: reached with TLS, verified (the loader gives it a URL
 * upstream with its pt_upstream_tls, IP literal or not). */
static inline bool pt_fetch_url_https(const char *url)
{
    return strncmp(url, "https://", 8) == 0;
}

/* The generation's URL upstreams are named by authority ("idp:9000"),
 * https ones with the scheme ("https://idp:8443"): does `name` stand for
 * this URL's authority? */
static inline bool pt_fetch_url_name_eq(const char *name, bool https, pt_slice auth)
{
    if (https) {
        if (strncmp(name, "https://", 8) != 0)
            return false;
        name += 8;
    }
    return strlen(name) == auth.len && memcmp(name, auth.p, auth.len) == 0;
}

/* Splits "http://host:port/path?query" (port 80 by default; https://,
 * port 443 by default, too): the host
 * without brackets into `host` (NUL-terminated), the authority as written,
 * the path ("/" when empty) and the query, slices into `url`. 0 or
 * -EINVAL (not http, userinfo, a bad port, a host too long). */
int pt_fetch_split_url(const char *url, char *host, size_t hostlen, uint16_t *port,
                       pt_slice *authority, pt_slice *path, pt_slice *query);

/* Parses "http://host:port/path?query" with an IP literal or `localhost`
 * host into a target (address copied into `a`) and the path+query. 0 or
 * -EINVAL (not http, a host name, no port and no default...): a URL with a
 * host name is reached through the generation's URL upstreams instead. */
int pt_fetch_parse_url(const char *url, struct pt_arena *a, struct pt_target *t, pt_slice *path,
                       pt_slice *query);

#endif
