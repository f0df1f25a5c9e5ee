/*
 * admin_consumers.c — /consumers (admin_int.h):
 *
 *   GET    /consumers          every consumer, with where it is defined
 *   GET    /consumers/{name}
 *   POST   /consumers          create (409 when the name exists)
 *   PUT    /consumers/{name}   create or replace
 *   DELETE /consumers/{name}
 *
 * Bodies are JSON: {"name", "groups": [...], "api_keys": ["raw key" or
 * "sha256:<64 hex>"]}. A raw key is hashed here, before anything is
 * written or loaded; only `sha256:<hex>` ever reaches the consumers file,
 * and answers show the digests, never a key.
 *
 * Only consumers of the consumers file (g->consumers_path) are changed;
 * those of the config's own `consumers:` are read-only here (409). A
 * change: the file's consumers (from the running generation) with the
 * change applied are rendered as YAML; the running config text with that
 * consumers text is validated by the loader (400 with its messages), the
 * file is written atomically (temp + fsync + rename), and the same pair
 * is published as a new generation (hooks->apply); if that fails the
 * file is put back. So a consumer created here authenticates on the very
 * next request, survives a restart, and the config file is never
 * rewritten.
 */
#include "control/admin_int.h"
#include "core/log.h"

#include <jansson.h>
#include <openssl/crypto.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define HEX_DIGEST (2 * PT_KEY_DIGEST_LEN)

/* One consumer as the API edits it (malloc'd strings). */
struct ed_consumer {
    char *name;
    char **groups;
    size_t ngroups;
    char (*keys)[HEX_DIGEST + 1]; /* hex digests */
    size_t nkeys;
};

struct ed_list {
    struct ed_consumer *v;
    size_t n;
};

static void ed_free(struct ed_consumer *c)
{
    free(c->name);
    for (size_t i = 0; i < c->ngroups; i++)
        free(c->groups[i]);
    free(c->groups);
    free(c->keys);
    memset(c, 0, sizeof(*c));
}

static void list_free(struct ed_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        ed_free(&l->v[i]);
    free(l->v);
}

static void hex(const uint8_t *d, char out[HEX_DIGEST + 1])
{
    static const char x[] = "0123456789abcdef";
    for (int i = 0; i < PT_KEY_DIGEST_LEN; i++) {
        out[2 * i] = x[d[i] >> 4];
        out[2 * i + 1] = x[d[i] & 15];
    }
    out[HEX_DIGEST] = 0;
}

/* The digests of consumer c, from the generation's key table. */
static int keys_of(const struct pt_consumers *t, const struct pt_consumer *c, struct ed_consumer *e)
{
    e->keys = calloc(c->nkeys ? c->nkeys : 1, sizeof(*e->keys));
    if (!e->keys)
        return -1;
    for (uint32_t i = 0; t->slots && i <= t->mask && e->nkeys < c->nkeys; i++)
        if (t->slots[i].consumer == c)
            hex(t->slots[i].digest, e->keys[e->nkeys++]);
    return 0;
}

static int ed_from(const struct pt_consumers *t, const struct pt_consumer *c, struct ed_consumer *e)
{
    memset(e, 0, sizeof(*e));
    e->name = strndup(c->name.p, c->name.len);
    e->groups = calloc(c->ngroups ? c->ngroups : 1, sizeof(char *));
    if (!e->name || !e->groups)
        return -1;
    for (uint32_t i = 0; i < c->ngroups; i++)
        if (!(e->groups[e->ngroups++] = strndup(c->groups[i].p, c->groups[i].len)))
            return -1;
    return keys_of(t, c, e);
}

/* The consumers file's consumers, as the running generation has them. */
static int file_list(const struct pt_generation *g, struct ed_list *l)
{
    const struct pt_consumers *t = &g->consumers;
    l->n = 0;
    l->v = calloc(t->n + 1, sizeof(*l->v));
    if (!l->v)
        return -1;
    for (uint32_t i = g->consumers_from_file; i < t->n; i++)
        if (ed_from(t, &t->v[i], &l->v[l->n++]) < 0)
            return -1;
    return 0;
}

