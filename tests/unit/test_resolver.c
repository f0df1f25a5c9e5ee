/*
 * test_resolver.c — the pure parts of host-name targets: which hosts are
 * names and which are IP literals, DNS name syntax, `resolver:` entries,
 * URL splitting for outbound calls, address formatting; and the loader's
 * side (a host-name target loads without any DNS, as `validate` needs,
 * with no address until the resolver has an answer); and the resolver's
 * bookkeeping on a real loop against a DNS server played by the test
 * (UDP on loopback, answering only when told): names no config needs any
 * more are forgotten, also while their query is in flight. Traffic and
 * re-resolution are driven end to end by tests/e2e/test_dns.py.
 */
#include "control/config.h"
#include "control/resolver.h"
#include "proxy/fetch.h"

#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_literals_and_names(void)
{
    CHECK(pt_dns_is_ip_literal("10.0.0.5"));
    CHECK(pt_dns_is_ip_literal("::1"));
    CHECK(pt_dns_is_ip_literal("fe80::1:2"));
    CHECK(!pt_dns_is_ip_literal("10.0.0"));
    CHECK(!pt_dns_is_ip_literal("users.internal"));
    CHECK(!pt_dns_is_ip_literal("[::1]"));

    static const char *const good[] = {"users",
                                       "users.internal",
                                       "users.internal.",
                                       "a-b.c-d.svc.cluster.local",
                                       "_http._tcp.example",
                                       "x1.0ab",
                                       "UPPER.Case"};
    for (size_t i = 0; i < PT_ARRAY_LEN(good); i++)
        CHECK_MSG(pt_dns_valid_name(good[i]), "rejected %s", good[i]);
    char longlabel[80], longname[300];
    memset(longlabel, 'a', 64);
    longlabel[64] = 0;
    memset(longname, 'a', 254);
    for (int i = 10; i < 254; i += 10)
        longname[i] = '.';
    longname[254] = 0;
    const char *bad[] = {"",    ".",        "a..b",  "-a.b", "a-.b",    "a.b-",  "a b.c",
                         "a/b", "users:80", "a.b..", "é.fr", longlabel, longname};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++)
        CHECK_MSG(!pt_dns_valid_name(bad[i]), "accepted %.40s", bad[i]);
}

static void test_server_entries(void)
{
    char out[64];
    const char *why = NULL;
    CHECK_EQ_INT(pt_dns_server_entry("127.0.0.1", out, sizeof(out), &why), 0);
    CHECK_STR(out, "127.0.0.1:53");
    CHECK_EQ_INT(pt_dns_server_entry("127.0.0.1:5353", out, sizeof(out), &why), 0);
    CHECK_STR(out, "127.0.0.1:5353");
    CHECK_EQ_INT(pt_dns_server_entry("[::1]", out, sizeof(out), &why), 0);
    CHECK_STR(out, "[::1]:53");
    CHECK_EQ_INT(pt_dns_server_entry("[fd00::53]:1053", out, sizeof(out), &why), 0);
    CHECK_STR(out, "[fd00::53]:1053");

    struct {
        const char *in, *why;
    } bad[] = {
        {"dns.example", "must be an IP address"},
        {"dns.example:53", "must be an IP address"},
        {"::1", "brackets"},
        {"[::1", "`[` and `]`"},
        {"[::1]53", "expected `:PORT`"},
        {"[127.0.0.1]:53", "must be an IP address"},
        {"127.0.0.1:0", "port"},
        {"127.0.0.1:65536", "port"},
        {"127.0.0.1:", "port"},
        {"127.0.0.1:5x", "port"},
        {"", "must be an IP address"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        why = NULL;
        CHECK_MSG(pt_dns_server_entry(bad[i].in, out, sizeof(out), &why) == -EINVAL, "accepted %s",
                  bad[i].in);
        CHECK_MSG(why && strstr(why, bad[i].why), "%s: \"%s\" lacks \"%s\"", bad[i].in,
                  why ? why : "", bad[i].why);
    }
}

static void test_format_and_sockaddr(void)
{
    struct pt_dns_addr a = {.family = AF_INET};
    inet_pton(AF_INET, "10.0.0.5", &a.a.v4);
    char out[64];
    pt_dns_format(&a, 9001, out, sizeof(out));
    CHECK_STR(out, "10.0.0.5:9001");
    struct sockaddr_storage ss;
    CHECK_EQ_INT((int)pt_dns_sockaddr(&a, 9001, &ss), (int)sizeof(struct sockaddr_in));
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), 9001);

    struct pt_dns_addr b = {.family = AF_INET6};
    inet_pton(AF_INET6, "fd00::7", &b.a.v6);
    pt_dns_format(&b, 80, out, sizeof(out));
    CHECK_STR(out, "[fd00::7]:80");
    CHECK_EQ_INT((int)pt_dns_sockaddr(&b, 80, &ss), (int)sizeof(struct sockaddr_in6));
    CHECK_EQ_INT(ss.ss_family, AF_INET6);
}

