/*
 * test_path.c — request path normalisation: dot segments, decoded
 * unreserved escapes, merged slashes, climbing above the root and broken
 * escapes refused, every result no longer than its input (it runs in
 * place) and stable (normalising it again changes nothing); the path
 * rules that run before it (issue 13's bypass strings and their encoded,
 * double-encoded and mixed-case variants) and decoding `%2F`/`%5C` once.
 */
#include "core/common.h"
#include "http/path.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>

struct path_case {
    const char *in;
    bool merge;
    const char *out; /* NULL: refused (above the root) */
};

static const struct path_case cases[] = {
    {"/", true, "/"},
    {"/a/b", true, "/a/b"},
    {"/a/", true, "/a/"},
    {"/a/./b", true, "/a/b"},
    {"/a/../b", true, "/b"},
    {"/a/b/..", true, "/a/"},
    {"/a/b/.", true, "/a/b/"},
    {"/a/..", true, "/"},
    {"/./", true, "/"},
    {"/...", true, "/..."},
    {"/.a/..b/a.", true, "/.a/..b/a."},
    {"/a//b", true, "/a/b"},
    {"/a//b", false, "/a//b"},
    {"//", true, "/"},
    {"//", false, "//"},
    {"/a//..", false, "/a/"},
    {"//..", false, "/"},
    {"/public/../admin/x", true, "/admin/x"},
    {"/public//../admin/x", true, "/admin/x"},
    {"/public//../admin/x", false, "/public/admin/x"},
    {"/public/%2e%2e/admin/x", true, "/admin/x"},
    {"/public/%2E%2e/admin", true, "/admin"},
    {"/%2e/x", true, "/x"},
    {"/a%2fb/../c", true, "/c"},
    {"/a%2Fb", true, "/a%2Fb"},
    {"/caf%65", true, "/cafe"},
    {"/%7euser/%41%5a%30%2D%5f", true, "/~user/AZ0-_"},
    {"/%20x/%3F/%25", true, "/%20x/%3F/%25"},
    {"/%zz", true, NULL},
    {"/a/%4", true, NULL},
    {"/a%", true, NULL},
    {"/public/%%32%65%%32%65/admin/x", true, NULL}, /* would decode to %2e%2e */
    {"/%252e%252e/x", true, "/%252e%252e/x"},       /* stays an escaped `%` */
    {"/..", true, NULL},
    {"/../a", true, NULL},
    {"/a/../../b", true, NULL},
    {"/%2e%2e/etc/passwd", true, NULL},
    {"/a/%2e%2E/..", true, NULL},
    {"*", true, "*"},
};

static void test_cases(void)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        const struct path_case *c = &cases[i];
        size_t len = strlen(c->in);
        char *buf = malloc(len ? len : 1); /* exact size: overruns show under ASan */
        memcpy(buf, c->in, len);
        long r = pt_path_normalize(buf, len, c->merge);
        if (!c->out) {
            CHECK_MSG(r == -1, "%s (merge %d): want refused, got %ld", c->in, c->merge, r);
        } else {
            CHECK_MSG(r >= 0 && (size_t)r == strlen(c->out) && memcmp(buf, c->out, (size_t)r) == 0,
                      "%s (merge %d): want %s, got %.*s", c->in, c->merge, c->out,
                      (int)(r < 0 ? 0 : r), buf);
            CHECK((size_t)r <= len);
        }
        free(buf);
    }
}

/* Normalising twice changes nothing, and a result never holds a `.` or
 * `..` segment or (merged) an empty one, over many generated paths. */
