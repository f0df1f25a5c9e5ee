/*
 * registry.c — every filter portico knows, one line each. The config
 * loader resolves a route's `filters:` keys through pt_filter_find()
 * (chain.c), so a filter missing from this table is an unknown key.
 */
#include "filters/registry.h"

const struct pt_filter_def *const pt_filter_registry[] = {
    &pt_filter_acl,
    &pt_filter_aggregate,
    &pt_filter_cache,
    &pt_filter_cors,
    &pt_filter_ext_auth,
    &pt_filter_fault,
    &pt_filter_introspection,
    &pt_filter_ip_restriction,
    &pt_filter_jwt,
    &pt_filter_key_auth,
    &pt_filter_mtls_auth,
    &pt_filter_rate_limit,
    &pt_filter_request_transform,
    &pt_filter_response_transform,
};

const size_t pt_filter_registry_len = PT_ARRAY_LEN(pt_filter_registry);
