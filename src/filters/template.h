/*
 * template.h — compiled string templates for header values, and the
 * header-edit program that request_transform and response_transform share.
 *
 * A template is literal text with variables: ${request_id}, ${remote_addr},
 * ${method}, ${path} (the current path, after routing rewrites),
 * ${path.NAME} (the route's path parameter NAME) and ${consumer} (the
 * caller an auth filter identified; empty when anonymous). `$$` is a literal `$`; a
 * `$` followed by anything else is literal too. Templates are compiled once
 * at config load into a list of parts (unknown variables are compile
 * errors) and rendered per request from a struct pt_filter_ctx.
 *
 * Ownership: a compiled template lives in the generation arena passed to
 * pt_template_compile and is read-only afterwards. A rendered value lives in
 * the request arena (ctx->arena), except for templates without variables,
 * whose render returns the compiled literal itself (no allocation): it is
 * valid as long as the generation, which a request pins until its log phase.
 */
#ifndef PT_FILTERS_TEMPLATE_H
#define PT_FILTERS_TEMPLATE_H

#include "filters/filter.h"

struct pt_template;

/*
 * Compiles `src` into *out (allocated in `a`). Returns 0, -EINVAL with a
 * message in err (e.g. "unknown variable ${foo} (known: ...)"), or -ENOMEM.
 */
int pt_template_compile(struct pt_template **out, const char *src, struct pt_arena *a, char *err,
                        size_t errlen);

/*
 * Renders `t` for one request. A missing path parameter renders as empty
 * text. Returns {NULL, 0} only when the request arena is out of memory; an
 * empty result otherwise has a non-NULL pointer.
 */
pt_slice pt_template_render(const struct pt_template *t, const struct pt_filter_ctx *ctx);

/* True when the template has no variables (renders to a constant). */
bool pt_template_is_constant(const struct pt_template *t);

/* ---- header edits: the shared core of request/response_transform ---- */

struct pt_header_op; /* one compiled edit (template.c) */

/*
 * The config both transform filters parse with the generic field table
 * pt_header_edit_fields; `ops`/`nops` are filled by pt_header_edit_compile.
 */
struct pt_header_edit_conf {
    struct pt_strmap add_headers;     /* name → value template; appended */
    struct pt_strmap set_headers;     /* name → value template; replaces all of that name */
    struct pt_strlist remove_headers; /* names removed (every field of that name) */
    struct pt_strmap rename_headers;  /* old name → new name */
    /* Filled by pt_header_edit_compile (not YAML keys: the field table
     * does not list them), in the order they apply. */
    const struct pt_header_op *ops;
    uint32_t nops;
};

/* Field table for struct pt_header_edit_conf, terminated by {NULL}. */
extern const struct pt_field pt_header_edit_fields[];

/*
 * Validates the parsed config (header names are RFC 9110 tokens, values
 * carry no control characters, framing headers are untouchable) and
 * compiles it into conf->ops in `a`. Returns 0, or -1 after reporting every
 * problem through errs (each at its field and entry).
 */
int pt_header_edit_compile(void *conf, struct pt_arena *a, struct pt_filter_errs *errs);

/* Whether the compiled edits remove, rename away or replace (set) a field
 * named `name`: the upstream's value of it never reaches the client. */
bool pt_header_edit_removes(const struct pt_header_edit_conf *conf, pt_slice name);

/* Reports one problem through errs (see struct pt_filter_errs), the
 * message printf-formatted; returns -1, so a compile hook can write
 * `bad |= pt_filter_errorf(...)` or `return pt_filter_errorf(...)`. */
int pt_filter_errorf(struct pt_filter_errs *errs, const char *field, const char *entry,
                     bool in_value, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * Checks a header name a filter's config gives, for a compile hook: an RFC
 * 9110 token, none of the framing fields (Host, Content-Length,
 * Transfer-Encoding, Connection), and with `produces` (the filter puts a
 * field of that name into a message) not hop-by-hop. `key`, `entry` and
 * `in_value` say where it is, as for pt_filter_errs. Returns 0 with the
 * name as a slice in *out, or -1 after reporting.
 */
int pt_header_name_check(struct pt_filter_errs *errs, const char *key, const char *entry,
                         bool in_value, bool produces, const char *name, pt_slice *out);

/*
 * Applies the compiled edits to `h` (new values go into ctx->arena).
 * Returns PT_FILTER_CONTINUE, or PT_FILTER_ERROR when out of memory or when
 * a rendered value would contain a control character.
 */
int pt_header_edit_apply(const struct pt_header_edit_conf *conf, struct pt_filter_ctx *ctx,
                         struct pt_headers *h);

#endif
