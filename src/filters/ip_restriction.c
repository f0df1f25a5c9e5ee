/*
 * ip_restriction.c — allow or deny requests by the real client address
 * (nginx's allow / deny, Kong's ip-restriction).
 *
 *   ip_restriction:
 *     allow: [10.0.0.0/8, 2001:db8::/32]   # when set, only these
 *     deny:  [10.6.6.0/24, 192.0.2.7]      # never these; deny wins
 *
 * The address is the exchange's client (ctx->remote_ip): the peer, or
 * from a peer in `trusted_proxies` the X-Forwarded-For walk's answer
 * (http/forwarded.h), so a client behind a trusted balancer is judged by
 * its own address and an untrusted peer cannot claim another. A client in
 * `deny` gets a 403; with a non-empty `allow`, so does a client outside
 * it. A request without an IP client (none today: every listener is TCP)
 * is refused when `allow` is set and let through otherwise.
 *
 * Priority 1600: after cors (a preflight carries no credentials and gets
 * its answer first), before authentication, so a refused address costs
 * no key lookup and no call to an auth service.
 *
 * Every CIDR is checked at load, with file:line:col at the entry. At
 * least one of the lists must be non-empty: an empty filter would look
 * like protection and be none.
 *
 * Ownership: the compiled sets live in the generation arena; no state per
 * request, and matching allocates nothing.
 */
#include "filters/registry.h"

#include <stdio.h>

struct ip_restriction_conf {
    struct pt_strlist allow_text, deny_text; /* as written */
    /* Filled by ip_restriction_compile (not YAML keys). */
    struct pt_cidr_set allow, deny;
};

static const struct pt_field ip_restriction_fields[] = {
    {"allow", PT_F_STRING_LIST, offsetof(struct ip_restriction_conf, allow_text), NULL},
    {"deny", PT_F_STRING_LIST, offsetof(struct ip_restriction_conf, deny_text), NULL},
    {NULL, 0, 0, NULL},
};

/* Parses one list into a set in `a`; reports each bad entry. -1 on any. */
static int compile_list(const struct pt_strlist *in, const char *field, struct pt_cidr_set *out,
                        struct pt_arena *a, struct pt_filter_errs *errs)
{
    out->n = 0;
    out->v = NULL;
    if (in->n == 0)
        return 0;
    struct pt_cidr *v = pt_arena_zalloc(a, sizeof(*v) * in->n);
    if (!v) {
        errs->report(errs, field, NULL, false, "out of memory");
        return -1;
    }
    int rc = 0;
    for (uint32_t i = 0; i < in->n; i++) {
        const char *why = NULL;
        if (pt_cidr_parse(in->v[i], &v[out->n], &why) == 0) {
            out->n++;
            continue;
        }
        char msg[256], net[PT_IP_TEXT_MAX];
        if (v[out->n].net.family && pt_ip_format(&v[out->n].net, net))
            snprintf(msg, sizeof(msg), "`%s` in `%s`: %s (did you mean `%s/%u`?)", in->v[i], field,
                     why, net, (unsigned)v[out->n].bits);
        else
            snprintf(msg, sizeof(msg), "`%s` in `%s`: %s", in->v[i], field, why);
        errs->report(errs, field, in->v[i], false, msg);
        rc = -1;
    }
    out->v = v;
    return rc;
}

static int ip_restriction_compile(void *conf, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct ip_restriction_conf *c = conf;
    int rc = compile_list(&c->allow_text, "allow", &c->allow, a, errs);
    rc |= compile_list(&c->deny_text, "deny", &c->deny, a, errs);
    if (c->allow_text.n == 0 && c->deny_text.n == 0) {
        errs->report(errs, NULL, NULL, false,
                     "give `allow`, `deny` or both (e.g. `deny: [192.0.2.0/24]`)");
        rc = -1;
    }
    return rc;
}

static int ip_restriction_on_request(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    const struct ip_restriction_conf *c = conf;
    const struct pt_ip *ip = ctx->remote_ip;
    bool refused =
        ip ? pt_cidr_set_has(&c->deny, ip) || (c->allow.n && !pt_cidr_set_has(&c->allow, ip))
           : c->allow.n != 0;
    if (!refused)
        return PT_FILTER_CONTINUE;
    ctx->respond_status = 403;
    return PT_FILTER_RESPOND;
}

const struct pt_filter_def pt_filter_ip_restriction = {
    .name = "ip_restriction",
    .priority = 1600,
    .fields = ip_restriction_fields,
    .config_size = sizeof(struct ip_restriction_conf),
    .compile = ip_restriction_compile,
    .on_request = ip_restriction_on_request,
};