static void test_idempotent_random(void)
{
    static const char *const parts[] = {"a",   "bc",  ".",   "..",  "",  "%2e", "%2E%2e",
                                        "%41", "%2F", "x.y", "%25", "%", "%3",  "%%32%65"};
    uint64_t rng = 12345;
    char in[256], buf[256];
    for (int n = 0; n < 20000; n++) {
        size_t len = 0;
        int segs = 1 + (int)(rng % 7);
        for (int s = 0; s < segs; s++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const char *p = parts[(rng >> 33) % PT_ARRAY_LEN(parts)];
            in[len++] = '/';
            memcpy(in + len, p, strlen(p));
            len += strlen(p);
        }
        bool merge = (rng >> 40) & 1;
        memcpy(buf, in, len);
        bool needs = pt_path_needs_normalize(in, len, merge);
        long r = pt_path_normalize(buf, len, merge);
        /* Nothing to do when the quick check says so. */
        CHECK_MSG(needs || (r == (long)len && memcmp(buf, in, len) == 0),
                  "needs_normalize missed %.*s", (int)len, in);
        if (r < 0)
            continue;
        CHECK(r > 0 && buf[0] == '/' && (size_t)r <= len);
        char again[256];
        memcpy(again, buf, (size_t)r);
        long r2 = pt_path_normalize(again, (size_t)r, merge);
        CHECK_MSG(r2 == r && memcmp(again, buf, (size_t)r) == 0, "not idempotent: %.*s", (int)len,
                  in);
        for (long i = 0; i < r; i++) {
            if (buf[i] != '/')
                continue;
            long j = i + 1;
            while (j < r && buf[j] != '/')
                j++;
            long sl = j - i - 1;
            CHECK_MSG(!(sl == 1 && buf[i + 1] == '.') &&
                          !(sl == 2 && buf[i + 1] == '.' && buf[i + 2] == '.'),
                      "dot segment left in %.*s (from %.*s)", (int)r, buf, (int)len, in);
            CHECK_MSG(!merge || sl > 0 || j == r, "empty segment left in %.*s", (int)r, buf);
        }
    }
}

/* ---- path rules (pt_path_screen, pt_path_decode_slashes) ---- */

#define R_CTL "raw control"
#define R_BSL "backslash"
#define R_PCT "percent-encoded control"
#define R_DOT "dot segment with parameters"
#define R_ESC "escaped slash"
#define R_SEMI "semicolon"

struct rule_case {
    const char *in;
    uint8_t esc, semi;
    const char *why; /* a substring of the refusal; NULL: passes */
    bool escaped;
};

static const struct rule_case rule_cases[] = {
    {"/admin", PT_ESC_REJECT, PT_SEMI_REJECT, NULL, false},
    {"/a-b_c.~d/%41%7e%20%80%ff", PT_ESC_REJECT, PT_SEMI_REJECT, NULL, false},
    /* the bypass strings of issue 13 */
    {"/..;/admin", PT_ESC_KEEP, PT_SEMI_KEEP, R_DOT, false},
    {"/admin;x", PT_ESC_REJECT, PT_SEMI_REJECT, R_SEMI, false},
    {"/admin;x", PT_ESC_REJECT, PT_SEMI_KEEP, NULL, false},
    {"/admin%2fx", PT_ESC_REJECT, PT_SEMI_REJECT, R_ESC, false},
    {"/admin%2Fsecret", PT_ESC_REJECT, PT_SEMI_REJECT, R_ESC, false},
    {"/admin%2Fsecret", PT_ESC_KEEP, PT_SEMI_REJECT, NULL, true},
    {"/admin%2fsecret", PT_ESC_DECODE, PT_SEMI_REJECT, NULL, true},
    {"/admin\\x", PT_ESC_KEEP, PT_SEMI_KEEP, R_BSL, false},
    {"/admin%00", PT_ESC_KEEP, PT_SEMI_KEEP, R_PCT, false},
    {"/%0aadmin", PT_ESC_KEEP, PT_SEMI_KEEP, R_PCT, false},
    /* encoded, double-encoded, mixed case */
    {"/admin%5c", PT_ESC_REJECT, PT_SEMI_KEEP, R_ESC, false},
    {"/admin%5C", PT_ESC_DECODE, PT_SEMI_KEEP, NULL, true},
    {"/admin%252F", PT_ESC_REJECT, PT_SEMI_REJECT, NULL, false},
    {"/admin%255c", PT_ESC_REJECT, PT_SEMI_REJECT, NULL, false},
    {"/admin%2500", PT_ESC_REJECT, PT_SEMI_REJECT, NULL, false},
    {"/admin%3b", PT_ESC_REJECT, PT_SEMI_REJECT, NULL, false},
    {"/%0A", PT_ESC_KEEP, PT_SEMI_KEEP, R_PCT, false},
    {"/%1f", PT_ESC_KEEP, PT_SEMI_KEEP, R_PCT, false},
    {"/%1F", PT_ESC_KEEP, PT_SEMI_KEEP, R_PCT, false},
    {"/%7f", PT_ESC_KEEP, PT_SEMI_KEEP, R_PCT, false},
    {"/%7F", PT_ESC_KEEP, PT_SEMI_KEEP, R_PCT, false},
    {"/%7E%20%21", PT_ESC_KEEP, PT_SEMI_KEEP, NULL, false},
    {"/a b", PT_ESC_KEEP, PT_SEMI_KEEP, R_CTL, false},
    {"/a\tb", PT_ESC_KEEP, PT_SEMI_KEEP, R_CTL, false},
    {"/a\x7f", PT_ESC_KEEP, PT_SEMI_KEEP, R_CTL, false},
    {"/a\x01", PT_ESC_KEEP, PT_SEMI_KEEP, R_CTL, false},
    /* dot segments with parameters, always refused */
    {"/.;x/admin", PT_ESC_KEEP, PT_SEMI_KEEP, R_DOT, false},
    {"/a/..;", PT_ESC_KEEP, PT_SEMI_KEEP, R_DOT, false},
    {"..;/a", PT_ESC_KEEP, PT_SEMI_KEEP, R_DOT, false},
    {"/%2e%2e;/admin", PT_ESC_KEEP, PT_SEMI_KEEP, R_DOT, false},
    {"/%2E.;x/admin", PT_ESC_KEEP, PT_SEMI_KEEP, R_DOT, false},
    {"/.%2e;x", PT_ESC_KEEP, PT_SEMI_KEEP, R_DOT, false},
    {"/x%2F..;y", PT_ESC_KEEP, PT_SEMI_KEEP, R_DOT, true},
    {"/x%5c.;y", PT_ESC_DECODE, PT_SEMI_KEEP, R_DOT, true},
    {"/...;x", PT_ESC_KEEP, PT_SEMI_KEEP, NULL, false},
    {"/a..;x", PT_ESC_KEEP, PT_SEMI_KEEP, NULL, false},
    {"/x;..;y", PT_ESC_KEEP, PT_SEMI_KEEP, NULL, false},
    {"/%252e%252e;x", PT_ESC_KEEP, PT_SEMI_KEEP, NULL, false},
    {"/..;x", PT_ESC_REJECT, PT_SEMI_REJECT, R_DOT, false},
    /* a broken escape is normalisation's to refuse, not a rule's */
    {"/a%", PT_ESC_REJECT, PT_SEMI_REJECT, NULL, false},
    {"/a%2", PT_ESC_REJECT, PT_SEMI_REJECT, NULL, false},
    {"/a%%2F", PT_ESC_REJECT, PT_SEMI_REJECT, R_ESC, false},
};

