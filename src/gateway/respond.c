/* respond.c — see respond.h. */
#include "gateway/respond.h"

#include <stdio.h>

const char *pt_reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

const char *pt_error_text(int status)
{
    switch (status) {
    case 400:
        return "bad request";
    case 404:
        return "no route matched";
    case 405:
        return "method not allowed";
    case 408:
        return "request header timeout";
    case 413:
        return "request body too large";
    case 414:
        return "request target too long";
    case 431:
        return "request header fields too large";
    case 500:
        return "internal error";
    case 501:
        return "not implemented";
    case 502:
        return "bad gateway";
    case 503:
        return "service unavailable";
    case 504:
        return "upstream timeout";
    case 505:
        return "http version not supported";
    default:
        return pt_reason_phrase(status);
    }
}

size_t pt_json_escape(char *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        } else {
            *o++ = (char)ch;
        }
    }
    return (size_t)(o - out);
}

/* The JSON error body into `jbody` (512 bytes). */
static pt_slice error_body(char *jbody, int status, const char *error, pt_slice request_id)
{
    char esc[6 * 96];
    const char *e = error ? error : pt_error_text(status);
    size_t elen = strnlen(e, 96);
    size_t n = pt_json_escape(esc, e, elen);
    char rid[6 * 128];
    size_t rlen = pt_json_escape(rid, request_id.p, PT_MIN(request_id.len, 128));
    int m = snprintf(jbody, 512, "{\"error\":\"%.*s\",\"status\":%d,\"request_id\":\"%.*s\"}\n",
                     (int)n, esc, status, (int)rlen, rid);
    return (pt_slice){jbody, (size_t)(m < 512 ? m : 511)};
}

pt_slice pt_respond_error_body(struct pt_arena *a, int status, const char *error,
                               pt_slice request_id)
{
    char jbody[512];
    pt_slice b = error_body(jbody, status, error, request_id);
    char *o = pt_arena_alloc(a, b.len ? b.len : 1);
    if (!o)
        return (pt_slice){"", 0};
    memcpy(o, b.p, b.len);
    return (pt_slice){o, b.len};
}

pt_slice pt_respond_build(struct pt_arena *a, int status, const char *error, pt_slice request_id,
                          const char *extra, pt_slice body, pt_slice content_type, bool close,
                          bool head_only, bool raw)
{
    char jbody[512];
    bool custom = raw || body.len > 0;
    if (!custom)
        body = error_body(jbody, status, error, request_id);
    const char *ex = extra ? extra : "";
    /* A body of our own is JSON; one a filter relays keeps its type (a raw
     * one none when it has none). */
    pt_slice ctype = content_type;
    if (!raw && !(content_type.len && custom))
        ctype = PT_SLICE("application/json");
    size_t cap = 256 + strlen(ex) + request_id.len + body.len + ctype.len;
    char *out = pt_arena_alloc(a, cap);
    if (!out)
        return (pt_slice){NULL, 0};
    /* A 204 has no body and no Content-Length (RFC 9110 §8.6), a 304 none
     * of its own (the length would be the 200's): no framing fields. */
    if (status == 204 || status == 304) {
        int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\nX-Request-ID: %.*s\r\n%s%s\r\n", status,
                         pt_reason_phrase(status), (int)request_id.len, request_id.p, ex,
                         close ? "Connection: close\r\n" : "");
        return (pt_slice){out, (size_t)n};
    }
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\n%s%.*s%sContent-Length: %zu\r\n"
                     "X-Request-ID: %.*s\r\n%s%s\r\n",
                     status, pt_reason_phrase(status), ctype.len ? "Content-Type: " : "",
                     (int)ctype.len, ctype.p ? ctype.p : "", ctype.len ? "\r\n" : "", body.len,
                     (int)request_id.len, request_id.p, ex, close ? "Connection: close\r\n" : "");
    size_t len = (size_t)n;
    if (!head_only && body.len) {
        memcpy(out + len, body.p, body.len);
        len += body.len;
    }
    return (pt_slice){out, len};
}
