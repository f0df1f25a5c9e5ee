"""Slow and abusive HTTP/1.1 clients: 500 slow connections (slowloris
heads and slow bodies) while normal requests keep succeeding, with the
gateway's memory per connection measured; the minimum body rate answers a
trickling body with 408 and closes, but leaves a slow-enough upload and a
body held up by its upstream alone; max_connections makes a client over the
cap wait (not refused, not reset) until a slot frees. The same limits on a
TLS listener: a handshake that never ends (handshake_timeout), a head or a
body trickled after it, the connection cap."""

import socket
import ssl
import threading
import time

import pytest
import requests

from conftest import (SAN, Gateway, backend, free_port, make_config, read_head, read_responses,
                      scaled, upstream)
from tls_certs import tls_certs  # noqa: F401  (the session fixture)


def slow_config(port, up_port, **limits):
    lim = {"header_timeout": "60s", "idle_timeout": "60s"}
    lim.update(limits)
    return make_config(port, {"u": upstream(up_port)},
                       [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}],
                       workers=2, limits=lim)


def open_conns(port, n):
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
        out.append(s)
    return out


@pytest.mark.heavy
def test_500_slow_connections_do_not_stop_normal_requests(tmp_path, capsys):
    with backend("slow", threads=2) as b:
        gw = Gateway(slow_config(free_port(), b.port), tmp_path)
        socks = []
        try:
            requests.get(gw.u("/tiny"), timeout=scaled(5))
            base = gw.rss_kb()
            idle = open_conns(gw.port, 1000)  # connected, silent
            socks += idle
            time.sleep(0.5)
            idle_kb = gw.rss_kb() - base
            for s in idle:
                s.close()
            socks = []
            time.sleep(1.0)  # the gateway sees the closes
            base2 = gw.rss_kb()
            heads = open_conns(gw.port, 250)
            bodies = open_conns(gw.port, 250)
            socks = heads + bodies
            for s in heads:
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            for s in bodies:
                s.sendall(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nx")
            stop = threading.Event()

            def dribble():
                while not stop.is_set():
                    for s in socks:
                        try:
                            s.send(b"x")
                        except OSError:
                            pass
                    stop.wait(1.0)

            t = threading.Thread(target=dribble)
            t.start()
            try:
                ok = 0
                sess = requests.Session()
                t_end = time.monotonic() + 5
                while time.monotonic() < t_end:
                    r = sess.get(gw.u("/tiny"), timeout=scaled(5))
                    assert r.status_code == 200
                    r = requests.post(gw.u("/echo"), data=b"y" * 5000, timeout=scaled(5))
                    assert r.status_code == 200 and r.json()["body_len"] == 5000
                    ok += 1
                slow_kb = gw.rss_kb() - base2
            finally:
                stop.set()
                t.join()
            assert ok > 10
            # Every slow connection is still held (none was dropped to make room).
            alive = 0
            for s in socks:
                s.setblocking(False)
                try:
                    alive += s.recv(1) != b""
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
            assert alive == 500
            with capsys.disabled():
                print("\n[memory] 1000 idle connections: %d KiB (%.1f KiB each); "
                      "500 slow (250 heads, 250 bodies): %d KiB (%.1f KiB each)"
                      % (idle_kb, idle_kb / 1000, slow_kb, slow_kb / 500))
            # Bounded: a slow head holds one 16 KiB read buffer, a slow body
            # its arena, buffer and upstream connection; far below 64 KiB.
            assert slow_kb < 500 * 64
            assert idle_kb < 1000 * 16
        finally:
            for s in socks:
                s.close()
            gw.stop()


def trickle_body(port, total, piece, every, limit_s):
    """Sends a POST head with Content-Length `total`, then `piece` bytes
    every `every` s (on a thread) until the body is out or an answer came;
    returns (the response or None, seconds until it came)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
    t0 = time.monotonic()
    stop = threading.Event()

    def sender():
        sent = 0
        while sent < total and not stop.is_set():
            n = min(piece, total - sent)
            try:
                s.send(b"u" * n)
            except OSError:
                return
            sent += n
            stop.wait(every)

    t = threading.Thread(target=sender)
    t.start()
    try:
        rs = read_responses(s, 1, limit_s)
    finally:
        took = time.monotonic() - t0
        stop.set()
        t.join()
        s.close()
    return (rs[0] if rs else None), took


def test_min_body_rate_answers_408_and_closes(tmp_path):
    with backend("rate") as b:
        gw = Gateway(slow_config(free_port(), b.port, min_body_rate="1KiB",
                                 body_rate_window="1s"), tmp_path)
        try:
            r, took = trickle_body(gw.port, 100000, 20, 0.1, scaled(8))
            assert r is not None and r.status == 408, r
            assert r.json()["error"] == "request body too slow"
            assert 0.9 <= took < scaled(4)
            assert r.header("Connection") == "close"  # and the gateway closed
        finally:
            gw.stop()


def test_upload_above_min_body_rate_is_not_cut(tmp_path):
    with backend("rate") as b:
        gw = Gateway(slow_config(free_port(), b.port, min_body_rate="1KiB",
                                 body_rate_window="1s"), tmp_path)
        try:
            # 3 KiB/s for about 3 s: above the rate in every window
            r, took = trickle_body(gw.port, 9000, 300, 0.1, scaled(10))
            assert r is not None and r.status == 200, r
            assert r.json()["body_len"] == 9000 and took > 2.5
        finally:
            gw.stop()


def test_min_body_rate_off_with_zero(tmp_path):
    with backend("rate") as b:
        gw = Gateway(slow_config(free_port(), b.port, min_body_rate=0,
                                 body_rate_window="1s"), tmp_path)
        try:
            r, took = trickle_body(gw.port, 60, 2, 0.1, scaled(10))
            assert r is not None and r.status == 200 and took > 2.5, r
        finally:
            gw.stop()


def test_body_held_up_by_a_slow_upstream_is_not_judged(tmp_path, raw_upstream):
    """The upstream takes the body slowly (128 KiB every 100 ms, far below
    min_body_rate): the client is not the slow one, so no 408 — the upload
    completes."""
    def handler(s):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 131072)  # little room to hide the pace
        head, rest = read_head(s)
        n = int([l.split(b":")[1] for l in head.split(b"\r\n")
                 if l.lower().startswith(b"content-length")][0])
        got = len(rest)
        while got < n:
            time.sleep(0.1)
            k = s.recv(131072)
            if not k:
                return
            got += len(k)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(got)), got))
    up = raw_upstream(handler)
    cfg = slow_config(free_port(), up.port, min_body_rate="4MiB", body_rate_window="1s",
                      max_body_bytes="16MiB")
    cfg["upstreams"]["u"]["read_timeout"] = "30s"
    gw = Gateway(cfg, tmp_path)
    try:
        body = b"z" * (8 << 20)  # beyond the socket buffers: the upstream sets the pace
        t0 = time.monotonic()
        r = requests.post(gw.u("/up"), data=body, timeout=scaled(60))
        assert r.status_code == 200 and r.text == str(len(body)), r.text
        assert time.monotonic() - t0 > 2  # slower than min_body_rate over several windows
    finally:
        gw.stop()


def test_max_connections_over_cap_waits_then_is_served(tmp_path):
    """At the cap, accepting pauses: a client over it completes its TCP
    handshake in the kernel's backlog and is served once a slot frees (here
    when the slowloris connections holding the cap hit header_timeout) —
    neither refused nor reset."""
    with backend("cap") as b:
        cfg = slow_config(free_port(), b.port, max_connections=20, header_timeout="2s")
        cfg["workers"] = 1
        gw = Gateway(cfg, tmp_path)
        hold = []
        try:
            hold = open_conns(gw.port, 20)
            for s in hold:
                s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")  # a head that never ends
            time.sleep(0.3)
            t0 = time.monotonic()
            r = requests.get(gw.u("/tiny"), timeout=scaled(10))
            took = time.monotonic() - t0
            assert r.status_code == 200
            assert took >= 1.0, "served at once: the cap did not hold"
            # the holders got their 408 when their header_timeout passed
            for s in hold:
                s.settimeout(scaled(5))
                assert s.recv(4096).startswith(b"HTTP/1.1 408")
        finally:
            for s in hold:
                s.close()
            gw.stop()


# ------------------------------------------------------------------ on TLS
# Every limit above holds on a TLS listener too: a client that never ends
# its handshake is closed by handshake_timeout (no HTTP answer: it never
# spoke HTTP); one that ends it and then trickles its head gets 408 at
# header_timeout; a trickled body gets 408 from min_body_rate; at
# max_connections a client over the cap waits for a slot.

@pytest.fixture(scope="module")
def tls_env(tls_certs, tmp_path_factory):
    cert, key = tls_certs.server("slow-tls", ["slow.test", "localhost"], kind="ec")
    with backend("slowtls") as b:
        cfg = slow_config(free_port(), b.port, header_timeout="1s", min_body_rate="1KiB",
                          body_rate_window="1s", max_connections=20)
        cfg["workers"] = 1
        cfg["listeners"][0]["tls"] = {"certificates": [{"cert": cert, "key": key}],
                                      "handshake_timeout": "1s"}
        gw = Gateway(cfg, tmp_path_factory.mktemp("slow-tls"))
        ctx = ssl.create_default_context(cafile=tls_certs.ca)
        try:
            yield gw, ctx
        finally:
            gw.stop()


def tls_conn(gw, ctx):
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    return ctx.wrap_socket(s, server_hostname="localhost")


def client_hello(ctx):
    """The bytes of a real ClientHello (what a client sends first)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def until_eof(s, limit):
    s.settimeout(limit)
    buf = b""
    try:
        while True:
            k = s.recv(4096)
            if not k:
                return buf, True
            buf += k
    except (socket.timeout, ssl.SSLError):
        return buf, False
    except ConnectionResetError:
        return buf, True


