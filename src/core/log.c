/* log.c — see log.h. One formatted write(2) per line so lines from
 * different threads never interleave. */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

const char *const pt_log_level_names[PT_LOG_LEVELS] = {"debug", "info", "warn", "error"};
const char *const pt_log_format_names[PT_LOG_FORMATS] = {"text", "json"};

_Atomic int pt_log_min_level = PT_LOG_INFO;
static _Atomic int format = PT_LOG_TEXT;
static _Atomic int out_fd = STDERR_FILENO; /* what writers write to */
/* Control thread only: */
static bool level_pinned; /* --log-level given */
static int file_fd = -1;  /* the stable descriptor files are dup'ed onto */
static char *file_path;   /* the error log file, NULL: stderr */

bool pt_log_enabled(enum pt_log_level level)
{
    return (int)level >= atomic_load_explicit(&pt_log_min_level, memory_order_relaxed);
}

/* The length of the well-formed UTF-8 sequence at s (1-4; RFC 3629 §4:
 * no overlong forms, surrogates or code points past U+10FFFF), or 0 when
 * the byte at s starts none. s is NUL-terminated, and NUL is never a
 * continuation byte, so this reads no further than its end. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

/* Cuts a string that was cut at `len` bytes back to a character boundary:
 * a multi-byte sequence the cut left incomplete is dropped. */
static void utf8_trim_cut(char *s, size_t len)
{
    size_t i = len;
    while (i > 0 && len - i < 3 && ((unsigned char)s[i - 1] & 0xc0) == 0x80)
        i--;
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if (len - (i - 1) < want)
        s[i - 1] = 0;
}

/* JSON string escape of s into out (room for `cap` bytes, NUL included);
 * cut at a character boundary when out is full. A byte that starts no
 * well-formed UTF-8 sequence becomes \ufffd (the replacement character),
 * so the line is always valid JSON text (RFC 8259 §8.1). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    while (*s) {
        unsigned char ch = (unsigned char)*s;
        char esc[7];
        const char *src = esc;
        size_t n = 0, used = 1;
        if (ch == '"' || ch == '\\') {
            esc[n++] = '\\';
            esc[n++] = (char)ch;
        } else if (ch == '\n' || ch == '\t' || ch == '\r') {
            esc[n++] = '\\';
            esc[n++] = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
        } else if (ch < 0x20 || ch == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            n = 6;
        } else if (ch < 0x80) {
            esc[n++] = (char)ch;
        } else if ((used = utf8_seq((const unsigned char *)s)) > 0) {
            src = s; /* a whole character, copied as it is */
            n = used;
        } else {
            memcpy(esc, "\\ufffd", 6);
            n = 6;
            used = 1;
        }
        if (k + n + 1 > cap)
            break;
        memcpy(out + k, src, n);
        k += n;
        s += used;
    }
    out[k] = 0;
    return k;
}

void pt_log(enum pt_log_level level, const char *fmt, ...)
{
    if (!pt_log_enabled(level))
        return;
    char msg[2048], line[4096 + 128];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char ts[80];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m < 0)
        msg[0] = 0;
    else if ((size_t)m >= sizeof(msg))
        utf8_trim_cut(msg, sizeof(msg) - 1); /* never end mid-character */
    int n;
    if (atomic_load_explicit(&format, memory_order_relaxed) == PT_LOG_JSON) {
        char esc[4096];
        json_escape(esc, sizeof(esc), msg);
        n = snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}", ts,
                     pt_log_level_names[level], esc);
    } else {
        n = snprintf(line, sizeof(line), "%s %s %s", ts, pt_log_level_names[level], msg);
    }
    size_t len = n < 0 ? 0 : (size_t)n;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(atomic_load_explicit(&out_fd, memory_order_relaxed), line, len);
    (void)w;
}

int pt_log_pin_level(const char *name)
{
    for (int l = 0; l < PT_LOG_LEVELS; l++) {
        if (strcmp(name, pt_log_level_names[l]) == 0) {
            atomic_store_explicit(&pt_log_min_level, l, memory_order_relaxed);
            level_pinned = true;
            return 0;
        }
    }
    return -1;
}

/* Points the stable descriptor at `fd` (a new file, or stderr) and makes
 * it the destination. 0 or -errno. */
static int point_at(int fd)
{
    if (file_fd < 0) {
        file_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (file_fd < 0)
            return -errno;
    } else if (dup3(fd, file_fd, O_CLOEXEC) < 0) {
        return -errno;
    }
    atomic_store_explicit(&out_fd, file_fd, memory_order_relaxed);
    return 0;
}

static int open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int e = point_at(fd);
    close(fd);
    return e;
}

int pt_log_configure(enum pt_log_level level, enum pt_log_format fmt, const char *path)
{
    /* The same path is opened again too: a reload after a rotation (mv,
     * then SIGHUP) lets go of the renamed file, as the access log does. */
    if (path) {
        char *copy = strdup(path);
        if (!copy)
            return -ENOMEM;
        int e = open_file(path);
        if (e < 0) {
            free(copy);
            return e;
        }
        free(file_path);
        file_path = copy;
    } else if (!path && file_path) {
        /* Back to stderr; the stable descriptor lets go of the file. */
        if (point_at(STDERR_FILENO) < 0)
            atomic_store_explicit(&out_fd, STDERR_FILENO, memory_order_relaxed);
        free(file_path);
        file_path = NULL;
    }
    if (!level_pinned)
        atomic_store_explicit(&pt_log_min_level, (int)level, memory_order_relaxed);
    atomic_store_explicit(&format, (int)fmt, memory_order_relaxed);
    return 0;
}

int pt_log_reopen(void)
{
    return file_path ? open_file(file_path) : 0;
}
