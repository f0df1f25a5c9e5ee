/*
 * registry.h — the filter definitions registry.c lists (DESIGN.md §5).
 *
 * Adding a filter: define its `const struct pt_filter_def` in its own file,
 * declare it here, add one line to pt_filter_registry[] in registry.c.
 *
 * Priority scale (higher runs first within a phase; ties by name). Leave
 * gaps so a new filter can slot in without renumbering:
 *   2000  cors               preflight answered before anything can refuse it
 *   1600  ip_restriction     by the real client address, before any auth
 *                            work is spent on a refused one
 *   1310  mtls_auth          authentication (1310..1240): who is calling.
 *                            mtls_auth first: its check was paid for in
 *                            the TLS handshake, so asking it costs nothing.
 *   1300  jwt
 *   1280  introspection      Every auth filter has def->auth set (the route
 *   1250  key_auth           then loses client-sent X-Consumer-* fields);
 *   1240  ext_auth           with several on a route the first to identify
 *                            the caller sets the identity (auth.h), and with
 *                            `optional: true` each lets a request without
 *                            its credential pass on (either-of auth).
 *                            ext_auth last: a request the local checks
 *                            refuse costs no call to the auth service
 *   1200  acl                authorization needs the consumer found above,
 *                            so it runs after every auth filter
 *   1000  rate_limit         counts only requests that got this far, per consumer
 *    900  fault              stands in for a failing upstream, so everything
 *                            the gateway decides itself (cors, auth, acl,
 *                            limits) still behaves as in production; only a
 *                            caller who passed auth can ask for a fault by
 *                            header, and a refused request holds no delay
 *    800  request_transform  edits what goes upstream, after the checks above
 *                            saw the request as the client sent it
 *    500  cache              last request filter: a hit skips only the
 *                            upstream, never auth or limits
 *    800  response_transform (response phase) edits what the client gets
 *
 * Ownership: every definition is static, read-only data.
 */
#ifndef PT_FILTERS_REGISTRY_H
#define PT_FILTERS_REGISTRY_H

#include "filters/filter.h"

extern const struct pt_filter_def pt_filter_acl;
extern const struct pt_filter_def pt_filter_aggregate;
extern const struct pt_filter_def pt_filter_cache;
extern const struct pt_filter_def pt_filter_cors;
extern const struct pt_filter_def pt_filter_ext_auth;
extern const struct pt_filter_def pt_filter_fault;
extern const struct pt_filter_def pt_filter_introspection;
extern const struct pt_filter_def pt_filter_ip_restriction;
extern const struct pt_filter_def pt_filter_jwt;
extern const struct pt_filter_def pt_filter_key_auth;
extern const struct pt_filter_def pt_filter_mtls_auth;
extern const struct pt_filter_def pt_filter_rate_limit;
extern const struct pt_filter_def pt_filter_request_transform;
extern const struct pt_filter_def pt_filter_response_transform;

#endif
