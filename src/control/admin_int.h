/*
 * admin_int.h — private to the admin API (admin*.c): the request an
 * endpoint gets, the answer it builds, and the JSON text helpers they
 * share. admin.c is the server (sockets, reading requests with their
 * bodies, the token, dispatch); each endpoint family has its own file:
 *   admin_info.c      GET /status, /routes, /upstreams
 *   admin_config.c    GET/PUT /config, POST /config/validate, atomic writes
 *   admin_consumers.c GET/POST/PUT/DELETE /consumers[/name]
 *   admin_match.c     GET /debug/match
 *   admin_cache.c     GET|DELETE /cache
 * Everything runs on the control thread.
 */
#ifndef PT_CONTROL_ADMIN_INT_H
#define PT_CONTROL_ADMIN_INT_H

#include "control/admin.h"
#include "http/h1.h"

/* A growable text buffer (malloc'd; p NULL until the first write). */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_put(struct sbuf *b, const char *s, size_t n);
/* A JSON string literal, quotes included; NULL → null. */
void sb_json_str(struct sbuf *b, const char *s);
void sb_json_strn(struct sbuf *b, const char *s, size_t n);

/* Percent-decodes s[0..n) into a new malloc'd NUL-terminated string
 * (*len bytes); `plus_space`: '+' is a space (a query's form encoding).
 * 0; -EINVAL for a '%' not followed by two hex digits or a decoded NUL;
 * -ENOMEM. */
int admin_pct_decode(const char *s, size_t n, bool plus_space, char **out, size_t *len);

struct admin_req {
    int method; /* enum pt_method */
    pt_slice path, query;
    const struct pt_h1_header *headers;
    size_t nheaders;
    const char *body; /* Content-Length bytes (NUL-terminated); "" without one */
    size_t body_len;
    const struct pt_generation *g; /* the running generation */
    const struct pt_admin_hooks *hooks;
    void *ctx;
};

struct admin_resp {
    int status;
    const char *ctype; /* default application/json */
    struct sbuf body;
};

/* {"error": msg, "status": status} */
void admin_error(struct admin_resp *out, int status, const char *msg);
/* The body as a JSON 400 with one entry per message: {"errors": [{"file",
 * "line", "col", "message"}]} from a loader's "file:line:col: message"
 * lines (`valid` false; line/col null for a message about a whole file). */
void admin_diag_json(struct sbuf *b, const struct pt_diag *d);

/* Endpoints: each fills `out` (status and JSON body). */
void admin_status(const struct admin_req *rq, struct admin_resp *out);
void admin_routes(const struct admin_req *rq, struct admin_resp *out);
void admin_upstreams(const struct admin_req *rq, struct admin_resp *out);
void admin_config_get(const struct admin_req *rq, struct admin_resp *out);
void admin_config_put(const struct admin_req *rq, struct admin_resp *out);
void admin_config_validate(const struct admin_req *rq, struct admin_resp *out);
/* /consumers and /consumers/{name} (any method). */
void admin_consumers(const struct admin_req *rq, struct admin_resp *out);
void admin_debug_match(const struct admin_req *rq, struct admin_resp *out);
/* GET|DELETE /cache[?route=&prefix=] (admin_cache.c). */
void admin_cache(const struct admin_req *rq, struct admin_resp *out);

/* Writes `len` bytes to `path` atomically: a temporary file in the same
 * directory (mode of the file it replaces, else 0600), fsync, rename over
 * path, fsync of the directory. 0, or -errno with nothing replaced. */
int admin_write_atomic(const char *path, const char *text, size_t len);

#endif
