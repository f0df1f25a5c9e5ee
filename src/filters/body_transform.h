/*
 * body_transform.h — what request_transform and response_transform share:
 * their config (the header edits of template.h plus the JSON body rules
 * of json_edit.h and max_transform_bytes), its field table and compile
 * step, and the test of whether a message's body is one the rules apply
 * to.
 *
 * A body is transformed only when its Content-Type is application/json
 * or any type/subtype+json (parameters such as charset allowed), it has no
 * Content-Encoding other than identity, and it is at most
 * max_transform_bytes long. Anything else streams through untouched.
 *
 * Ownership: the config lives in the generation arena, read-only on
 * workers.
 */
#ifndef PT_FILTERS_BODY_TRANSFORM_H
#define PT_FILTERS_BODY_TRANSFORM_H

#include "filters/json_edit.h"
#include "filters/template.h"

#define PT_TRANSFORM_DEFAULT_MAX_BYTES (1024u * 1024u)

struct pt_transform_conf {
    /* First, so the header fields' offsets are the same as in
     * pt_header_edit_fields. */
    struct pt_header_edit_conf headers;
    struct pt_strmap rename_body_fields;  /* path → new name or path */
    struct pt_strlist remove_body_fields; /* paths */
    struct pt_jsonmap add_body_fields;    /* path → value (typed or template) */
    uint64_t max_transform_bytes;         /* 0 in YAML: the default, 1 MiB */
    struct pt_json_edits body;            /* compiled; nops 0: no body rules */
};

extern const struct pt_field pt_transform_fields[];

/* Compiles the header edits and the body rules (each problem reported). */
int pt_transform_compile(void *conf, struct pt_arena *a, struct pt_filter_errs *errs);

/* Whether the config has body rules: the filter's uses_body. */
bool pt_transform_uses_body(const void *conf);

enum pt_body_verdict {
    PT_BODY_OK,        /* JSON, not encoded, and no declared length above the limit */
    PT_BODY_NOT_JSON,  /* another media type, or none */
    PT_BODY_ENCODED,   /* a Content-Encoding other than identity */
    PT_BODY_TOO_LARGE, /* a Content-Length above max_transform_bytes */
};

/* Judges a message by its header fields. */
enum pt_body_verdict pt_transform_judge(const struct pt_transform_conf *conf, struct pt_headers *h);

/* Whether a Content-Type value names JSON: application/json or
 * type/subtype+json, any case, parameters ignored. */
bool pt_transform_is_json(pt_slice content_type);

#endif
