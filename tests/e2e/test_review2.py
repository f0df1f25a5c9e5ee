"""Regression tests from the second data-plane review (framing, smuggling,
pooled-connection hygiene, client aborts, truncated responses). Each test
fails on the build before its fix; all run on both I/O backends."""

import contextlib
import json
import os
import signal
import socket
import struct
import threading
import time

from conftest import (Gateway, backend, free_port, make_config, parse_response, parse_responses,
                      raw_ex, scaled, upstream, wait_until)
from test_review import RawUpstream, content_length, read_head, then_close_upstream


def one_route(port, up_port, **kw):
    return make_config(port, {"u": upstream(up_port)},
                       [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}],
                       workers=1, **kw)


def recv_all(s):
    """Reads to EOF; returns (bytes, how) with how in eof/reset/timeout."""
    buf = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                return buf, "eof"
            buf += c
    except ConnectionResetError:
        return buf, "reset"
    except socket.timeout:
        return buf, "timeout"


def request(port, data, timeout=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout or scaled(5))
    try:
        s.sendall(data)
        return recv_all(s)
    finally:
        s.close()


def log_lines(path, n):
    def got():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            ls = [json.loads(x) for x in f.read().splitlines() if x.strip()]
        return ls if len(ls) >= n else None
    return wait_until(got, scaled(10), what="%d access log lines" % n)


@contextlib.contextmanager
def logged_gateway(tmp_path, up_port):
    """A one-route gateway writing its access log to a file: (gw, log path)."""
    log = os.path.join(str(tmp_path), "access.log")
    if os.path.exists(log):
        os.unlink(log)
    gw = Gateway(one_route(free_port(), up_port, access_log={"path": log}), tmp_path)
    try:
        yield gw, log
    finally:
        gw.stop()


# ---------------------------------------------------------------- smuggling via Connection

