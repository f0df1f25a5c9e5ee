/*
 * aggregate_int.h — what the `aggregate` filter's files share (not a
 * public header): its config, the compiled path templates
 * (aggregate_path.c) and the JSON merge (aggregate_merge.c).
 *
 * Ownership: everything here but struct agg_part lives in the generation
 * arena and is read-only on workers; the parts live in the request arena.
 * JSON values (jansson, malloc) never outlive one call of agg_build.
 */
#ifndef PT_FILTERS_AGGREGATE_INT_H
#define PT_FILTERS_AGGREGATE_INT_H

#include "filters/filter.h"
#include "filters/template.h"

#define AGG_MAX_CALLS 32      /* a call's dependencies are a 32-bit mask */
#define AGG_MAX_PATH_PARTS 64 /* literals and variables in one call's path */

/* ---- path templates (aggregate_path.c) ---- */

enum agg_var {
    AGG_V_LITERAL,
    AGG_V_PARAM,    /* {name}: a route path parameter */
    AGG_V_CONSUMER, /* ${consumer} */
    AGG_V_JWT,      /* ${jwt.<claim>} */
    AGG_V_QUERY,    /* ${query.<name>} */
    AGG_V_CALL,     /* ${call.<name>.<field>} (a dotted path into its JSON) */
};

struct agg_tpart {
    enum agg_var kind;
    pt_slice text;  /* literal, parameter, claim, query name, or the field path */
    uint32_t call;  /* AGG_V_CALL: the call's index */
    pt_slice cname; /* AGG_V_CALL: the call's name, while compiling */
};

struct agg_path {
    const struct agg_tpart *parts;
    uint32_t nparts;
};

/* Compiles a call's `path` into *out (in `a`). Returns 0, or -1 with a
 * message in err. `${call.X.f}` references are resolved later
 * (agg_path_resolve), when every call's name is known. */
int agg_path_compile(struct agg_path *out, const char *src, struct pt_arena *a, char *err,
                     size_t errlen);

struct agg_part;

/* Renders a path for one request, every substituted value
 * percent-encoded (all but RFC 3986 unreserved characters; a value of
 * `.` or `..` has its dots encoded too), so no value can add a segment,
 * a query or a parameter. Route parameters and query values are decoded
 * first, so what was escaped once is escaped once. {NULL, 0} when out of
 * memory; *missing names the `${call...}` value that is not there (the
 * call then fails) and the result is {NULL, 0} as well. */
pt_slice agg_path_render(const struct agg_path *p, const struct pt_filter_ctx *ctx,
                         const struct agg_part *parts, const char **missing);

/* Percent-encodes `v` into o (room for 3 * v.len); returns the length. */
size_t agg_pct_encode(char *o, pt_slice v);

/* ---- config ---- */

struct agg_call {
    /* YAML */
    const char *name;
    const char *upstream;
    const char *method;
    const char *path;
    struct pt_strlist forward_headers; /* v == NULL: the default set */
    struct pt_strmap headers;          /* name → value template, set on the call */
    uint64_t timeout_ms;               /* 0: the route's `timeout`, else the upstream's
                                        * read timeout */
    bool optional;
    struct pt_strlist fields; /* this part's keep-list (or the top-level map's) */
    struct pt_strmap rename;  /* this part's renames (or the top-level map's) */
    /* compiled */
    struct agg_path tpl;
    pt_slice method_s;
    pt_slice *fwd; /* forwarded names; a trailing `*` is a prefix */
    uint32_t nfwd;
    pt_slice *hname;
    const struct pt_template **hval;
    uint32_t deps; /* bit i: waits for call i */
};

enum agg_merge { AGG_MERGE_NAMESPACE, AGG_MERGE_DEEP };
enum agg_conflict { AGG_CONFLICT_LAST, AGG_CONFLICT_FIRST, AGG_CONFLICT_ERROR };

struct agg_conf {
    struct pt_objlist calls;
    const char *merge;
    const char *on_conflict;
    struct pt_strlistmap fields;
    struct pt_strmapmap rename;
    const char *errors_field;
    const char *max_parts_s; /* as written: absent (the default) is not `0` */
    uint64_t max_part_body;
    uint64_t max_body;
    /* compiled */
    int64_t max_parts;
    const struct agg_call *c;
    uint32_t n;
    enum agg_merge merge_mode;
    enum agg_conflict conflict;
};

/* ---- one request's parts ---- */

enum agg_outcome {
    AGG_PENDING = 0,
    AGG_OK,          /* 2xx */
    AGG_CLIENT,      /* 4xx: passed through when required */
    AGG_FAILED,      /* 5xx, other statuses, connection failure, too big, not JSON → 502 */
    AGG_TIMEOUT,     /* → 504 */
    AGG_UNAVAILABLE, /* refused before contact (breaker open, max_concurrent), no target → 503 */
};

struct agg_part {
    enum agg_outcome outcome;
    bool started;
    int status;      /* the upstream's, when it answered */
    pt_slice body;   /* request arena */
    const char *why; /* the failure, for the error body and _errors */
    /* AGG_CLIENT: the answer's fields the client gets with its status
     * (WWW-Authenticate, Retry-After); request arena */
    struct pt_headers pass;
};

/* ---- the merge (aggregate_merge.c) ---- */

/* Builds the answer from the finished parts into ctx->respond_*: the
 * merged JSON (200), or the status policy's error naming the part. */
void agg_build(struct pt_filter_ctx *ctx, const struct agg_conf *conf, struct agg_part *parts);

/* A dotted path's value in a part's JSON as text (a string as it is,
 * others as compact JSON) in the arena; {NULL, 0} when absent (or the
 * body is not JSON, or out of memory). */
pt_slice agg_json_field(struct pt_arena *a, pt_slice body, pt_slice path);

#endif
