/*
 * admin_config.c — GET /config, PUT /config, POST /config/validate
 * (admin_int.h), and the atomic file writes the admin API makes.
 *
 * PUT /config: the body is loaded by the same loader as a reload (its
 * consumers file read from disk as a reload would), published as a new
 * generation through the runtime (hooks->apply: the same path as
 * SIGHUP), and only then written over the config file, byte for byte as
 * submitted, so comments and `${ENV}` references survive. A load error
 * answers 400 with each message's file, line and col, and nothing
 * changes. A write that fails after the publish is reported in the answer
 * (`written: false`): the new config serves until the next restart or
 * reload reads the old file.
 */
#include "control/admin_int.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int admin_write_atomic(const char *path, const char *text, size_t len)
{
    /* Through a symlink to the file it names: replacing the link itself
     * would detach the config from where the operator keeps it. */
    char real[PATH_MAX];
    const char *target = realpath(path, real) ? real : path;
    char *tmp = NULL, *dirbuf = strdup(target);
    if (!dirbuf || asprintf(&tmp, "%s.tmp.XXXXXX", target) < 0) {
        free(dirbuf);
        return -ENOMEM;
    }
    int e = 0, fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        e = -errno;
        goto out;
    }
    struct stat st;
    mode_t mode = stat(target, &st) == 0 ? st.st_mode & 07777 : 0600;
    if (fchmod(fd, mode) < 0 || (e = write_all(fd, text, len)) < 0 || fsync(fd) < 0) {
        e = e ? e : -errno;
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) < 0 || rename(tmp, target) < 0) {
        e = -errno;
        unlink(tmp);
        goto out;
    }
    /* The rename itself is durable once the directory is synced. */
    int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
out:
    free(tmp);
    free(dirbuf);
    return e;
}

void admin_config_get(const struct admin_req *rq, struct admin_resp *out)
{
    out->ctype = "application/yaml";
    sb_put(&out->body, rq->g->source_text ? rq->g->source_text : "", rq->g->source_len);
}

void admin_config_validate(const struct admin_req *rq, struct admin_resp *out)
{
    struct pt_config_src src = {.path = rq->g->source_path, .text = rq->body, .len = rq->body_len};
    struct pt_diag diag;
    pt_diag_init(&diag);
    struct pt_generation *g = pt_config_load_src(&src, NULL, 0, &diag);
    if (g) {
        sb_printf(&out->body, "{\"valid\":true,\"routes\":%u,\"upstreams\":%u,\"consumers\":%u}\n",
                  g->nroutes, g->nupstreams, g->consumers.n);
        pt_generation_free(g);
    } else {
        out->status = 400;
        admin_diag_json(&out->body, &diag);
    }
    pt_diag_free(&diag);
}

void admin_config_put(const struct admin_req *rq, struct admin_resp *out)
{
    if (rq->body_len == 0) {
        admin_error(out, 400, "PUT /config takes the whole YAML config as its body");
        return;
    }
    const char *path = rq->g->source_path;
    struct pt_config_src src = {.path = path, .text = rq->body, .len = rq->body_len};
    struct pt_diag diag;
    pt_diag_init(&diag);
    char *why = NULL;
    uint64_t id = 0;
    int r = rq->hooks->apply(rq->ctx, &src, &id, &diag, &why);
    if (r == -1) {
        out->status = 400;
        admin_diag_json(&out->body, &diag);
    } else if (r < 0) {
        out->status = why && strstr(why, "shutting down") ? 503 : 400;
        sb_printf(&out->body, "{\"valid\":true,\"applied\":false,\"error\":");
        sb_json_str(&out->body, why ? why : "the config could not be put in place");
        sb_printf(&out->body, "}\n");
    } else {
        int e = admin_write_atomic(path, rq->body, rq->body_len);
        if (e < 0)
            pt_error("PUT /config: generation %llu is serving, but %s could not be written: %s",
                     (unsigned long long)id, path, strerror(-e));
        else
            pt_info("PUT /config: generation %llu, written to %s", (unsigned long long)id, path);
        sb_printf(&out->body, "{\"applied\":true,\"generation\":%llu,\"written\":%s",
                  (unsigned long long)id, e < 0 ? "false" : "true");
        if (e < 0) {
            sb_printf(&out->body, ",\"write_error\":");
            sb_json_str(&out->body, strerror(-e));
        }
        sb_printf(&out->body, "}\n");
    }
    free(why);
    pt_diag_free(&diag);
}
