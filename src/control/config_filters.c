/*
 * config_filters.c — `filters:` blocks (the top-level defaults and each
 * route's own): which filters exist or are planned, each filter's settings
 * read generically through its field table (config_values.c) and checked
 * by its compile hook, whose reports are placed at the node they name.
 * Part of the loader (config.c, config_int.h). Filter configs live in the
 * generation's arena; a filter_set's array is malloc'd by the caller's
 * walk and freed by it.
 */
#include "control/config_int.h"

#include <stdio.h>
#include <stdlib.h>

/* Filters DESIGN.md §5 plans: named in a config, they are refused as not
 * yet supported rather than unknown, until they join the registry. */
static const char *const planned_filters[] = {"request_id", "grpc_transcode", "request_size", NULL};

/* A compile hook's reports, placed at the node they name: the entry of a
 * list or mapping field (its key, or its value), else the field, else the
 * filter's name. */
struct compile_errs {
    struct pt_filter_errs e;
    struct cfg *c;
    const struct pt_filter_def *def;
    const struct pt_ynode *key, *map;
    int count;
    /* Entries already reported, so that two equal bad entries of one list
     * are each reported at their own position. */
    const struct pt_ynode *placed[32];
    unsigned nplaced;
};

static bool already_placed(const struct compile_errs *ce, const struct pt_ynode *n)
{
    for (unsigned i = 0; i < ce->nplaced; i++)
        if (ce->placed[i] == n)
            return true;
    return false;
}

/* The item `#N` (1-based) of a list, then optionally `.key` of that item
 * (its key, or with in_value its value), then optionally `#K`, the K-th
 * item of that value: "#2", "#2.rate", "#2.key#1" (a PT_F_OBJECT_LIST
 * entry, filter.h). NULL when the path names no node. */
static const struct pt_ynode *item_path(const struct pt_ynode *f, const char *p, bool in_value)
{
    char *end;
    unsigned long i = strtoul(p + 1, &end, 10);
    if (f->kind != PT_YSEQ || end == p + 1 || i == 0 || i > f->n)
        return NULL;
    const struct pt_ynode *n = f->items[i - 1];
    if (*end != '.')
        return *end ? NULL : n;
    const char *key = end + 1, *hash = strchr(key, '#');
    size_t klen = hash ? (size_t)(hash - key) : strlen(key);
    for (uint32_t k = 0; n->kind == PT_YMAP && k < n->n; k++) {
        const struct pt_ynode *kn = n->pairs[k].key;
        if (strlen(kn->str) != klen || strncmp(kn->str, key, klen) != 0)
            continue;
        const struct pt_ynode *v = n->pairs[k].value;
        if (!hash)
            return in_value ? v : kn;
        unsigned long j = strtoul(hash + 1, &end, 10);
        if (v->kind != PT_YSEQ)
            return v; /* a scalar stands for a one-item list */
        return *end == 0 && j >= 1 && j <= v->n ? v->items[j - 1] : v;
    }
    return NULL;
}

/* The node of `entry` in a field: in a mapping its key (or, in_value, its
 * value), in a list the first matching item not reported yet (or the
 * item path "#N...", see item_path); NULL when there is none. */
static const struct pt_ynode *entry_node(const struct compile_errs *ce, const struct pt_ynode *f,
                                         const char *entry, bool in_value)
{
    if (entry[0] == '#' && f->kind == PT_YSEQ)
        return item_path(f, entry, in_value);
    if (f->kind == PT_YMAP && in_value)
        return pt_ynode_get(f, entry);
    const struct pt_ynode *first = NULL;
    for (uint32_t i = 0; i < f->n; i++) {
        const struct pt_ynode *n = f->kind == PT_YMAP   ? f->pairs[i].key
                                   : f->kind == PT_YSEQ ? f->items[i]
                                                        : NULL;
        if (!n || n->kind != PT_YSCALAR || strcmp(n->str, entry) != 0)
            continue;
        if (!already_placed(ce, n))
            return n;
        if (!first)
            first = n;
    }
    return first;
}

