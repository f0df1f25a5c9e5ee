"""Keep-alive on both legs, pipelining and Expect: 100-continue."""

import json
import socket
import time

import pytest
import requests

from conftest import (Gateway, backend, free_port, http_conn, make_config, one_route,
                      parse_response, raw_ex, read_responses, scaled, upstream, wait_until)

WORKERS = 2


@pytest.fixture
def env(tmp_path):
    with backend("ka") as b:
        cfg = make_config(free_port(), {"k": upstream(b.port)},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "k"}],
                          workers=WORKERS)
        gw = Gateway(cfg, tmp_path)
        try:
            yield gw, b
        finally:
            gw.stop()


@pytest.mark.heavy
def test_1000_requests_one_client_connection(env):
    gw, b = env
    b.reset()
    conn = http_conn(gw.port)
    conn.connect()
    sock = conn.sock
    try:
        for i in range(1000):
            conn.request("GET", "/tiny")
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, (i, r.status, body[:200])
            assert conn.sock is sock, "client connection was closed after request %d" % i
    finally:
        conn.close()
    st = b.stats()
    # + 1: the /__stats request itself is a fresh direct connection
    assert st["accepts"] <= WORKERS * 1 + 1, st
    assert st["requests"] >= 1000, st


def test_pool_reused_across_client_connections(env):
    """50 client connections one after another, 10 requests each: the
    upstream pool outlives client connections."""
    gw, b = env
    b.reset()
    for _ in range(50):
        s = requests.Session()
        for _ in range(10):
            assert s.get(gw.u("/tiny"), timeout=scaled(5)).status_code == 200
        s.close()
    st = b.stats()
    assert st["accepts"] <= WORKERS * 1 + 1, st
    assert st["requests"] >= 500, st


def test_pool_reused_with_two_targets(tmp_path):
    with backend("ka2", nports=2) as b:
        cfg = make_config(free_port(), {"k": upstream(*b.ports)},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "k"}],
                          workers=WORKERS)
        gw = Gateway(cfg, tmp_path)
        try:
            b.reset()
            s = requests.Session()
            for _ in range(400):
                assert s.get(gw.u("/tiny"), timeout=scaled(5)).status_code == 200
            st = b.stats()  # the process counts both ports together
            assert st["accepts"] <= WORKERS * 2 + 1, st
        finally:
            gw.stop()


def test_upstream_close_not_reused(env):
    """X-Demo-Close makes the backend close after answering: the next
    request must still succeed (the closed connection is not reused)."""
    gw, b = env
    s = requests.Session()
    for i in range(20):
        r = s.get(gw.u("/echo"), headers={"X-Demo-Close": "1"} if i % 2 == 0 else {},
                  timeout=scaled(5))
        assert r.status_code == 200, (i, r.status_code, r.text[:200])


def test_pipelining_10_in_one_send(env):
    gw, _ = env
    reqs = b"".join(b"GET /pipe/%d?i=%d HTTP/1.1\r\nHost: ka\r\n\r\n" % (i, i) for i in range(10))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    try:
        s.sendall(reqs)
        rs = read_responses(s, 10, scaled(10))
    finally:
        s.close()
    assert len(rs) == 10, rs
    for i, r in enumerate(rs):
        assert r.status == 200, (i, r)
        doc = r.json()
        assert doc["path"] == "/pipe/%d" % i, (i, doc["path"])
        assert doc["query"] == "i=%d" % i


