"""Malformed and smuggling-shaped requests over a raw socket.

Each must get a gateway-made 400 (or 501/505 where the RFC says so), the
connection must be closed, and — checked through the backend's own request
counter — nothing may reach the upstream (for body-framing errors, where
the head may legitimately already be on its way, at most that one request
and never the smuggled one behind it).

CONNECT is refused with 501 (the gateway offers no tunnels; nothing is
forwarded); a broken chunk that
arrives after the upstream's response has started cuts the connection
rather than write a 400 into the middle of that response.
"""

import socket

import pytest
import requests

from conftest import (Gateway, Recorder, assert_error_resp, backend, free_port,
                      make_config, one_route, parse_response, raw_ex, read_head, scaled, upstream)

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

# (id, request bytes, allowed statuses, body_error)
#   body_error: the head is valid and the error is in the body framing, so
#   the upstream may already have seen (at most) this one request.
CASES = [
    ("cl-and-te",
     b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, {400}, False),
    ("te-and-cl",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, {400}, False),
    ("cl-duplicate-differing",
     b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", {400},
     False),
    ("cl-list-differing",
     b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", {400}, False),
    ("cl-overflow",
     b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551617\r\n\r\nx", {400, 413},
     False),
    ("cl-negative", b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", {400}, False),
    ("cl-plus-sign", b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", {400}, False),
    ("cl-hex", b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", {400}, False),
    ("cl-empty", b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", {400}, False),
    ("space-before-colon",
     b"POST /m HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello", {400}, False),
    ("obs-fold", b"GET /m HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", {400}, False),
    ("leading-ws-first-header",
     b"GET /m HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a\r\n\r\n", {400}, False),
    ("bare-cr-in-value", b"GET /m HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", {400}, False),
    ("bare-lf-header-line", b"GET /m HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", {400}, False),
    ("nul-in-value", b"GET /m HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", {400}, False),
    ("ctl-in-value", b"GET /m HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", {400}, False),
    ("bad-token-in-name", b"GET /m HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", {400}, False),
    ("empty-header-name", b"GET /m HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", {400}, False),
    ("missing-host-11", b"GET /m HTTP/1.1\r\nX-A: b\r\n\r\n", {400}, False),
    ("duplicate-host", b"GET /m HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}, False),
    ("host-with-space", b"GET /m HTTP/1.1\r\nHost: a b\r\n\r\n", {400}, False),
    # RFC 9110 §4.2.1: an http URI with an empty host is invalid (nginx: 400).
    ("host-empty", b"GET /m HTTP/1.1\r\nHost:\r\n\r\n", {400}, False),
    ("host-port-only", b"GET /m HTTP/1.1\r\nHost: :80\r\n\r\n", {400}, False),
    ("te-on-http10",
     b"POST /m HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
     {400}, False),
    ("te-chunked-not-last",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", {400, 501},
     False),
    ("te-unknown", b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", {400, 501},
     False),
    ("te-obfuscated",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", {400, 501},
     False),
    ("te-duplicate-chunked",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", {400, 501}, False),
    ("request-line-double-space", b"GET  /m HTTP/1.1\r\nHost: a\r\n\r\n", {400}, False),
    ("request-line-no-version", b"GET /m\r\nHost: a\r\n\r\n", {400}, False),
    ("bad-version-token", b"GET /m FOO/1.1\r\nHost: a\r\n\r\n", {400}, False),
    ("http-version-3", b"GET /m HTTP/3.0\r\nHost: a\r\n\r\n", {400, 505}, False),
    ("target-not-origin-form", b"GET m HTTP/1.1\r\nHost: a\r\n\r\n", {400}, False),
    ("ctl-in-target", b"GET /m\x01x HTTP/1.1\r\nHost: a\r\n\r\n", {400}, False),
    ("bad-method-char", b"G(ET /m HTTP/1.1\r\nHost: a\r\n\r\n", {400}, False),
    # body framing (head is valid)
    ("chunk-size-0x",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
     + SMUGGLED, {400}, True),
    ("chunk-size-negative",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"
     + SMUGGLED, {400}, True),
    ("chunk-size-overflow",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"10000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED, {400, 413}, True),
    ("chunk-bare-lf",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
     + SMUGGLED, {400}, True),
    ("chunk-data-longer-than-size",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"
     + SMUGGLED, {400}, True),
    ("chunk-missing-crlf-after-data",
     b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
     + SMUGGLED, {400}, True),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("mal") as b:
        cfg = make_config(free_port(), {"m": upstream(b.port)},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "m"}],
                          limits={"header_timeout": "%dms" % int(scaled(1000))})
        gw = Gateway(cfg, tmp_path_factory.mktemp("malformed"))
        try:
            # How much does one /__stats call move the backend's counter itself?
            s0 = b.stats()["requests"]
            s1 = b.stats()["requests"]
            yield gw, b, s1 - s0
        finally:
            gw.stop()


def backend_requests(b):
    return b.stats()["requests"]


@pytest.mark.parametrize("name,req,allowed,body_error", CASES, ids=[c[0] for c in CASES])
def test_malformed_rejected(env, name, req, allowed, body_error):
    gw, b, self_cost = env
    before = backend_requests(b)
    data, closed = raw_ex(gw.port, req, timeout=scaled(4))
    after = backend_requests(b)
    assert data, "no response at all (closed=%s)" % closed
    r = parse_response(data)
    assert r.status in allowed, "got %d, want one of %s: %r" % (r.status, sorted(allowed), r)
    assert_error_resp(r, r.status)
    assert closed, "connection left open after a framing error"
    reached = after - before - self_cost
    if body_error:
        assert reached <= 1, "the smuggled request reached the upstream (%d requests)" % reached
    else:
        assert reached == 0, "a malformed request reached the upstream (%d requests)" % reached
    # exactly one response: nothing after the error was processed
    assert data.count(b"HTTP/1.1 ") == 1, data[:500]


def test_counter_sees_valid_requests(env):
    """Control for the check above: a valid request (with identical
    duplicate Content-Length, which is allowed) does reach the backend."""
    gw, b, self_cost = env
    before = backend_requests(b)
    data, _ = raw_ex(gw.port, b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                              b"Content-Length: 5\r\nConnection: close\r\n\r\nhello",
                     timeout=scaled(4))
    after = backend_requests(b)
    r = parse_response(data)
    assert r.status == 200, r
    assert r.json()["body_len"] == 5
    assert after - before - self_cost == 1


@pytest.mark.parametrize("junk", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
    b"\r\n\r\n\r\n\r\n" * 100,                                      # empty lines only
    b"\x00" * 200,
], ids=["tls-hello", "crlf-only", "nul-bytes"])
def test_junk_closed(env, junk):
    """Junk gets a 400 at once or a 408 at header_timeout, and a close;
    the gateway keeps serving."""
    gw, b, self_cost = env
    before = backend_requests(b)
    data, closed = raw_ex(gw.port, junk, timeout=scaled(1) + scaled(3))
    assert closed, "junk connection still open after header_timeout"
    if data:
        r = parse_response(data)
        assert r.status in (400, 408), r
    assert backend_requests(b) - before - self_cost == 0
    r = requests.get(gw.u("/after"), timeout=scaled(5))
    assert r.status_code == 200


def test_connect_is_not_implemented(tmp_path):
    rec = Recorder()
    cfg = make_config(free_port(), {"u": upstream(rec.port)},
                      [{"name": "h", "match": {"hosts": ["api.example.com"]}, "upstream": "u"}],
                      workers=1)
    gw = Gateway(cfg, tmp_path)
    try:
        buf, closed = raw_ex(gw.port, b"CONNECT api.example.com:443 HTTP/1.1\r\n"
                             b"Host: api.example.com:443\r\n\r\n", timeout=scaled(2))
        assert parse_response(buf).status == 501, buf
        assert closed
        assert rec.seen == []
    finally:
        gw.stop()
        rec.close()


def test_request_body_error_after_response_started_cuts_the_connection(gateway, raw_upstream):
    """A malformed chunk arriving after the upstream's response head went
    out: the gateway wrote its own 400 response into the middle of the
    upstream's response body. The only honest signal left is to cut the
    connection."""
    def handler(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        while s.recv(65536):
            pass

    up = raw_upstream(handler)
    gw = gateway(one_route(up.port))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        s.sendall(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n")
        buf = b""
        while not (b"\r\n\r\n" in buf and buf.endswith(b"a" * 10)):
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        s.sendall(b"zz\r\n")  # not a chunk size
        closed = False
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                buf += chunk
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), buf[:200]
    assert body == b"a" * 10, "bytes after the upstream's body: %r" % body[:200]
    assert closed


def test_malformed_chunk_after_the_response_started_cuts_cleanly(gateway, raw_upstream):
    """The upstream answers early (its head and part of its body reach the
    client) while the client's chunked body is still coming; then the
    client sends a malformed chunk: the connection is cut (a second
    response cannot follow the first one's head), nothing of the request
    outlives it (the ASan pass checks the cut path), and the worker
    serves on."""
    done = []

    def handler(s):
        head, _ = read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        s.settimeout(scaled(5))
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
        done.append(True)

    up = raw_upstream(handler)
    gw = gateway(one_route(up.port))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    c.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    got = b""
    while b"hello" not in got:
        chunk = c.recv(65536)
        assert chunk, got
        got += chunk
    c.sendall(b"zz\r\n")  # not a chunk size
    c.settimeout(scaled(5))
    try:
        while c.recv(65536):
            pass
    except ConnectionResetError:
        pass
    c.close()
    # The worker is still fine.
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    s.sendall(b"GET /health-x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200"), "the worker stopped serving"
    s.close()
    assert gw.proc.poll() is None
