/*
 * config_consumers.c — the top-level `consumers:` list: who may call, in
 * which groups, with which API keys (filters/consumers.h).
 *
 *   consumers:
 *     - name: mobile-app          # required, unique; letters, digits, - _ .
 *       groups: [mobile]          # default none
 *       api_keys: ["k-123", "sha256:<64 hex>"]   # default none
 *
 * Each raw key is hashed (SHA-256) as it is read and only the digest goes
 * into the generation; `sha256:<hex>` is taken as a digest. A key listed
 * twice, for one consumer or two, is an error at the second (whatever
 * form either was written in); no message ever repeats a key. Part of the
 * loader (config.c, config_int.h): the table lands in the generation's
 * arena, scratch is freed before returning.
 */
#include "control/config_int.h"
#include "filters/consumers.h"

#include <openssl/crypto.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

enum { C_NAME, C_GROUPS, C_API_KEYS, C_NKEYS };
static const char *const consumer_keys[] = {"name", "groups", "api_keys", NULL};

/* A raw key arrives in a header field or a query parameter: a field value
 * is trimmed and has no control characters, so a key that has them, or
 * surrounding spaces, could never match. */
#define KEY_MAX_BYTES 4096

const char *pt_config_key_problem(const char *k)
{
    size_t n = strlen(k);
    if (n == 0)
        return "an API key is empty";
    if (n > KEY_MAX_BYTES)
        return "an API key is longer than 4096 bytes";
    if (k[0] == ' ' || k[0] == '\t' || k[n - 1] == ' ' || k[n - 1] == '\t')
        return "an API key starts or ends with a space, which no client can send";
    for (const char *p = k; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "an API key has a control character";
    return NULL;
}

/* Groups travel comma-separated in X-Consumer-Groups. */
static bool group_ok(const char *g)
{
    if (!*g)
        return false;
    for (; *g; g++)
        if ((unsigned char)*g <= 0x20 || *g == 0x7f || *g == ',')
            return false;
    return true;
}

static void walk_groups(struct cfg *c, const struct pt_ynode *n, struct pt_consumer *out)
{
    struct pt_strlist l;
    if (!pt_cfg_want_strlist(&c->w, n, "`groups`", &l))
        return;
    pt_slice *g = pt_arena_zalloc(c->a, sizeof(*g) * (l.n ? l.n : 1));
    if (!g)
        return oom(c);
    uint32_t k = 0;
    for (uint32_t i = 0; i < l.n; i++) {
        const struct pt_ynode *at = n->kind == PT_YSEQ ? n->items[i] : n;
        if (!group_ok(l.v[i])) {
            err_at(c, at,
                   "group `%.40s` must be non-empty, without spaces, control characters or "
                   "commas",
                   l.v[i]);
            continue;
        }
        pt_slice s = {l.v[i], strlen(l.v[i])};
        bool dup = false;
        for (uint32_t j = 0; j < k && !dup; j++)
            dup = pt_slice_eq(g[j], s);
        if (!dup)
            g[k++] = s;
    }
    out->groups = g;
    out->ngroups = k;
}

/* One key into the table; reports at `at` (never quoting the key). */
static void add_key(struct cfg *c, const struct pt_ynode *at, struct pt_consumer *cons)
{
    const char *text = pt_cfg_want_str(&c->w, at, "an API key");
    if (!text)
        return;
    uint8_t d[PT_KEY_DIGEST_LEN];
    int form = pt_key_digest_parse(text, d);
    if (form < 0) {
        err_at(c, at,
               "consumer `%s`: `sha256:` must be followed by the key's SHA-256 as 64 hex "
               "digits",
               cons->name.p);
        return;
    }
    if (form == 0) {
        const char *why = pt_config_key_problem(text);
        if (why) {
            err_at(c, at, "consumer `%s`: %s", cons->name.p, why);
            return;
        }
        pt_key_digest(text, strlen(text), d);
    }
    const struct pt_consumer *owner = NULL;
    int rc = pt_consumers_add_key(&c->g->consumers, cons, d, &owner);
    OPENSSL_cleanse(d, sizeof(d));
    if (rc == -EEXIST && owner == cons)
        err_at(c, at, "consumer `%s`: this API key is listed twice", cons->name.p);
    else if (rc == -EEXIST)
        err_at(c, at,
               "consumer `%s`: this API key is consumer `%s`'s already (a key identifies "
               "one consumer)",
               cons->name.p, owner->name.p);
    else if (rc < 0)
        oom(c);
    else
        cons->nkeys++;
}

static void walk_consumer(struct cfg *c, const struct pt_ynode *n, struct pt_consumer *out,
                          struct strtab *names)
{
    if (!pt_cfg_want_map(&c->w, n, "each consumer") || n->kind != PT_YMAP)
        return;
    const struct pt_ynode *v[C_NKEYS] = {0};
    pt_cfg_bind_keys(&c->w, n, consumer_keys, NULL, "in a consumer", v, NULL);
    if (!v[C_NAME]) {
        err_at(c, n, "a consumer needs a `name`");
        return;
    }
    const char *name = pt_cfg_want_name(c, v[C_NAME], "consumer name", PT_NAME_MAX);
    if (!name)
        return;
    if (pt_cfg_strtab_put(c, names, name, out)) {
        err_at(c, v[C_NAME], "consumer `%s` is defined twice", name);
        return;
    }
    out->name = (pt_slice){name, strlen(name)};
    if (v[C_GROUPS])
        walk_groups(c, v[C_GROUPS], out);
    const struct pt_ynode *keys = v[C_API_KEYS];
    if (!keys || !pt_cfg_want_seq(&c->w, keys, "`api_keys`"))
        return;
    for (uint32_t i = 0; keys->kind == PT_YSEQ && i < keys->n; i++)
        add_key(c, keys->items[i], out);
}

/* Keys written in a `consumers:` list (for sizing the table once). */
static uint32_t count_keys(const struct pt_ynode *n)
{
    uint32_t max_keys = 0;
    for (uint32_t i = 0; n && n->kind == PT_YSEQ && i < n->n; i++) {
        const struct pt_ynode *k =
            n->items[i]->kind == PT_YMAP ? pt_ynode_get(n->items[i], "api_keys") : NULL;
        if (k && k->kind == PT_YSEQ)
            max_keys += k->n;
    }
    return max_keys;
}

static void walk_list(struct cfg *c, const struct pt_ynode *n, struct strtab *names)
{
    struct pt_consumers *t = &c->g->consumers;
    for (uint32_t i = 0; n && n->kind == PT_YSEQ && i < n->n; i++) {
        walk_consumer(c, n->items[i], &t->v[t->n], names);
        if (t->v[t->n].name.len)
            t->n++;
    }
}

/* `consumers_file` resolved: absolute as written, else beside the config. */
static const char *consumers_path(struct cfg *c, const struct pt_ynode *file)
{
    const char *name = "consumers.yaml";
    if (file && !(name = pt_cfg_want_str(&c->w, file, "`consumers_file`")))
        return NULL;
    if (name[0] == '/' || !strchr(c->file, '/'))
        return dup_str(c, name);
    char *p = NULL;
    if (asprintf(&p, "%s/%s", c->dir, name) < 0)
        return oom(c), NULL;
    const char *out = dup_str(c, p);
    free(p);
    return out;
}

/* The consumers file's text (given or read; NULL when there is none, or
 * after a message about it in c->cons_errs). */
static char *consumers_text(struct cfg *c, const char *path, size_t *len)
{
    const struct pt_config_src *src = c->src;
    if (src && src->consumers_given) {
        if (!src->consumers_text)
            return NULL;
        char *t = malloc(src->consumers_len + 1);
        if (!t)
            return oom(c), NULL;
        memcpy(t, src->consumers_text, src->consumers_len);
        t[src->consumers_len] = 0;
        *len = src->consumers_len;
        return t;
    }
    struct stat st;
    if (stat(path, &st) < 0 && errno == ENOENT)
        return NULL; /* created on the admin API's first write */
    char *t = NULL, err[256];
    if (pt_cfg_read_file(path, &t, len, err, sizeof(err)) < 0) {
        pt_cfg_error_add(&c->cons_errs, 0, 0, "%s", err);
        return NULL;
    }
    return t;
}

/* The consumers file's `consumers:` list (its only key), parsed into doc;
 * problems go to c->w.errs, which the caller has pointed at cons_errs. */
static const struct pt_ynode *file_list(struct cfg *c, struct pt_ydoc *doc, const char *text,
                                        size_t len)
{
    static const char *const keys[] = {"consumers", NULL};
    if (pt_ydoc_parse(doc, c->cons_path, text, len, &c->w.errs) < 0 || !doc->root ||
        doc->root->is_null)
        return NULL;
    if (!pt_cfg_want_map(&c->w, doc->root, "the consumers file") || doc->root->kind != PT_YMAP)
        return NULL;
    const struct pt_ynode *v[1] = {0};
    pt_cfg_bind_keys(&c->w, doc->root, keys, NULL, "in the consumers file", v, NULL);
    if (v[0] && (!pt_cfg_want_seq(&c->w, v[0], "`consumers`") || v[0]->kind != PT_YSEQ))
        return NULL;
    return v[0];
}

void pt_cfg_walk_consumers(struct cfg *c, const struct pt_ynode *list, const struct pt_ynode *file)
{
    struct pt_generation *g = c->g;
    if (list && (!pt_cfg_want_seq(&c->w, list, "`consumers`") || list->kind != PT_YSEQ))
        list = NULL;
    if (!(g->consumers_path = consumers_path(c, file)))
        return;
    if (!(c->cons_path = strdup(g->consumers_path)))
        return oom(c);
    size_t len = 0;
    char *text = consumers_text(c, g->consumers_path, &len);
    struct pt_ydoc doc = {0};
    const struct pt_ynode *flist = NULL;
    struct pt_cfg_errors main_errs = c->w.errs;
    if (text) {
        g->consumers_text = pt_arena_strndup(c->a, text, len);
        g->consumers_len = len;
        if (!g->consumers_text)
            oom(c);
        c->w.errs = c->cons_errs;
        flist = file_list(c, &doc, text, len);
        c->cons_errs = c->w.errs;
        c->w.errs = main_errs;
    }
    uint32_t n = (list ? list->n : 0) + (flist ? flist->n : 0);
    struct pt_consumers *t = &g->consumers;
    if (n) {
        t->v = pt_arena_zalloc(c->a, sizeof(*t->v) * n);
        if (!t->v || pt_consumers_init_keys(t, c->a, count_keys(list) + count_keys(flist)) < 0) {
            oom(c);
            goto out;
        }
    }
    struct strtab names = {0};
    walk_list(c, list, &names);
    g->consumers_from_file = t->n;
    if (flist) {
        main_errs = c->w.errs;
        c->w.errs = c->cons_errs;
        walk_list(c, flist, &names);
        c->cons_errs = c->w.errs;
        c->w.errs = main_errs;
    }
    pt_cfg_strtab_free(&names);
    if (pt_consumers_index_names(t, c->a) < 0)
        oom(c);
out:
    if (text)
        pt_ydoc_free(&doc);
    free(text);
}
