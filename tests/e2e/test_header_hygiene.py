"""Header hygiene: fields that could slip past the rules a route writes.

- Request header names with an underscore (limits.headers_with_underscores):
  CGI and WSGI servers map `X-User` and `X_User` to the same variable
  (HTTP_X_USER), so a client could pass a header the route removes, or one
  the gateway sets, by spelling it with underscores. The default drops such
  fields, as nginx does; `reject` answers 400, `allow` forwards them.
- Chunked trailers are not forwarded in either direction (Envoy's HTTP/1
  default): a trailer field is outside every header rule, and a next hop
  that merges trailers into the headers would believe it.
- A Connection field cannot make the gateway drop the Content-Length it
  frames a message by (request or response): the body would then reach
  the next hop as a message of its own, smuggled past every rule.
- Interim (1xx) responses lose the fields their Connection lists.
- The gateway's own resource exhaustion is 503, not an upstream's 502."""

import os
import resource
import socket

import requests

from conftest import (Recorder, answer_every_request, assert_error_resp, assert_error_response,
                      content_length, echo_headers, free_port, make_config, one_route,
                      parse_response, parse_responses, raw, raw_ex, read_head, read_responses,
                      scaled, tcp_sockets, upstream, wait_until, with_backend)


def hygiene_config(port, bport, mode=None):
    limits = {"headers_with_underscores": mode} if mode else None
    return with_backend(make_config(
        port, {"echo": upstream(bport)}, limits=limits,
        routes=[{"name": "admin", "match": {"path_prefix": "/admin"}, "upstream": "echo",
                 "filters": {"request_transform": {"remove_headers": ["X-Internal-User"]}}}]))


def start(gateway, backends, mode=None):
    b = backends("hy")
    gw = gateway(hygiene_config(free_port(), b.port, mode))
    return gw, b


