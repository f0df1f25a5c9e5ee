/*
 * headers.h — an editable list of header fields for one message.
 *
 * Built from the parser's slices (which keep pointing into the read
 * buffer) and edited by filters (new names/values are copied into the
 * request arena). Removal marks a field dead instead of shifting, so the
 * order of the others is preserved and edits stay O(1) amortised.
 *
 * Ownership: the list borrows every slice; the caller keeps the read buffer
 * and the arena alive until the message is serialized.
 */
#ifndef PT_HTTP_HEADERS_H
#define PT_HTTP_HEADERS_H

#include "core/arena.h"
#include "http/h1.h"

struct pt_hfield {
    pt_slice name;
    pt_slice value;
    int token; /* enum pt_token */
    bool dead; /* removed by a filter or as hop-by-hop */
};

struct pt_headers {
    struct pt_hfield *f;
    uint32_t n, cap;
};

/* Fills `h` from parsed fields; `storage` must have room for `cap` fields. */
void pt_headers_from_h1(struct pt_headers *h, struct pt_hfield *storage, uint32_t cap,
                        const struct pt_h1_header *src, size_t n);
/* Finds the first live field with this name (case-insensitive). */
struct pt_hfield *pt_headers_find(struct pt_headers *h, pt_slice name);
struct pt_hfield *pt_headers_find_token(struct pt_headers *h, int token);
/* Appends a field; grows into the arena when full. Returns 0 or -ENOMEM. */
int pt_headers_add(struct pt_headers *h, struct pt_arena *a, pt_slice name, pt_slice value);
/* Replaces every field of that name with one (appends when absent). */
int pt_headers_set(struct pt_headers *h, struct pt_arena *a, pt_slice name, pt_slice value);
/* Removes every field of that name; returns how many. */
int pt_headers_remove(struct pt_headers *h, pt_slice name);
/* Removes every field whose name starts with `prefix` (case-insensitive,
 * `-` and `_` alike: `X_Consumer_Name` is `X-Consumer-Name` to a server
 * that maps fields to CGI variables); returns how many. */
int pt_headers_remove_prefix(struct pt_headers *h, pt_slice prefix);
/* Renames every field `from` to `to`: each is retired (dead, as a removal
 * leaves it) and a copy under the new name appended, so the fields as they
 * arrived stay readable (a filter that asks what the client sent, e.g. the
 * cache's Authorization rule). Returns how many, or -ENOMEM. */
int pt_headers_rename(struct pt_headers *h, struct pt_arena *a, pt_slice from, pt_slice to);

#endif
