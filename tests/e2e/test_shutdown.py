"""SIGTERM / SIGINT: stop accepting, finish in-flight requests up to
limits.drain_timeout, exit 0."""

import signal
import threading
import time

import requests

from conftest import (Gateway, backend, free_port, make_config, port_open, scaled,
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
