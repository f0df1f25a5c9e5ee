/*
 * json_edit.h — JSON body edits: the compiled rename_body_fields,
 * remove_body_fields and add_body_fields of request_transform and
 * response_transform, applied to a parsed document (jansson), and the
 * whole pipeline from body bytes to edited body bytes.
 *
 * A field is named by a path: `zip` (top level) or `user.address.zip`
 * (each segment an object member). Arrays are never traversed (a segment
 * never indexes one). A key that itself contains a dot cannot be named.
 * Reading a path (remove, and rename's source) stops, and the edit is
 * skipped, when an intermediate member is missing or is not an object.
 * Writing one (add, and rename's destination) creates the missing
 * intermediates as empty objects, and skips the edit, creating nothing,
 * when an intermediate exists but is not an object (a client's
 * `"meta": 5` is neither replaced nor an error). Edits apply in the
 * order remove, rename, add, each list in the order the config gives it
 * (remove before rename so that a rename never resurrects a removed
 * field; add last so its value is what the client or upstream gets,
 * whatever came in):
 *   - remove: the member goes; a missing one is no error;
 *   - rename old → new: `new` without a dot is the new key in the same
 *     object; with dots, a path from the root (missing parents created);
 *     an existing member of that name is replaced; a missing `old` does
 *     nothing (and creates nothing);
 *   - add field → value: sets the member, creating missing parents
 *     (replacing one already there: a client cannot pre-set a field the
 *     gateway adds). A value YAML wrote plain that reads as a JSON number,
 *     true/false or null is that JSON value; anything else is a string
 *     template (template.h: ${request_id}, ${consumer}, ...).
 *
 * Ownership: compiled edits live in the generation arena. jansson builds
 * the parsed tree with malloc (as the jwt filter's claims are): it lives
 * only inside pt_json_edit_body, freed before it returns. The output is
 * in the request arena.
 */
#ifndef PT_FILTERS_JSON_EDIT_H
#define PT_FILTERS_JSON_EDIT_H

#include "filters/filter.h"

#include <jansson.h>

struct pt_json_op; /* one compiled edit (json_edit.c) */

struct pt_json_edits {
    const struct pt_json_op *ops;
    uint32_t nops;
};

/*
 * Compiles the three rule lists (any may be empty) into *out in `a`.
 * Reports every bad path or value through errs at its field (`remove`,
 * `rename`, `add` name the YAML keys) and returns -1 if there was any.
 */
int pt_json_edits_compile(struct pt_json_edits *out, const struct pt_strlist *remove,
                          const struct pt_strmap *rename, const struct pt_jsonmap *add,
                          struct pt_arena *a, struct pt_filter_errs *errs);

/* Applies the edits to `root` (an object; anything else is left alone).
 * Returns how many edits changed something, or -1 when out of memory. */
int pt_json_edits_apply(const struct pt_json_edits *e, json_t *root,
                        const struct pt_filter_ctx *ctx);

/* A body in pieces (a response arrives in chunks): each part's bytes,
 * in order. */
struct pt_body_part {
    pt_slice s;
    struct pt_body_part *next;
};

enum pt_json_result {
    PT_JSON_EDITED,    /* *out is the edited document (compact) */
    PT_JSON_UNCHANGED, /* valid JSON that no edit touched, or not an object: send the input */
    PT_JSON_INVALID,   /* not JSON: send the input unchanged */
    PT_JSON_NOMEM,
};

/* Parses the body (parts, total bytes `len`), applies the edits and
 * serialises the result compactly, in the original member order, into
 * ctx->arena. Numbers keep their value: reals are written with the
 * fewest digits that read back to the same double for all of them. */
enum pt_json_result pt_json_edit_body(const struct pt_json_edits *e, struct pt_filter_ctx *ctx,
                                      const struct pt_body_part *parts, size_t len, pt_slice *out);

#endif
