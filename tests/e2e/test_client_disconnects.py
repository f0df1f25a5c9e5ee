"""Clients that leave: one that closes or resets mid-request is logged 499
(or with the error that cut its download) and frees its upstream
connection; one that half-closes behind pipelined requests still gets every
answer; one that half-closes after a single request is gone. Epoll and
io_uring judge the same batch of events alike."""

import socket
import struct
import threading

from conftest import (RawUpstream, access_log_lines, backend, frozen, logged_gateway, one_route,
                      parse_responses, read_body, read_head, read_responses, recv_all,
                      request_heads, scaled, tcp_sockets, wait_until)


def assert_treated_as_gone(s, log, nth):
    """The client half-closed after one request: it gets nothing, and the
    nth (1-based) access-log line says 499 "client closed the connection"."""
    try:
        buf, _ = recv_all(s)
        assert buf == b"", buf[:200]
    finally:
        s.close()
    d = access_log_lines(log, nth)[nth - 1]
    assert d["status"] == 499 and d["error"] == "client closed the connection", d


def test_client_leaving_during_a_slow_upstream_is_logged_499(tmp_path):
    with backend("abort") as b, logged_gateway(tmp_path, b.port) as (gw, log):
        idle_active = b.stats()["active"]
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 3000\r\n\r\n")
        wait_until(lambda: b.stats()["active"] > idle_active, scaled(5),
                   what="the request at the backend")
        s.close()
        d = access_log_lines(log, 1)[0]
        assert d["status"] == 499, d
        assert d["error"] == "client closed the connection"


def test_download_abort_is_logged_with_an_error(tmp_path):
    with backend("dl") as b, logged_gateway(tmp_path, b.port) as (gw, log):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = 0
        while got < 200000:
            got += len(s.recv(65536))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        d = access_log_lines(log, 1)[0]
        assert d["status"] == 200
        assert d["error"] == "client closed the connection", d
        assert d["bytes_out"] < 50000000


def test_half_closed_client_with_a_pipelined_request_is_answered(gateway, backends):
    # A FIN behind unread pipelined bytes is not a client that left.
    gw = gateway(one_route(backends("hc").port))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    s.sendall(b"GET /a HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 200\r\n\r\n"
              b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    buf, how = recv_all(s)
    s.close()
    rs, _ = parse_responses(buf)
    assert [r.status for r in rs] == [200, 200], (buf[:300], how)


def test_half_closed_client_reading_a_large_pipelined_response_gets_it_all(gateway, backends):
    # Edge-triggered epoll repeats RDHUP in every later event: a hangup
    # excused for the pipelined bytes must not be judged again when the
    # socket drains mid-response.
    gw = gateway(one_route(backends("hcl").port))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # fills at once
    s.settimeout(scaled(5))
    s.connect(("127.0.0.1", gw.port))
    s.sendall(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
              b"GET /bytes/4000000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    # The client's receive buffer fills: the gateway's bytes queue up
    # behind it, and it must wait for the socket to drain.
    me = s.getsockname()[1]
    wait_until(lambda: any(t["tx"] for t in tcp_sockets(gw.port, me, established=False)),
               scaled(5), what="the gateway's send queue to the client to back up")
    buf, how = recv_all(s)
    s.close()
    rs, _ = parse_responses(buf)
    assert [r.status for r in rs] == [200, 200], (len(buf), how)
    assert len(rs[1].body) == 4000000 and rs[1].complete


def test_a_half_close_right_behind_a_request_body_is_judged_the_same_on_both_backends(tmp_path):
    """The last body bytes and the FIN in one batch: epoll saw the hangup
    before the request was complete, never judged it, and served the
    request; io_uring (EOF as its own completion) answered 499. Both now
    treat a client that half-closes after a single request as gone."""
    got_head = threading.Event()

    def answer_late(s):
        head, buf = read_head(s)
        got_head.set()
        if read_body(s, head, buf) is None:
            return
        # Answer only once the gateway has had its say on the FIN: a
        # gateway that judges the client gone closes this connection; one
        # that does not gets its answer (and the test sees it) after the
        # deadline.
        s.settimeout(scaled(2))
        try:
            if s.recv(1) == b"":
                return
        except socket.timeout:
            pass
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        s.settimeout(scaled(5))
        recv_all(s)  # keep it open until the gateway lets go

    up = RawUpstream(answer_late)
    try:
        with logged_gateway(tmp_path, up.port) as (gw, log):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
            s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            assert got_head.wait(scaled(5)), "the request head never reached the upstream"
            with frozen(gw):
                s.sendall(b"hello")
                s.shutdown(socket.SHUT_WR)
            assert_treated_as_gone(s, log, 1)
    finally:
        up.close()


def test_a_fin_behind_a_pipelined_request_still_gets_it_answered(gateway, raw_upstream):
    """GET /e is with the upstream when GET /f and the FIN arrive: /f was
    pipelined and is answered (io_uring saw the FIN only once /f had
    started and answered 499)."""
    got_e = threading.Event()
    release = threading.Event()

    def handler(s):
        for head in request_heads(s):
            if head.startswith(b"GET /e "):
                got_e.set()
                release.wait(scaled(10))
            body = head.split(b" ")[1]
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    gw = gateway(one_route(raw_upstream(handler).port))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        c.sendall(b"GET /e HTTP/1.1\r\nHost: a\r\n\r\n")
        assert got_e.wait(scaled(5))
        with frozen(gw):
            c.sendall(b"GET /f HTTP/1.1\r\nHost: a\r\n\r\n")
            c.shutdown(socket.SHUT_WR)
            release.set()
        buf, _ = recv_all(c)
        rs, _ = parse_responses(buf)
        assert [(r.status, r.body) for r in rs] == [(200, b"/e"), (200, b"/f")], buf[:300]
    finally:
        release.set()
        c.close()


def test_a_reset_ends_even_a_pipelined_request(tmp_path):
    """A client that half-closes after pipelining still gets its answers,
    but one that resets is gone: its request in progress is logged 499 at
    once and the upstream connection is freed, not held for the answer."""
    with backend("prst") as b, logged_gateway(tmp_path, b.port) as (gw, log):
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        c.sendall(b"GET /users HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /users HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 30000\r\n\r\n")
        assert read_responses(c, 1)[0].status == 200
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        # logged long before the 30 s answer: the transaction (and with it
        # its upstream connection) ended at the reset
        d = access_log_lines(log, 2, timeout=min(scaled(3), 20))[1]
        assert d["status"] == 499 and d["error"] == "client closed the connection", d


def test_a_fin_after_a_request_that_ended_on_a_full_read_is_not_pipelining(tmp_path):
    """Request 1 fills the 16 KiB read buffer exactly, so the connection
    stays `readable` after it; request 2, sent after its answer, plus a FIN
    is one request and a half-close: 499, not served as pipelined."""
    with backend("p16") as b, logged_gateway(tmp_path, b.port) as (gw, log):
        head = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %05d\r\n\r\n"
        n = 16384 - len(head % 0)
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        c.sendall(head % n + b"x" * n)
        assert read_responses(c, 1)[0].status == 200
        c.sendall(b"GET /users HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 300\r\n\r\n")
        c.shutdown(socket.SHUT_WR)
        assert_treated_as_gone(c, log, 2)