static void compile_report(struct pt_filter_errs *e, const char *field, const char *entry,
                           bool in_value, const char *msg)
{
    struct compile_errs *ce = (struct compile_errs *)e;
    const struct pt_ynode *f = field ? pt_ynode_get(ce->map, field) : NULL;
    const struct pt_ynode *at = f && entry ? entry_node(ce, f, entry, in_value) : NULL;
    if (at && ce->nplaced < PT_ARRAY_LEN(ce->placed) && !already_placed(ce, at))
        ce->placed[ce->nplaced++] = at;
    err_at(ce->c, at ? at : f ? f : ce->key, "filter `%s`: %s", ce->def->name, msg);
    ce->count++;
}

/* Every PT_F_UPSTREAM field of one mapping read with `fields`, and of the
 * items of its PT_F_OBJECT_LIST fields (aggregate's calls), names an
 * upstream of this file; reports each that does not, at its value. */
static bool upstreams_exist(struct cfg *c, const struct pt_filter_def *def,
                            const struct pt_field *fields, const struct pt_ynode *n,
                            const void *conf)
{
    bool ok = true;
    for (const struct pt_field *f = fields; f && f->name; f++) {
        const void *at = (const char *)conf + f->offset;
        if (f->type == PT_F_OBJECT_LIST) {
            const struct pt_objlist *l = at;
            const struct pt_ynode *seq = pt_ynode_get(n, f->name);
            for (uint32_t i = 0; seq && i < l->n && i < seq->n; i++)
                ok &= upstreams_exist(c, def, f->sub, seq->items[i],
                                      (const char *)l->v + pt_field_item_size(f) * i);
            continue;
        }
        const char *name = f->type == PT_F_UPSTREAM ? *(const char *const *)at : NULL;
        if (!name || pt_cfg_strtab_get(&c->upstreams, name))
            continue;
        const char **cands = malloc((c->g->nupstreams + 1) * sizeof(*cands));
        if (!cands) {
            oom(c);
            return false;
        }
        for (uint32_t i = 0; i < c->g->nupstreams; i++)
            cands[i] = c->g->upstreams[i].name;
        char hint[128];
        err_at(c, pt_ynode_get(n, f->name), "filter `%s`: no upstream named `%s`%s", def->name,
               name, pt_cfg_did_you_mean(name, cands, c->g->nupstreams, hint, sizeof(hint)));
        free(cands);
        ok = false;
    }
    return ok;
}

static bool filter_upstreams_exist(struct cfg *c, const struct pt_filter_def *def,
                                   const struct pt_ynode *n, const void *conf)
{
    return upstreams_exist(c, def, def->fields, n, conf);
}

/* The PT_F_URL fields of one mapping read with `fields`, and of the items
 * of its PT_F_OBJECT_LIST fields. */
static bool urls_register(struct cfg *c, const struct pt_field *fields, const struct pt_ynode *n,
                          const void *conf)
{
    bool ok = true;
    for (const struct pt_field *f = fields; f && f->name; f++) {
        const void *at = (const char *)conf + f->offset;
        if (f->type == PT_F_OBJECT_LIST) {
            const struct pt_objlist *l = at;
            const struct pt_ynode *seq = pt_ynode_get(n, f->name);
            for (uint32_t i = 0; seq && i < l->n && i < seq->n; i++)
                ok &= urls_register(c, f->sub, seq->items[i],
                                    (const char *)l->v + pt_field_item_size(f) * i);
            continue;
        }
        const char *url = f->type == PT_F_URL ? *(const char *const *)at : NULL;
        if (url)
            ok &= pt_cfg_register_url(c, pt_ynode_get(n, f->name), url, pt_ynode_get(n, "tls_ca"));
    }
    return ok;
}

