/*
 * path.h — request path normalisation before routing (RFC 3986 §6.2.2).
 *
 * Routes, strip_prefix and the filters a route runs all see one spelling
 * of a path, and the upstream gets that same spelling: otherwise
 * `/public/../admin` matches `/public` while a backend that resolves dot
 * segments serves `/admin`, past the admin route's rules.
 */
#ifndef PT_HTTP_PATH_H
#define PT_HTTP_PATH_H

#include <stdbool.h>
#include <stddef.h>

/* Normalises the origin-form path p[0..len) in place (it only shrinks):
 *   - percent-encoded unreserved characters are decoded (`%2e` → `.`,
 *     `%41` → `A`); every other escape, `%2F` included, is kept as sent;
 *   - `.` and `..` segments are resolved (`/a/./b/../c` → `/a/c`); one that
 *     ends the path leaves a trailing slash (`/a/b/..` → `/a/`);
 *   - with merge_slashes, runs of `/` become one (`/a//b` → `/a/b`).
 * Returns the new length, or -1 when a `..` would climb above the root
 * (`/../etc`) or a `%` is not followed by two hex digits (p is then
 * partly rewritten: normalise a copy). A path not starting with `/` (`*`)
 * is left alone. Normalising a result again changes nothing. */
long pt_path_normalize(char *p, size_t len, bool merge_slashes);

/* What to do with `%2F` and `%5C` (any case) in a path: a framework that
 * decodes them before routing reads `/admin%2Fx` as `/admin/x`. */
enum pt_escaped_slashes { PT_ESC_REJECT = 0, PT_ESC_KEEP, PT_ESC_DECODE, PT_ESC_MODES };
extern const char *const pt_escaped_slashes_names[PT_ESC_MODES];

/* What to do with `;` in a path: Tomcat and Spring cut a segment's
 * `;params` off before matching, so `/admin;x` is `/admin` to them. */
enum pt_semicolons { PT_SEMI_REJECT = 0, PT_SEMI_KEEP, PT_SEMI_MODES };
extern const char *const pt_semicolons_names[PT_SEMI_MODES];

/* The path rules, on a request path as sent (before pt_path_normalize).
 * Returns NULL when p passes, else the rule it breaks (a 400's text):
 *   - always: a raw control byte, space, `\` or DEL; a percent-encoded
 *     control character (`%00`-`%1F`, `%7F`); a dot segment with
 *     parameters (`..;x`, `.;x`, `%2e%2E;x`), where `%2F`/`%5C` also end
 *     a segment (a backend may decode them);
 *   - `%2F`/`%5C` when escaped_slashes is PT_ESC_REJECT;
 *   - `;` when semicolons is PT_SEMI_REJECT.
 * *escaped tells whether p holds `%2F`/`%5C` (for PT_ESC_DECODE). `%252F`
 * is an escaped `%`, never a slash. A path not starting with `/` is
 * checked the same way. */
const char *pt_path_screen(const char *p, size_t len, enum pt_escaped_slashes escaped_slashes,
                           enum pt_semicolons semicolons, bool *escaped);

/* Turns every `%2F` and `%5C` (any case) into `/`, in place; returns the
 * new length. One pass: `%252F` stays as it is. `%5C` becomes `/`, not
 * `\`: a raw `\` is refused, and IIS reads it as `/` anyway. */
size_t pt_path_decode_slashes(char *p, size_t len);

/* Whether pt_path_normalize could change p (a `%`, a segment starting with
 * `.`, or with merge_slashes an empty segment): most paths need no copy. */
bool pt_path_needs_normalize(const char *p, size_t len, bool merge_slashes);

#endif