static void test_split_url(void)
{
    char host[64];
    uint16_t port = 0;
    pt_slice auth, path, query;
    CHECK_EQ_INT(pt_fetch_split_url("http://authz.internal:9000/check?a=1#f", host, sizeof(host),
                                    &port, &auth, &path, &query),
                 0);
    CHECK_STR(host, "authz.internal");
    CHECK_EQ_INT(port, 9000);
    CHECK(pt_slice_eq(auth, PT_SLICE("authz.internal:9000")));
    CHECK(pt_slice_eq(path, PT_SLICE("/check")));
    CHECK(pt_slice_eq(query, PT_SLICE("a=1")));
    CHECK_EQ_INT(
        pt_fetch_split_url("http://authz", host, sizeof(host), &port, &auth, &path, &query), 0);
    CHECK_EQ_INT(port, 80);
    CHECK(pt_slice_eq(path, PT_SLICE("/")));
    CHECK_EQ_INT(
        pt_fetch_split_url("http://[::1]:81/x", host, sizeof(host), &port, &auth, &path, &query),
        0);
    CHECK_STR(host, "::1");
    CHECK(pt_slice_eq(auth, PT_SLICE("[::1]:81")));
    /* https: port 443 by default (the URL upstream gets its TLS). */
    CHECK_EQ_INT(pt_fetch_split_url("https://idp.test/jwks", host, sizeof(host), &port, &auth,
                                    &path, &query),
                 0);
    CHECK_EQ_INT(port, 443);
    CHECK_STR(host, "idp.test");
    CHECK(pt_slice_eq(path, PT_SLICE("/jwks")));
    static const char *const bad[] = {"ftp://a/",     "http://",        "http://:80/",
                                      "http://a:0/",  "http://a:99999", "http://u@a/",
                                      "http://[::1/", "http://[::1]x/", "http://a:8x/"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++)
        CHECK_MSG(pt_fetch_split_url(bad[i], host, sizeof(host), &port, &auth, &path, &query) ==
                      -EINVAL,
                  "accepted %s", bad[i]);
    /* A URL with a host name is not a direct target. */
    struct pt_arena a;
    pt_arena_init(&a, 0);
    struct pt_target t;
    CHECK_EQ_INT(pt_fetch_parse_url("http://authz.internal:9000/x", &a, &t, &path, &query),
                 -EINVAL);
    pt_arena_destroy(&a);
}