def test_underscored_names_are_dropped_by_default(gateway, backends):
    gw, _ = start(gateway, backends)
    r = requests.get(gw.u("/admin/x"), timeout=scaled(5), headers={
        "X_Internal_User": "root", "X-Internal-User": "root", "X_Forwarded_For": "10.9.9.9",
        "X-Kept": "yes"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    names = [k.lower() for k, _ in doc["headers"]]
    assert "x_internal_user" not in names and "x-internal-user" not in names
    assert "x_forwarded_for" not in names
    assert echo_headers(doc, "X-Forwarded-For") == ["127.0.0.1"]
    assert echo_headers(doc, "X-Kept") == ["yes"]


def test_reject_answers_400_and_forwards_nothing(gateway, backends):
    gw, b = start(gateway, backends, "reject")
    b.reset()
    r = requests.get(gw.u("/admin/x"), timeout=scaled(5), headers={"X_Internal_User": "root"})
    assert_error_response(r, 400)
    assert "underscore" in r.json()["error"]
    assert b.stats()["requests"] == 0
    # The connection was closed after the 400; a clean request still works.
    ok = parse_response(raw(gw.port, b"GET /admin/y HTTP/1.1\r\nHost: a\r\nX-Fine: 1\r\n"
                                     b"Connection: close\r\n\r\n"))
    assert ok.status == 200


def test_allow_forwards_them(gateway, backends):
    gw, _ = start(gateway, backends, "allow")
    r = requests.get(gw.u("/admin/x"), timeout=scaled(5), headers={"X_Custom": "v"})
    assert r.status_code == 200
    assert echo_headers(r.json(), "X_Custom") == ["v"]


def gateway_has_read(gw_port, client_port):
    """The gateway's end of our connection exists and its receive queue is
    empty: accepted (in the gateway's fd table) and read."""
    return any(t["rx"] == 0 for t in tcp_sockets(gw_port, client_port))


def lowest_free_fd(pid):
    used = {int(n) for n in os.listdir("/proc/%d/fd" % pid)}
    fd = 0
    while fd in used:
        fd += 1
    return fd


def test_gateway_out_of_descriptors_is_503_not_502(gateway, backends):
    """When the gateway itself cannot open a socket to the upstream (its
    descriptor limit), that is an overload of the gateway, not a bad
    upstream: 503 with the JSON error, and it recovers when fds free up."""
    b = backends("fd")
    gw = gateway(one_route(b.port))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n")  # the head is not finished yet
        # Accepted and read by the gateway before the limit drops.
        wait_until(lambda: gateway_has_read(gw.port, s.getsockname()[1]), scaled(5),
                   what="the gateway accepting and reading the connection")
        soft, hard = resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (lowest_free_fd(gw.pid), hard))
        try:
            s.sendall(b"\r\n")
            got = read_responses(s, 1, scaled(5))
        finally:
            resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert len(got) == 1, got
        assert_error_resp(got[0], 503)
        assert "out of resources" in got[0].json()["error"]
        assert b.stats()["requests"] == 0
    finally:
        s.close()
    r = requests.get(gw.u("/again"), timeout=scaled(5))
    assert r.status_code == 200


def read_chunked_body(s, buf):
    """Reads a whole chunked body (with its trailer section) off s;
    returns (raw body bytes, rest)."""
    i = 0
    while True:
        while b"\r\n" not in buf[i:]:
            buf += s.recv(65536)
        j = buf.index(b"\r\n", i)
        size = int(buf[i:j].split(b";")[0], 16)
        i = j + 2
        if size == 0:
            while True:  # trailer lines up to the empty one
                while b"\r\n" not in buf[i:]:
                    buf += s.recv(65536)
                j = buf.index(b"\r\n", i)
                line, i = buf[i:j], j + 2
                if not line:
                    return buf[:i], buf[i:]
        while len(buf) < i + size + 2:
            buf += s.recv(65536)
        i += size + 2


def test_request_trailers_are_not_forwarded(gateway, raw_upstream):
    seen = []

    def handler(s):
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            if b"chunked" in head.lower():
                body, buf = read_chunked_body(s, buf)
                seen.append(body)
            else:
                seen.append(head.split(b"\r\n")[0])
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = raw_upstream(handler)
    gw = gateway(one_route(up.port))
    # A chunked upload whose trailers name fields the gateway governs,
    # and a second request pipelined right behind it.
    data, _ = raw_ex(gw.port,
                     b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"4;ext=1\r\nwiki\r\n0\r\nX-Internal-User: root\r\n"
                     b"X-Forwarded-For: 10.0.0.1\r\nContent-Length: 100\r\n\r\n"
                     b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                     timeout=scaled(5))
    rs, _ = parse_responses(data)
    assert [r.status for r in rs] == [200, 200], rs
    # The body is re-framed hop by hop: the payload goes on, chunk
    # extensions (per-hop by RFC 9112 §7.1.1) and trailers do not.
    assert seen[0] == b"4\r\nwiki\r\n0\r\n\r\n", seen
    assert seen[1] == b"GET /next HTTP/1.1", seen


def test_response_trailers_are_not_forwarded(gateway, raw_upstream):
    up = raw_upstream(answer_every_request(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Secret\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Secret: backend-1.2\r\nSet-Cookie: s=1\r\n\r\n"))
    gw = gateway(one_route(up.port))
    data, _ = raw_ex(gw.port, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                              b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                     timeout=scaled(5))
    assert b"X-Secret: backend" not in data and b"s=1" not in data, data
    assert data.count(b"5\r\nhello\r\n0\r\n\r\n") == 2, data
    rs, _ = parse_responses(data)
    assert [(r.status, r.body) for r in rs] == [(200, b"hello")] * 2, rs


def test_removed_response_fields_do_not_leak_through_a_103(gateway, raw_upstream):
    """response_transform edits the final head; a field it removes or
    replaces there (Server, Set-Cookie) used to reach the client anyway in a
    103 Early Hints. Interim heads now drop those fields too, and keep the
    rest."""
    up = raw_upstream(answer_every_request(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
        b"Server: secret-backend/1.0\r\nSet-Cookie: a=b\r\nX-Version: 9.1-internal\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nServer: secret-backend/1.0\r\nX-Version: 9.1-internal\r\n"
        b"Content-Length: 2\r\n\r\nok"))
    gw = gateway(one_route(up.port, routes=[
        {"name": "all", "match": {"path_prefix": "/"}, "upstream": "u",
         "filters": {"response_transform": {"remove_headers": ["Server", "set-cookie"],
                                            "set_headers": {"x-version": "public"}}}}]))
    data, _ = raw_ex(gw.port, b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                     timeout=scaled(5))
    rs, _ = parse_responses(data)
    assert [r.status for r in rs] == [103, 200], rs
    assert rs[0].header("Link") == "</a.css>; rel=preload"
    for r in rs:
        assert r.header("Server") is None and r.header("Set-Cookie") is None, r
    # A value the route replaces does not leak in the 103 either.
    assert rs[0].header("X-Version") is None, rs[0]
    assert rs[1].header("X-Version") == "public"
    assert rs[1].body == b"ok"


# ---------------------------------------------------------------- Connection cannot strip framing

def test_connection_header_cannot_strip_the_request_length(gateway):
    # "Connection: content-length" used to remove the length the gateway
    # framed the body by: the body then reached the upstream as a second
    # request that no route, filter or limit had seen.
    rec = Recorder()
    gw = gateway(one_route(rec.port))
    try:
        smuggled = b"GET /admin/secret HTTP/1.1\r\nHost: internal\r\n\r\n"
        req = (b"POST /public HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n"
               b"Content-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
        buf, _ = raw_ex(gw.port, req, timeout=scaled(2), until_complete=True)
        assert parse_response(buf).status == 200
        # A marker request goes out behind it on the same (pooled) upstream
        # connection: a smuggled request would reach the upstream before it.
        buf, _ = raw_ex(gw.port, b"GET /marker HTTP/1.1\r\nHost: x\r\n\r\n",
                        timeout=scaled(2), until_complete=True)
        assert parse_response(buf).status == 200
        wait_until(lambda: len(rec.seen) >= 2, scaled(5), what="the marker at the upstream")
        assert [h.split(b" ", 2)[:2] for _, h, _ in rec.seen] == [
            [b"POST", b"/public"], [b"GET", b"/marker"]], rec.seen
        assert rec.seen[0][0] == rec.seen[1][0], "the marker took another upstream connection"
        _, head, body = rec.seen[0]
        assert content_length(head) == len(smuggled)
        assert body == smuggled
    finally:
        rec.close()


def test_connection_header_cannot_strip_the_response_length(gateway, raw_upstream):
    up = raw_upstream(answer_every_request(
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\n"
        b"Content-Length: 5\r\n\r\nhello"))
    gw = gateway(one_route(up.port))
    req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    buf, closed = raw_ex(gw.port, req + last, timeout=scaled(5))
    assert closed, "no close after the second response: %r" % buf
    rs, _ = parse_responses(buf, eof=False)
    assert [r.status for r in rs] == [200, 200], buf
    assert all(r.body == b"hello" for r in rs)
    assert buf.lower().count(b"content-length: 5\r\n") == 2, buf


def test_interim_response_drops_connection_listed_fields(gateway, raw_upstream):
    def handle(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: x-foo\r\n"
                  b"X-Foo: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    up = raw_upstream(handle)
    gw = gateway(one_route(up.port))
    buf, _ = raw_ex(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=scaled(2),
                    until_complete=True)
    assert buf.startswith(b"HTTP/1.1 103 "), buf
    interim = buf[:buf.index(b"\r\n\r\n")].lower()
    assert b"link: </a.css>" in interim
    assert b"x-foo" not in interim, interim
