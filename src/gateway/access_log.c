/*
 * access_log.c — see access_log.h.
 *
 * The ring is a byte ring with monotonically growing 64-bit positions:
 * producer and consumer each own one counter, so no lock is needed. A line
 * that would wrap is written in two pieces; the consumer writes whatever is
 * between tail and head, so it never sees half a line (head only moves
 * after the whole line is copied).
 */
#include "gateway/access_log.h"

#include "core/log.h"
#include "gateway/generation.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int pt_alog_ring_init(struct pt_alog_ring *r)
{
    r->buf = malloc(PT_ALOG_RING_SIZE);
    if (!r->buf)
        return -ENOMEM;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->dropped, 0);
    return 0;
}

void pt_alog_ring_free(struct pt_alog_ring *r)
{
    free(r->buf);
    r->buf = NULL;
}

void pt_alog_push(struct pt_alog_ring *r, const char *line, size_t len)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (head - tail + len > PT_ALOG_RING_SIZE) {
        atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return;
    }
    size_t off = (size_t)(head & (PT_ALOG_RING_SIZE - 1));
    size_t first = PT_MIN(len, PT_ALOG_RING_SIZE - off);
    memcpy(r->buf + off, line, first);
    if (first < len)
        memcpy(r->buf, line + first, len - first);
    atomic_store_explicit(&r->head, head + len, memory_order_release);
}

struct pt_alog_logger {
    pthread_t thread;
    struct pt_alog_ring **rings;
    int n;
    pthread_mutex_t lock; /* guards fd changes against the drain */
    int fd;               /* -1 when off */
    bool owns_fd;
    bool targeted; /* a destination (or "off") was set: until then lines wait */
    _Atomic bool stop;
};

/* Writes everything fully, retrying short writes; gives up on errors. */
static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Returns whether to look again soon: a destination is open, or none was
 * set yet (read under the lock). */
static bool drain(struct pt_alog_logger *lg)
{
    pthread_mutex_lock(&lg->lock);
    bool soon = lg->fd >= 0 || !lg->targeted;
    /* Workers accept before the control thread has opened the file:
     * lines of those first requests wait in the rings for it. */
    for (int i = 0; i < lg->n && lg->targeted; i++) {
        struct pt_alog_ring *r = lg->rings[i];
        uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        while (tail < head) {
            size_t off = (size_t)(tail & (PT_ALOG_RING_SIZE - 1));
            size_t n = (size_t)PT_MIN(head - tail, (uint64_t)(PT_ALOG_RING_SIZE - off));
            if (lg->fd >= 0)
                write_all(lg->fd, r->buf + off, n);
            tail += n;
        }
        atomic_store_explicit(&r->tail, tail, memory_order_release);
    }
    pthread_mutex_unlock(&lg->lock);
    return soon;
}

static void *logger_main(void *arg)
{
    struct pt_alog_logger *lg = arg;
    /* 20 ms keeps a crash from losing more than a moment of log; with the
     * log off there is nothing to drain, so wake rarely (the thread shares
     * the CPU with the workers). */
    struct timespec on = {0, 20 * 1000 * 1000}, off = {0, 250 * 1000 * 1000};
    while (!atomic_load(&lg->stop)) {
        bool soon = drain(lg);
        nanosleep(soon ? &on : &off, NULL);
    }
    drain(lg);
    return NULL;
}

struct pt_alog_logger *pt_alog_start(struct pt_alog_ring **rings, int n)
{
    struct pt_alog_logger *lg = calloc(1, sizeof(*lg));
    if (!lg)
        return NULL;
    lg->rings = rings;
    lg->n = n;
    lg->fd = -1;
    pthread_mutex_init(&lg->lock, NULL);
    if (pthread_create(&lg->thread, NULL, logger_main, lg) != 0) {
        free(lg);
        return NULL;
    }
    return lg;
}

int pt_alog_set_target(struct pt_alog_logger *lg, int mode, const char *path)
{
    int fd = -1;
    bool owns = false;
    if (mode == PT_ALOG_STDOUT) {
        fd = STDOUT_FILENO;
    } else if (mode == PT_ALOG_FILE) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0)
            return -errno; /* the current target stays */
        owns = true;
    }
    pthread_mutex_lock(&lg->lock);
    if (lg->owns_fd)
        close(lg->fd);
    lg->fd = fd;
    lg->owns_fd = owns;
    lg->targeted = true;
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

void pt_alog_stop(struct pt_alog_logger *lg)
{
    if (!lg)
        return;
    atomic_store(&lg->stop, true);
    pthread_join(lg->thread, NULL);
    if (lg->owns_fd)
        close(lg->fd);
    pthread_mutex_destroy(&lg->lock);
    free(lg);
}
