/*
 * auth.h — what the auth filters (key_auth, jwt, introspection, acl, and
 * later mtls_auth) share: one way to refuse a request.
 *
 * Either-of authentication (every auth filter's `optional: true`) also
 * goes through here: pt_auth_pass_anonymous and pt_auth_refuse_anonymous.
 *
 * A refusal is RFC 6750 §3 for every scheme: 401 with a
 * `WWW-Authenticate: <scheme> realm="portico"[, error="<code>"]` field
 * (no error code when no credential came at all, as §3.1 says), or 403
 * (`insufficient_scope`, or an acl refusal, which has no challenge). The
 * body is the gateway's JSON error with the code (or a generic text) as
 * its `error`: never which part of a credential failed.
 */
#ifndef PT_FILTERS_AUTH_H
#define PT_FILTERS_AUTH_H

#include "filters/filter.h"

/* RFC 6750 §3.1 error codes. */
#define PT_AUTH_INVALID_REQUEST "invalid_request"
#define PT_AUTH_INVALID_TOKEN "invalid_token"
#define PT_AUTH_INSUFFICIENT_SCOPE "insufficient_scope"

/*
 * Sets ctx up to answer `status` (401 or 403) and returns
 * PT_FILTER_RESPOND. `scheme` names the challenge ("Bearer", "ApiKey");
 * NULL sends none (an acl 403). `code` is one of the PT_AUTH_* codes, or
 * NULL when the request carried no credential. PT_FILTER_ERROR when the
 * challenge could not be added (out of memory).
 */
int pt_auth_refuse(struct pt_filter_ctx *ctx, int status, const char *scheme, const char *code);

/*
 * A verified caller: sets the exchange's identity (consumer, groups,
 * source) and tells the upstream who it is, replacing whatever the client
 * sent: `X-Consumer-Name: <consumer>` and, when there are groups,
 * `X-Consumer-Groups: a,b`. The slices must outlive the request (request
 * arena or generation). 0, or -ENOMEM.
 *
 * With several auth filters on a route, the first (by priority) whose
 * credential verifies sets the identity; a later call while an identity
 * is set changes nothing and returns 0 (the later filter has still
 * checked its credential: an invalid one is still its 401).
 */
int pt_auth_set_identity(struct pt_filter_ctx *ctx, pt_slice consumer, const pt_slice *groups,
                         uint32_t ngroups, const char *source);

/*
 * An optional auth filter (`optional: true`) found no credential of its
 * own in the request: it lets the request pass on unauthenticated and
 * notes its challenge `scheme` (may be NULL) on the identity, so that a
 * later 401 for nobody identified (acl's) offers it. Returns
 * PT_FILTER_CONTINUE. A credential that is present but invalid is never
 * a reason to call this: that is always a 401.
 */
int pt_auth_pass_anonymous(struct pt_filter_ctx *ctx, const char *scheme);

/*
 * 401 for a request no auth filter identified (acl on an either-of route):
 * one WWW-Authenticate per challenge noted by pt_auth_pass_anonymous, in
 * run order, or `Bearer` when none was. Returns as pt_auth_refuse.
 */
int pt_auth_refuse_anonymous(struct pt_filter_ctx *ctx);

#endif
