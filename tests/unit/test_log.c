/*
 * test_log.c — the structured error log (core/log.c): every JSON line is
 * valid JSON, whatever bytes a message carries and wherever it is cut.
 */
#include "core/log.h"
#include "unit.h"

#include <jansson.h>
#include <unistd.h>

static char path[] = "/tmp/pt_test_log_XXXXXX";

/* Logs `msg` as one JSON line and returns its "msg" (malloc'd), or NULL
 * when the line is not valid JSON (jansson refuses invalid UTF-8). */
static char *logged(const char *msg)
{
    FILE *f = fopen(path, "w"); /* empty it */
    if (f)
        fclose(f);
    pt_log(PT_LOG_ERROR, "%s", msg);
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    CHECK_MSG(doc != NULL, "line not valid JSON: %s (at %d)", err.text, err.position);
    if (!doc)
        return NULL;
    char *m = strdup(json_string_value(json_object_get(doc, "msg")));
    json_decref(doc);
    return m;
}

static void test_json_log_escapes_invalid_utf8(void)
{
    char *m =
        logged("bad \xff\xfe bytes, cut \xe2\x82 and overlong \xc0\xaf, fine \xc3\xa9\xe2\x82\xac");
    if (m) {
        /* each invalid byte is one U+FFFD; good characters pass as they are */
        CHECK_STR(m, "bad \xef\xbf\xbd\xef\xbf\xbd bytes, cut \xef\xbf\xbd\xef\xbf\xbd and "
                     "overlong \xef\xbf\xbd\xef\xbf\xbd, fine \xc3\xa9\xe2\x82\xac");
        free(m);
    }
    /* a surrogate (ED A0 80) and a code point past U+10FFFF (F4 90 80 80) */
    m = logged("s \xed\xa0\x80 x \xf4\x90\x80\x80 \xf0\x9f\x98\x80");
    if (m) {
        CHECK_STR(m, "s \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd x "
                     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xf0\x9f\x98\x80");
        free(m);
    }
}

/* vsnprintf cuts a message at 2047 bytes: in the middle of a 2-byte
 * character here. The line ends on the last whole character. */
static void test_json_log_cut_at_a_character_boundary(void)
{
    static char msg[3000];
    size_t k = 0;
    while (k + 2 < sizeof(msg)) {
        msg[k++] = (char)0xc3;
        msg[k++] = (char)0xa9; /* é */
    }
    msg[k] = 0;
    char *m = logged(msg);
    if (m) {
        CHECK_EQ_INT(strlen(m), 2046);
        CHECK((unsigned char)m[2045] == 0xa9);
        free(m);
    }
    /* The escape buffer's end: 682 control bytes take 4092 escaped bytes;
     * of the euro signs after them one fits whole and none is cut. */
    k = 0;
    for (; k < 682; k++)
        msg[k] = 1;
    for (int i = 0; i < 3; i++) {
        memcpy(msg + k, "\xe2\x82\xac", 3);
        k += 3;
    }
    msg[k] = 0;
    m = logged(msg);
    if (m) {
        CHECK_EQ_INT(strlen(m), 682 + 3);
        CHECK(memcmp(m + 682, "\xe2\x82\xac", 3) == 0);
        free(m);
    }
}

int main(void)
{
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 2;
    }
    close(fd);
    CHECK_EQ_INT(pt_log_configure(PT_LOG_DEBUG, PT_LOG_JSON, path), 0);
    test_json_log_escapes_invalid_utf8();
    test_json_log_cut_at_a_character_boundary();
    pt_log_configure(PT_LOG_INFO, PT_LOG_TEXT, NULL);
    unlink(path);
    return unit_report("log");
}
