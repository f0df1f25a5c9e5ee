"""What the gateway makes of unusual upstream responses: a reason phrase
longer than any header, 103 Early Hints relayed to HTTP/1.1 clients (and
only to them), and no Content-Length on a 204 or an interim response
whatever the upstream wrote."""

import socket

from conftest import (answer_every_request, one_route, parse_response, raw_ex, raw_responses,
                      request_heads, scaled, wait_peer_read)


def test_a_long_upstream_reason_phrase_is_relayed_without_overrunning_memory(gateway, raw_upstream):
    """build_client_head sized its buffer from the header fields only: a
    long reason phrase from the upstream ran past the arena allocation."""
    reason = b"R" * 16000

    up = raw_upstream(answer_every_request(
        b"HTTP/1.1 200 " + reason + b"\r\nContent-Length: 2\r\n\r\nok"))
    gw = gateway(one_route(up.port))
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


def test_early_hints_reach_http11_clients_only(gateway, raw_upstream):
    """103 Early Hints from the upstream reach an HTTP/1.1 client before the
    final response (RFC 9110 §15.2), hop-by-hop fields stripped; an
    HTTP/1.0 client, which cannot parse interim responses, gets only the
    final one."""

    def handler(s):
        for head in request_heads(s):
            s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n"
                      b"Keep-Alive: timeout=5\r\n\r\n")
            wait_peer_read(s, "the gateway to read the 103 on its own")
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = raw_upstream(handler)
    gw = gateway(one_route(up.port))
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


def test_no_content_length_on_204_or_interim_responses(gateway, raw_upstream):
    """RFC 9110 §8.6: a 1xx or 204 response has no Content-Length, whatever
    the upstream wrote (the 204's stray body is dropped as before)."""

    def handler(s):
        for head in request_heads(s):
            if head.startswith(b"GET /204"):
                s.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
                return
            s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nContent-Length: 3\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = raw_upstream(handler)
    gw = gateway(one_route(up.port))
    r = raw_responses(gw.port, b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert r[0].status == 204 and r[0].header("Content-Length") is None, r
    got = raw_responses(gw.port, b"GET /hints HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [x.status for x in got[:2]] == [103, 200], got
    assert got[0].header("Link") == "</a>"
    assert got[0].header("Content-Length") is None, got[0]
    assert got[1].header("Content-Length") == "2"
