/*
 * cookie.h — reading one cookie from a request's Cookie fields
 * (RFC 6265 §5.4: "name=value" pairs separated by ";", in one field or
 * several).
 */
#ifndef PT_HTTP_COOKIE_H
#define PT_HTTP_COOKIE_H

#include "http/headers.h"

/* The value of the first cookie called `name` (case-sensitive, as
 * cookie names are) in the live Cookie fields of `h`, borrowed from the
 * field; found tells whether there was one (an empty value is a value).
 * Pairs without "=" are skipped. */
pt_slice pt_cookie_find(const struct pt_headers *h, pt_slice name, bool *found);

#endif