static void test_rules(void)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(rule_cases); i++) {
        const struct rule_case *c = &rule_cases[i];
        size_t len = strlen(c->in);
        char *buf = malloc(len ? len : 1);
        memcpy(buf, c->in, len);
        bool escaped = !c->escaped;
        const char *why = pt_path_screen(buf, len, c->esc, c->semi, &escaped);
        if (!c->why)
            CHECK_MSG(!why, "%s (esc %d, semi %d): want pass, got %s", c->in, c->esc, c->semi, why);
        else
            CHECK_MSG(why && strstr(why, c->why), "%s (esc %d, semi %d): want %s, got %s", c->in,
                      c->esc, c->semi, c->why, why ? why : "pass");
        CHECK_MSG(why || escaped == c->escaped, "%s: escaped %d", c->in, escaped);
        free(buf);
    }
}

struct decode_case {
    const char *in, *out;
};

static const struct decode_case decode_cases[] = {
    {"/a%2Fb", "/a/b"},
    {"/a%2fb%5Cc%5cd", "/a/b/c/d"},
    {"/a%252Fb", "/a%252Fb"}, /* an escaped `%`: decoded at most once */
    {"/a%25%32%46", "/a%25%32%46"},
    {"/%2F%2F", "///"},
    {"/a%%2Fb", "/a%/b"}, /* as pt_path_screen reads it */
    {"/a%2", "/a%2"},
    {"/a%", "/a%"},
    {"/%41%2F", "/%41/"},
};

static void test_decode_slashes(void)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(decode_cases); i++) {
        const struct decode_case *c = &decode_cases[i];
        size_t len = strlen(c->in);
        char *buf = malloc(len);
        memcpy(buf, c->in, len);
        size_t n = pt_path_decode_slashes(buf, len);
        CHECK_MSG(n == strlen(c->out) && memcmp(buf, c->out, n) == 0, "%s: want %s, got %.*s",
                  c->in, c->out, (int)n, buf);
        free(buf);
    }
}

int main(void)
{
    test_cases();
    test_idempotent_random();
    test_rules();
    test_decode_slashes();
    printf("path: %zu cases and 20000 generated paths\n", PT_ARRAY_LEN(cases));
    return unit_report("path");
}