/* The loader: host names are kept as names, never resolved by it. */
static void test_loader_keeps_names(void)
{
    unit_write_file("t.yaml", "listeners: [{ address: \"127.0.0.1:18080\" }]\n"
                              "resolver: [\"127.0.0.1:5353\", \"[::1]\"]\n"
                              "upstreams:\n"
                              "  users:\n"
                              "    targets:\n"
                              "      - { address: users.internal:9001, weight: 3 }\n"
                              "      - 127.0.0.1:9002\n"
                              "    resolve_every: 2s\n"
                              "  plain: { targets: [127.0.0.1:9003] }\n"
                              "routes:\n"
                              "  - name: r\n"
                              "    match: { path_prefix: / }\n"
                              "    upstream: users\n"
                              "    filters:\n"
                              "      ext_auth: { url: \"http://authz.internal:81/check\" }\n"
                              "  - name: s\n"
                              "    match: { path_prefix: /s }\n"
                              "    upstream: plain\n"
                              "    filters:\n"
                              "      ext_auth: { url: \"http://127.0.0.1:81/check\" }\n");
    struct pt_diag d;
    pt_diag_init(&d);
    struct pt_generation *g = pt_config_load("t.yaml", 1, &d);
    CHECK(g != NULL);
    if (!g) {
        pt_diag_print(&d, stderr);
        pt_diag_free(&d);
        return;
    }
    CHECK_STR(g->resolver, "127.0.0.1:5353,[::1]:53");
    const struct pt_upstream *u = &g->upstreams[0];
    CHECK_EQ_INT(u->ntargets, 1); /* the IP; the name has no answer (no resolver) */
    CHECK_STR(u->targets[0].address, "127.0.0.1:9002");
    CHECK(u->targets[0].name == NULL);
    CHECK_EQ_INT(u->ndns, 1);
    CHECK_STR(u->dns[0].written, "users.internal:9001");
    CHECK_STR(u->dns[0].host, "users.internal");
    CHECK_EQ_INT(u->dns[0].port, 9001);
    CHECK_EQ_INT(u->dns[0].weight, 3);
    CHECK_EQ_INT((int)u->resolve_every_ms, 2000);
    CHECK_EQ_INT((int)g->upstreams[1].resolve_every_ms, 30000); /* the default */
    CHECK_EQ_INT(g->upstreams[1].ndns, 0);
    /* Only the URL with a host name has an upstream of its own. */
    CHECK_EQ_INT(g->nurl_upstreams, 1);
    CHECK_STR(g->url_upstreams[0].name, "authz.internal:81");
    CHECK_EQ_INT(g->url_upstreams[0].ntargets, 0);
    CHECK_STR(g->url_upstreams[0].dns[0].host, "authz.internal");
    /* The source is kept for a rebuild with new answers. */
    CHECK(g->source_text && strstr(g->source_text, "users.internal:9001"));

    /* A rebuild from the kept text (no resolver: the same generation). */
    struct pt_generation *again =
        pt_config_load_with("t.yaml", g->source_text, g->source_len, NULL, 2, &d);
    CHECK(again && again->upstreams[0].ntargets == 1 && again->upstreams[0].ndns == 1);
    pt_generation_free(again);
    pt_generation_free(g);
    pt_diag_free(&d);
}

/* ---- the resolver on a loop ---- */

/* Answers every query waiting on the test's DNS socket: A with
 * 10.0.0.<n> for "<name>.test" names, n = the length of <name>; AAAA
 * with no records. Returns how many it answered. */
static int dns_answer_all(int fd)
{
    int answered = 0;
    unsigned char q[512], out[600];
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    ssize_t n;
    while ((n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&peer, &plen)) >= 12) {
        size_t i = 12, first = q[12];
        while (i < (size_t)n && q[i])
            i += 1u + q[i];
        i++;
        if (i + 4 > (size_t)n)
            continue;
        unsigned qtype = (unsigned)q[i] << 8 | q[i + 1];
        size_t qend = i + 4;
        memcpy(out, q, qend);
        out[2] = 0x81; /* QR, RD */
        out[3] = 0x80; /* RA, NOERROR */
        out[6] = out[7] = out[8] = out[9] = out[10] = out[11] = 0;
        size_t len = qend;
        if (qtype == 1) {
            out[7] = 1;
            const unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0,  1, 0, 0,
                                        0,    60,   0, 4, 10, 0, 0, (unsigned char)first};
            memcpy(out + len, rr, sizeof(rr));
            len += sizeof(rr);
        }
        sendto(fd, out, len, 0, (struct sockaddr *)&peer, plen);
        answered++;
        plen = sizeof(peer);
    }
    return answered;
}

/* Runs the loop (answering DNS when `answer`) until cond(r, host) or 5 s. */
static bool run_until(struct pt_loop *loop, struct pt_resolver *r, int fd, bool answer,
                      bool (*cond)(struct pt_resolver *, const char *), const char *host)
{
    uint64_t end = pt_now_ms() + 5000;
    while (!cond(r, host) && pt_now_ms() < end) {
        if (answer)
            dns_answer_all(fd);
        pt_loop_run_once(loop, 10);
    }
    return cond(r, host);
}

static bool has_answer(struct pt_resolver *r, const char *host)
{
    const struct pt_dns_addr *v;
    return pt_resolver_lookup(r, host, &v) > 0;
}

static bool holds_one(struct pt_resolver *r, const char *host)
{
    (void)host;
    return pt_resolver_names(r) == 1;
}

/* A generation naming `names` (comma-separated host names) as targets,
 * asking the DNS server on `port`. */
