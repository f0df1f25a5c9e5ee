"""Upstream failures: 502 / 504 as JSON errors, broken framing never passed
off as success (a cut or reset body is a reset for the client too, never a
clean end), broken connections never reused, an upstream's early answer
relayed although it closed before taking the whole body."""

import socket
import struct
import threading

import pytest
import requests

from conftest import (Gateway, RawUpstream, access_log_lines, assert_error_resp,
                      assert_error_response, backend, free_port, logged_gateway, make_config,
                      one_route, parse_response, parse_responses, raw_ex, raw_until_close,
                      read_head, read_responses, scaled, upstream, wait_peer_read)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("er") as b:
        dead = free_port()  # nothing ever listens here
        ups = {
            "dead": upstream(dead, connect_timeout="1s"),
            "brk": upstream(b.port, read_timeout="1s"),
            "slow": upstream(b.port, read_timeout="500ms"),
            "patient": upstream(b.port, read_timeout="10s"),
        }
        routes = [
            {"name": "dead", "match": {"path_prefix": "/dead"}, "upstream": "dead"},
            {"name": "brk", "match": {"path_prefix": "/brk"}, "upstream": "brk"},
            {"name": "slow", "match": {"path_prefix": "/slow"}, "upstream": "slow"},
            {"name": "rt", "match": {"path_prefix": "/rt"}, "upstream": "patient",
             "timeout": "400ms"},
        ]
        gw = Gateway(make_config(free_port(), ups, routes), tmp_path_factory.mktemp("errors"))
        try:
            yield gw, b
        finally:
            gw.stop()


def test_502_connection_refused(env):
    gw, _ = env
    r = requests.get(gw.u("/dead/x"), timeout=scaled(10))
    assert_error_response(r, 502)
    assert "X-Backend" not in r.headers


def test_502_keeps_client_request_id(env):
    gw, _ = env
    r = requests.get(gw.u("/dead/x"), headers={"X-Request-ID": "err-rid-1"}, timeout=scaled(10))
    assert_error_response(r, 502, sent_request_id="err-rid-1")


@pytest.mark.parametrize("mode", ["reset", "close", "garbage", "bad-cl"])
def test_502_broken_upstream_head(env, mode):
    gw, _ = env
    r = requests.get(gw.u("/brk/x"), headers={"X-Demo-Break": mode}, timeout=scaled(10))
    assert_error_response(r, 502)


def test_504_upstream_hangs(env):
    gw, _ = env
    r = requests.get(gw.u("/brk/x"), headers={"X-Demo-Break": "hang"}, timeout=scaled(15))
    assert_error_response(r, 504)


def test_504_read_timeout(env):
    gw, _ = env
    r = requests.get(gw.u("/slow/x"), headers={"X-Demo-Delay": "3000"}, timeout=scaled(15))
    assert_error_response(r, 504)


def test_504_route_timeout(env):
    gw, _ = env
    r = requests.get(gw.u("/rt/x"), headers={"X-Demo-Delay": "3000"}, timeout=scaled(15))
    assert_error_response(r, 504)


def test_504_then_next_request_ok(env):
    """The timed-out upstream connection (whose late answer is still on its
    way) must not be reused for the next request."""
    gw, _ = env
    s = requests.Session()
    r = s.get(gw.u("/slow/a"), headers={"X-Demo-Delay": "800"}, timeout=scaled(15))
    assert r.status_code == 504
    for i in range(5):
        r = s.get(gw.u("/slow/b%d" % i), timeout=scaled(10))
        assert r.status_code == 200, (i, r.status_code, r.text[:200])
        assert r.json()["path"] == "/slow/b%d" % i


def test_upstream_error_status_passed_through(env):
    """A 503 from the upstream is the upstream's answer, not a gateway error."""
    gw, _ = env
    r = requests.get(gw.u("/brk/x"), headers={"X-Demo-Status": "503"}, timeout=scaled(10))
    assert r.status_code == 503
    assert r.headers.get("X-Backend", "").startswith("er:")
    assert r.headers.get("X-Request-ID")


