/* test_access_log.c — the logger thread: lines pushed before the control
 * thread has set a destination wait for it (workers accept first) and
 * reach the file in order. */
#include "gateway/access_log.h"
#include "gateway/generation.h"
#include "unit.h"

#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t read_file(const char *path, char *out, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
    return n > 0 ? (size_t)n : 0;
}

static void push(struct pt_alog_ring *r, const char *line)
{
    pt_alog_push(r, line, strlen(line));
}

/* Drain periods (20 ms) pass before the destination is set: the lines
 * are still written, in order. A logger that misses those periods (a
 * loaded machine) cannot make this fail, only weaken it. */
static void test_lines_wait_for_the_first_destination(const char *path)
{
    struct pt_alog_ring ring;
    CHECK(pt_alog_ring_init(&ring) == 0);
    struct pt_alog_ring *rings[] = {&ring};
    struct pt_alog_logger *lg = pt_alog_start(rings, 1);
    CHECK(lg != NULL);
    push(&ring, "{\"n\":1}\n");
    push(&ring, "{\"n\":2}\n");
    sleep_ms(200);
    CHECK(pt_alog_set_target(lg, PT_ALOG_FILE, path) == 0);
    push(&ring, "{\"n\":3}\n");
    pt_alog_stop(lg); /* its final drain */
    char got[256];
    read_file(path, got, sizeof(got));
    CHECK_STR(got, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    CHECK_EQ_INT(atomic_load(&ring.dropped), 0);
    pt_alog_ring_free(&ring);
}

int main(void)
{
    char dir[] = "/tmp/pt_alog_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char a[64];
    snprintf(a, sizeof(a), "%s/a.log", dir);
    test_lines_wait_for_the_first_destination(a);
    unlink(a);
    rmdir(dir);
    return unit_report("access_log");
}