def test_tls_handshake_trickled_is_closed_by_handshake_timeout(tls_env):
    gw, ctx = tls_env
    hello = client_hello(ctx)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    t0 = time.monotonic()
    stop = threading.Event()

    def dribble():  # a byte of the ClientHello every 100 ms: never done in time
        for i in range(len(hello) - 1):
            if stop.wait(0.1):
                return
            try:
                s.send(hello[i:i + 1])
            except OSError:
                return
    t = threading.Thread(target=dribble)
    t.start()
    try:
        buf, closed = until_eof(s, scaled(5))
    finally:
        stop.set()
        t.join()
        s.close()
    took = time.monotonic() - t0
    assert closed and b"HTTP" not in buf, buf
    assert 0.9 <= took < scaled(3), took


def test_tls_head_trickled_after_the_handshake_gets_408(tls_env):
    gw, ctx = tls_env
    s = tls_conn(gw, ctx)  # the handshake completes at once
    req = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 100
    t0 = time.monotonic()
    stop = threading.Event()

    def dribble():  # one byte (one TLS record) every 100 ms
        for i in range(len(req)):
            if stop.wait(0.1):
                return
            try:
                s.send(req[i:i + 1])
            except OSError:
                return
    t = threading.Thread(target=dribble)
    t.start()
    try:
        buf, closed = until_eof(s, scaled(6))
    finally:
        stop.set()
        t.join()
        s.close()
    took = time.monotonic() - t0
    assert buf.startswith(b"HTTP/1.1 408"), buf[:200]
    assert closed and 0.9 <= took < scaled(3), took


