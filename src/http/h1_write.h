/*
 * h1_write.h — small HTTP/1.1 serialization helpers shared by the server
 * codec (gateway/h1_server.c) and the outbound client (proxy/client.c).
 *
 * Every writer puts bytes at `o` (the caller sized the buffer: each helper
 * says how much it may write) and returns how many it wrote. Nothing here
 * allocates.
 */
#ifndef PT_HTTP_H1_WRITE_H
#define PT_HTTP_H1_WRITE_H

#include "http/headers.h"

#include <string.h>

static inline size_t pt_h1_put(char *o, pt_slice s)
{
    memcpy(o, s.p, s.len);
    return s.len;
}

/* "HTTP/1.1 NNN " (13 bytes; status has three digits). */
static inline size_t pt_h1_put_status(char *o, int status)
{
    memcpy(o, "HTTP/1.1 ", 9);
    o[9] = (char)('0' + status / 100 % 10);
    o[10] = (char)('0' + status / 10 % 10);
    o[11] = (char)('0' + status % 10);
    o[12] = ' ';
    return 13;
}

/* "name: value\r\n" (name + value + 4 bytes). */
static inline size_t pt_h1_put_field(char *o, pt_slice name, pt_slice value)
{
    size_t n = pt_h1_put(o, name);
    o[n++] = ':';
    o[n++] = ' ';
    n += pt_h1_put(o + n, value);
    o[n++] = '\r';
    o[n++] = '\n';
    return n;
}

/* "Content-Length: N\r\n" (at most 38 bytes). */
size_t pt_h1_put_content_length(char *o, uint64_t v);

/* Room pt_h1_put_field needs for every field of a list (dead ones too). */
size_t pt_h1_fields_size(const struct pt_headers *h);

/* The next element of a comma-separated field value (RFC 9110 §5.6.1)
 * from *pp, which advances; empty at the end. */
pt_slice pt_h1_list_next(const char **pp, const char *end);

/* Marks the fields named by Connection (other than close/keep-alive) dead:
 * they are hop-by-hop by the sender's own declaration. */
void pt_h1_drop_connection_listed(struct pt_headers *h);

/* True when `name` is listed in one of the Connection fields of a parsed
 * head. */
bool pt_h1_connection_lists(const struct pt_h1_header *hs, size_t n, pt_slice name);

#endif
