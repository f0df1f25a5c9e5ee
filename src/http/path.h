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

/* Whether pt_path_normalize could change p (a `%`, a segment starting with
 * `.`, or with merge_slashes an empty segment): most paths need no copy. */
bool pt_path_needs_normalize(const char *p, size_t len, bool merge_slashes);

#endif