def test_tls_silent_after_the_handshake_is_closed_by_header_timeout(tls_env):
    gw, ctx = tls_env
    s = tls_conn(gw, ctx)
    t0 = time.monotonic()
    buf, closed = until_eof(s, scaled(5))
    s.close()
    assert closed and buf == b"" and 0.9 <= time.monotonic() - t0 < scaled(3)


def test_tls_body_below_min_body_rate_gets_408(tls_env):
    gw, ctx = tls_env
    s = tls_conn(gw, ctx)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
    t0 = time.monotonic()
    stop = threading.Event()

    def dribble():
        while not stop.wait(0.1):
            try:
                s.send(b"u" * 20)
            except OSError:
                return
    t = threading.Thread(target=dribble)
    t.start()
    try:
        rs = read_responses(s, 1, scaled(8))
    finally:
        stop.set()
        t.join()
        s.close()
    assert rs and rs[0].status == 408 and rs[0].json()["error"] == "request body too slow"
    assert 0.9 <= time.monotonic() - t0 < scaled(4)


def test_tls_max_connections_over_cap_waits_then_is_served(tls_env):
    """20 connections that never start their handshake hold the cap: a TLS
    client over it waits in the backlog and is served once handshake_timeout
    frees their slots."""
    gw, ctx = tls_env
    hold = open_conns(gw.port, 20)
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        s = tls_conn(gw, ctx)
        s.sendall(b"GET /tiny HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        rs = read_responses(s, 1, scaled(10))
        s.close()
        assert rs and rs[0].status == 200
        assert time.monotonic() - t0 >= 0.5, "served at once: the cap did not hold"
        for h in hold:
            h.settimeout(scaled(5))
            assert h.recv(100) == b""  # closed without an answer
    finally:
        for h in hold:
            h.close()


@pytest.mark.heavy
def test_memory_per_slow_tls_connection(tmp_path, tls_certs, capsys):
    """250 TLS connections that finished the handshake and trickle a head:
    the RSS growth per connection (the SSL object and OpenSSL's record
    buffers on top of a plain slow connection), printed for
    docs/operations.md and bounded."""
    cert, key = tls_certs.server("slow-tls-mem", ["localhost"], kind="ec")
    with backend("slowtlsmem") as b:
        cfg = slow_config(free_port(), b.port)
        cfg["listeners"][0]["tls"] = {"certificates": [{"cert": cert, "key": key}]}
        gw = Gateway(cfg, tmp_path)
        ctx = ssl.create_default_context(cafile=tls_certs.ca)
        socks = []
        try:
            w = tls_conn(gw, ctx)
            w.sendall(b"GET /tiny HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            read_responses(w, 1, scaled(5))
            w.close()
            time.sleep(0.3)
            base = gw.rss_kb()
            for _ in range(250):
                s = tls_conn(gw, ctx)
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: ")
                socks.append(s)
            for _ in range(3):
                for s in socks:
                    s.send(b"x")
                time.sleep(0.3)
            kb = gw.rss_kb() - base
            with capsys.disabled():
                print("\n[memory] 250 slow TLS connections: %d KiB (%.1f KiB each)"
                      % (kb, kb / 250))
            # ASan builds: redzones and quarantine on every OpenSSL allocation.
            assert kb < 250 * 96 * (8 if SAN else 1)
        finally:
            for s in socks:
                s.close()
            gw.stop()
