"""Regression tests from the third data-plane review (pooled-connection
desync, retries after an interim response, framing fields on bodiless
responses, environment values in header templates, IPv6 hosts, empty
X-Forwarded-For). Each test fails on the build before its fix; all run on
both I/O backends."""

import contextlib
import glob
import signal
import socket
import struct
import threading
import time

import requests

from conftest import (Gateway, backend, echo_headers, free_port, make_config, parse_responses,
                      raw_ex, scaled, upstream, wait_until)
from test_review import RawUpstream, read_body, read_head
from test_review2 import log_lines, logged_gateway, one_route, recv_all


def all_threads_stopped(pid):
    for st in glob.glob("/proc/%d/task/*/stat" % pid):
        with open(st) as f:
            state = f.read().rpartition(")")[2].split()[0]
        if state not in ("T", "t"):
            return False
    return True


@contextlib.contextmanager
def frozen(gw):
    """Holds every gateway thread stopped (SIGSTOP) for the with-block:
    whatever the test sends meanwhile arrives as one batch of events."""
    gw.send(signal.SIGSTOP)
    try:
        wait_until(lambda: all_threads_stopped(gw.pid), scaled(5), what="gateway stopped")
        yield
    finally:
        gw.send(signal.SIGCONT)


def assert_treated_as_gone(s, log, nth):
    """The client half-closed after one request: it gets nothing, and the
    nth (1-based) access-log line says 499 "client closed the connection"."""
    try:
        buf, _ = recv_all(s)
        assert buf == b"", buf[:200]
    finally:
        s.close()
    d = log_lines(log, nth)[nth - 1]
    assert d["status"] == 499 and d["error"] == "client closed the connection", d


def recv_response(s, want=1):
    """Reads from s until `want` complete responses (1xx included) have
    arrived, or the peer closes."""
    buf = b""
    while True:
        got, _ = parse_responses(buf, eof=False)
        if len(got) >= want and all(r.complete for r in got[:want]):
            return got
        chunk = s.recv(65536)
        if not chunk:
            return parse_responses(buf)[0]
        buf += chunk


def responses(port, data):
    """One request on a fresh connection: the responses (1xx included)."""
    buf, _ = raw_ex(port, data, timeout=scaled(5), until_complete=True)
    return parse_responses(buf, eof=False)[0]


