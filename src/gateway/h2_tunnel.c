/*
 * h2_tunnel.c — WebSocket over HTTP/2 (RFC 8441, extended CONNECT) on
 * the exchange's tunnel (exchange.h "Tunnels").
 *
 * The session advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (h2_session.c),
 * so nghttp2 lets `:protocol` through on a CONNECT (and refuses it
 * anywhere else). A `:method CONNECT` + `:protocol websocket` stream
 * becomes an HTTP/1.1 upgrade request upstream: GET with our own
 * Sec-WebSocket-Key (an HTTP/2 client sends none) and version 13; the
 * client's -Protocol / -Extensions go as they came. The upstream's 101 is
 * checked (Sec-WebSocket-Accept must answer our key) and becomes a 200 on
 * the stream without the handshake's hop fields; from then on the
 * stream's DATA are the tunnel's raw bytes both ways (h2_stream.c: the
 * request body buffer and the response data provider, both under flow
 * control), END_STREAM is a half-close each way, RST_STREAM cuts it.
 *
 * Cost: nothing on a stream that is not a CONNECT (one method test in
 * start_request); a tunnel stream carries a 25-byte key in its object.
 */
#include "gateway/h2_server.h"

#include "http/websocket.h"

#include <strings.h>

bool pt_h2_tunnel_request(struct h2_stream *st)
{
    struct pt_exchange *ex = &st->ex;
    struct pt_request_meta *r = &ex->req;
    if (!st->protocol.len) {
        /* Plain CONNECT asks for a TCP tunnel to an authority: refused, as
         * on HTTP/1.1. */
        st->hfail = st->hfail ? st->hfail : 405;
        st->hwhy = st->hwhy ? st->hwhy : "CONNECT is not supported";
        return false;
    }
    if (st->protocol.len != 9 || strncasecmp(st->protocol.p, "websocket", 9) != 0) {
        st->hfail = st->hfail ? st->hfail : 501;
        st->hwhy = st->hwhy ? st->hwhy : "unsupported :protocol";
        return false;
    }
    if (st->content_length > 0) {
        st->hfail = st->hfail ? st->hfail : 400;
        st->hwhy = st->hwhy ? st->hwhy : "invalid websocket handshake";
        return false;
    }
    st->tunnel = true;
    r->method = PT_SLICE("GET");
    r->method_id = PT_METHOD_GET;
    r->upgrade = PT_UPGRADE_WEBSOCKET;
    /* No request body: the stream's DATA are the tunnel's, handed over only
     * once the upstream switched (codec_body_peek). */
    r->content_length = 0;
    r->chunked = false;
    struct pt_worker *w = st->h->c->w;
    pt_ws_make_key(pt_worker_random(w), pt_worker_random(w), st->ws_key);
    if (pt_headers_set(&ex->reqh, &st->arena, PT_SLICE("Sec-WebSocket-Key"),
                       (pt_slice){st->ws_key, 24}) < 0)
        return false;
    /* The client's version is checked by the exchange (426 unless 13); an
     * RFC 8441 client may leave it out: it is 13 then. */
    if (!pt_headers_find(&ex->reqh, PT_SLICE("Sec-WebSocket-Version")) &&
        pt_headers_add(&ex->reqh, &st->arena, PT_SLICE("Sec-WebSocket-Version"), PT_SLICE("13")) <
            0)
        return false;
    return true;
}

bool pt_h2_tunnel_switched(struct h2_stream *st)
{
    struct pt_exchange *ex = &st->ex;
    struct pt_hfield *acc = pt_headers_find(&ex->resph, PT_SLICE("Sec-WebSocket-Accept"));
    char want[29];
    pt_ws_accept((pt_slice){st->ws_key, 24}, want);
    if (!acc || acc->value.len != 28 || memcmp(acc->value.p, want, 28) != 0) {
        /* Not a WebSocket server answering us: no tunnel. */
        ex->upgraded = false;
        pt_exchange_respond(ex, 502, "upstream sent an invalid Sec-WebSocket-Accept", false);
        return false;
    }
    for (uint32_t i = 0; i < ex->resph.n; i++) {
        struct pt_hfield *f = &ex->resph.f[i];
        if (pt_slice_ieq(f->name, PT_SLICE("Sec-WebSocket-Accept")))
            f->dead = true;
    }
    /* RFC 8441 §5: a 2xx accepts the extended CONNECT. The log says what
     * the client got. */
    ex->status = 200;
    ex->reason = (pt_slice){"", 0};
    st->tunnel_open = true;
    return true;
}