static struct pt_generation *gen_naming(uint16_t port, const char *names)
{
    char targets[256] = "", text[1024], one[64];
    const char *p = names;
    while (*p) {
        size_t l = strcspn(p, ",");
        snprintf(one, sizeof(one), "%s\"%.*s:9000\"", targets[0] ? ", " : "", (int)l, p);
        strcat(targets, one);
        p += l + (p[l] == ',');
    }
    snprintf(text, sizeof(text),
             "listeners: [{ address: \"127.0.0.1:18080\" }]\n"
             "resolver: [\"127.0.0.1:%u\"]\n"
             "upstreams:\n"
             "  u: { targets: [%s] }\n"
             "routes: [{ name: r, match: { path_prefix: / }, upstream: u }]\n",
             (unsigned)port, targets);
    unit_write_file("g.yaml", text);
    struct pt_diag d;
    pt_diag_init(&d);
    struct pt_generation *g = pt_config_load("g.yaml", 1, &d);
    if (!g)
        pt_diag_print(&d, stderr);
    pt_diag_free(&d);
    return g;
}

/* Names a reload dropped are forgotten once the reload is in place (a
 * slow leak across reloads otherwise); one whose query is still in flight
 * is forgotten when c-ares ends that query, unless named again first. */
static void test_prune_forgets_dropped_names(void)
{
    struct pt_loop loop;
    CHECK(pt_loop_init(&loop) == 0);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
          getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    uint16_t port = ntohs(sa.sin_port);
    struct pt_generation *both = gen_naming(port, "kept.test,gone.test");
    struct pt_generation *kept = gen_naming(port, "kept.test");
    struct pt_generation *late = gen_naming(port, "kept.test,late.test");
    struct pt_generation *other = gen_naming(port, "kept.test,other.test");
    struct pt_resolver *r = pt_resolver_new(&loop, NULL, NULL);
    CHECK(both && kept && late && other && r);
    if (!both || !kept || !late || !other || !r)
        goto out;
    const struct pt_dns_addr *v;

    /* Both names answered; a reload drops one: its answer goes. */
    CHECK_EQ_INT(pt_resolver_sync(r, both), 2);
    CHECK(run_until(&loop, r, fd, true, has_answer, "gone.test"));
    CHECK(run_until(&loop, r, fd, true, has_answer, "kept.test"));
    CHECK_EQ_INT(pt_resolver_lookup(r, "gone.test", &v), 1);
    CHECK_EQ_INT(v[0].a.v4.s_addr, htonl(0x0a000004));
    CHECK_EQ_INT(pt_resolver_sync(r, kept), 0);
    CHECK_EQ_INT(pt_resolver_names(r), 2); /* not before the prune: a reload may be refused */
    pt_resolver_prune(r);
    CHECK_EQ_INT(pt_resolver_names(r), 1);
    CHECK(!has_answer(r, "gone.test") && has_answer(r, "kept.test"));

    /* Dropped while its first query is in flight: kept until the answer
     * comes, which then frees it (ASan: the callback's entry is alive). */
    CHECK_EQ_INT(pt_resolver_sync(r, late), 1);
    CHECK_EQ_INT(pt_resolver_sync(r, kept), 0);
    pt_resolver_prune(r);
    CHECK_EQ_INT(pt_resolver_names(r), 2);
    CHECK(run_until(&loop, r, fd, true, holds_one, NULL));
    CHECK(!has_answer(r, "late.test"));

    /* Dropped, then named again before its query ended: it stays and
     * takes its answer. */
    CHECK_EQ_INT(pt_resolver_sync(r, late), 1);
    CHECK_EQ_INT(pt_resolver_sync(r, kept), 0);
    pt_resolver_prune(r);
    CHECK_EQ_INT(pt_resolver_sync(r, late), 1);
    pt_resolver_prune(r);
    CHECK(run_until(&loop, r, fd, true, has_answer, "late.test"));
    CHECK_EQ_INT(pt_resolver_names(r), 2);

    /* Freed with a dropped query still in flight (ASan: no leak). */
    CHECK_EQ_INT(pt_resolver_sync(r, other), 1);
    CHECK_EQ_INT(pt_resolver_sync(r, kept), 0);
    pt_resolver_prune(r);
    CHECK_EQ_INT(pt_resolver_names(r), 2);
out:
    pt_resolver_free(r);
    pt_generation_free(both);
    pt_generation_free(kept);
    pt_generation_free(late);
    pt_generation_free(other);
    close(fd);
    pt_loop_destroy(&loop);
    unlink("g.yaml");
}

int main(void)
{
    char dir[] = "/tmp/pt-resolver-XXXXXX";
    if (!mkdtemp(dir) || chdir(dir) != 0)
        return 2;
    test_literals_and_names();
    test_server_entries();
    test_format_and_sockaddr();
    test_split_url();
    test_loader_keeps_names();
    test_prune_forgets_dropped_names();
    unlink("t.yaml");
    rmdir(dir);
    return unit_report("resolver");
}
