"""HTTP/2 connections and streams over time: drain with streams in flight,
the header and send timeouts, max_connections eviction of idle HTTP/2
connections, and the rapid-reset budget against a browser's cancels.

Real clients only: python `h2` over a plain socket (h2c, prior knowledge)
and raw frames where a client must misbehave."""

import json
import signal
import socket
import subprocess
import time

import h2.exceptions
import h2.settings
import pytest

from conftest import Gateway, backend, scaled
from test_http2 import (ENHANCE_YOUR_CALM, PREFACE, H2Client, _frame, _hpack, _read_goaway,
                        h2_config, status)

MiB = 1024 * 1024
CANCEL = 0x8


@pytest.fixture
def demo():
    with backend("demo") as b:
        yield b


def test_drain_keeps_reading_so_a_large_inflight_response_finishes(tmp_path):
    """SIGTERM sends GOAWAY; a stream in flight needs the client's
    WINDOW_UPDATEs to get more than 64 KiB out (nghttp's windows are
    64 KiB), so the gateway must go on reading after its GOAWAY (it used to
    stop, and the stream hung until drain_timeout cut it)."""
    with backend("slow", delay=600) as slow:
        g = Gateway(h2_config(slow.port, limits={"drain_timeout": "20s"}), tmp_path)
        try:
            p = subprocess.Popen(["nghttp", g.u("/bytes/%d" % (2 * MiB))],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.3)  # the request is at the backend
            g.send(signal.SIGTERM)
            t0 = time.monotonic()
            out, err = p.communicate(timeout=scaled(30))
            assert p.returncode == 0, err
            assert len(out) == 2 * MiB
            assert out == b"0123456789abcdef" * (2 * MiB // 16)
            assert time.monotonic() - t0 < scaled(10)
            assert g.proc.wait(timeout=scaled(10)) == 0
        finally:
            g.stop()


def test_unfinished_header_block_is_cut_at_header_timeout(tmp_path, demo):
    """A HEADERS frame without END_HEADERS and then nothing (an HTTP/2
    slowloris): at header_timeout the connection gets GOAWAY and closes.
    It used to have no timer at all once a stream was open."""
    g = Gateway(h2_config(demo.port, limits={"header_timeout": "1s"}), tmp_path)
    try:
        s = socket.create_connection(("127.0.0.1", g.port), timeout=scaled(10))
        hb = _hpack([(":method", "GET"), (":path", "/x"), (":scheme", "http"),
                     (":authority", "gw.test")])
        s.sendall(PREFACE + _frame(1, 0x1, 1, hb[:3]))  # END_STREAM, no END_HEADERS
        t0 = time.monotonic()
        code = _read_goaway(s, scaled(8))
        took = time.monotonic() - t0
        assert code == 0, code
        assert took < scaled(5), took
        s.settimeout(scaled(5))
        try:
            rest = s.recv(65536)
            while rest:
                rest = s.recv(65536)
        except ConnectionResetError:
            pass
        s.close()
        demo_requests = demo.stats()["requests"]
        assert demo_requests == 0
    finally:
        g.stop()


def test_a_stream_the_client_window_holds_is_reset_after_idle_timeout(tmp_path, demo):
    """The client opens a stream with a zero window and never opens it:
    the response can't move, so after idle_timeout the stream (not the
    connection) is reset with CANCEL and its upstream call ends. It used to
    hold the stream, its exchange and an upstream connection forever."""
    g = Gateway(h2_config(demo.port, limits={"idle_timeout": "1s"}), tmp_path)
    try:
        c = H2Client(g.port)
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        c.flush()
        t0 = time.monotonic()
        sid = c.request("GET", "/bytes/%d" % (256 * 1024))
        st = c.wait([sid], timeout=scaled(10))[0]
        took = time.monotonic() - t0
        assert st["reset"] == CANCEL, st
        assert status(st) == 200 and len(st["data"]) == 0
        assert 0.9 < took < scaled(4), took
        # the connection itself is fine: a body-less answer still comes
        st = c.get("/after", method="HEAD")
        assert status(st) == 200
        c.close()
    finally:
        g.stop()


def test_a_slow_reader_that_keeps_reading_is_not_reset(tmp_path, demo):
    """The send timeout is about a window held shut, not a slow transfer:
    a client that opens its window a little at a time, more slowly than
    idle_timeout overall, gets the whole response."""
    g = Gateway(h2_config(demo.port, limits={"idle_timeout": "1s"}), tmp_path)
    try:
        c = H2Client(g.port)
        size = 512 * 1024
        sid = c.request("GET", "/bytes/%d" % size)
        t0 = time.monotonic()
        # python-h2 acknowledges as data arrives; 64 KiB windows at a
        # time with pauses make it take longer than idle_timeout
        while not c.streams[sid]["ended"]:
            assert c.streams[sid]["reset"] is None
            c.pump()
            time.sleep(0.05)
        assert time.monotonic() - t0 > 0.3
        assert len(c.streams[sid]["data"]) == size
        c.close()
    finally:
        g.stop()


def test_idle_h2_connection_gives_way_at_max_connections(tmp_path, demo):
    """At max_connections the longest-idle connection is closed for a new
    client; an idle HTTP/2 connection (no open stream) is one of those:
    GOAWAY NO_ERROR, then closed. It used to be skipped, so two idle h2
    clients kept a third out."""
    g = Gateway(h2_config(demo.port, limits={"max_connections": 2}), tmp_path)
    try:
        a = H2Client(g.port)
        assert status(a.get("/a")) == 200
        time.sleep(0.05)
        b = H2Client(g.port)
        assert status(b.get("/b")) == 200
        c = H2Client(g.port)
        assert status(c.get("/c")) == 200  # served: someone gave way
        # the oldest idle one (a) got GOAWAY and was closed
        deadline = time.monotonic() + scaled(5)
        while not a.closed and time.monotonic() < deadline:
            a.pump(timeout=scaled(5))
        assert a.goaway is not None and a.goaway.error_code == 0
        assert a.closed
        assert status(b.get("/b2")) == 200
        for x in (a, b, c):
            x.close()
    finally:
        g.stop()


def test_busy_h2_connection_is_not_evicted(tmp_path):
    """A connection with a stream open is not idle: it is never the one
    that gives way."""
    with backend("slow", delay=1500) as slow:
        g = Gateway(h2_config(slow.port, limits={"max_connections": 1}), tmp_path)
        try:
            a = H2Client(g.port)
            sid = a.request("GET", "/slow")
            time.sleep(0.3)
            b = socket.create_connection(("127.0.0.1", g.port), timeout=scaled(10))
            st = a.wait([sid])[0]
            assert st["reset"] is None and status(st) == 200
            # Once the response is out, a is idle and gives way to the waiting
            # b (GOAWAY NO_ERROR, last stream 1) — that may already be in the
            # bytes read with the response; an eviction while the stream was
            # open would have cut it (no 200).
            assert a.goaway is None or (a.goaway.error_code == 0 and
                                        a.goaway.last_stream_id == sid)
            b.close()
            a.close()
        finally:
            g.stop()


def test_browser_cancelling_navigations_is_not_goawayed(tmp_path):
    """A browser opens up to 100 streams and resets them all when the user
    navigates away. Three such navigations in a few seconds are no attack:
    the connection keeps working. (It used to get ENHANCE_YOUR_CALM past
    200 resets in 10 s.)"""
    with backend("slow", delay=2000) as slow:
        g = Gateway(h2_config(slow.port), tmp_path)
        try:
            c = H2Client(g.port)
            c.pump()  # SETTINGS
            for _ in range(3):
                sids = [c.request("GET", "/page/%d" % i) for i in range(100)]
                time.sleep(0.2)
                for sid in sids:
                    c.conn.reset_stream(sid, error_code=CANCEL)
                c.flush()
                time.sleep(0.1)
            slow.control(delay=0)
            st = c.get("/next-page")
            assert c.goaway is None, c.goaway
            assert status(st) == 200
            c.close()
        finally:
            g.stop()


def test_rapid_reset_still_ends_in_goaway(tmp_path, demo):
    """The budget that lets a browser cancel still stops a rapid-reset
    client quickly (HEADERS + RST_STREAM, over and over)."""
    g = Gateway(h2_config(demo.port), tmp_path)
    try:
        hb = _hpack([(":method", "GET"), (":path", "/rr"), (":scheme", "http"),
                     (":authority", "gw.test")])
        s = socket.create_connection(("127.0.0.1", g.port), timeout=scaled(10))
        out = PREFACE
        for k in range(600):
            sid = 1 + 2 * k
            out += _frame(1, 0x4 | 0x1, sid, hb) + _frame(3, 0, sid, (8).to_bytes(4, "big"))
        try:
            s.sendall(out)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _read_goaway(s, scaled(5)) == ENHANCE_YOUR_CALM
        s.close()
        c = H2Client(g.port)
        assert status(c.get("/bystander")) == 200
    finally:
        g.stop()


# ---------------------------------------------------------------- min body rate

def _trickle_stream(c, sid, total, chunk, every, until):
    """Sends `chunk` bytes of the body of stream `sid` every `every` seconds
    (END_STREAM with the last) until the stream has a response, is reset, or
    `until` seconds passed; returns the seconds it took."""
    t0 = time.monotonic()
    sent = 0
    st = c.streams[sid]
    while time.monotonic() - t0 < until and st["headers"] is None and st["reset"] is None:
        if sent < total:
            n = min(chunk, total - sent)
            sent += n
            try:
                c.conn.send_data(sid, b"b" * n, end_stream=sent == total)
            except h2.exceptions.StreamClosedError:
                break
            c.flush()
        c.sock.settimeout(every)
        try:
            c.pump(timeout=every)
        except socket.timeout:
            pass
        if sent == total and st["ended"]:
            break
    return time.monotonic() - t0


def test_slow_request_body_stream_gets_408_and_the_connection_carries_on(tmp_path, demo):
    """A stream whose body trickles in below limits.min_body_rate while the
    gateway waits on the client gets 408 (then RST_STREAM NO_ERROR: stop
    sending); a bystander stream on the same connection and new streams
    after it are served."""
    g = Gateway(h2_config(demo.port, limits={"min_body_rate": "1KiB",
                                             "body_rate_window": "1s"}), tmp_path)
    try:
        c = H2Client(g.port)
        slow = c.conn.get_next_available_stream_id()
        c.streams[slow] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        c.conn.send_headers(slow, [(":method", "POST"), (":path", "/echo/slow"),
                                   (":scheme", "http"), (":authority", "gw.test"),
                                   ("content-length", "100000")])
        c.flush()
        by = c.request("POST", "/echo/bystander", body=b"x" * 50000)
        took = _trickle_stream(c, slow, 100000, 20, 0.1, scaled(8))
        st = c.streams[slow]
        assert st["headers"] is not None and status(st) == 408, st
        c.wait([slow, by])
        assert json.loads(bytes(st["data"]))["error"] == "request body too slow"
        assert 0.9 <= took < scaled(4)
        bst = c.streams[by]
        assert status(bst) == 200 and json.loads(bytes(bst["data"]))["body_len"] == 50000
        assert status(c.get("/after")) == 200
        c.close()
    finally:
        g.stop()


def test_stream_body_above_min_body_rate_is_not_cut(tmp_path, demo):
    g = Gateway(h2_config(demo.port, limits={"min_body_rate": "1KiB",
                                             "body_rate_window": "1s"}), tmp_path)
    try:
        c = H2Client(g.port)
        sid = c.conn.get_next_available_stream_id()
        c.streams[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        c.conn.send_headers(sid, [(":method", "POST"), (":path", "/echo/steady"),
                                  (":scheme", "http"), (":authority", "gw.test"),
                                  ("content-length", "9000")])
        c.flush()
        # 3 KiB/s for about 3 s: above the rate in every window
        took = _trickle_stream(c, sid, 9000, 300, 0.1, scaled(10))
        st = c.wait([sid])[0]
        assert status(st) == 200 and took > 2.5
        assert json.loads(bytes(st["data"]))["body_len"] == 9000
        c.close()
    finally:
        g.stop()