def test_pipelining_mixed_with_bodies_and_head(env):
    gw, _ = env
    reqs = (b"POST /p/0 HTTP/1.1\r\nHost: ka\r\nContent-Length: 5\r\n\r\nhello"
            b"HEAD /p/1 HTTP/1.1\r\nHost: ka\r\n\r\n"
            b"POST /p/2 HTTP/1.1\r\nHost: ka\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"GET /p/3 HTTP/1.1\r\nHost: ka\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    try:
        s.sendall(reqs)
        rs = read_responses(s, 4, scaled(10), head_requests=(1,))
    finally:
        s.close()
    assert len(rs) == 4, rs
    assert [r.status for r in rs] == [200] * 4
    assert rs[0].json()["path"] == "/p/0" and rs[0].json()["body_len"] == 5
    assert rs[1].body == b""
    assert rs[2].json()["path"] == "/p/2" and rs[2].json()["body_len"] == 3
    assert rs[3].json()["path"] == "/p/3"


def test_pipelined_slow_first_keeps_order(env):
    """The first request is slow; later ones must still be answered after it."""
    gw, _ = env
    reqs = (b"GET /slow HTTP/1.1\r\nHost: ka\r\nX-Demo-Delay: 300\r\n\r\n"
            b"GET /fast1 HTTP/1.1\r\nHost: ka\r\n\r\n"
            b"GET /fast2 HTTP/1.1\r\nHost: ka\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    try:
        s.sendall(reqs)
        rs = read_responses(s, 3, scaled(10))
    finally:
        s.close()
    assert [r.json()["path"] for r in rs] == ["/slow", "/fast1", "/fast2"]


def recv_until(s, marker, timeout):
    """Reads from `s` until `marker` is in what was read, the peer closes
    or `timeout` seconds pass; returns everything read."""
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf and time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            c = s.recv(65536)
        except socket.timeout:
            break
        if not c:
            break
        buf += c
    return buf


def test_expect_100_continue(env):
    gw, _ = env
    body = b"hello world"
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    try:
        s.sendall(b"POST /expect HTTP/1.1\r\nHost: ka\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % len(body))
        buf = recv_until(s, b"\r\n\r\n", scaled(5))
        assert buf.startswith(b"HTTP/1.1 100"), "no 100 Continue before the body: %r" % buf[:200]
        head_end = buf.index(b"\r\n\r\n") + 4
        rest = buf[head_end:]
        s.sendall(body)
        rs = read_responses(s, 1, scaled(10)) if not rest else None
        if rest:  # the final response arrived together with the 100 (unlikely)
            rs = [parse_response(rest)]
    finally:
        s.close()
    assert rs and rs[0].status == 200, rs
    doc = rs[0].json()
    assert doc["body_len"] == len(body)
    assert doc["body"] == "hello world"


def test_expect_100_continue_pipelined_behind_a_response(env):
    """A request with Expect: 100-continue pipelined behind another: its
    100 Continue must come even though the first response's bytes may
    still be in flight (io_uring used to drop it then, and the client
    waited for a 100 that never came), whole, after the first response."""
    gw, _ = env
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    try:
        s.sendall(b"GET /first HTTP/1.1\r\nHost: ka\r\n\r\n"
                  b"POST /second HTTP/1.1\r\nHost: ka\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        buf = recv_until(s, cont, scaled(5))
        assert cont in buf, "no 100 Continue for the pipelined request: %r" % buf[-300:]
        first = parse_response(buf[:buf.index(cont)])
        assert first.status == 200 and first.json()["path"] == "/first"
        assert buf.endswith(cont), "bytes after the 100 before the body was sent: %r" % buf
        s.sendall(b"hello")
        rs = read_responses(s, 1, scaled(10))
    finally:
        s.close()
    assert rs and rs[0].status == 200, rs
    assert rs[0].json()["path"] == "/second"
    assert rs[0].json()["body"] == "hello"


def test_expect_100_continue_pipelined_then_slow_upstream(tmp_path):
    """Its send having waited for the previous response's (io_uring), the
    100 Continue must not leave the client's send timeout running: an
    upstream slower than idle_timeout but within read_timeout answers."""
    with backend("ka") as b:
        cfg = make_config(free_port(), {"k": upstream(b.port, read_timeout="20s")},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "k"}],
                          workers=1, limits={"idle_timeout": "1s"})
        gw = Gateway(cfg, tmp_path)
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
        try:
            s.sendall(b"GET /first HTTP/1.1\r\nHost: ka\r\n\r\n"
                      b"POST /second HTTP/1.1\r\nHost: ka\r\nContent-Length: 5\r\n"
                      b"X-Demo-Delay: 2500\r\nExpect: 100-continue\r\n\r\n")
            buf = recv_until(s, b"HTTP/1.1 100 Continue\r\n\r\n", scaled(5))
            assert b"HTTP/1.1 100 Continue\r\n\r\n" in buf, buf[-300:]
            s.sendall(b"hello")
            rs = read_responses(s, 1, scaled(10))
        finally:
            s.close()
            gw.stop()
    assert rs and rs[0].status == 200, rs
    assert rs[0].json()["body"] == "hello"


def test_expect_100_continue_requests_lib_style(env):
    """http.client sends headers and body at once with Expect: the gateway
    must not get confused by the early body."""
    gw, _ = env
    conn = http_conn(gw.port)
    try:
        conn.request("PUT", "/expect2", body=b"abc", headers={"Expect": "100-continue"})
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    assert r.status == 200, data[:200]
    assert json.loads(data)["body_len"] == 3


def test_http10_closes(env):
    gw, _ = env
    data, closed = raw_ex(gw.port, b"GET /h10 HTTP/1.0\r\nHost: ka\r\n\r\n", timeout=scaled(5))
    r = parse_response(data)
    assert r.status == 200
    assert r.json()["path"] == "/h10"
    assert closed, "HTTP/1.0 request without keep-alive: connection left open"


def test_idle_pooled_upstream_connections_expire(gateway, backends):
    """A pooled upstream connection unused for limits.idle_timeout is
    closed by the gateway (a middlebox dropping idle flows silently would
    otherwise leave dead connections in the pool)."""
    b = backends("idle")
    cfg = make_config(free_port(), {"u": upstream(b.port)},
                      [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}],
                      limits={"idle_timeout": "300ms"})
    gw = gateway(cfg)
    assert requests.get(gw.u("/tiny")).status_code == 200
    assert b.stats()["active"] >= 1  # pooled and open
    wait_until(lambda: b.stats()["active"] == 0, scaled(5), what="pooled connection closed")
    # and the next request simply opens a new one
    assert requests.get(gw.u("/tiny")).status_code == 200


def test_http10_keepalive_gateway_response_says_keep_alive(tmp_path):
    """A gateway-made response (404 here) to an HTTP/1.0 keep-alive client
    kept the connection open without saying `Connection: keep-alive`, so
    the client had to assume it closes (proxied responses said it)."""
    with backend("ka10") as b:
        routes = [{"name": "a", "match": {"path_prefix": "/a"}, "upstream": "u"}]
        gw = Gateway(one_route(b.port, routes), tmp_path)
        try:
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
            try:
                for path in (b"/nope", b"/a/echo", b"/nope"):
                    s.sendall(b"GET " + path + b" HTTP/1.0\r\nHost: h\r\n"
                              b"Connection: keep-alive\r\n\r\n")
                    rs = read_responses(s, 1, scaled(5))
                    assert rs, path
                    assert rs[0].status in (200, 404), rs[0]
                    assert (rs[0].header("connection") or "").lower() == "keep-alive", rs[0]
            finally:
                s.close()
        finally:
            gw.stop()