class Recorder:
    """An upstream that frames requests by their own headers, records each
    (head, body) and answers 200 "ok"."""

    def __init__(self):
        self.seen = []
        self.up = RawUpstream(self.handle)

    def handle(self, s):
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            n = content_length(head) or 0
            while len(buf) < n:
                c = s.recv(65536)
                if not c:
                    return
                buf += c
            self.seen.append((head, buf[:n]))
            buf = buf[n:]
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_connection_header_cannot_strip_the_request_length(tmp_path):
    # "Connection: content-length" used to remove the length the gateway
    # framed the body by: the body then reached the upstream as a second
    # request that no route, filter or limit had seen.
    rec = Recorder()
    gw = Gateway(one_route(free_port(), rec.up.port), tmp_path)
    try:
        smuggled = b"GET /admin/secret HTTP/1.1\r\nHost: internal\r\n\r\n"
        req = (b"POST /public HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n"
               b"Content-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
        buf, _ = raw_ex(gw.port, req, timeout=scaled(2), until_complete=True)
        assert parse_response(buf).status == 200
        wait_until(lambda: rec.seen, scaled(5), what="the upstream to see the request")
        time.sleep(0.2)  # a second (smuggled) request would arrive now
        assert len(rec.seen) == 1, rec.seen
        head, body = rec.seen[0]
        assert head.startswith(b"POST /public ")
        assert content_length(head) == len(smuggled)
        assert body == smuggled
    finally:
        gw.stop()
        rec.up.close()


def test_connection_header_cannot_strip_the_response_length(tmp_path):
    def handle(s):
        buf = b""
        while True:
            _, buf = read_head(s, buf)
            s.sendall(b"HTTP/1.1 200 OK\r\nConnection: content-length\r\n"
                      b"Content-Length: 5\r\n\r\nhello")
    up = RawUpstream(handle)
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    try:
        req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        buf, _ = raw_ex(gw.port, req + req, timeout=scaled(2))
        rs, _ = parse_responses(buf, eof=False)
        assert [r.status for r in rs] == [200, 200], buf
        assert all(r.body == b"hello" for r in rs)
        assert buf.lower().count(b"content-length: 5\r\n") == 2, buf
    finally:
        gw.stop()
        up.close()


def test_interim_response_drops_connection_listed_fields(tmp_path):
    def handle(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: x-foo\r\n"
                  b"X-Foo: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    up = RawUpstream(handle)
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    try:
        buf, _ = raw_ex(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=scaled(2),
                        until_complete=True)
        assert buf.startswith(b"HTTP/1.1 103 "), buf
        interim = buf[:buf.index(b"\r\n\r\n")].lower()
        assert b"link: </a.css>" in interim
        assert b"x-foo" not in interim, interim
    finally:
        gw.stop()
        up.close()


# ---------------------------------------------------------------- heads and methods

def test_head_over_the_default_limit_gets_431_or_414(tmp_path):
    # With the default max_header_bytes (16 KiB, the pooled buffer size) a
    # full buffer used to read 0 bytes, look like EOF and close: no answer.
    with backend("lim") as b:
        gw = Gateway(one_route(free_port(), b.port), tmp_path)
        try:
            big = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
            buf, _ = raw_ex(gw.port, big, timeout=scaled(3), until_complete=True)
            assert parse_response(buf).status == 431, buf[:200]
            long_target = b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            buf, _ = raw_ex(gw.port, long_target, timeout=scaled(3), until_complete=True)
            assert parse_response(buf).status == 414, buf[:200]
        finally:
            gw.stop()


def test_connect_is_not_implemented(tmp_path):
    rec = Recorder()
    cfg = make_config(free_port(), {"u": upstream(rec.up.port)},
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
        rec.up.close()


# ---------------------------------------------------------------- pooled connections

EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"


def stray_bytes_upstream():
    # /first: a 16 KiB body whose last read fills the gateway's buffer
    # exactly, followed in the same write by bytes no request asked for.
    def handle(s):
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            if head.startswith(b"GET /first"):
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 16384\r\n\r\n")
                time.sleep(0.2)
                s.sendall(b"a" * 16384 + EVIL)
            else:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
    return RawUpstream(handle)


def test_bytes_after_a_response_never_reach_the_next_request(tmp_path):
    up = stray_bytes_upstream()
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    try:
        buf, _ = request(gw.port, b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert parse_response(buf).body == b"a" * 16384
        for i in range(3):
            buf, _ = request(gw.port, b"GET /second%d HTTP/1.1\r\nHost: a\r\n"
                             b"Connection: close\r\n\r\n" % i)
            assert parse_response(buf).body == b"good", buf
    finally:
        gw.stop()
        up.close()


def test_bytes_after_a_response_never_reach_a_pipelined_request(tmp_path):
    up = stray_bytes_upstream()
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    try:
        buf, _ = request(gw.port, b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
                         b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        rs, _ = parse_responses(buf)
        assert [r.body for r in rs] == [b"a" * 16384, b"good"], buf[-100:]
    finally:
        gw.stop()
        up.close()


def test_fin_with_the_last_byte_is_not_reused_by_a_pipelined_request(tmp_path):
    up = RawUpstream(then_close_upstream)
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    try:
        for _ in range(3):
            buf, _ = request(gw.port, b"GET /then-close HTTP/1.1\r\nHost: a\r\n\r\n"
                             b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                             b"Connection: close\r\n\r\nxyz")
            rs, _ = parse_responses(buf)
            assert [(r.status, r.body) for r in rs] == [(200, b"abc"), (200, b"posted")], buf
    finally:
        gw.stop()
        up.close()


def test_stale_pooled_connection_is_retried_on_a_new_one(tmp_path):
    # Each connection answers one request, then closes on the next one
    # unanswered. The retry used to take another (equally stale) pooled
    # connection and give up with 502.
    def handle(s):
        buf = b""
        head, buf = read_head(s, buf)
        if head.startswith(b"GET /hold"):
            time.sleep(0.5)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        read_head(s, buf)  # the next request: close without an answer
    up = RawUpstream(handle)
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    try:
        hold = b"GET /hold HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ts = [threading.Thread(target=request, args=(gw.port, hold)) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert up.accepts == 3
        time.sleep(0.1)
        buf, _ = request(gw.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert parse_response(buf).status == 200, buf
        assert up.accepts == 4
    finally:
        gw.stop()
        up.close()


# ---------------------------------------------------------------- aborts and truncation

def test_client_leaving_during_a_slow_upstream_is_logged_499(tmp_path):
    with backend("abort") as b, logged_gateway(tmp_path, b.port) as (gw, log):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 3000\r\n\r\n")
        time.sleep(0.3)
        s.close()
        d = log_lines(log, 1)[0]
        assert d["status"] == 499, d
        assert d["error"] == "client closed the connection"


def test_half_closed_client_with_a_pipelined_request_is_answered(tmp_path):
    # A FIN behind unread pipelined bytes is not a client that left.
    with backend("hc") as b:
        gw = Gateway(one_route(free_port(), b.port), tmp_path)
        try:
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
            s.sendall(b"GET /a HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 200\r\n\r\n"
                      b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            buf, how = recv_all(s)
            s.close()
            rs, _ = parse_responses(buf)
            assert [r.status for r in rs] == [200, 200], (buf[:300], how)
        finally:
            gw.stop()


def test_half_closed_client_reading_a_large_pipelined_response_gets_it_all(tmp_path):
    # Edge-triggered epoll repeats RDHUP in every later event: a hangup
    # excused for the pipelined bytes must not be judged again when the
    # socket drains mid-response.
    with backend("hcl") as b:
        gw = Gateway(one_route(free_port(), b.port), tmp_path)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # fills at once
            s.settimeout(scaled(5))
            s.connect(("127.0.0.1", gw.port))
            s.sendall(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                      b"GET /bytes/4000000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            time.sleep(0.5)  # the client's receive buffer fills; the gateway waits for EPOLLOUT
            buf, how = recv_all(s)
            s.close()
            rs, _ = parse_responses(buf)
            assert [r.status for r in rs] == [200, 200], (len(buf), how)
            assert len(rs[1].body) == 4000000 and rs[1].complete
        finally:
            gw.stop()


def test_reset_after_a_close_delimited_body_is_not_a_clean_end(tmp_path):
    # A response without length ends at close; when the upstream resets
    # instead, the client must not see a clean FIN (that would pass the cut
    # body off as complete). HTTP/1.0 clients get de-chunked bodies that end
    # at close too.
    def no_length(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"partial-" * 100)
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def cut_chunked(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + b"x" * 50)
        time.sleep(0.2)

    def bad_chunk(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.2)
        s.sendall(b"zz\r\nbroken\r\n")
        time.sleep(0.2)

    for handler, version, why in ((no_length, b"1.1", "upstream connection reset"),
                                  (cut_chunked, b"1.0", "upstream truncated the response"),
                                  (bad_chunk, b"1.0", "invalid upstream body framing")):
        up = RawUpstream(handler)
        try:
            with logged_gateway(tmp_path, up.port) as (gw, log):
                buf, how = request(gw.port, b"GET /x HTTP/" + version + b"\r\nHost: a\r\n\r\n")
                assert buf.startswith(b"HTTP/1.1 200 "), buf[:100]
                assert how == "reset", (version, how, len(buf))
                d = log_lines(log, 1)[0]
                assert d["error"] == why, d
        finally:
            up.close()


def test_download_abort_is_logged_with_an_error(tmp_path):
    with backend("dl") as b, logged_gateway(tmp_path, b.port) as (gw, log):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = 0
        while got < 200000:
            got += len(s.recv(65536))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        d = log_lines(log, 1)[0]
        assert d["status"] == 200
        assert d["error"] == "client closed the connection", d
        assert d["bytes_out"] < 50000000


def test_drain_timeout_resets_a_close_delimited_body(tmp_path):
    # A download without length still running at the drain timeout is cut:
    # with a FIN its client would take the partial body as the whole.
    def trickle(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstart-")
        for _ in range(100):
            time.sleep(0.1)
            s.sendall(b"more-")

    up = RawUpstream(trickle)
    cfg = one_route(free_port(), up.port, limits={"drain_timeout": "300ms"})
    gw = Gateway(cfg, tmp_path)
    try:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
        s.sendall(b"GET /dl HTTP/1.1\r\nHost: a\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first
        gw.send(signal.SIGTERM)
        buf, how = recv_all(s)
        s.close()
        assert how == "reset", (how, len(buf))
        assert gw.proc.wait(timeout=scaled(10)) == 0
    finally:
        gw.stop()
        up.close()
