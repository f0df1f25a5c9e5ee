"""The circuit breaker (upstreams.*.circuit_breaker) end to end: a backend
answering 503 opens it within the window; while open the upstream is not
contacted and clients get a 503 JSON error with Retry-After at once;
after open_for, half-open probes close it once the backend recovers and a
failing probe reopens it; failure_statuses decides what a failure is;
connect errors count; max_concurrent refuses the overflow at once and
gives slots back when calls end (a slow client still reading the response
holds none once the gateway has the whole of it); a reload that grows the
window keeps the breaker working; the state is shown in admin /upstreams,
logged, and kept across a reload. Bad values of these keys (and of
health_check.passive and failure_statuses) are refused by `portico
validate` with their position."""

import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import (PORTICO, assert_error_response, backend, backend_of, free_port, make_config,
                      require_binaries, scaled, upstream, wait_until)

BREAKER = {"error_rate": 0.5, "min_requests": 5, "window": "10s", "open_for": "2s",
           "half_open_requests": 2}


def config(ports, breaker=None, **extra):
    ups = {"app": upstream(*ports, circuit_breaker=dict(breaker or BREAKER), **extra)}
    routes = [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"}]
    return make_config(free_port(), ups, routes)


def admin_upstream(gw):
    doc = requests.get("http://127.0.0.1:%d/upstreams" % gw.admin_port, timeout=scaled(5)).json()
    return doc["upstreams"][0]


def breaker(gw):
    return admin_upstream(gw)["circuit_breaker"]


def from_backend(r):
    return r.headers.get("X-Backend") is not None


def open_breaker(gw, session):
    """Sends requests until one is refused by the open breaker; returns how
    many reached the backend first."""
    for i in range(50):
        r = session.get(gw.u("/"), timeout=scaled(5))
        if not from_backend(r):
            assert r.json()["error"] == "circuit breaker open", r.text
            return i
    raise AssertionError("the breaker never opened: %r" % breaker(gw))


def test_a_failing_backend_opens_it_and_the_upstream_is_not_contacted(gateway):
    with backend("b", status=503) as b:
        gw = gateway(config([b.port]))
        with requests.Session() as s:
            # min_requests failures in a row: the fifth opens it.
            assert open_breaker(gw, s) == 5
            st = breaker(gw)
            assert st["state"] == "open" and st["opened"] == 1, st
            assert st["window"]["requests"] == 5 and st["window"]["failures"] == 5, st
            assert 0 < st["open_remaining_ms"] <= 2000
            b.reset()
            for _ in range(20):
                r = s.get(gw.u("/"), headers={"X-Request-ID": "rid-breaker-1"},
                          timeout=scaled(5))
                doc = assert_error_response(r, 503, "rid-breaker-1")
                assert doc["error"] == "circuit breaker open"
                assert 1 <= int(r.headers["Retry-After"]) <= 2
                assert not from_backend(r)
        assert b.stats()["requests"] == 0
        assert "upstream app circuit breaker open for 2s: 5 of 5 requests failed" in \
            gw.stderr_text()


def test_half_open_probes_close_it_once_the_backend_recovers(gateway):
    with backend("b", status=503) as b:
        gw = gateway(config([b.port]))
        with requests.Session() as s:
            open_breaker(gw, s)
            b.control(status=0)
            b.reset()
            # After open_for, exactly half_open_requests probes succeed and close it.
            wait_until(lambda: breaker(gw)["state"] == "half_open", scaled(10),
                       what="half-open")
            for _ in range(2):
                r = s.get(gw.u("/"), timeout=scaled(5))
                assert r.status_code == 200 and from_backend(r), r.text
            assert breaker(gw)["state"] == "closed"
            assert b.stats()["requests"] == 2
            got = [s.get(gw.u("/"), timeout=scaled(5)).status_code for _ in range(20)]
            assert got == [200] * 20
        st = breaker(gw)
        assert st["window"]["failures"] == 0 and st["opened"] == 1, st
        err = gw.stderr_text()
        assert "upstream app circuit breaker half-open: letting 2 probe requests through" in err
        assert "upstream app circuit breaker closed: 2 probe requests succeeded" in err


def test_a_failing_probe_reopens_it(gateway):
    with backend("b", status=503) as b:
        gw = gateway(config([b.port]))
        with requests.Session() as s:
            open_breaker(gw, s)
            wait_until(lambda: breaker(gw)["state"] == "half_open", scaled(10),
                       what="half-open")
            b.reset()
            r = s.get(gw.u("/"), timeout=scaled(5))
            assert r.status_code == 503 and from_backend(r)  # the probe, answered 503
            r = s.get(gw.u("/"), timeout=scaled(5))
            assert_error_response(r, 503)
            assert r.json()["error"] == "circuit breaker open" and "Retry-After" in r.headers
            assert b.stats()["requests"] == 1
        st = breaker(gw)
        assert st["state"] == "open" and st["opened"] == 2, st
        assert "circuit breaker reopened for 2s: a half-open probe failed" in gw.stderr_text()


def test_failure_statuses_decide_what_a_failure_is(gateway):
    with backend("b", status=503) as b:
        gw = gateway(config([b.port], failure_statuses=[500]))
        with requests.Session() as s:
            got = [s.get(gw.u("/"), timeout=scaled(5)) for _ in range(15)]
        assert all(r.status_code == 503 and from_backend(r) for r in got)
        st = breaker(gw)
        assert st["state"] == "closed" and st["window"]["requests"] == 15, st
        assert st["window"]["failures"] == 0
        assert admin_upstream(gw)["failure_statuses"] == [500]


def test_connect_errors_count_as_failures(gateway):
    dead = free_port()  # nothing listens there
    gw = gateway(config([dead]))
    with requests.Session() as s:
        got = [s.get(gw.u("/"), timeout=scaled(5)) for _ in range(8)]
    assert [r.status_code for r in got[:5]] == [502] * 5
    for r in got[5:]:
        assert_error_response(r, 503)
        assert r.json()["error"] == "circuit breaker open"
    assert breaker(gw)["state"] == "open"


def test_the_open_state_survives_a_reload(gateway):
    with backend("b", status=503) as b:
        cfg = config([b.port], dict(BREAKER, open_for="30s"))
        gw = gateway(cfg)
        with requests.Session() as s:
            open_breaker(gw, s)
        cfg["upstreams"]["app"]["read_timeout"] = "20s"
        gw.reload(cfg)
        b.reset()
        r = requests.get(gw.u("/"), timeout=scaled(5))
        assert_error_response(r, 503)
        assert breaker(gw)["state"] == "open"
        assert b.stats()["requests"] == 0


def test_a_larger_window_after_a_reload_still_opens_it(gateway):
    # Buckets filled with 100 ms slices (window 1s) hold epochs ten times
    # those of 1 s slices: the reload must start the counts over, or the
    # new window never counts anything and the breaker never opens.
    with backend("b") as b:
        cfg = config([b.port], dict(BREAKER, window="1s"))
        gw = gateway(cfg)
        with requests.Session() as s:
            end = time.monotonic() + 1.5  # every bucket of the 1s window used
            while time.monotonic() < end:
                assert s.get(gw.u("/"), timeout=scaled(5)).status_code == 200
                time.sleep(0.02)
            gw.reload(config([b.port], dict(BREAKER, window="10s")) | {
                "listeners": cfg["listeners"], "admin": cfg["admin"]})
            assert "upstream app circuit breaker window is now 10s: its counts start over" in \
                gw.stderr_text()
            b.control(status=503)
            assert open_breaker(gw, s) == 5
        st = breaker(gw)
        assert st["state"] == "open" and st["window"]["failures"] == 5, st


def test_max_concurrent_overflow_is_503_at_once(gateway):
    with backend("slow", delay=1500, threads=4) as b:
        gw = gateway(config([b.port], {"max_concurrent": 2}))
        assert breaker(gw)["max_concurrent"] == 2
        results = []
        lock = threading.Lock()

        def one():
            r = requests.get(gw.u("/"), timeout=scaled(10))
            with lock:
                results.append(r)

        held = [threading.Thread(target=one) for _ in range(2)]
        for t in held:
            t.start()
        wait_until(lambda: breaker(gw)["active_requests"] == 2, scaled(5), what="2 in flight")
        extra = [threading.Thread(target=one) for _ in range(4)]
        for t in extra:
            t.start()
        for t in extra:
            t.join()
        refused = list(results)
        assert len(refused) == 4 and all(not from_backend(r) for r in refused)
        for r in refused:
            assert_error_response(r, 503)
            assert r.json()["error"] == "upstream concurrency limit"
        for t in held:
            t.join()
        assert sorted(r.status_code for r in results) == [200, 200, 503, 503, 503, 503]
        st = breaker(gw)
        assert st["active_requests"] == 0 and st["overflows"] == 4, st
        # Slots come back when calls end, also when the client leaves first.
        for _ in range(3):
            try:
                requests.get(gw.u("/"), timeout=0.3)
            except requests.exceptions.Timeout:
                pass
        wait_until(lambda: breaker(gw)["active_requests"] == 0, scaled(5), what="slots back")
        r = requests.get(gw.u("/"), timeout=scaled(10))
        assert r.status_code == 200 and backend_of(r)[0] == "slow"


BAD_KEYS = [
    ("error-rate-above-1", "    circuit_breaker: { error_rate: 2 }\n", 5, 36,
     "`error_rate` must be above 0 and at most 1"),
    ("window-too-short", "    circuit_breaker: { window: 10ms }\n", 5, 32,
     "`window` must be from 100ms to 1d"),
    ("max-concurrent-word", "    circuit_breaker: { max_concurrent: lots }\n", 5, 40,
     "expected a whole number for `max_concurrent` (or `unlimited`)"),
    ("passive-percent", "    health_check: { passive: { max_ejected_percent: 150 } }\n", 5, 53,
     "`max_ejected_percent` must be from 0 to 100"),
    ("passive-unknown-key", "    health_check: { passive: { eject: 30s } }\n", 5, 32,
     "unknown key `eject` in health_check.passive"),
    ("failure-status-range", "    failure_statuses: [503, 700]\n", 5, 29,
     "must be from 200 to 599"),
]


def test_a_slow_reader_does_not_hold_the_slot_once_the_upstream_is_done(gateway):
    # The slot is for the upstream: it goes back when the gateway has the
    # whole response, while the client is still reading it.
    size = 1 << 20
    with backend("b") as b:
        gw = gateway(config([b.port], {"max_concurrent": 1}))
        with socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10)) as slow:
            slow.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
            data, second = b"", None
            while b"\r\n\r\n" not in data or len(data) - data.index(b"\r\n\r\n") - 4 < size:
                chunk = slow.recv(16384)
                assert chunk, "the gateway closed mid-response"
                data += chunk
                body_got = len(data) - data.find(b"\r\n\r\n") - 4
                if second is None:
                    r = requests.get(gw.u("/"), timeout=scaled(5))
                    if r.status_code == 200:
                        second = body_got
                    else:
                        assert r.json()["error"] == "upstream concurrency limit", r.text
                        time.sleep(0.01)
            assert data.startswith(b"HTTP/1.1 200")
            body = data[data.index(b"\r\n\r\n") + 4:]
            assert body == (b"0123456789abcdef" * (size // 16))
        assert second is not None and second < size, second
        assert breaker(gw)["active_requests"] == 0


@pytest.mark.parametrize("name,line,at_line,col,needle", BAD_KEYS, ids=[b[0] for b in BAD_KEYS])
def test_bad_failure_handling_keys_are_refused_with_their_position(tmp_path, name, line, at_line,
                                                                   col, needle):
    text = ("listeners: [{ address: \"127.0.0.1:18080\" }]\n"
            "upstreams:\n"
            "  app:\n"
            "    targets: [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n" + line +
            "routes: [{ name: all, match: { path_prefix: / }, upstream: app }]\n")
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    require_binaries()
    p = subprocess.run([PORTICO, "validate", str(path)], capture_output=True, text=True,
                       timeout=scaled(20))
    assert p.returncode != 0
    assert "cfg.yaml:%d:%d: " % (at_line, col) in p.stderr and needle in p.stderr, p.stderr
