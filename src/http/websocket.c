/*
 * websocket.c — see websocket.h.
 */
#include "http/websocket.h"
#include "http/h1_write.h"
#include "http/tokens.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static bool b64_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

bool pt_ws_key_valid(pt_slice key)
{
    if (key.len != 24 || key.p[22] != '=' || key.p[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!b64_char(key.p[i]))
            return false;
    /* 16 bytes = 128 bits: the last character carries 2 bits, the other
     * 4 must be zero (canonical base64). */
    return strchr("AQgw", key.p[21]) != NULL;
}

void pt_ws_accept(pt_slice key, char out[29])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char in[64 + sizeof(ws_guid)];
    size_t n = PT_MIN(key.len, (size_t)64); /* a valid key has 24 */
    memcpy(in, key.p, n);
    memcpy(in + n, ws_guid, sizeof(ws_guid) - 1);
    EVP_Digest(in, n + sizeof(ws_guid) - 1, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
    out[28] = 0;
}

bool pt_ws_switch_valid(const struct pt_h1_header *f, size_t n, pt_slice key)
{
    char want[29];
    pt_ws_accept(key, want);
    bool upgrade = false;
    int accepts = 0, good = 0;
    for (size_t i = 0; i < n; i++) {
        if (f[i].token == PT_TOK_UPGRADE) {
            const char *p = f[i].value.p, *end = p + f[i].value.len;
            while (p < end)
                upgrade |= pt_slice_ieq_cstr(pt_h1_list_next(&p, end), "websocket");
        } else if (pt_slice_ieq_cstr(f[i].name, "Sec-WebSocket-Accept")) {
            accepts++;
            good += f[i].value.len == 28 && memcmp(f[i].value.p, want, 28) == 0;
        }
    }
    return upgrade && accepts == 1 && good == 1;
}

void pt_ws_make_key(uint64_t a, uint64_t b, char out[25])
{
    unsigned char raw[16];
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    EVP_EncodeBlock((unsigned char *)out, raw, 16);
    out[24] = 0;
}
