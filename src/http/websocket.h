/*
 * websocket.h — the RFC 6455 handshake fields the gateway checks or makes
 * (the frames themselves pass through untouched: exchange.h "Tunnels").
 */
#ifndef PT_HTTP_WEBSOCKET_H
#define PT_HTTP_WEBSOCKET_H

#include "core/common.h"
#include "http/h1.h"

/* Sec-WebSocket-Key: base64 of exactly 16 bytes (24 characters, "=="). */
bool pt_ws_key_valid(pt_slice key);
/* Sec-WebSocket-Accept for `key`: base64(SHA-1(key + the RFC's GUID)),
 * 28 characters and a NUL. */
void pt_ws_accept(pt_slice key, char out[29]);
/* Whether a 101's fields really switch to WebSocket for a handshake sent
 * with `key` (RFC 6455 §4.1, what a client checks): an Upgrade field that
 * lists `websocket` and exactly one Sec-WebSocket-Accept equal to
 * pt_ws_accept(key). A 101 without them may come from a server that did
 * not switch at all (a status it relays, an echo): tunnelling to it would
 * let raw client bytes past the gateway's routes and filters. */
bool pt_ws_switch_valid(const struct pt_h1_header *f, size_t n, pt_slice key);
/* A Sec-WebSocket-Key from 16 random bytes (a, b), 24 characters and a
 * NUL (an HTTP/2 extended CONNECT has none: the gateway makes it). */
void pt_ws_make_key(uint64_t a, uint64_t b, char out[25]);

#endif