/* Every PT_F_URL field: a URL the loader checks, with its host name (when
 * it has one) resolved like a target's. */
static bool filter_urls_register(struct cfg *c, const struct pt_filter_def *def,
                                 const struct pt_ynode *n, const void *conf)
{
    return urls_register(c, def->fields, n, conf);
}

/* Parses `name: {fields}` of one filter with its field table, then runs its
 * compile hook. Returns the config, or NULL after reporting. */
static const void *parse_filter_conf(struct cfg *c, const struct pt_filter_def *def,
                                     const struct pt_ynode *key, const struct pt_ynode *n)
{
    char what[96];
    snprintf(what, sizeof(what), "filter `%s`", def->name);
    if (!pt_cfg_want_map(&c->w, n, what))
        return NULL;
    void *conf = pt_arena_zalloc(c->a, def->config_size ? def->config_size : 1);
    if (!conf) {
        oom(c);
        return NULL;
    }
    bool ok = pt_cfg_read_fields(&c->w, def->name, def->fields, NULL, n, conf);
    if (!ok || c->w.oom || !filter_upstreams_exist(c, def, n, conf) ||
        !filter_urls_register(c, def, n, conf))
        return NULL;
    if (def->compile) {
        struct compile_errs ce = {{compile_report, c->g->has_redis}, c, def, key, n, 0, {0}, 0};
        if (def->compile(conf, c->a, &ce.e) != 0) {
            if (ce.count == 0)
                err_at(c, key, "filter `%s`: invalid configuration", def->name);
            return NULL;
        }
    }
    return conf;
}

static void unknown_filter(struct cfg *c, const struct pt_ynode *key)
{
    const char *name = key->str;
    if (pt_cfg_in_list(name, planned_filters)) {
        err_at(c, key, "filter `%s` is not supported by this build yet", name);
        return;
    }
    size_t n = pt_filter_registry_len + pt_cfg_list_len(planned_filters);
    const char **names = malloc((n + 1) * sizeof(*names));
    if (!names)
        return oom(c);
    size_t k = 0;
    for (size_t i = 0; i < pt_filter_registry_len; i++)
        names[k++] = pt_filter_registry[i]->name;
    for (size_t i = 0; planned_filters[i]; i++)
        names[k++] = planned_filters[i];
    char hint[128];
    err_at(c, key, "unknown filter `%s`%s", name,
           pt_cfg_did_you_mean(name, names, k, hint, sizeof(hint)));
    free(names);
}

/* A `filters:` mapping, top level (defaults) or a route's own. Entries
 * whose config has errors are left out after reporting. */
void pt_cfg_walk_filter_block(struct cfg *c, const struct pt_ynode *n, bool in_route,
                              struct filter_set *out)
{
    out->v = NULL;
    out->n = 0;
    if (!pt_cfg_want_map(&c->w, n, "`filters`") || n->kind != PT_YMAP || n->n == 0)
        return;
    out->v = calloc(n->n, sizeof(*out->v));
    if (!out->v)
        return oom(c);
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *key = n->pairs[i].key, *val = n->pairs[i].value;
        const struct pt_filter_def *def = pt_filter_find(key->str);
        if (!def) {
            unknown_filter(c, key);
            continue;
        }
        struct filter_entry e = {.def = def};
        if (val->kind == PT_YSCALAR && strcmp(val->str, "off") == 0) {
            if (!in_route) {
                err_at(c, val,
                       "`%s: off` only makes sense in a route's `filters` (it switches off a "
                       "default); leave the filter out here instead",
                       def->name);
                continue;
            }
            e.off = true;
        } else {
            if (val->kind == PT_YSCALAR && !val->is_null) {
                err_at(c, val, "expected a mapping of settings for filter `%s`, or `off`, got `%s`",
                       def->name, val->str);
                continue;
            }
            e.conf = parse_filter_conf(c, def, key, val);
            if (!e.conf)
                continue;
        }
        out->v[out->n++] = e;
    }
}
