/*
 * filter.h — the plugin model (DESIGN.md §5).
 *
 * A filter is a static `struct pt_filter_def`: a name, a priority, a field
 * table that generic config code uses to parse and validate its YAML (so
 * every filter gets file:line:col errors for free), an optional compile
 * step, a per-request state size and up to four hooks. At load time each
 * route's effective filters are compiled into flat per-phase arrays
 * (`struct pt_chain`); a phase with no filters costs nothing.
 *
 * Ownership: a filter's config lives in the generation arena and is
 * read-only on workers. Per-request state lives in the request arena.
 * Hooks run on the worker that owns the request; they must not block.
 */
#ifndef PT_FILTERS_FILTER_H
#define PT_FILTERS_FILTER_H

#include "core/arena.h"
#include "http/headers.h"

/* ---- configuration field tables (parsed by generic code) ---- */

enum pt_field_type {
    PT_F_STRING,      /* const char *                      */
    PT_F_STRING_LIST, /* struct pt_strlist  (scalar or sequence) */
    PT_F_STRING_MAP,  /* struct pt_strmap   (mapping of scalars) */
    /* struct pt_strmap whose values are templates (template.h): `$` inside
     * an expanded `${ENV}` value arrives as `$$`, i.e. as literal text */
    PT_F_TEMPLATE_MAP,
    PT_F_BOOL,     /* bool                               */
    PT_F_INT,      /* int64_t                            */
    PT_F_DURATION, /* uint64_t milliseconds ("250ms", "5s") */
    PT_F_SIZE,     /* uint64_t bytes ("16KiB")          */
    PT_F_DOUBLE,   /* double                             */
};

struct pt_strlist {
    const char **v;
    uint32_t n;
};

struct pt_strmap {
    const char **keys;
    const char **values;
    uint32_t n;
};

struct pt_field {
    const char *name; /* YAML key */
    enum pt_field_type type;
    size_t offset; /* offsetof() into the filter's config struct */
};

/* ---- the per-request view a filter sees ---- */

enum pt_filter_result {
    PT_FILTER_CONTINUE = 0, /* go on to the next filter */
    PT_FILTER_RESPOND,      /* stop; reply with ctx->respond_* (e.g. 401, 429) */
    PT_FILTER_SUSPEND,      /* async work started; call ctx->resume(ctx) later */
    PT_FILTER_ERROR,        /* internal failure → 500 */
};

struct pt_filter_ctx {
    struct pt_arena *arena;          /* request arena: freed when the request ends */
    struct pt_headers *req_headers;  /* forwarded upstream; editable in on_request */
    struct pt_headers *resp_headers; /* sent to the client; editable in on_response_head */
    int method_id;                   /* enum pt_method */
    pt_slice method, path, query;    /* path after routing rewrites */
    pt_slice request_id;
    pt_slice remote_addr;        /* client IP, text */
    const pt_slice *param_names; /* route path parameters */
    const pt_slice *param_values;
    uint32_t nparams;
    bool params_numbered; /* see pt_param_lookup */
    int status;           /* upstream status (response phases) */
    /* Set by a filter returning PT_FILTER_RESPOND. Extra response headers
     * go into resp_headers. */
    int respond_status;
    pt_slice respond_body; /* JSON; empty → the standard error body */
    /* Set by the gateway: resumes the chain after PT_FILTER_SUSPEND. */
    void (*resume)(struct pt_filter_ctx *ctx, enum pt_filter_result r);
    void *owner; /* the gateway's transaction */
};

/* ---- filter definitions ---- */

/* Where a compile hook reports what is wrong, one call per problem: the
 * field it is in (NULL: the filter as a whole) and, for a list item or a
 * mapping entry, that entry's name; `in_value` when the problem is in the
 * entry's value rather than its name. The loader turns each report into a
 * file:line:col at that node. */
struct pt_filter_errs {
    void (*report)(struct pt_filter_errs *e, const char *field, const char *entry, bool in_value,
                   const char *msg);
};

struct pt_filter_def {
    const char *name;
    int priority;                  /* higher runs first within a phase; ties by name */
    const struct pt_field *fields; /* terminated by {NULL} */
    size_t config_size;
    /* Optional: validate/compile the parsed config. Reports every problem
     * through errs and returns -1 if there was any; the loader adds
     * file:line:col. */
    int (*compile)(void *conf, struct pt_arena *a, struct pt_filter_errs *errs);
    size_t state_size; /* zeroed per request when > 0 */
    int (*on_request)(struct pt_filter_ctx *ctx, const void *conf, void *state);
    int (*on_response_head)(struct pt_filter_ctx *ctx, const void *conf, void *state);
    /* Optional: whether a field of an interim (1xx) response head must not
     * reach the client. Response filters edit the final head only; what
     * they remove there must not leak through a 103 either. */
    bool (*hides_interim_field)(const void *conf, pt_slice name);
    int (*on_response_body)(struct pt_filter_ctx *ctx, const void *conf, void *state,
                            pt_slice *chunk, bool eos);
    void (*on_log)(struct pt_filter_ctx *ctx, const void *conf, void *state);
};

/* One enabled filter on one route. */
struct pt_filter_inst {
    const struct pt_filter_def *def;
    const void *conf;
    uint32_t state_index; /* slot in the per-request state array */
};

/* A route's compiled chain: flat arrays per phase, in run order. */
struct pt_chain {
    const struct pt_filter_inst *all; /* every enabled filter, run order */
    uint32_t n_all;
    const struct pt_filter_inst **request;
    uint32_t n_request;
    const struct pt_filter_inst **response_head;
    uint32_t n_response_head;
    const struct pt_filter_inst **response_body;
    uint32_t n_response_body;
    const struct pt_filter_inst **log;
    uint32_t n_log;
};

/* Registry (registry.c): every known filter, by name. */
extern const struct pt_filter_def *const pt_filter_registry[];
extern const size_t pt_filter_registry_len;
const struct pt_filter_def *pt_filter_find(const char *name);

/* Builds a chain from enabled instances (any order); sorts by priority
 * then name. Allocates in `a`. Returns 0 or -ENOMEM. */
int pt_chain_build(struct pt_chain *c, struct pt_filter_inst *inst, uint32_t n, struct pt_arena *a);

/*
 * Chain runner with a resumable cursor (nginx phase-engine style). Runs
 * phase `insts[*cursor..n)`; returns the first non-CONTINUE result and
 * leaves *cursor at the filter that returned it (+1 for SUSPEND, so a
 * resume continues after it). `states` is the per-request state array.
 */
int pt_chain_run_request(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states,
                         uint32_t *cursor);
int pt_chain_run_response_head(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states);
void pt_chain_run_log(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states);
/* Whether some response filter of the chain hides this field of a 1xx head. */
bool pt_chain_hides_interim_field(const struct pt_chain *c, pt_slice name);
/* Allocates zeroed state for every filter that wants some. */
void **pt_chain_states(const struct pt_chain *c, struct pt_arena *a);

/* A route path parameter by name. With `numbered` (a path_regex route,
 * whose params are its groups in order) a decimal name is also a group
 * number: "1" is the first group, named or not. NULL p when there is none. */
pt_slice pt_param_lookup(const pt_slice *names, const pt_slice *values, uint32_t n, bool numbered,
                         pt_slice name);

#endif
