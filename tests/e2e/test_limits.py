"""limits: → 431 / 414 / 413 / 408 (also at the default head size), idle,
header and send timeouts (a silent new connection is under the header
timeout; a client that stops reading is cut and closed at once),
max_connections (busy slots queue new clients, idle ones give way, but
never one whose next request is already waiting, nor a new one not yet
read)."""

import socket
import threading
import time

import pytest
import requests

from conftest import (Gateway, RawUpstream, access_log_lines, assert_error_resp,
                      assert_error_response, backend, free_port, frozen, make_config, one_route,
                      parse_response, parse_responses, raw_ex, read_responses, request_heads,
                      recv_all, scaled, tcp_sockets, upstream, wait_until)

LIMITS = {
    "max_header_bytes": "4KiB",
    "max_headers": 20,
    "max_uri_bytes": "1KiB",
    "max_body_bytes": "64KiB",
    "header_timeout": "%dms" % int(scaled(1000)),
    "idle_timeout": "%dms" % int(scaled(1000)),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("lim") as b:
        cfg = make_config(free_port(), {"l": upstream(b.port)}, [
            {"name": "small", "match": {"path_prefix": "/small"}, "upstream": "l",
             "max_body_bytes": "1KiB"},
            {"name": "all", "match": {"path_prefix": "/"}, "upstream": "l"},
        ], limits=LIMITS)
        gw = Gateway(cfg, tmp_path_factory.mktemp("limits"))
        try:
            yield gw, b
        finally:
            gw.stop()


def test_under_limits_ok(env):
    gw, _ = env
    headers = {"X-H%d" % i: "v" * 100 for i in range(15)}
    r = requests.get(gw.u("/" + "a" * 700), headers=headers, timeout=scaled(5))
    assert r.status_code == 200, r.text[:200]
    r = requests.post(gw.u("/body"), data=b"x" * 60000, timeout=scaled(5))
    assert r.status_code == 200
    assert r.json()["body_len"] == 60000


def test_431_one_big_header(env):
    gw, _ = env
    r = requests.get(gw.u("/x"), headers={"X-Big": "b" * 6000}, timeout=scaled(5))
    assert_error_response(r, 431)


def test_431_header_bytes_total(env):
    gw, _ = env
    headers = {"X-H%d" % i: "v" * 500 for i in range(10)}  # 10 headers, ~5 KB
    r = requests.get(gw.u("/x"), headers=headers, timeout=scaled(5))
    assert_error_response(r, 431)


def test_431_header_count(env):
    gw, _ = env
    headers = {"X-C%d" % i: "1" for i in range(25)}
    r = requests.get(gw.u("/x"), headers=headers, timeout=scaled(5))
    assert_error_response(r, 431)


def test_414_uri_too_long(env):
    gw, _ = env
    r = requests.get(gw.u("/" + "a" * 2000), timeout=scaled(5))
    assert_error_response(r, 414)


def test_414_long_query(env):
    gw, _ = env
    r = requests.get(gw.u("/q?x=" + "a" * 2000), timeout=scaled(5))
    assert_error_response(r, 414)


def _send_head_then_body(port, head, body, timeout):
    """Sends the head, gives the gateway a moment to answer early, then the
    body (ignoring a closed socket); returns (bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    buf = b""
    closed = False
    try:
        s.sendall(head)
        s.settimeout(scaled(1))
        try:
            c = s.recv(65536)
            if c:
                buf += c
            else:
                closed = True
        except socket.timeout:
            pass
        if not buf and not closed:
            try:
                for i in range(0, len(body), 16384):
                    s.sendall(body[i:i + 16384])
            except (BrokenPipeError, ConnectionResetError):
                pass
        deadline = time.monotonic() + timeout
        while not closed:
            rs, _ = parse_responses(buf, eof=False)
            if rs and rs[0].complete and rs[0].status >= 200:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                c = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not c:
                closed = True
                break
            buf += c
    finally:
        s.close()
    return buf, closed


def test_413_content_length(env):
    gw, b = env
    body = b"x" * 100000
    head = b"POST /big HTTP/1.1\r\nHost: lim\r\nContent-Length: %d\r\n\r\n" % len(body)
    data, _ = _send_head_then_body(gw.port, head, body, scaled(5))
    assert_error_resp(parse_response(data), 413)


def test_413_chunked(env):
    gw, _ = env
    chunk = b"y" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16)) + b"0\r\n\r\n"
    head = b"POST /big-chunked HTTP/1.1\r\nHost: lim\r\nTransfer-Encoding: chunked\r\n\r\n"
    data, _ = _send_head_then_body(gw.port, head, body, scaled(5))
    assert_error_resp(parse_response(data), 413)


def test_413_route_override(env):
    gw, _ = env
    r = requests.post(gw.u("/other"), data=b"z" * 2048, timeout=scaled(5))
    assert r.status_code == 200
    body = b"z" * 2048
    head = b"POST /small HTTP/1.1\r\nHost: lim\r\nContent-Length: %d\r\n\r\n" % len(body)
    data, _ = _send_head_then_body(gw.port, head, body, scaled(5))
    assert_error_resp(parse_response(data), 413)


def test_413_expect_100_continue_no_continue(env):
    gw, _ = env
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        s.sendall(b"POST /big HTTP/1.1\r\nHost: lim\r\nContent-Length: 1000000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            c = s.recv(65536)
            if not c:
                break
            buf += c
    finally:
        s.close()
    assert buf.startswith(b"HTTP/1.1 413"), buf[:200]


def test_408_partial_headers(env):
    gw, _ = env
    data, closed = raw_ex(gw.port, b"GET /x HTTP/1.1\r\nHost: lim\r\nX-Partial: ab",
                          timeout=scaled(6))
    assert closed, "header timeout did not close the connection"
    assert_error_resp(parse_response(data), 408)


def test_408_slowloris_dribble(env):
    """One byte every 150 ms: each read is fresh, but the head as a whole
    takes longer than header_timeout."""
    gw, _ = env
    req = b"GET /x HTTP/1.1\r\nHost: lim\r\n" + b"X-Slow: " + b"a" * 200
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    buf = b""
    closed = False
    deadline = time.monotonic() + scaled(6)
    try:
        s.setblocking(False)
        for byte in req:
            if time.monotonic() > deadline:
                break
            try:
                s.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            except BlockingIOError:
                pass
            time.sleep(0.15)  # the dribble is the point: each byte late, none too late
            try:
                c = s.recv(65536)
                if c:
                    buf += c
                else:
                    closed = True
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
                break
        s.setblocking(True)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        while not closed:
            try:
                c = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not c:
                closed = True
                break
            buf += c
    finally:
        s.close()
    assert closed, "slowloris connection still open after %.1fs" % scaled(6)
    assert buf.startswith(b"HTTP/1.1 408"), buf[:200]


def test_idle_timeout_closes_keepalive(env):
    gw, _ = env
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        s.sendall(b"GET /tiny HTTP/1.1\r\nHost: lim\r\n\r\n")
        rs = read_responses(s, 1, scaled(5))
        assert rs, "closed before the response completed"
        assert rs[0].status == 200
        # now idle: the gateway must close within idle_timeout (+ slack)
        s.settimeout(scaled(5))
        try:
            c = s.recv(65536)
        except socket.timeout:
            pytest.fail("idle keep-alive connection not closed after %.1fs" % scaled(5))
        except ConnectionResetError:
            c = b""
        assert c == b"", "unexpected bytes on an idle connection: %r" % c[:200]
    finally:
        s.close()


def test_idle_connection_without_request_closed(env):
    gw, _ = env
    data, closed = raw_ex(gw.port, b"", timeout=scaled(6))
    assert closed, "a connection that never sent anything stayed open"
    if data:  # a 408 is allowed here, nothing else
        assert data.startswith(b"HTTP/1.1 408"), data[:200]


def test_slow_but_in_time_headers_ok(env):
    """Headers sent in three pieces well within header_timeout are fine."""
    gw, _ = env
    data, _ = raw_ex(gw.port, [b"GET /pieces HTTP/1.1\r\n", b"Host: lim\r\n",
                               b"Connection: close\r\n\r\n"],
                     timeout=scaled(5), pause_after=0.1)
    r = parse_response(data)
    assert r.status == 200, r
    assert r.json()["path"] == "/pieces"


TINY = b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n"


def limited_to(n, up_port):
    """One worker, max_connections: n, everything to 127.0.0.1:up_port."""
    return one_route(up_port, limits={"max_connections": n})


def test_max_connections_queues_extra_clients(gateway):
    """Beyond limits.max_connections new connections wait in the backlog
    (not accepted, nothing read) while every slot is busy, and are served
    once a slot frees up."""
    heads = threading.Semaphore(0)
    release = threading.Event()

    def hold(s):  # answers each request once the test says so
        for head in request_heads(s):
            heads.release()
            release.wait(scaled(10))
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = RawUpstream(hold)
    try:
        gw = gateway(limited_to(2, up.port))
        held = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.sendall(TINY)  # busy: its request is with the upstream
            s.settimeout(scaled(5))
            assert heads.acquire(timeout=scaled(5))
            held.append(s)
        extra = socket.create_connection(("127.0.0.1", gw.port))
        extra.sendall(TINY)
        extra.settimeout(0.5)
        with pytest.raises(socket.timeout):
            extra.recv(4096)  # over the limit: not served
        release.set()
        s = held.pop()
        assert b"200 OK" in s.recv(4096)
        s.close()
        extra.settimeout(scaled(5))
        assert b"200 OK" in extra.recv(4096)  # a slot freed: now it is
        extra.close()
        for s in held:
            s.close()
    finally:
        release.set()
        up.close()


def test_max_connections_idle_clients_give_way(gateway, backends):
    """Idle keep-alive connections do not lock new clients out: at the
    limit the one idle the longest is closed for a waiting client (as
    nginx does when short of connections)."""
    gw = gateway(limited_to(2, backends("maxi").port))
    held = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(TINY)
        s.settimeout(scaled(5))
        assert b"200 OK" in s.recv(4096)
        held.append(s)  # now idle, first one idle the longest
        # The time between them is the point: idle deadlines on the
        # gateway's ms clock must differ for "idle the longest" to mean one.
        time.sleep(0.05)
    extra = socket.create_connection(("127.0.0.1", gw.port))
    extra.sendall(TINY)
    extra.settimeout(scaled(5))
    assert b"200 OK" in extra.recv(4096)
    assert held[0].recv(4096) == b""  # the longest idle was closed...
    held[1].sendall(TINY)
    assert b"200 OK" in held[1].recv(4096)  # ...the other kept
    for s in held + [extra]:
        s.close()


def test_stalled_request_body_is_408(gateway, backends):
    """A client that sends part of its body and stops: after the read
    timeout the client gets 408 (its fault), not 504, and is closed."""
    b = backends("stall")
    cfg = make_config(free_port(), {"l": upstream(b.port, read_timeout="400ms")},
                      [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "l"}])
    gw = gateway(cfg)
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    s.settimeout(scaled(5))
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    r = parse_response(data)
    assert_error_resp(r, 408)
    assert r.header("Connection") == "close"
    s.close()


def test_413_survives_a_client_still_sending(gateway, backends):
    """A client streaming a body far over the limit gets its 413 and then a
    clean end of stream: the gateway shuts its write side and discards the
    rest (lingering close, RFC 9112 §9.6) instead of closing with unread
    data, which makes the kernel answer with a reset that can destroy the
    response before the client reads it."""
    b = backends("ling")
    cfg = make_config(free_port(), {"l": upstream(b.port)},
                      [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "l",
                        "max_body_bytes": "1KiB"}])
    gw = gateway(cfg)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        stop = threading.Event()

        def pump():
            chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
            try:
                while not stop.is_set():
                    s.sendall(chunk)
                    time.sleep(0.001)  # a client still sending, at its own pace
            except OSError:
                pass

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        s.settimeout(scaled(5))
        data = b""
        try:
            while True:
                chunk = s.recv(65536)  # a reset raises ConnectionResetError here
                if not chunk:
                    break  # clean end of stream after the response
                data += chunk
        finally:
            stop.set()
        r = parse_response(data)
        assert r.status == 413, data[:200]
        s.close()
        t.join(scaled(5))


def test_head_over_the_default_limit_gets_431_or_414(tmp_path):
    # With the default max_header_bytes (16 KiB, the pooled buffer size) a
    # full buffer used to read 0 bytes, look like EOF and close: no answer.
    with backend("lim") as b:
        gw = Gateway(one_route(b.port), tmp_path)
        try:
            big = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
            buf, _ = raw_ex(gw.port, big, timeout=scaled(3), until_complete=True)
            assert parse_response(buf).status == 431, buf[:200]
            long_target = b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            buf, _ = raw_ex(gw.port, long_target, timeout=scaled(3), until_complete=True)
            assert parse_response(buf).status == 414, buf[:200]
        finally:
            gw.stop()


def test_a_new_connection_that_sends_nothing_is_under_header_timeout(tmp_path):
    """A client that connects and sends nothing is a slowloris too: closed
    after header_timeout (no answer: it asked nothing), not idle_timeout."""
    with backend("silent") as b:
        cfg = one_route(b.port, limits={"header_timeout": "500ms", "idle_timeout": "60s"})
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


def test_a_header_timeout_is_logged_with_the_time_the_head_took(tmp_path):
    with backend("ht") as b:
        log = str(tmp_path / "access.log")
        cfg = one_route(b.port, limits={"header_timeout": "700ms"}, access_log={"path": log})
        gw = Gateway(cfg, tmp_path)
        try:
            buf, _ = raw_ex(gw.port, b"GET /slow HTTP/1.1\r\nHost: a\r\n", timeout=scaled(5))
            assert buf.startswith(b"HTTP/1.1 408 "), buf[:100]
            d = access_log_lines(log, 1)[0]
            assert d["status"] == 408
            # The timer cannot fire early: the request took at least 700 ms.
            assert d["duration_ms"] >= 690, d
        finally:
            gw.stop()


def test_a_client_cut_for_not_reading_is_closed_at_once(tmp_path):
    """The send timeout cuts a client that stopped reading. With io_uring
    the send blocked on it held the socket open for another 10 s (the close
    grace of ordinary closes); it is now cancelled, as epoll drops it."""
    with backend("cut") as b:
        log = str(tmp_path / "access.log")
        cfg = one_route(b.port, limits={"idle_timeout": "1s"}, access_log={"path": log})
        gw = Gateway(cfg, tmp_path)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.settimeout(scaled(5))
        try:
            s.connect(("127.0.0.1", gw.port))
            s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
            # ...and read no more.
            d = access_log_lines(log, 1)[0]
            assert d["error"] == "client send timeout", d
            # Well inside the 10 s grace, on any build.
            wait_until(lambda: not tcp_sockets(gw.port), min(scaled(3), 8),
                       what="the cut connection to close")
        finally:
            s.close()
            gw.stop()


def test_at_the_limit_a_connection_whose_request_is_waiting_is_not_idle(tmp_path):
    """max_connections: an idle keep-alive connection gives way to a new
    client, but not one whose next request is already in the same batch
    of events: that request (a POST) would be lost."""
    with backend("ev") as b:
        gw = Gateway(limited_to(1, b.port), tmp_path)
        a = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        nb = None
        try:
            a.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            assert read_responses(a, 1)[0].status == 200
            with frozen(gw):
                nb = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
                nb.sendall(b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                a.sendall(b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
            got = read_responses(a, 1)
            assert got and got[0].status == 200, got
            a.close()  # now B's turn
            assert read_responses(nb, 1)[0].status == 200
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
        gw = Gateway(limited_to(1, b.port), tmp_path)
        socks = []
        try:
            with frozen(gw):
                for name in (b"B", b"C"):
                    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
                    s.sendall(b"POST /" + name + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                              b"Content-Length: 2\r\n\r\nhi")
                    socks.append(s)
            for s in socks:
                got = read_responses(s, 1)
                assert got and got[0].status == 200, got
        finally:
            for s in socks:
                s.close()
            gw.stop()
