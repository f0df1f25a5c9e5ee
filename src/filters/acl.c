/*
 * acl.c — authorization by group: lets a caller through by the groups the
 * auth filters found for it (Kong's acl, APISIX's consumer-restriction).
 *
 *   acl:
 *     allow: [mobile, partners]   # when set, only callers in one of these
 *     deny:  [suspended]          # never callers in one of these; deny wins
 *
 * The groups are the exchange's identity (ctx->identity), set by whichever
 * auth filter identified the caller (key_auth from the consumer's
 * `groups`, jwt from its groups claim, introspection from the scope...).
 * Then:
 *
 *   nobody identified        401 (no credential worked): the challenges
 *                            of the route's optional auth filters
 *                            (pt_auth_refuse_anonymous);
 *   in a `deny` group        403;
 *   `allow` set, in none     403;
 *   otherwise                on to the next filter.
 *
 * Both lists may be given (as ip_restriction's): deny is checked first.
 * At least one must be non-empty. Group names match exactly (case
 * matters, as in the consumers' `groups`).
 *
 * Priority 1200: after every auth filter (jwt 1300, introspection 1280,
 * key_auth 1250, ext_auth 1240), before rate_limit (1000), so a
 * refused caller spends no rate-limit tokens. The loader refuses a route
 * with acl and no auth filter: every request would be a 401.
 *
 * Ownership: the group lists live in the generation arena; no state per
 * request; matching allocates nothing.
 */
#include "filters/auth.h"
#include "filters/registry.h"
#include "filters/template.h"

struct acl_conf {
    struct pt_strlist allow, deny;
};

static const struct pt_field acl_fields[] = {
    {"allow", PT_F_STRING_LIST, offsetof(struct acl_conf, allow), NULL},
    {"deny", PT_F_STRING_LIST, offsetof(struct acl_conf, deny), NULL},
    {NULL, 0, 0, NULL},
};

/* Whether one of the caller's groups is in `list`. */
static bool member(const struct pt_identity *id, const struct pt_strlist *list)
{
    for (uint32_t g = 0; g < id->ngroups; g++)
        for (uint32_t i = 0; i < list->n; i++)
            if (pt_slice_eq_cstr(id->groups[g], list->v[i]))
                return true;
    return false;
}

static int acl_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state)
{
    const struct acl_conf *conf = conf_;
    const struct pt_identity *id = ctx->identity;
    if (!id || id->consumer.len == 0)
        return pt_auth_refuse_anonymous(ctx);
    if (member(id, &conf->deny) || (conf->allow.n && !member(id, &conf->allow)))
        return pt_auth_refuse(ctx, 403, NULL, NULL);
    return PT_FILTER_CONTINUE;
}

static int check_groups(struct pt_filter_errs *errs, const char *field, const struct pt_strlist *l)
{
    int bad = 0;
    for (uint32_t i = 0; i < l->n; i++) {
        if (!*l->v[i])
            bad |= pt_filter_errorf(errs, field, NULL, false, "%s: a group name is empty", field);
        for (const char *p = l->v[i]; *p; p++)
            if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f || *p == ',') {
                bad |= pt_filter_errorf(errs, field, l->v[i], false,
                                        "%s: group \"%s\" has a space, a control character or "
                                        "a comma (groups travel comma-separated in "
                                        "X-Consumer-Groups)",
                                        field, l->v[i]);
                break;
            }
    }
    return bad;
}

static int acl_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct acl_conf *conf = conf_;
    int bad = check_groups(errs, "allow", &conf->allow) | check_groups(errs, "deny", &conf->deny);
    if (conf->allow.n == 0 && conf->deny.n == 0)
        bad |= pt_filter_errorf(errs, NULL, NULL, false,
                                "give `allow`, `deny` or both (e.g. `allow: [mobile]`)");
    return bad ? -1 : 0;
}

const struct pt_filter_def pt_filter_acl = {
    .name = "acl",
    .priority = 1200,
    .auth = true,
    .fields = acl_fields,
    .config_size = sizeof(struct acl_conf),
    .compile = acl_compile,
    .on_request = acl_on_request,
};
