/*
 * redis_cfg.c — see redis.h: the `cluster.redis` URL and the scripts'
 * SHA-1. Both run on the control thread (the URL's host name is resolved
 * here, when the config loads, never on a worker).
 */
#include "proxy/redis.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

void pt_redis_script_init(struct pt_redis_script *s)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const char hex[] = "0123456789abcdef";
    if (!EVP_Digest(s->text, strlen(s->text), md, &n, EVP_sha1(), NULL) || n != 20) {
        memset(s->sha1, '0', 40); /* never matches: every call goes by EVAL after NOSCRIPT */
        s->sha1[40] = '\0';
        return;
    }
    for (unsigned int i = 0; i < 20; i++) {
        s->sha1[2 * i] = hex[md[i] >> 4];
        s->sha1[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha1[40] = '\0';
}

/* Percent-decodes [p, p+n) into out (at least n + 1 bytes). -1 on a bad
 * escape or an encoded NUL. */
static int pct_decode(const char *p, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%') {
            out[k++] = p[i];
            continue;
        }
        if (i + 2 >= n)
            return -1;
        int hi = pt_hexval(p[i + 1]), lo = pt_hexval(p[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return -1;
        out[k++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[k] = '\0';
    return 0;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)

/* host (an IP literal, "[v6]", or a name) and port into cfg->addr. */
static int resolve(const char *host, unsigned port, struct pt_redis_cfg *cfg, char *err,
                   size_t errlen)
{
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0 || !res)
        FAIL("cannot resolve host `%s`: %s", host, rc ? gai_strerror(rc) : "no address");
    memset(&cfg->addr, 0, sizeof(cfg->addr));
    memcpy(&cfg->addr, res->ai_addr, res->ai_addrlen);
    cfg->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* The authority after the userinfo: host[:port]. */
static int parse_hostport(const char *p, size_t n, char *host, size_t hostlen, unsigned *port,
                          char *err, size_t errlen)
{
    const char *colon;
    if (n && p[0] == '[') {
        const char *rb = memchr(p, ']', n);
        if (!rb)
            FAIL("missing `]` after an IPv6 address");
        size_t hn = (size_t)(rb - p - 1);
        if (hn == 0 || hn >= hostlen)
            FAIL("bad IPv6 address");
        memcpy(host, p + 1, hn);
        host[hn] = '\0';
        colon = rb + 1 < p + n ? rb + 1 : NULL;
        if (colon && *colon != ':')
            FAIL("unexpected text after `]`");
    } else {
        colon = memchr(p, ':', n);
        size_t hn = colon ? (size_t)(colon - p) : n;
        if (hn == 0)
            FAIL("no host (e.g. redis://127.0.0.1:6379/0)");
        if (hn >= hostlen)
            FAIL("host name too long");
        memcpy(host, p, hn);
        host[hn] = '\0';
    }
    *port = 6379;
    if (colon) {
        const char *ps = colon + 1, *end = p + n;
        unsigned v = 0;
        if (ps == end)
            FAIL("empty port");
        for (const char *q = ps; q < end; q++) {
            if (*q < '0' || *q > '9' || v > 65535)
                FAIL("the port must be a number from 1 to 65535");
            v = v * 10 + (unsigned)(*q - '0');
        }
        if (v == 0 || v > 65535)
            FAIL("the port must be a number from 1 to 65535");
        *port = v;
    }
    return 0;
}

/* The path: "", "/" or "/<db>". */
static int parse_db(const char *p, uint32_t *db, char *err, size_t errlen)
{
    *db = 0;
    if (!*p || strcmp(p, "/") == 0)
        return 0;
    uint64_t v = 0;
    const char *q = p + 1;
    if (!*q)
        return 0;
    for (; *q; q++) {
        if (*q < '0' || *q > '9' || v > 1000000)
            FAIL("the database must be a number, as in redis://host:6379/0 (got `%s`)", p + 1);
        v = v * 10 + (uint64_t)(*q - '0');
    }
    if (v > 1000000)
        FAIL("database number too large");
    *db = (uint32_t)v;
    return 0;
}

int pt_redis_parse_url(const char *url, struct pt_redis_cfg *cfg, char *err, size_t errlen,
                       void *(*alloc)(void *ud, size_t size), void *ud)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        FAIL("must start with redis:// (redis://[:password@]host:port/db)");
    const char *a = url + sizeof(scheme) - 1;
    if (strpbrk(a, "?#"))
        FAIL("query strings and fragments are not supported");
    const char *slash = strchr(a, '/');
    const char *end = slash ? slash : a + strlen(a);
    const char *at = NULL;
    for (const char *q = a; q < end; q++)
        if (*q == '@')
            at = q;
    char *password = NULL;
    if (at) {
        if (a[0] != ':')
            FAIL("the user part must be `:password` (ACL user names are not supported)");
        size_t pn = (size_t)(at - a - 1);
        if (pn == 0)
            FAIL("empty password after `:`");
        password = alloc(ud, pn + 1);
        if (!password)
            FAIL("out of memory");
        if (pct_decode(a + 1, pn, password) < 0)
            FAIL("bad percent-escape in the password");
    }
    const char *hp = at ? at + 1 : a;
    char host[256];
    unsigned port;
    if (parse_hostport(hp, (size_t)(end - hp), host, sizeof(host), &port, err, errlen) < 0)
        return -1;
    uint32_t db;
    if (parse_db(slash ? slash : "", &db, err, errlen) < 0)
        return -1;
    if (resolve(host, port, cfg, err, errlen) < 0)
        return -1;
    /* The URL as logs and the admin API show it: never the password. */
    bool v6 = strchr(host, ':') != NULL;
    size_t un = strlen(host) + 48;
    char *shown = alloc(ud, un);
    if (!shown)
        FAIL("out of memory");
    snprintf(shown, un, "redis://%s%s%s%s:%u/%u", password ? ":***@" : "", v6 ? "[" : "", host,
             v6 ? "]" : "", port, (unsigned)db);
    cfg->url = shown;
    cfg->password = password;
    cfg->db = db;
    return 0;
}
