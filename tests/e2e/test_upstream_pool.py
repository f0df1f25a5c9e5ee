"""The upstream connection pool: a pooled connection is handed to the next
request only when nothing can be wrong with it. An upstream FIN that came
with the last byte, bytes after a response (at once or later, while the
connection idles) and a connection that already delivered an interim
response all keep it out of the pool or out of a retry; a stale one is
retried on a fresh connection; `keepalive: 0` never borrows another
upstream's pooled connection."""

import socket
import threading

import requests

from conftest import (Gateway, backend, free_port, frozen, make_config, one_route,
                      parse_response, parse_responses, raw_until_close, read_head, read_responses,
                      request_heads, requests_on, scaled, upstream, wait_peer_read, wait_until)


def then_close_upstream(s):
    """GET /then-close: answered with its FIN right behind the last byte;
    anything else: "posted"."""
    for head, _ in requests_on(s):
        if head.startswith(b"GET /then-close"):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab")
            wait_peer_read(s, "the gateway to read the start of the response")
            # the last byte and the FIN in one segment
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            s.send(b"c")
            return
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nposted")


def test_an_upstream_fin_with_the_last_byte_keeps_its_connection_out_of_the_pool(gateway,
                                                                                 raw_upstream):
    """The upstream's FIN arrived together with the end of a keep-alive
    response: the gateway saw it (EPOLLRDHUP) and still pooled the
    connection. With edge-triggered epoll no further event comes for it, so
    the next request was written to a dead socket; with a body it cannot be
    retried and got a 502."""
    up = raw_upstream(then_close_upstream)
    gw = gateway(one_route(up.port))
    for _ in range(3):
        r = requests.get(gw.u("/then-close"), timeout=scaled(5))
        assert r.status_code == 200 and r.content == b"abc"
        r = requests.post(gw.u("/p"), data=b"x" * 100, timeout=scaled(5))
        assert r.status_code == 200, r.content
        assert r.content == b"posted"


def test_fin_with_the_last_byte_is_not_reused_by_a_pipelined_request(gateway, raw_upstream):
    up = raw_upstream(then_close_upstream)
    gw = gateway(one_route(up.port))
    for _ in range(3):
        buf, _ = raw_until_close(gw.port, b"GET /then-close HTTP/1.1\r\nHost: a\r\n\r\n"
                                 b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                 b"Connection: close\r\n\r\nxyz")
        rs, _ = parse_responses(buf)
        assert [(r.status, r.body) for r in rs] == [(200, b"abc"), (200, b"posted")], buf


EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"


def stray_bytes_upstream(s):
    # /first: a 16 KiB body whose last read fills the gateway's buffer
    # exactly, followed in the same write by bytes no request asked for.
    for head in request_heads(s):
        if head.startswith(b"GET /first"):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 16384\r\n\r\n")
            wait_peer_read(s, "the gateway to read the response head")
            s.sendall(b"a" * 16384 + EVIL)
        else:
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")


def test_bytes_after_a_response_never_reach_the_next_request(gateway, raw_upstream):
    gw = gateway(one_route(raw_upstream(stray_bytes_upstream).port))
    buf, _ = raw_until_close(gw.port, b"GET /first HTTP/1.1\r\nHost: a\r\n"
                             b"Connection: close\r\n\r\n")
    assert parse_response(buf).body == b"a" * 16384
    for i in range(3):
        buf, _ = raw_until_close(gw.port, b"GET /second%d HTTP/1.1\r\nHost: a\r\n"
                                 b"Connection: close\r\n\r\n" % i)
        assert parse_response(buf).body == b"good", buf


