/*
 * test_client_addr.c — the real client address: strict address parsing,
 * CIDR parsing and matching (core/cidr.h), the X-Forwarded-For walk from
 * a trusted peer (http/forwarded.h) and the ip_restriction filter's
 * verdicts and load-time checks.
 */
#include "control/config.h"
#include "core/cidr.h"
#include "filters/registry.h"
#include "http/forwarded.h"
#include "http/tokens.h"
#include "unit.h"

#include <stdlib.h>
#include <unistd.h>

static bool ip_is(const struct pt_ip *ip, const char *want)
{
    char buf[PT_IP_TEXT_MAX];
    return pt_ip_format(ip, buf) && strcmp(buf, want) == 0;
}

static pt_slice sl(const char *s)
{
    return (pt_slice){s, strlen(s)};
}

static void test_ip_parse(void)
{
    struct pt_ip ip;
    CHECK(pt_ip_parse(sl("192.0.2.7"), &ip) && ip.family == 4 && ip_is(&ip, "192.0.2.7"));
    CHECK(pt_ip_parse(sl("2001:DB8::1"), &ip) && ip.family == 6 && ip_is(&ip, "2001:db8::1"));
    /* A dual-stack socket's IPv4 peer is that IPv4 address. */
    CHECK(pt_ip_parse(sl("::ffff:10.1.2.3"), &ip) && ip.family == 4 && ip_is(&ip, "10.1.2.3"));
    static const char *const bad[] = {
        "",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.4:80",
        "[::1]",
        "::1%eth0",
        "1:2:3",
        "unknown",
        "1.2.3.4/8",
        "0x7f.0.0.1",
        "1.2.3.-4",
        "2001:db8:::1",
        "aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++)
        CHECK_MSG(!pt_ip_parse(sl(bad[i]), &ip), "accepted \"%s\"", bad[i]);
    CHECK(!pt_ip_parse((pt_slice){"1.2.3.4\0", 8}, &ip)); /* an embedded NUL */
}

static void test_ip_parse_hop(void)
{
    struct pt_ip ip;
    CHECK(pt_ip_parse_hop(sl("  192.0.2.7\t"), &ip) && ip_is(&ip, "192.0.2.7"));
    CHECK(pt_ip_parse_hop(sl("192.0.2.7:8080"), &ip) && ip_is(&ip, "192.0.2.7"));
    CHECK(pt_ip_parse_hop(sl("[2001:db8::1]"), &ip) && ip_is(&ip, "2001:db8::1"));
    CHECK(pt_ip_parse_hop(sl(" [2001:db8::1]:443 "), &ip) && ip_is(&ip, "2001:db8::1"));
    CHECK(pt_ip_parse_hop(sl("2001:db8::1"), &ip) && ip_is(&ip, "2001:db8::1"));
    static const char *const bad[] = {
        "",
        "   ",
        "192.0.2.7:",
        "192.0.2.7:123456",
        "192.0.2.7:8x",
        "[192.0.2.7]",
        "[2001:db8::1",
        "[2001:db8::1]:",
        "[2001:db8::1]x",
        "unknown",
        "_hidden",
        "192.0.2.7 x",
        "2001:db8::1:80x",
        "[::1]:80:80",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++)
        CHECK_MSG(!pt_ip_parse_hop(sl(bad[i]), &ip), "accepted \"%s\"", bad[i]);
}

static void test_cidr(void)
{
    struct pt_cidr c;
    const char *why = NULL;
    struct pt_ip ip;
    CHECK(pt_cidr_parse("10.0.0.0/8", &c, &why) == 0 && c.bits == 8 && c.net.family == 4);
    CHECK(pt_ip_parse(sl("10.255.1.2"), &ip) && pt_cidr_has(&c, &ip));
    CHECK(pt_ip_parse(sl("11.0.0.1"), &ip) && !pt_cidr_has(&c, &ip));
    CHECK(pt_ip_parse(sl("::ffff:10.9.9.9"), &ip) && pt_cidr_has(&c, &ip));
    /* A plain address is a /32 or /128. */
    CHECK(pt_cidr_parse("192.0.2.7", &c, &why) == 0 && c.bits == 32);
    CHECK(pt_ip_parse(sl("192.0.2.7"), &ip) && pt_cidr_has(&c, &ip));
    CHECK(pt_ip_parse(sl("192.0.2.8"), &ip) && !pt_cidr_has(&c, &ip));
    CHECK(pt_cidr_parse("2001:db8::/32", &c, &why) == 0 && c.bits == 32 && c.net.family == 6);
    CHECK(pt_ip_parse(sl("2001:db8:ffff::1"), &ip) && pt_cidr_has(&c, &ip));
    CHECK(pt_ip_parse(sl("2001:db9::1"), &ip) && !pt_cidr_has(&c, &ip));
    /* Bits that are not a whole byte. */
    CHECK(pt_cidr_parse("10.0.0.128/25", &c, &why) == 0);
    CHECK(pt_ip_parse(sl("10.0.0.200"), &ip) && pt_cidr_has(&c, &ip));
    CHECK(pt_ip_parse(sl("10.0.0.127"), &ip) && !pt_cidr_has(&c, &ip));
    /* /0 covers its own family only. */
    CHECK(pt_cidr_parse("0.0.0.0/0", &c, &why) == 0);
    CHECK(pt_ip_parse(sl("203.0.113.9"), &ip) && pt_cidr_has(&c, &ip));
    CHECK(pt_ip_parse(sl("::1"), &ip) && !pt_cidr_has(&c, &ip));
    CHECK(pt_cidr_parse("::/0", &c, &why) == 0);
    CHECK(pt_ip_parse(sl("203.0.113.9"), &ip) && !pt_cidr_has(&c, &ip));
    CHECK(pt_ip_parse(sl("::1"), &ip) && pt_cidr_has(&c, &ip));
    /* Host bits past the prefix: refused, with the network filled in. */
    CHECK(pt_cidr_parse("10.1.2.3/8", &c, &why) < 0 && strstr(why, "host bits"));
    CHECK(ip_is(&c.net, "10.0.0.0") && c.bits == 8);
    static const char *const bad[] = {
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/08",
        "10.0.0.0/8/8",
        "::/129",
        "10.0.0/8",
        "::ffff:10.0.0.0/104",
        "",
        "/8",
        "10.0.0.0/ 8",
        "[::1]",
        "10.0.0.0/1000",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++)
        CHECK_MSG(pt_cidr_parse(bad[i], &c, &why) < 0 && why, "accepted \"%s\"", bad[i]);

    struct pt_cidr v[2];
    CHECK(pt_cidr_parse("10.0.0.0/8", &v[0], &why) == 0);
    CHECK(pt_cidr_parse("2001:db8::/32", &v[1], &why) == 0);
    struct pt_cidr_set set = {v, 2}, none = {NULL, 0};
    CHECK(pt_ip_parse(sl("2001:db8::5"), &ip) && pt_cidr_set_has(&set, &ip));
    CHECK(!pt_cidr_set_has(&none, &ip));
    struct pt_ip zero = {0};
    CHECK(!pt_cidr_set_has(&set, &zero));
}

/* ---- the X-Forwarded-For walk ---- */

static struct pt_cidr trusted_v[3];
static struct pt_cidr_set trusted = {trusted_v, 3};

/* Walks `fields` (NULL-terminated X-Forwarded-For values, wire order)
 * from `peer` and checks the client. */
static void check_walk(const char *peer, const char *const *fields, const char *want)
{
    struct pt_hfield f[8];
    struct pt_headers h = {f, 0, 8};
    /* Another field between them must not matter. */
    f[h.n++] = (struct pt_hfield){PT_SLICE("Host"), PT_SLICE("x"), PT_TOK_HOST, false};
    for (size_t i = 0; fields[i]; i++)
        f[h.n++] = (struct pt_hfield){PT_SLICE("X-Forwarded-For"), sl(fields[i]),
                                      PT_TOK_X_FORWARDED_FOR, false};
    struct pt_ip ip;
    CHECK(pt_ip_parse(sl(peer), &ip));
    pt_forwarded_client(&h, &trusted, &ip);
    char got[PT_IP_TEXT_MAX];
    pt_ip_format(&ip, got);
    CHECK_MSG(strcmp(got, want) == 0, "peer %s, XFF \"%s\"...: got %s, want %s", peer,
              fields[0] ? fields[0] : "", got, want);
}

#define FIELDS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_walk(void)
{
    const char *why;
    CHECK(pt_cidr_parse("127.0.0.1", &trusted_v[0], &why) == 0);
    CHECK(pt_cidr_parse("10.0.0.0/8", &trusted_v[1], &why) == 0);
    CHECK(pt_cidr_parse("fd00::/8", &trusted_v[2], &why) == 0);

    /* An untrusted peer is the client, whatever it sends. */
    check_walk("203.0.113.5", FIELDS("198.51.100.1"), "203.0.113.5");
    /* A trusted peer without the field: the peer. */
    check_walk("127.0.0.1", (const char *const[]){NULL}, "127.0.0.1");
    /* One field: the right-most untrusted entry. */
    check_walk("127.0.0.1", FIELDS("198.51.100.1"), "198.51.100.1");
    check_walk("127.0.0.1", FIELDS("192.0.2.66, 198.51.100.1, 10.0.0.2"), "198.51.100.1");
    /* Several fields: the last field's last entry first. */
    check_walk("127.0.0.1", FIELDS("192.0.2.66", "198.51.100.1, 10.1.1.1", "10.0.0.2"),
               "198.51.100.1");
    check_walk("127.0.0.1", FIELDS("192.0.2.66, 10.9.9.9", "10.0.0.2"), "192.0.2.66");
    /* Every entry trusted: the left-most. */
    check_walk("127.0.0.1", FIELDS("10.0.0.3, 10.0.0.2", "fd00::7"), "10.0.0.3");
    /* A malformed entry stops the walk at the last good address. */
    check_walk("127.0.0.1", FIELDS("198.51.100.1, bogus, 10.0.0.2"), "10.0.0.2");
    check_walk("127.0.0.1", FIELDS("198.51.100.1, 10.0.0.2, unknown"), "127.0.0.1");
    check_walk("127.0.0.1", FIELDS("198.51.100.1", "garbage"), "127.0.0.1");
    check_walk("127.0.0.1", FIELDS("1.2.3.4, 10.0.0.2", "999.0.0.1", "10.0.0.5"), "10.0.0.5");
    /* Empty elements and empty fields are skipped. */
    check_walk("127.0.0.1", FIELDS("198.51.100.1,, 10.0.0.2,", "", " "), "198.51.100.1");
    /* Ports and brackets, and a canonical form for the answer. */
    check_walk("127.0.0.1", FIELDS("[2001:DB8::9]:443, 10.0.0.2:1234"), "2001:db8::9");
    check_walk("127.0.0.1", FIELDS("198.51.100.1:5555"), "198.51.100.1");
    check_walk("::ffff:127.0.0.1", FIELDS("::ffff:198.51.100.2"), "198.51.100.2");
    /* A dead (removed) field is not read. */
    struct pt_hfield f[2] = {
        {PT_SLICE("X-Forwarded-For"), PT_SLICE("198.51.100.1"), PT_TOK_X_FORWARDED_FOR, false},
        {PT_SLICE("X-Forwarded-For"), PT_SLICE("192.0.2.1"), PT_TOK_X_FORWARDED_FOR, true},
    };
    struct pt_headers h = {f, 2, 2};
    struct pt_ip ip;
    CHECK(pt_ip_parse(sl("10.0.0.1"), &ip));
    pt_forwarded_client(&h, &trusted, &ip);
    CHECK(ip_is(&ip, "198.51.100.1"));
}

/* ---- ip_restriction ---- */

struct ir_conf {
    struct pt_strlist allow_text, deny_text;
    struct pt_cidr_set allow, deny;
};

struct errs_rec {
    struct pt_filter_errs e;
    int n;
    char last[256];
};

static void rec_report(struct pt_filter_errs *e, const char *field, const char *entry,
                       bool in_value, const char *msg)
{
    struct errs_rec *r = (struct errs_rec *)e;
    r->n++;
    snprintf(r->last, sizeof(r->last), "%s|%s|%s", field ? field : "-", entry ? entry : "-", msg);
}

static int verdict(const struct ir_conf *c, const char *client)
{
    struct pt_ip ip;
    struct pt_filter_ctx ctx = {0};
    if (client) {
        CHECK(pt_ip_parse(sl(client), &ip));
        ctx.remote_ip = &ip;
    }
    int r = pt_filter_ip_restriction.on_request(&ctx, c, NULL);
    return r == PT_FILTER_RESPOND ? ctx.respond_status : r == PT_FILTER_CONTINUE ? 0 : -1;
}

static void test_ip_restriction(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    CHECK(pt_filter_ip_restriction.config_size == sizeof(struct ir_conf));
    CHECK(pt_filter_ip_restriction.priority > 1500 && pt_filter_ip_restriction.priority < 2000);

    const char *allow[] = {"10.0.0.0/8", "2001:db8::/32"};
    const char *deny[] = {"10.6.6.0/24", "192.0.2.7"};
    struct ir_conf c = {{allow, 2}, {deny, 2}, {0}, {0}};
    struct errs_rec r = {{rec_report, false}, 0, ""};
    CHECK(pt_filter_ip_restriction.compile(&c, &a, &r.e) == 0 && r.n == 0);
    CHECK_EQ_INT(verdict(&c, "10.1.2.3"), 0);
    CHECK_EQ_INT(verdict(&c, "2001:db8::1"), 0);
    CHECK_EQ_INT(verdict(&c, "10.6.6.9"), 403);    /* in both: deny wins */
    CHECK_EQ_INT(verdict(&c, "192.0.2.7"), 403);   /* denied */
    CHECK_EQ_INT(verdict(&c, "203.0.113.1"), 403); /* not allowed */
    CHECK_EQ_INT(verdict(&c, NULL), 403);          /* no address, allow set */

    struct ir_conf d = {{NULL, 0}, {deny, 2}, {0}, {0}};
    CHECK(pt_filter_ip_restriction.compile(&d, &a, &r.e) == 0 && r.n == 0);
    CHECK_EQ_INT(verdict(&d, "203.0.113.1"), 0);
    CHECK_EQ_INT(verdict(&d, "10.6.6.1"), 403);
    CHECK_EQ_INT(verdict(&d, NULL), 0);

    /* Load-time checks: each bad entry reported at its entry. */
    const char *bad[] = {"10.0.0.0/8", "10.1.0.0/8", "nope"};
    struct ir_conf e = {{bad, 3}, {NULL, 0}, {0}, {0}};
    CHECK(pt_filter_ip_restriction.compile(&e, &a, &r.e) < 0 && r.n == 2);
    CHECK_MSG(strncmp(r.last, "allow|nope|", 11) == 0, "%s", r.last);
    struct ir_conf empty = {{NULL, 0}, {NULL, 0}, {0}, {0}};
    r.n = 0;
    CHECK(pt_filter_ip_restriction.compile(&empty, &a, &r.e) < 0 && r.n == 1);
    CHECK_MSG(strstr(r.last, "`allow`, `deny` or both") != NULL, "%s", r.last);
    pt_arena_destroy(&a);
}

/* ---- configuration ---- */

#define BASE                                                                                       \
    "listeners: [{ address: \"127.0.0.1:18080\" }]\n"                                              \
    "upstreams:\n"                                                                                 \
    "  users: { targets: [\"127.0.0.1:9001\"] }\n"

static void test_config(void)
{
    char path[] = "/tmp/pt_test_client_addr_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    struct pt_diag d;

    /* Defaults: nobody trusted, X-Real-IP left alone. */
    unit_write_file(path, BASE);
    pt_diag_init(&d);
    struct pt_generation *g = pt_config_load(path, 1, &d);
    CHECK(g && g->trusted_proxies.n == 0 && !g->forward_real_ip);
    pt_generation_free(g);
    pt_diag_free(&d);

    unit_write_file(path, BASE "trusted_proxies: [10.0.0.0/8, \"::1\", 192.0.2.7]\n"
                               "forward_real_ip: true\n");
    pt_diag_init(&d);
    g = pt_config_load(path, 1, &d);
    CHECK(g && g->trusted_proxies.n == 3 && g->forward_real_ip);
    struct pt_ip ip;
    CHECK(g && pt_ip_parse(sl("::1"), &ip) && pt_cidr_set_has(&g->trusted_proxies, &ip));
    pt_generation_free(g);
    pt_diag_free(&d);

    /* Every bad entry at its own position, with the network suggested. */
    unit_write_file(path, BASE "trusted_proxies: [10.0.0.0/8, 10.1.2.3/8, bogus]\n"
                               "routes:\n"
                               "  - { name: r, upstream: users, filters: { ip_restriction: {} } }\n"
                               "  - name: s\n"
                               "    upstream: users\n"
                               "    filters: { ip_restriction: { deny: [10.0.0.1/8] } }\n");
    pt_diag_init(&d);
    g = pt_config_load(path, 1, &d);
    CHECK(!g && d.n == 4);
    const char *want[] = {
        ":4:31: `10.1.2.3/8` in `trusted_proxies`: host bits are set past the prefix length "
        "(did you mean `10.0.0.0/8`?)",
        ":4:43: `bogus` in `trusted_proxies`: not an IP address",
        ":6:44: filter `ip_restriction`: give `allow`, `deny` or both",
        ":9:41: filter `ip_restriction`: `10.0.0.1/8` in `deny`: host bits are set past the "
        "prefix length (did you mean `10.0.0.0/8`?)",
    };
    for (size_t i = 0; i < d.n && i < PT_ARRAY_LEN(want); i++)
        CHECK_MSG(strstr(d.lines[i], want[i]) != NULL, "%s", d.lines[i]);
    pt_diag_free(&d);
    unlink(path);
}

int main(void)
{
    test_ip_parse();
    test_ip_parse_hop();
    test_cidr();
    test_walk();
    test_ip_restriction();
    test_config();
    return unit_report("client_addr");
}
