/*
 * cookie.h — reading one cookie out of a request's Cookie fields
 * (RFC 6265 §4.2 / §5.4).
 *
 * A request may carry several Cookie fields (HTTP/2 splits them, and
 * some clients do on HTTP/1.1 too); each holds `name=value` pairs
 * separated by `;` and optional spaces. Names compare exactly (cookie
 * names are case-sensitive); the first pair with the name wins, as
 * browsers send the most specific path first. A value in double quotes
 * is returned without them. A pair without `=` is no cookie of any name.
 *
 * Pure: reads the fields, allocates nothing; the value borrows from them.
 */
#ifndef PT_HTTP_COOKIE_H
#define PT_HTTP_COOKIE_H

#include "http/headers.h"

/* True and *value (possibly empty) when the request has cookie `name`. */
bool pt_cookie_find(const struct pt_headers *h, pt_slice name, pt_slice *value);

/* The same over one field value (`a=1; b=2`). */
bool pt_cookie_find_in(pt_slice field, pt_slice name, pt_slice *value);

#endif
