/*
 * fuzz_proxy_protocol.c — libFuzzer driver for the PROXY protocol header
 * parser (http/proxy_protocol.h).
 *
 * Every input is parsed whole and at every prefix, from exact-size heap
 * copies so ASan sees overreads, and the contract is asserted:
 *   - a count is never past the input, and a v1 header is never longer
 *     than 107 bytes;
 *   - a prefix never contradicts the whole: once a prefix is complete the
 *     whole gives the same count, once one is an error so is the whole,
 *     and before the header ends every prefix is incomplete;
 *   - a header that is not local carries an IPv4 or IPv6 source.
 */
#include "http/proxy_protocol.h"

#include <stdlib.h>
#include <string.h>

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static int parse_copy(const uint8_t *data, size_t n, struct pt_pp_header *h)
{
    char *copy = malloc(n ? n : 1);
    if (n)
        memcpy(copy, data, n);
    int r = pt_pp_parse(copy, n, h);
    free(copy);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pt_pp_header whole;
    int rw = parse_copy(data, size, &whole);
    REQUIRE(rw == PT_PP_ERROR || rw == PT_PP_INCOMPLETE || (rw > 0 && (size_t)rw <= size));
    if (rw > 0) {
        REQUIRE(whole.version == 1 || whole.version == 2);
        REQUIRE(whole.version != 1 || rw <= PT_PP_V1_MAX);
        REQUIRE(whole.local || whole.src.ss_family == AF_INET || whole.src.ss_family == AF_INET6);
    }
    for (size_t i = 0; i < size && i < 400; i++) {
        struct pt_pp_header h;
        int r = parse_copy(data, i, &h);
        if (r > 0)
            REQUIRE(r == rw);
        else if (r == PT_PP_ERROR)
            REQUIRE(rw == PT_PP_ERROR);
        else if (rw > 0)
            REQUIRE((size_t)rw > i);
    }
    return 0;
}