@pytest.mark.parametrize("mode", ["short", "bad-chunk"])
def test_broken_body_never_complete_success(env, mode):
    """The head may already be on its way when the body breaks: then the
    client connection must be closed so the client sees a truncated
    response. A clean 502 is acceptable too. A complete-looking 2xx is not."""
    gw, _ = env
    req = b"GET /brk/body HTTP/1.1\r\nHost: er\r\nX-Demo-Break: %s\r\n\r\n" % mode.encode()
    data, closed = raw_ex(gw.port, req, timeout=scaled(8), until_complete=True)
    assert data, "no bytes at all"
    rs, _ = parse_responses(data, eof=closed)
    assert rs, data[:300]
    r = rs[0]
    if r.status == 502 and r.complete:
        assert_error_resp(r, 502)
        return
    assert 200 <= r.status < 300, r
    assert closed, "body broke but the client connection was left open: %r" % r
    # close-delimited responses can't signal truncation, so the gateway
    # must have framed it (CL or chunked) and the framing must be unmet
    assert r.header("Content-Length") is not None or \
        "chunked" in (r.header("Transfer-Encoding") or "").lower(), r
    assert not r.complete, "broken upstream body forwarded as a complete response: %r" % r


@pytest.mark.parametrize("mode", ["reset", "close", "garbage", "bad-cl", "short", "bad-chunk"])
def test_broken_connection_not_reused(env, mode):
    gw, _ = env
    s = requests.Session()
    try:
        s.get(gw.u("/brk/x"), headers={"X-Demo-Break": mode}, timeout=scaled(10))
    except requests.RequestException:
        pass  # truncated response
    for i in range(6):
        r = requests.get(gw.u("/brk/after-%d" % i), timeout=scaled(10))
        assert r.status_code == 200, (mode, i, r.status_code, r.text[:200])
        assert r.json()["path"] == "/brk/after-%d" % i


def test_client_keepalive_survives_502(env):
    """A gateway-made 502 doesn't need to cost the client its connection;
    if the gateway keeps it open, the next request on it must work."""
    gw, _ = env
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    try:
        s.sendall(b"GET /dead/1 HTTP/1.1\r\nHost: er\r\n\r\n")
        rs = read_responses(s, 1, scaled(10))
        assert rs and rs[0].status == 502
        if (rs[0].header("Connection") or "").lower() == "close":
            return
        s.sendall(b"GET /brk/next HTTP/1.1\r\nHost: er\r\nConnection: close\r\n\r\n")
        buf = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            buf += c
    finally:
        s.close()
    rs, _ = parse_responses(buf)
    assert rs and rs[0].status == 200, rs
    assert rs[0].json()["path"] == "/brk/next"


# ---------------------------------------------------------------- scripted upstream failures

@pytest.mark.heavy
def test_early_response_is_relayed_when_the_upstream_closes_mid_upload(gateway, raw_upstream):
    """An upstream that answers before reading the body (its own 413) and
    closes: the gateway's next body write fails, and it threw away the
    response waiting in the socket and said 502."""
    def handler(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n"
                  b"Connection: close\r\n\r\ntoo large")
        # close with the body unread: the kernel resets the connection

    up = raw_upstream(handler)
    gw = gateway(one_route(up.port, limits={"max_body_bytes": "100MiB"}))
    size = 32 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))

    def send():
        try:
            s.sendall(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"b" * (1 << 20)
            for _ in range(size // len(block)):
                s.sendall(block)
        except OSError:
            pass

    t = threading.Thread(target=send, daemon=True)
    t.start()
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    finally:
        s.close()
        t.join(scaled(10))
    r = parse_response(buf)
    assert r.status == 413 and r.body == b"too large", r


def test_reset_after_a_close_delimited_body_is_not_a_clean_end(tmp_path):
    # A response without length ends at close; when the upstream resets
    # instead, the client must not see a clean FIN (that would pass the cut
    # body off as complete). HTTP/1.0 clients get de-chunked bodies that end
    # at close too. Each upstream waits for the gateway to have read its
    # bytes before it breaks off, so the client has been sent a head.
    def no_length(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"partial-" * 100)
        wait_peer_read(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def cut_chunked(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + b"x" * 50)
        wait_peer_read(s)

    def bad_chunk(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        wait_peer_read(s)
        s.sendall(b"zz\r\nbroken\r\n")
        wait_peer_read(s)

    for handler, version, why in ((no_length, b"1.1", "upstream connection reset"),
                                  (cut_chunked, b"1.0", "upstream truncated the response"),
                                  (bad_chunk, b"1.0", "invalid upstream body framing")):
        up = RawUpstream(handler)
        try:
            with logged_gateway(tmp_path, up.port) as (gw, log):
                buf, how = raw_until_close(gw.port, b"GET /x HTTP/" + version +
                                           b"\r\nHost: a\r\n\r\n")
                assert buf.startswith(b"HTTP/1.1 200 "), buf[:100]
                assert how == "reset", (version, how, len(buf))
                d = access_log_lines(log, 1)[0]
                assert d["error"] == why, d
        finally:
            up.close()
