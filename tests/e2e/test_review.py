"""Regression tests from the data-plane review: each test reproduces one bug
found in conn.c / pool.c / admin.c (memory safety, HTTP semantics, timeouts,
early upstream responses, stale pooled connections, drain)."""

import json
import signal
import socket
import threading
import time

import requests

from conftest import (Gateway, backend, echo_headers, free_port, make_config, parse_response,
                      raw_ex, read_responses, scaled, upstream,
                      wait_until)


# ---------------------------------------------------------------- a scripted upstream

class RawUpstream:
    """A loopback TCP server whose every connection runs `handler(sock)` on
    its own thread: for upstream behaviour the demo backend cannot produce."""

    def __init__(self, handler):
        self.handler = handler
        self.port = free_port()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(1024)
        self.accepts = 0
        self.stopped = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stopped:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            self.accepts += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            self.handler(s)
        except OSError:
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.stopped = True
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()


def read_head(s, buf=b""):
    """Reads until the end of a request head; returns (head, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("eof before head")
        buf += chunk
    k = buf.index(b"\r\n\r\n") + 4
    return buf[:k], buf[k:]


def read_body(s, head, buf):
    """Reads the Content-Length body that follows `head` (buf holds what
    came with it); returns (body, rest), or None at EOF."""
    n = content_length(head)
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return buf[:n], buf[n:]


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v.strip())
    return 0


def one_route_cfg(port, routes=None, workers=1, limits=None, **up_extra):
    return make_config(free_port(), {"u": upstream(port, **up_extra)},
                       routes or [{"name": "all", "match": {"path_prefix": "/"},
                                   "upstream": "u"}],
                       workers=workers, limits=limits)


# ---------------------------------------------------------------- memory safety

def test_long_upstream_reason_phrase(tmp_path):
    """build_client_head sized its buffer from the header fields only: a
    long reason phrase from the upstream ran past the arena allocation."""
    reason = b"R" * 16000

    def handler(s):
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            s.sendall(b"HTTP/1.1 200 " + reason + b"\r\nContent-Length: 2\r\n\r\nok")

    up = RawUpstream(handler)
    gw = Gateway(one_route_cfg(up.port), tmp_path)
    try:
        for _ in range(20):
            data, _ = raw_ex(gw.port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", timeout=scaled(5),
                             until_complete=True)
            r = parse_response(data)
            assert r.status == 200 and r.body == b"ok", r
        # Many connections at once make the worker allocate (connection
        # objects, buffers), which trips over a corrupted heap.
        socks = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(100)]
        for s in socks:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        for s in socks:
            s.settimeout(scaled(5))
            got = b""
            while len(got) < 12:
                chunk = s.recv(12 - len(got))
                assert chunk, "connection closed without a response"
                got += chunk
            assert got == b"HTTP/1.1 200"
            s.close()
        assert gw.proc.poll() is None, "gateway died"
    finally:
        gw.stop()
        up.close()


def test_rewrite_uses_a_parameter_twice(tmp_path):
    """rewrite_path sized the new path with each parameter counted once: a
    template that uses a parameter twice overflowed the arena allocation."""
    with backend("rw") as b:
        routes = [{"name": "rw", "match": {"path_template": "/r/{id}"}, "upstream": "u",
                   "rewrite": "/echo/{id}/{id}/{id}"}]
        gw = Gateway(one_route_cfg(b.port, routes), tmp_path)
        try:
            ident = "a" * 3000
            for _ in range(3):
                r = requests.get(gw.u("/r/" + ident), timeout=scaled(5))
                assert r.status_code == 200, r.content[:200]
                assert r.json()["path"] == "/echo/%s/%s/%s" % (ident, ident, ident)
            assert gw.proc.poll() is None, "gateway died"
        finally:
            gw.stop()


# ---------------------------------------------------------------- Host upstream

def test_http10_request_without_host(tmp_path):
    """HTTP/1.0 makes Host optional, but the request goes upstream as
    HTTP/1.1, where it is required: it went without one and upstreams
    rejected it (400)."""
    with backend("h10") as b:
        gw = Gateway(one_route_cfg(b.port), tmp_path)
        try:
            for target in (b"/echo", b"http://a.example/echo"):
                data, _ = raw_ex(gw.port, b"GET " + target + b" HTTP/1.0\r\n\r\n",
                                 timeout=scaled(5))
                r = parse_response(data)
                assert r.status == 200, (target, r)
                hosts = echo_headers(r.json(), "host")
                assert len(hosts) == 1 and hosts[0], hosts
            data, _ = raw_ex(gw.port, b"GET /echo HTTP/1.0\r\n\r\n", timeout=scaled(5))
            assert echo_headers(parse_response(data).json(), "host") == ["127.0.0.1:%d" % b.port]
        finally:
            gw.stop()


def test_absolute_form_authority_replaces_host(tmp_path):
    """With an absolute-form target the gateway routed by the target's
    authority but forwarded the client's (different) Host field, so the
    upstream saw a host the route never matched. RFC 9112 3.2.2: the
    authority replaces the Host field."""
    with backend("abs") as b:
        routes = [{"name": "a", "match": {"hosts": ["a.example"], "path_prefix": "/"},
                   "upstream": "u"}]
        gw = Gateway(one_route_cfg(b.port, routes), tmp_path)
        try:
            data, _ = raw_ex(gw.port, b"GET http://a.example/echo HTTP/1.1\r\n"
                                      b"Host: b.example\r\n\r\n", timeout=scaled(5))
            r = parse_response(data)
            assert r.status == 200, r
            assert echo_headers(r.json(), "host") == ["a.example"]
            # origin-form is untouched
            r = requests.get(gw.u("/echo"), headers={"Host": "a.example:8080"}, timeout=scaled(5))
            assert echo_headers(r.json(), "host") == ["a.example:8080"]
        finally:
            gw.stop()


def test_http10_keepalive_gateway_response(tmp_path):
    """A gateway-made response (404 here) to an HTTP/1.0 keep-alive client
    kept the connection open without saying `Connection: keep-alive`, so
    the client had to assume it closes (proxied responses said it)."""
    with backend("ka10") as b:
        routes = [{"name": "a", "match": {"path_prefix": "/a"}, "upstream": "u"}]
        gw = Gateway(one_route_cfg(b.port, routes), tmp_path)
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


# ---------------------------------------------------------------- timeouts

def test_upload_slower_than_read_timeout(tmp_path):
    """The upstream read timer was armed when the request started and never
    re-armed while the body went out: an upload taking longer than
    read_timeout got a 504 although the upstream was taking every byte."""
    with backend("up") as b:
        gw = Gateway(one_route_cfg(b.port, read_timeout="1s"), tmp_path)
        try:
            pieces = 12
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
            try:
                s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                          % (pieces * 1000))
                try:
                    for _ in range(pieces):  # 3 s in all, 250 ms between pieces
                        time.sleep(0.25)
                        s.sendall(b"u" * 1000)
                except OSError:
                    pass  # the gateway gave up on the request: its answer says why
                rs = read_responses(s, 1, scaled(10))
            finally:
                s.close()
            assert rs, "no complete response"
            r = rs[0]
            assert r.status == 200, r
            assert r.json()["body_len"] == pieces * 1000
        finally:
            gw.stop()


def test_slow_reader_not_cut_by_upstream_read_timeout(tmp_path):
    """While the client does not take the bytes already read, the gateway is
    not waiting for the upstream: its read timeout must not fire then (the
    client has its own send timeout)."""
    size = 32 * 1024 * 1024
    with backend("sr") as b:
        gw = Gateway(one_route_cfg(b.port, read_timeout="1s"), tmp_path)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            s.settimeout(scaled(10))
            s.connect(("127.0.0.1", gw.port))
            try:
                s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
                got = b""
                while len(got) < 1024 * 1024:
                    chunk = s.recv(65536)
                    assert chunk, "closed early"
                    got += chunk
                time.sleep(2.5)  # the stalled reader
                k = got.index(b"\r\n\r\n") + 4
                head, n = got[:k], len(got) - k
                while n < size:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    n += len(chunk)
            finally:
                s.close()
            assert head.startswith(b"HTTP/1.1 200"), head
            assert n == size, "body cut at %d of %d bytes" % (n, size)
        finally:
            gw.stop()


# ---------------------------------------------------------------- early responses

def test_early_response_then_upstream_closes(tmp_path):
    """An upstream that answers before reading the body (its own 413) and
    closes: the gateway's next body write fails, and it threw away the
    response waiting in the socket and said 502."""
    def handler(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n"
                  b"Connection: close\r\n\r\ntoo large")
        # close with the body unread: the kernel resets the connection

    up = RawUpstream(handler)
    gw = Gateway(one_route_cfg(up.port, limits={"max_body_bytes": "100MiB"}), tmp_path)
    try:
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
    finally:
        gw.stop()
        up.close()


def test_request_body_error_after_response_started(tmp_path):
    """A malformed chunk arriving after the upstream's response head went
    out: the gateway wrote its own 400 response into the middle of the
    upstream's response body. The only honest signal left is to cut the
    connection."""
    def handler(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        while s.recv(65536):
            pass

    up = RawUpstream(handler)
    gw = Gateway(one_route_cfg(up.port), tmp_path)
    try:
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
    finally:
        gw.stop()
        up.close()


# ---------------------------------------------------------------- upstream pool

def then_close_upstream(s):
    """GET /then-close: answered with its FIN right behind the last byte;
    anything else: "posted"."""
    buf = b""
    while True:
        head, buf = read_head(s, buf)
        got = read_body(s, head, buf)
        if got is None:
            return
        buf = got[1]
        if head.startswith(b"GET /then-close"):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab")
            time.sleep(0.2)
            # the last byte and the FIN in one segment
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            s.send(b"c")
            return
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nposted")


def test_upstream_closed_during_response_not_pooled(tmp_path):
    """The upstream's FIN arrived together with the end of a keep-alive
    response: the gateway saw it (EPOLLRDHUP) and still pooled the
    connection. With edge-triggered epoll no further event comes for it, so
    the next request was written to a dead socket; with a body it cannot be
    retried and got a 502."""
    up = RawUpstream(then_close_upstream)
    gw = Gateway(one_route_cfg(up.port), tmp_path)
    try:
        for _ in range(3):
            r = requests.get(gw.u("/then-close"), timeout=scaled(5))
            assert r.status_code == 200 and r.content == b"abc"
            r = requests.post(gw.u("/p"), data=b"x" * 100, timeout=scaled(5))
            assert r.status_code == 200, r.content
            assert r.content == b"posted"
    finally:
        gw.stop()
        up.close()


# ---------------------------------------------------------------- drain

def test_drain_response_says_connection_close(tmp_path):
    """A response finished during a drain is the connection's last: it must
    say so, or a keep-alive client sends its next request into a close."""
    with backend("dr") as b:
        cfg = one_route_cfg(b.port, limits={"drain_timeout": "10s"})
        gw = Gateway(cfg, tmp_path)
        try:
            idle_active = b.stats()["active"]
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
            try:
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 1500\r\n\r\n")
                wait_until(lambda: b.stats()["active"] > idle_active, scaled(5),
                           what="request at the backend")
                gw.send(signal.SIGTERM)
                rs = read_responses(s, 1, scaled(10))
            finally:
                s.close()
            assert rs, "no complete response"
            r = rs[0]
            assert r.status == 200, r
            assert (r.header("connection") or "").lower() == "close", r.headers
            assert gw.proc.wait(timeout=scaled(15)) == 0
        finally:
            gw.stop()


# ---------------------------------------------------------------- admin

def test_admin_answers_a_half_closed_client(tmp_path):
    """A client that sends its request and shuts down its write side (nc -N,
    many scripts) got no answer: EOF closed the admin connection before the
    complete request in the buffer was handled."""
    with backend("ad") as b:
        admin = free_port()
        cfg = make_config(free_port(), {"u": upstream(b.port)},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}],
                          admin_port=admin)
        gw = Gateway(cfg, tmp_path)
        try:
            wait_until(lambda: requests.get("http://127.0.0.1:%d/status" % admin,
                                            timeout=scaled(5)).ok, scaled(5), what="admin")
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", admin), timeout=scaled(5))
                try:
                    s.sendall(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n")
                    s.shutdown(socket.SHUT_WR)
                    buf = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                finally:
                    s.close()
                r = parse_response(buf)
                assert r.status == 200, buf[:200]
                assert "generation" in json.loads(r.body)
        finally:
            gw.stop()


# ---------------------------------------------------------------- interim responses

def test_early_hints_forwarded_to_http11_clients(tmp_path):
    """103 Early Hints from the upstream reach an HTTP/1.1 client before the
    final response (RFC 9110 §15.2), hop-by-hop fields stripped; an
    HTTP/1.0 client, which cannot parse interim responses, gets only the
    final one."""

    def handler(s):
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n"
                      b"Keep-Alive: timeout=5\r\n\r\n")
            time.sleep(0.05)
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = RawUpstream(handler)
    gw = Gateway(one_route_cfg(up.port), tmp_path)
    try:
        data, _ = raw_ex(gw.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                         timeout=scaled(5))
        assert data.startswith(b"HTTP/1.1 103 Early Hints\r\n"), data[:200]
        interim, _, final = data.partition(b"\r\n\r\n")
        assert b"Link: </s.css>; rel=preload" in interim
        assert b"Keep-Alive" not in interim
        r = parse_response(final)
        assert r.status == 200 and r.body == b"ok"
        data, _ = raw_ex(gw.port, b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n", timeout=scaled(5))
        assert data.startswith(b"HTTP/1.1 200 OK"), data[:200]
        assert b"103" not in data.split(b"\r\n")[0]
    finally:
        gw.stop()
        up.close()