def test_bytes_after_a_response_never_reach_a_pipelined_request(gateway, raw_upstream):
    gw = gateway(one_route(raw_upstream(stray_bytes_upstream).port))
    buf, _ = raw_until_close(gw.port, b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
                             b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    rs, _ = parse_responses(buf)
    assert [r.body for r in rs] == [b"a" * 16384, b"good"], buf[-100:]


def test_stray_bytes_on_an_idle_pooled_connection_never_answer_the_next_request(gateway,
                                                                                raw_upstream):
    """The upstream writes an unsolicited response on an idle pooled
    connection while the client's next request is already waiting: both are
    in the same batch of events, the client's first. The connection must be
    closed, not handed to the request (which would get "EVIL")."""
    conns = []

    def handler(s):
        conns.append(s)
        for n, _ in enumerate(request_heads(s), 1):
            body = b"reply%d" % n
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    up = raw_upstream(handler)
    gw = gateway(one_route(up.port))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        c.sendall(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        r1 = read_responses(c, 1)[0]
        assert r1.status == 200 and r1.body == b"reply1"
        assert len(conns) == 1
        with frozen(gw):  # both arrive before it looks again
            c.sendall(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
            conns[0].sendall(EVIL)
        r2 = read_responses(c, 1)[0]
        assert r2.body != b"EVIL", "stray upstream bytes answered the next request"
        assert r2.status == 200 and r2.body.startswith(b"reply"), r2
        assert up.accepts == 2  # the dirty connection was closed, a new one opened
    finally:
        c.close()


def test_stale_pooled_connection_is_retried_on_a_new_one(gateway, raw_upstream):
    # Each connection answers one request, then closes on the next one
    # unanswered. The retry used to take another (equally stale) pooled
    # connection and give up with 502.
    together = threading.Barrier(3, timeout=scaled(5))

    def handle(s):
        buf = b""
        head, buf = read_head(s, buf)
        if head.startswith(b"GET /hold"):
            together.wait()  # three requests in flight at once: three connections
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        read_head(s, buf)  # the next request: close without an answer
    up = raw_upstream(handle)
    gw = gateway(one_route(up.port))
    hold = b"GET /hold HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    ts = [threading.Thread(target=raw_until_close, args=(gw.port, hold)) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert up.accepts == 3
    # A transaction ends (and is counted) after its connection went
    # back to the pool: then all three stale ones are there.
    wait_until(lambda: gw.status()["requests_served"] >= 3, scaled(5),
               what="the three connections back in the pool")
    buf, _ = raw_until_close(gw.port, b"GET /x HTTP/1.1\r\nHost: a\r\n"
                             b"Connection: close\r\n\r\n")
    assert parse_response(buf).status == 200, buf
    assert up.accepts == 4


def test_a_request_answered_with_a_1xx_is_not_retried(gateway, raw_upstream):
    """A reused connection that delivers a 102 and then closes: the
    upstream had the request, so it must not be sent again (even an
    idempotent one), and the 102 must not reach the client twice."""
    seen = []

    def handler(s):
        for n, head in enumerate(request_heads(s), 1):
            seen.append(head.split(b"\r\n")[0])
            if n == 1:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                s.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
                return  # and close

    gw = gateway(one_route(raw_upstream(handler).port))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        c.sendall(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_responses(c, 1)[0].status == 200
        c.sendall(b"DELETE /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = read_responses(c, 2, interim=True)
        assert [r.status for r in got] == [102, 502], got
        assert seen.count(b"DELETE /2 HTTP/1.1") == 1, seen
    finally:
        c.close()


def test_keepalive_0_takes_no_pooled_connection_of_another_upstream(tmp_path):
    with backend("ka") as b:
        cfg = make_config(free_port(), {"pooled": upstream(b.port),
                                        "nopool": upstream(b.port, keepalive=0)},
                          [{"name": "p", "match": {"path_prefix": "/p"}, "upstream": "pooled"},
                           {"name": "n", "match": {"path_prefix": "/n"}, "upstream": "nopool"}],
                          workers=1)
        gw = Gateway(cfg, tmp_path)
        try:
            assert requests.get(gw.u("/p"), timeout=scaled(5)).status_code == 200
            before = b.stats()
            for _ in range(3):
                assert requests.get(gw.u("/n"), timeout=scaled(5)).status_code == 200
            after = b.stats()
            # three requests, three new connections; the pooled one of
            # `pooled` is still there, idle
            assert after["accepts"] - before["accepts"] == 3, (before, after)
            assert after["active"] == 1, after
        finally:
            gw.stop()