def test_stray_bytes_on_an_idle_pooled_connection_never_answer_the_next_request(tmp_path):
    """The upstream writes an unsolicited response on an idle pooled
    connection while the client's next request is already waiting: both are
    in the same batch of events, the client's first. The connection must be
    closed, not handed to the request (which would get "EVIL")."""
    conns = []
    served = threading.Event()

    def handler(s):
        conns.append(s)
        buf = b""
        n = 0
        while True:
            head, buf = read_head(s, buf)
            n += 1
            body = b"reply%d" % n
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            served.set()

    up = RawUpstream(handler)
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        c.sendall(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        r1 = recv_response(c)[0]
        assert r1.status == 200 and r1.body == b"reply1"
        assert len(conns) == 1
        with frozen(gw):  # both arrive before it looks again
            c.sendall(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
            conns[0].sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
        r2 = recv_response(c)[0]
        assert r2.body != b"EVIL", "stray upstream bytes answered the next request"
        assert r2.status == 200 and r2.body.startswith(b"reply"), r2
        assert up.accepts == 2  # the dirty connection was closed, a new one opened
    finally:
        c.close()
        gw.stop()
        up.close()


def test_a_request_answered_with_a_1xx_is_not_retried(tmp_path):
    """A reused connection that delivers a 102 and then closes: the
    upstream had the request, so it must not be sent again (even an
    idempotent one), and the 102 must not reach the client twice."""
    seen = []

    def handler(s):
        buf = b""
        n = 0
        while True:
            head, buf = read_head(s, buf)
            seen.append(head.split(b"\r\n")[0])
            n += 1
            if n == 1:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                s.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
                return  # and close

    up = RawUpstream(handler)
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        c.sendall(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert recv_response(c)[0].status == 200
        c.sendall(b"DELETE /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = recv_response(c, want=2)
        assert [r.status for r in got] == [102, 502], got
        assert seen.count(b"DELETE /2 HTTP/1.1") == 1, seen
    finally:
        c.close()
        gw.stop()
        up.close()


def test_no_content_length_on_204_or_interim_responses(tmp_path):
    """RFC 9110 §8.6: a 1xx or 204 response has no Content-Length, whatever
    the upstream wrote (the 204's stray body is dropped as before)."""

    def handler(s):
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            if head.startswith(b"GET /204"):
                s.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
                return
            s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nContent-Length: 3\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = RawUpstream(handler)
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
    try:
        r = responses(gw.port, b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert r[0].status == 204 and r[0].header("Content-Length") is None, r
        got = responses(gw.port, b"GET /hints HTTP/1.1\r\nHost: a\r\n\r\n")
        assert [x.status for x in got[:2]] == [103, 200], got
        assert got[0].header("Link") == "</a>"
        assert got[0].header("Content-Length") is None, got[0]
        assert got[1].header("Content-Length") == "2"
    finally:
        gw.stop()
        up.close()


def test_environment_values_in_header_templates_are_literal(tmp_path):
    """A secret holding `$$` or `${method}` is sent as it is: only the
    file's own text is a template."""
    with backend("env") as b:
        cfg = one_route(free_port(), b.port)
        cfg["routes"][0]["filters"] = {"request_transform": {"set_headers": {
            "Authorization": "Bearer ${PT_TEST_TOKEN}",
            "X-Both": "${method}:${PT_TEST_TOKEN}:$${x}"}}}
        gw = Gateway(cfg, tmp_path, env_extra={"PT_TEST_TOKEN": "s3cr$$t${method}"})
        try:
            doc = requests.get(gw.u("/echo"), timeout=scaled(5)).json()
            assert echo_headers(doc, "Authorization") == ["Bearer s3cr$$t${method}"]
            assert echo_headers(doc, "X-Both") == ["GET:s3cr$$t${method}:${x}"]
        finally:
            gw.stop()


def test_an_ipv6_literal_host_routes(tmp_path):
    with backend("v6") as b6, backend("other") as bo:
        cfg = make_config(free_port(), {"v6": upstream(b6.port), "other": upstream(bo.port)},
                          [{"name": "v6", "match": {"hosts": ["[::1]"]}, "upstream": "v6"},
                           {"name": "rest", "match": {"path_prefix": "/"}, "upstream": "other"}],
                          workers=1)
        gw = Gateway(cfg, tmp_path)
        try:
            for host, want in (("[::1]:8080", "v6"), ("[::1]", "v6"), ("[::2]", "other"),
                               ("example.com", "other")):
                r = requests.get(gw.u("/x"), headers={"Host": host}, timeout=scaled(5))
                assert r.status_code == 200, (host, r.text)
                assert r.headers["X-Backend"].startswith(want + ":"), (host, r.headers)
        finally:
            gw.stop()


def test_an_empty_x_forwarded_for_adds_no_comma(tmp_path):
    with backend("xff") as b:
        gw = Gateway(one_route(free_port(), b.port), tmp_path)
        try:
            r = responses(gw.port, b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:\r\n"
                          b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: \r\n\r\n")
            assert r[0].status == 200, r
            assert echo_headers(r[0].json(), "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
        finally:
            gw.stop()


def established_on(port):
    """Gateway-side ESTABLISHED sockets on local port `port` (IPv4)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            local, state = cols[1], cols[3]
            if local.endswith(":%04X" % port) and state == "01":
                n += 1
    return n


def test_a_client_cut_for_not_reading_is_closed_at_once(tmp_path):
    """The send timeout cuts a client that stopped reading. With io_uring
    the send blocked on it held the socket open for another 10 s (the close
    grace of ordinary closes); it is now cancelled, as epoll drops it."""
    with backend("cut") as b:
        log = str(tmp_path / "access.log")
        cfg = one_route(free_port(), b.port, limits={"idle_timeout": "1s"},
                        access_log={"path": log})
        gw = Gateway(cfg, tmp_path)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.settimeout(scaled(5))
        try:
            s.connect(("127.0.0.1", gw.port))
            s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
            # ...and read no more.
            d = log_lines(log, 1)[0]
            assert d["error"] == "client send timeout", d
            # Well inside the 10 s grace, on any build.
            wait_until(lambda: established_on(gw.port) == 0, min(scaled(3), 8),
                       what="the cut connection to close")
        finally:
            s.close()
            gw.stop()


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
        time.sleep(0.2)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(scaled(2))

    up = RawUpstream(answer_late)
    with logged_gateway(tmp_path, up.port) as (gw, log):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        assert got_head.wait(scaled(5)), "the request head never reached the upstream"
        with frozen(gw):
            s.sendall(b"hello")
            s.shutdown(socket.SHUT_WR)
        assert_treated_as_gone(s, log, 1)
    up.close()


def test_a_header_timeout_is_logged_with_the_time_the_head_took(tmp_path):
    with backend("ht") as b:
        log = str(tmp_path / "access.log")
        cfg = one_route(free_port(), b.port, limits={"header_timeout": "700ms"},
                        access_log={"path": log})
        gw = Gateway(cfg, tmp_path)
        try:
            buf, _ = raw_ex(gw.port, b"GET /slow HTTP/1.1\r\nHost: a\r\n", timeout=scaled(5))
            assert buf.startswith(b"HTTP/1.1 408 "), buf[:100]
            d = log_lines(log, 1)[0]
            assert d["status"] == 408
            # The timer cannot fire early: the request took at least 700 ms.
            assert d["duration_ms"] >= 690, d
        finally:
            gw.stop()


def test_a_request_cut_by_the_drain_is_logged_as_such(tmp_path):
    """An upload still stalled at the drain timeout: no answer went out,
    and the log says why the request ended."""
    got_head = threading.Event()

    def stall(s):
        read_head(s)
        got_head.set()
        time.sleep(scaled(5))

    up = RawUpstream(stall)
    log = str(tmp_path / "access.log")
    cfg = one_route(free_port(), up.port, limits={"drain_timeout": "300ms"},
                    access_log={"path": log})
    gw = Gateway(cfg, tmp_path)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    try:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        assert got_head.wait(scaled(5)), "the request never reached the upstream"
        gw.send(signal.SIGTERM)
        assert gw.proc.wait(timeout=scaled(10)) == 0
        d = log_lines(log, 1)[0]
        assert d["error"] == "drain timeout", d
    finally:
        s.close()
        gw.stop()
        up.close()


def test_a_named_regex_group_is_also_its_number(tmp_path):
    """docs: path_regex groups are params by name and every group by its
    number; a named group's number was refused in rewrite and empty in
    templates."""
    with backend("rx") as b:
        cfg = one_route(free_port(), b.port)
        cfg["routes"] = [{
            "name": "rx", "upstream": "u",
            "match": {"path_regex": r"^/r/(?<uid>\d+)/(\w+)$"},
            "rewrite": "/echo/{1}/{2}/{uid}",
            "filters": {"request_transform": {"set_headers": {
                "X-Uid": "${path.uid}", "X-1": "${path.1}", "X-2": "${path.2}",
                "X-3": "${path.3}"}}}}]
        gw = Gateway(cfg, tmp_path)
        try:
            doc = requests.get(gw.u("/r/42/abc"), timeout=scaled(5)).json()
            assert doc["path"] == "/echo/42/abc/42", doc
            assert echo_headers(doc, "X-Uid") == ["42"]
            assert echo_headers(doc, "X-1") == ["42"]
            assert echo_headers(doc, "X-2") == ["abc"]
            assert echo_headers(doc, "X-3") == [""]
        finally:
            gw.stop()


def limit_one(up_port, **kw):
    return one_route(free_port(), up_port, limits={"max_connections": 1}, **kw)


def test_at_the_limit_a_connection_whose_request_is_waiting_is_not_idle(tmp_path):
    """max_connections: an idle keep-alive connection gives way to a new
    client, but not one whose next request is already in the same batch
    of events: that request (a POST) would be lost."""
    with backend("ev") as b:
        gw = Gateway(limit_one(b.port), tmp_path)
        a = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        nb = None
        try:
            a.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            assert recv_response(a)[0].status == 200
            with frozen(gw):
                nb = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
                nb.sendall(b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                a.sendall(b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
            got = recv_response(a)
            assert got and got[0].status == 200, got
            a.close()  # now B's turn
            assert recv_response(nb)[0].status == 200
        finally:
            a.close()
            if nb:
                nb.close()
            gw.stop()


def test_at_the_limit_new_connections_are_never_taken_for_idle(tmp_path):
    """Two clients connect and send while the gateway is busy; with room
    for one, the second waits its turn. It used to be accepted and then
    closed (io_uring had not read its request yet, so it looked idle)."""
    with backend("nf") as b:
        gw = Gateway(limit_one(b.port), tmp_path)
        socks = []
        try:
            with frozen(gw):
                for name in (b"B", b"C"):
                    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
                    s.sendall(b"POST /" + name + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                              b"Content-Length: 2\r\n\r\nhi")
                    socks.append(s)
            for s in socks:
                got = recv_response(s)
                assert got and got[0].status == 200, got
        finally:
            for s in socks:
                s.close()
            gw.stop()


def test_a_fin_behind_a_pipelined_request_still_gets_it_answered(tmp_path):
    """GET /e is with the upstream when GET /f and the FIN arrive: /f was
    pipelined and is answered (io_uring saw the FIN only once /f had
    started and answered 499)."""
    got_e = threading.Event()
    release = threading.Event()

    def handler(s):
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            if head.startswith(b"GET /e "):
                got_e.set()
                release.wait(scaled(10))
            body = head.split(b" ")[1]
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    up = RawUpstream(handler)
    gw = Gateway(one_route(free_port(), up.port), tmp_path)
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
        gw.stop()
        up.close()


def test_a_new_connection_that_sends_nothing_is_under_header_timeout(tmp_path):
    """A client that connects and sends nothing is a slowloris too: closed
    after header_timeout (no answer: it asked nothing), not idle_timeout."""
    with backend("silent") as b:
        cfg = one_route(free_port(), b.port,
                        limits={"header_timeout": "500ms", "idle_timeout": "60s"})
        gw = Gateway(cfg, tmp_path)
        # (the socket timeout, far below idle_timeout, is what fails the
        # old behaviour: recv_all reports "timeout" instead of "eof")
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
        try:
            buf, how = recv_all(s)
            assert buf == b"" and how == "eof", (buf, how)
        finally:
            s.close()
            gw.stop()


def test_the_io_backend_reload_warning_names_the_running_backend(tmp_path):
    with backend("iob") as b:
        base = one_route(free_port(), b.port)
        base["io_backend"] = "epoll"
        gw = Gateway(base, tmp_path)
        try:
            other = dict(base, io_backend="io_uring")
            warned = lambda: [l for l in gw.stderr_text().splitlines()
                              if "io_backend:" in l and "next restart" in l]
            gw.reload(other)
            assert len(warned()) == 1 and "epoll → io_uring" in warned()[0], warned()
            gw.reload(base)  # back to what runs: nothing to warn about
            assert len(warned()) == 1, warned()
            gw.reload(other)
            gw.reload(other)  # still not what runs: warned again
            assert len(warned()) == 3, warned()
        finally:
            gw.stop()


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


def test_a_reset_ends_even_a_pipelined_request(tmp_path):
    """A client that half-closes after pipelining still gets its answers,
    but one that resets is gone: its request in progress is logged 499 at
    once and the upstream connection is freed, not held for the answer."""
    with backend("prst") as b, logged_gateway(tmp_path, b.port) as (gw, log):
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        c.sendall(b"GET /users HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /users HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 30000\r\n\r\n")
        assert recv_response(c)[0].status == 200
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        d = wait_until(lambda: len(log_lines(log, 1)) >= 2 and log_lines(log, 2)[1],
                       min(scaled(3), 20), what="the second request's log line")
        # logged long before the 30 s answer: the transaction (and with it
        # its upstream connection) ended at the reset
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
        assert recv_response(c)[0].status == 200
        c.sendall(b"GET /users HTTP/1.1\r\nHost: a\r\nX-Demo-Delay: 300\r\n\r\n")
        c.shutdown(socket.SHUT_WR)
        assert_treated_as_gone(c, log, 2)