static void consumer_json(struct sbuf *b, const struct ed_consumer *c, bool in_file)
{
    sb_printf(b, "{\"name\":");
    sb_json_str(b, c->name);
    sb_printf(b, ",\"groups\":[");
    for (size_t i = 0; i < c->ngroups; i++) {
        sb_printf(b, "%s", i ? "," : "");
        sb_json_str(b, c->groups[i]);
    }
    sb_printf(b, "],\"api_keys\":[");
    for (size_t i = 0; i < c->nkeys; i++)
        sb_printf(b, "%s\"sha256:%s\"", i ? "," : "", c->keys[i]);
    sb_printf(b, "],\"source\":\"%s\"}", in_file ? "consumers_file" : "config");
}

/* The consumers file's text for l: JSON strings are YAML double-quoted
 * scalars, so every value is written escaped. */
static char *render(const struct ed_list *l, size_t *len)
{
    struct sbuf b = {0};
    sb_printf(&b, "# Consumers managed by the portico admin API (/consumers): edits here are\n"
                  "# kept, but the next API change rewrites this file. API keys are stored\n"
                  "# as SHA-256 digests only.\n");
    sb_printf(&b, "consumers:%s\n", l->n ? "" : " []");
    for (size_t i = 0; i < l->n; i++) {
        const struct ed_consumer *c = &l->v[i];
        sb_printf(&b, "  - name: ");
        sb_json_str(&b, c->name);
        sb_printf(&b, "\n    groups: [");
        for (size_t k = 0; k < c->ngroups; k++) {
            sb_printf(&b, "%s", k ? ", " : "");
            sb_json_str(&b, c->groups[k]);
        }
        sb_printf(&b, "]\n    api_keys:%s\n", c->nkeys ? "" : " []");
        for (size_t k = 0; k < c->nkeys; k++)
            sb_printf(&b, "      - \"sha256:%s\"\n", c->keys[k]);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* One string array of a body; NULL after an error answer. */
static const char *want_strings(json_t *body, const char *key, json_t **arr)
{
    *arr = json_object_get(body, key);
    if (!*arr || json_is_null(*arr))
        return NULL;
    if (!json_is_array(*arr))
        return "must be a list of strings";
    size_t i;
    json_t *v;
    json_array_foreach(*arr, i, v) if (!json_is_string(v)) return "must be a list of strings";
    return NULL;
}

/* The body as a consumer; NULL, or a message for a 400. `path_name` (PUT)
 * is the name in the URL: the body's, when given, must be the same. */
static const char *parse_body(const struct admin_req *rq, const char *path_name,
                              struct ed_consumer *e)
{
    static char msg[256];
    json_error_t jerr;
    json_t *body = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &jerr);
    const char *why = NULL;
    json_t *groups = NULL, *keys = NULL;
    if (!body || !json_is_object(body)) {
        snprintf(msg, sizeof(msg), "the body must be a JSON object (%.120s)",
                 body ? "not an object" : jerr.text);
        why = msg;
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(body, key, val)
    {
        if (strcmp(key, "name") && strcmp(key, "groups") && strcmp(key, "api_keys")) {
            snprintf(msg, sizeof(msg),
                     "unknown key `%.40s` (a consumer has name, groups, api_keys)", key);
            why = msg;
            goto out;
        }
    }
    json_t *name = json_object_get(body, "name");
    if (name && !json_is_string(name)) {
        why = "`name` must be a string";
        goto out;
    }
    const char *nm = name ? json_string_value(name) : path_name;
    if (!nm || !*nm) {
        why = "a consumer needs a `name`";
        goto out;
    }
    if (path_name && strcmp(nm, path_name) != 0) {
        why = "the body's `name` differs from the one in the URL";
        goto out;
    }
    if (strstr(nm, "${")) { /* the loader would expand it, like a group's */
        why = "a consumer's name may not contain `${`";
        goto out;
    }
    if ((why = want_strings(body, "groups", &groups)) ||
        (why = want_strings(body, "api_keys", &keys))) {
        snprintf(msg, sizeof(msg), "`%s` %s",
                 groups && !json_is_array(groups) ? "groups" : "api_keys", why);
        why = msg;
        goto out;
    }
    e->name = strdup(nm);
    size_t ng = groups ? json_array_size(groups) : 0, nk = keys ? json_array_size(keys) : 0;
    e->groups = calloc(ng + 1, sizeof(char *));
    e->keys = calloc(nk + 1, sizeof(*e->keys));
    if (!e->name || !e->groups || !e->keys) {
        why = "out of memory";
        goto out;
    }
    for (size_t i = 0; i < ng; i++) {
        const char *gname = json_string_value(json_array_get(groups, i));
        if (strstr(gname, "${")) { /* the loader would expand it */
            why = "a group may not contain `${`";
            goto out;
        }
        if (!(e->groups[e->ngroups++] = strdup(gname))) {
            why = "out of memory";
            goto out;
        }
    }
    for (size_t i = 0; i < nk; i++) {
        json_t *jk = json_array_get(keys, i);
        const char *k = json_string_value(jk);
        uint8_t d[PT_KEY_DIGEST_LEN];
        int form = pt_key_digest_parse(k, d);
        if (form < 0) {
            why = "`sha256:` must be followed by the key's SHA-256 as 64 hex digits";
            goto out;
        }
        if (form == 0) {
            if ((why = pt_config_key_problem(k)))
                goto out;
            pt_key_digest(k, json_string_length(jk), d);
        }
        hex(d, e->keys[e->nkeys++]);
        OPENSSL_cleanse(d, sizeof(d));
    }
out:
    json_decref(body);
    return why;
}

/* Validates g's config with `text` as its consumers file, writes the file,
 * publishes. Fills out; 0 on success. */
static int commit(const struct admin_req *rq, const struct ed_list *l, struct admin_resp *out)
{
    const struct pt_generation *g = rq->g;
    size_t len = 0;
    char *text = render(l, &len);
    if (!text) {
        admin_error(out, 500, "out of memory");
        return -1;
    }
    struct pt_config_src src = {.path = g->source_path,
                                .text = g->source_text,
                                .len = g->source_len,
                                .consumers_given = true,
                                .consumers_text = text,
                                .consumers_len = len};
    struct pt_diag diag;
    pt_diag_init(&diag);
    int rc = -1;
    struct pt_generation *check = pt_config_load_src(&src, NULL, 0, &diag);
    if (!check) {
        out->status = 400;
        admin_diag_json(&out->body, &diag);
        goto out;
    }
    pt_generation_free(check);
    int e = admin_write_atomic(g->consumers_path, text, len);
    if (e < 0) {
        char m[512];
        snprintf(m, sizeof(m), "cannot write %s: %s (nothing changed)", g->consumers_path,
                 strerror(-e));
        admin_error(out, 500, m);
        goto out;
    }
    /* The old file, to put back if the publish fails. */
    char *old = g->consumers_text ? strndup(g->consumers_text, g->consumers_len) : NULL;
    size_t old_len = g->consumers_len;
    const char *path = g->consumers_path; /* g may be retired by the apply: copy first */
    char *path_copy = strdup(path);
    char *why = NULL;
    uint64_t id = 0;
    pt_diag_free(&diag);
    pt_diag_init(&diag);
    if (rq->hooks->apply(rq->ctx, &src, &id, &diag, &why) != 0) {
        if (old)
            admin_write_atomic(path_copy ? path_copy : path, old, old_len);
        else if (path_copy)
            unlink(path_copy);
        admin_error(out, why && strstr(why, "shutting down") ? 503 : 500,
                    why ? why : "the new consumers could not be applied");
    } else {
        out->body.len = 0;
        sb_printf(&out->body, "{\"generation\":%llu,\"consumer\":", (unsigned long long)id);
        rc = 0;
        pt_info("consumers: %s written, generation %llu", path_copy ? path_copy : "",
                (unsigned long long)id);
    }
    free(why);
    free(old);
    free(path_copy);
out:
    pt_diag_free(&diag);
    free(text);
    return rc;
}

static const struct pt_consumer *by_name(const struct pt_generation *g, const char *name,
                                         bool *in_file)
{
    const struct pt_consumer *c =
        pt_consumers_by_name(&g->consumers, (pt_slice){name, strlen(name)});
    *in_file = c && (uint32_t)(c - g->consumers.v) >= g->consumers_from_file;
    return c;
}

static void get_all(const struct admin_req *rq, struct admin_resp *out)
{
    const struct pt_generation *g = rq->g;
    struct sbuf *b = &out->body;
    sb_printf(b, "{\"generation\":%llu,\"consumers_file\":", (unsigned long long)g->id);
    sb_json_str(b, g->consumers_path);
    sb_printf(b, ",\"consumers\":[");
    for (uint32_t i = 0; i < g->consumers.n; i++) {
        struct ed_consumer e;
        if (ed_from(&g->consumers, &g->consumers.v[i], &e) < 0)
            b->oom = true;
        else {
            sb_printf(b, "%s", i ? "," : "");
            consumer_json(b, &e, i >= g->consumers_from_file);
        }
        ed_free(&e);
    }
    sb_printf(b, "]}\n");
}

/* POST (create) and PUT (create or replace). */
static void upsert(const struct admin_req *rq, const char *path_name, struct admin_resp *out)
{
    struct ed_consumer e = {0};
    struct ed_list l = {0};
    const char *why = parse_body(rq, path_name, &e);
    if (why) {
        admin_error(out, 400, why);
        goto out;
    }
    bool in_file;
    const struct pt_consumer *have = by_name(rq->g, e.name, &in_file);
    if (have && !in_file) {
        admin_error(out, 409,
                    "this consumer is defined in the config file's `consumers:`; change "
                    "it there (PUT /config)");
        goto out;
    }
    if (have && !path_name) {
        admin_error(out, 409, "a consumer with this name exists (PUT /consumers/{name} replaces)");
        goto out;
    }
    if (file_list(rq->g, &l) < 0) {
        admin_error(out, 500, "out of memory");
        goto out;
    }
    size_t at = l.n;
    for (size_t i = 0; i < l.n; i++)
        if (strcmp(l.v[i].name, e.name) == 0)
            at = i;
    if (at < l.n)
        ed_free(&l.v[at]);
    else
        l.n++;
    l.v[at] = e;
    memset(&e, 0, sizeof(e));
    if (commit(rq, &l, out) == 0) {
        consumer_json(&out->body, &l.v[at], true);
        sb_printf(&out->body, "}\n");
        out->status = have ? 200 : 201;
    }
out:
    ed_free(&e);
    list_free(&l);
}

static void get_one(const struct admin_req *rq, const char *name, struct admin_resp *out)
{
    bool in_file;
    const struct pt_consumer *c = by_name(rq->g, name, &in_file);
    if (!c) {
        admin_error(out, 404, "no such consumer");
        return;
    }
    struct ed_consumer e;
    if (ed_from(&rq->g->consumers, c, &e) < 0)
        out->body.oom = true;
    else
        consumer_json(&out->body, &e, in_file);
    sb_printf(&out->body, "\n");
    ed_free(&e);
}

static void delete_one(const struct admin_req *rq, const char *name, struct admin_resp *out)
{
    bool in_file;
    if (!by_name(rq->g, name, &in_file)) {
        admin_error(out, 404, "no such consumer");
        return;
    }
    if (!in_file) {
        admin_error(out, 409,
                    "this consumer is defined in the config file's `consumers:`; remove "
                    "it there (PUT /config)");
        return;
    }
    struct ed_list l = {0};
    if (file_list(rq->g, &l) < 0) {
        admin_error(out, 500, "out of memory");
    } else {
        for (size_t i = 0; i < l.n; i++) {
            if (strcmp(l.v[i].name, name) == 0) {
                ed_free(&l.v[i]);
                l.v[i] = l.v[--l.n];
                memset(&l.v[l.n], 0, sizeof(l.v[l.n]));
                break;
            }
        }
        if (commit(rq, &l, out) == 0) {
            sb_printf(&out->body, "null,\"deleted\":");
            sb_json_str(&out->body, name);
            sb_printf(&out->body, "}\n");
        }
    }
    list_free(&l);
}

void admin_consumers(const struct admin_req *rq, struct admin_resp *out)
{
    int m = rq->method;
    if (rq->path.len == 10) { /* "/consumers" */
        if (m == PT_METHOD_GET)
            get_all(rq, out);
        else if (m == PT_METHOD_POST)
            upsert(rq, NULL, out);
        else
            admin_error(out, 405, "method not allowed (GET, POST)");
        return;
    }
    /* The name is one path segment, percent-encoded like any (a client
     * sends "a b" as a%20b). */
    char *name = NULL;
    size_t nlen;
    int rc = admin_pct_decode(rq->path.p + 11, rq->path.len - 11, false, &name, &nlen);
    if (rc == -ENOMEM) {
        admin_error(out, 500, "out of memory");
        return;
    }
    if (rc < 0) {
        admin_error(out, 400,
                    "the consumer's name in the URL has a bad percent-escape (`%` needs two hex "
                    "digits; %00 is not allowed)");
        return;
    }
    if (m == PT_METHOD_GET)
        get_one(rq, name, out);
    else if (m == PT_METHOD_PUT)
        upsert(rq, name, out);
    else if (m == PT_METHOD_DELETE)
        delete_one(rq, name, out);
    else
        admin_error(out, 405, "method not allowed (GET, PUT, DELETE)");
    free(name);
}
