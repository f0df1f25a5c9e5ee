"""SIGTERM / SIGINT: stop accepting, finish in-flight requests up to
limits.drain_timeout, exit 0. A response finished during the drain says
`Connection: close`; what the drain timeout cuts is reset (never a clean
end of a close-delimited body) and logged as cut by the drain."""

import signal
import socket
import threading
import time

import requests

from conftest import (Gateway, RawUpstream, access_log_lines, backend, free_port, make_config,
                      one_route, port_open, read_head, read_responses, recv_all, scaled,
                      upstream, wait_until)


def cfg_for(b, drain="10s"):
    return make_config(free_port(), {"s": upstream(b.port, read_timeout="30s")},
                       [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "s"}],
                       limits={"drain_timeout": drain})


def start_slow(gw, delay_ms):
    result = {}

    def run():
        try:
            r = requests.get(gw.u("/slow"), headers={"X-Demo-Delay": str(delay_ms)},
                             timeout=scaled(30))
            result["status"] = r.status_code
            result["body"] = r.content
            result["backend"] = r.headers.get("X-Backend")
        except Exception as e:  # noqa: BLE001
            result["error"] = repr(e)
        result["t"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    return t, result


def test_sigterm_finishes_inflight_and_exits_0(tmp_path):
    with backend("sd") as b:
        gw = Gateway(cfg_for(b), tmp_path)
        try:
            idle_active = b.stats()["active"]
            t, result = start_slow(gw, 2500)
            wait_until(lambda: b.stats()["active"] > idle_active or "t" in result, scaled(5),
                       what="slow request at the backend")
            assert "t" not in result, result
            gw.send(signal.SIGTERM)
            # stop accepting: new connections are refused while the slow one drains
            wait_until(lambda: not port_open(gw.port) or "t" in result, scaled(5),
                       what="listener closed")
            refused_before_done = "t" not in result
            t.join(scaled(30))
            rc = gw.proc.wait(timeout=scaled(15))
            assert result.get("status") == 200, result
            assert result.get("backend", "").startswith("sd:")
            assert rc == 0, "exit code %s; stderr:\n%s" % (rc, gw.stderr_text())
            assert refused_before_done, "listener still accepting during drain"
        finally:
            gw.stop()


def test_sigint_idle_exits_0(tmp_path):
    with backend("sd") as b:
        gw = Gateway(cfg_for(b), tmp_path)
        try:
            assert requests.get(gw.u("/x"), timeout=scaled(5)).status_code == 200
            gw.send(signal.SIGINT)
            rc = gw.proc.wait(timeout=scaled(10))
            assert rc == 0, gw.stderr_text()
        finally:
            gw.stop()


def test_sigterm_with_idle_keepalive_connections(tmp_path):
    """Idle keep-alive client connections must not hold up the exit."""
    with backend("sd") as b:
        gw = Gateway(cfg_for(b), tmp_path)
        sessions = []
        try:
            for _ in range(5):
                s = requests.Session()
                assert s.get(gw.u("/x"), timeout=scaled(5)).status_code == 200
                sessions.append(s)
            gw.send(signal.SIGTERM)
            rc = gw.proc.wait(timeout=scaled(8))  # raises if idle connections hold it up
            assert rc == 0, gw.stderr_text()
        finally:
            for s in sessions:
                s.close()
            gw.stop()


def test_drain_timeout_bounds_shutdown(tmp_path):
    """A request slower than drain_timeout doesn't keep the process alive."""
    with backend("sd") as b:
        gw = Gateway(cfg_for(b, drain="500ms"), tmp_path)
        try:
            idle_active = b.stats()["active"]
            t, result = start_slow(gw, 20000)
            wait_until(lambda: b.stats()["active"] > idle_active, scaled(5),
                       what="slow request at the backend")
            gw.send(signal.SIGTERM)
            try:
                rc = gw.proc.wait(timeout=scaled(8))
            except Exception:  # noqa: BLE001
                rc = "still running"
            assert rc == 0, "after drain_timeout: %r\n%s" % (rc, gw.stderr_text())
            t.join(scaled(10))
            assert result.get("status") != 200, result
        finally:
            gw.stop()


def test_drain_response_says_connection_close(tmp_path):
    """A response finished during a drain is the connection's last: it must
    say so, or a keep-alive client sends its next request into a close."""
    with backend("dr") as b:
        gw = Gateway(one_route(b.port, limits={"drain_timeout": "10s"}), tmp_path)
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


def test_drain_timeout_resets_a_close_delimited_body(gateway, raw_upstream):
    # A download without length still running at the drain timeout is cut:
    # with a FIN its client would take the partial body as the whole.
    def trickle(s):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstart-")
        for _ in range(100):
            time.sleep(0.1)  # the trickle is the point: still running at the drain timeout
            s.sendall(b"more-")

    up = raw_upstream(trickle)
    gw = gateway(one_route(up.port, limits={"drain_timeout": "300ms"}))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    s.sendall(b"GET /dl HTTP/1.1\r\nHost: a\r\n\r\n")
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 "), first
    gw.send(signal.SIGTERM)
    buf, how = recv_all(s)
    s.close()
    assert how == "reset", (how, len(buf))
    assert gw.proc.wait(timeout=scaled(10)) == 0


def test_a_request_cut_by_the_drain_is_logged_as_such(tmp_path):
    """An upload still stalled at the drain timeout: no answer went out,
    and the log says why the request ended."""
    got_head = threading.Event()

    def stall(s):
        read_head(s)
        got_head.set()
        s.settimeout(scaled(5))
        recv_all(s)  # never answer; hold on until the gateway lets go

    up = RawUpstream(stall)
    log = str(tmp_path / "access.log")
    cfg = one_route(up.port, limits={"drain_timeout": "300ms"}, access_log={"path": log})
    gw = Gateway(cfg, tmp_path)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    try:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        assert got_head.wait(scaled(5)), "the request never reached the upstream"
        gw.send(signal.SIGTERM)
        assert gw.proc.wait(timeout=scaled(10)) == 0
        d = access_log_lines(log, 1)[0]
        assert d["error"] == "drain timeout", d
    finally:
        s.close()
        gw.stop()
        up.close()
