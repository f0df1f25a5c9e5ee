"""Retries (upstreams.*.retries) end to end, against real demo backends:
a retry goes to another target; connect failures, resets, listed
statuses and per-try timeouts are retried and nothing else is; the retry
budget bounds what an outage costs the upstreams; a request whose body
started streaming and is not held (a POST, or a body past
max_replay_body) is never sent twice, while a held body is replayed
intact; failover under load loses no request, and a restarted target
takes traffic again. Counts are taken at the backends (`/__stats`)."""

import json
import math
import os
import socket
import threading
import time

import pytest
import requests

from conftest import (Backend, Gateway, access_log_lines, assert_error_resp,
                      assert_error_response, backend, backend_of, crc32_hex, free_port, http_conn,
                      make_config, read_responses, scaled, unaccepting_port, upstream,
                      wait_until)


def retry_config(ports, retries, access_log=None, workers=2, **extra):
    ups = {"u": upstream(*ports, retries=retries, **extra)}
    routes = [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}]
    return make_config(free_port(), ups, routes, workers=workers, access_log=access_log)


def requests_at(*backends):
    return sum(b.stats()["requests"] for b in backends)


def log_path(tmp_path):
    return os.path.join(str(tmp_path), "access.log")


# ---------------------------------------------------------------- where a retry goes


def test_listed_status_is_retried_on_the_other_target(tmp_path):
    with backend("bad", status=503) as bad, backend("good") as good:
        log = log_path(tmp_path)
        gw = Gateway(retry_config([bad.port, good.port], {"attempts": 2, "on": [503]},
                                  access_log={"path": log}), tmp_path)
        try:
            n = 20
            with requests.Session() as s:
                for i in range(n):
                    r = s.get(gw.u("/r/%d" % i), timeout=scaled(10))
                    assert r.status_code == 200, r.text
                    assert backend_of(r)[0] == "good"
            first_on_bad = bad.stats()["requests"]
            # Round robin sent about half first to the failing target; each
            # of those was tried there once, then once on the good one.
            assert 0 < first_on_bad < n
            assert good.stats()["requests"] == n
            lines = access_log_lines(log, n)
            retried = [l for l in lines if l.get("retries") == 1]
            assert len(retried) == first_on_bad
            assert all(l["upstream_target"] == "127.0.0.1:%d" % good.port for l in retried)
            assert all(l["retries"] == 0 for l in lines if l not in retried)
            # Admin shows the policy and the budget's window.
            ups = requests.get("http://127.0.0.1:%d/upstreams" % gw.admin_port,
                               timeout=scaled(5)).json()["upstreams"]
            rt = ups[0]["retries"]
            assert rt["attempts"] == 2 and rt["budget"] == 0.2
            # (10 s window: on a loaded machine the first ones may have left it)
            assert 0 < rt["window_requests"] <= n
            assert 0 < rt["window_retries"] <= first_on_bad
        finally:
            gw.stop()


def test_status_not_listed_is_not_retried(tmp_path):
    with backend("bad", status=500) as bad, backend("good") as good:
        gw = Gateway(retry_config([bad.port, good.port], {"attempts": 3, "on": [503]}),
                     tmp_path)
        try:
            n = 20
            codes = []
            with requests.Session() as s:
                for i in range(n):
                    codes.append(s.get(gw.u("/n/%d" % i), timeout=scaled(10)).status_code)
            assert codes.count(500) == bad.stats()["requests"] > 0
            assert requests_at(bad, good) == n  # every request went out once
        finally:
            gw.stop()


def test_connect_failure_is_retried_on_a_live_target(tmp_path):
    dead = free_port()  # nothing listens there
    with backend("good") as good:
        log = log_path(tmp_path)
        gw = Gateway(retry_config([dead, good.port],
                                  {"attempts": 2, "on": ["connect_failure"]},
                                  access_log={"path": log}), tmp_path)
        try:
            n = 20
            with requests.Session() as s:
                for i in range(n):
                    r = s.get(gw.u("/c/%d" % i), timeout=scaled(10))
                    assert r.status_code == 200, r.text
            assert good.stats()["requests"] == n
            lines = access_log_lines(log, n)
            assert any(l.get("retries") == 1 for l in lines)
        finally:
            gw.stop()


def test_without_retries_a_dead_target_fails_requests(tmp_path):
    """The control for the test above: attempts 1 lets the failures show."""
    dead = free_port()
    with backend("good") as good:
        gw = Gateway(retry_config([dead, good.port], {"attempts": 1}), tmp_path)
        try:
            with requests.Session() as s:
                codes = [s.get(gw.u("/c/%d" % i), timeout=scaled(10)).status_code
                         for i in range(10)]
            assert 502 in codes and 200 in codes
        finally:
            gw.stop()


# ---------------------------------------------------------------- timeouts


def test_per_try_timeout_retries_a_slow_target_and_the_last_is_504(tmp_path):
    with backend("slow", delay=3000) as slow, backend("fast") as fast:
        retries = {"attempts": 2, "on": ["timeout"], "per_try_timeout": "300ms"}
        gw = Gateway(retry_config([slow.port, fast.port], retries), tmp_path)
        try:
            n = 6
            with requests.Session() as s:
                for i in range(n):
                    r = s.get(gw.u("/t/%d" % i), timeout=scaled(10))
                    assert r.status_code == 200, r.text
                    assert backend_of(r)[0] == "fast"
                # A delayed request is counted when answered: count the
                # connections the slow target was tried on instead.
                assert slow.stats()["accepts"] > 0
                # Both slow now: the last attempt's per-try timeout is a 504.
                fast.control(delay=3000)
                r = s.get(gw.u("/t/last"), headers={"X-Request-ID": "ptt-1"},
                          timeout=scaled(10))
                doc = assert_error_response(r, 504, "ptt-1")
                assert "per-try" in doc["error"]
        finally:
            gw.stop()


def send_trickled(port, total, pause, extra_headers=b""):
    """A PUT whose Content-Length body of `total` bytes comes one byte
    every `pause` seconds. Returns the parsed response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(20))
    try:
        s.sendall(b"PUT /trickle HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n"
                  % (total, extra_headers))
        for _ in range(total):
            time.sleep(pause)
            s.sendall(b"a")
        return read_responses(s, 1, timeout=scaled(10))[0]
    finally:
        s.close()


def test_per_try_timeout_spares_an_upload_still_flowing(tmp_path):
    """per_try_timeout bounds the wait for the response head once the
    request is out: an upload lasting several per-try periods goes
    through; after it, an answer slower than per_try_timeout is still
    cut off (retried, then the 504)."""
    with backend("b") as b:
        retries = {"attempts": 2, "on": ["timeout"], "per_try_timeout": "500ms"}
        gw = Gateway(retry_config([b.port], retries, workers=1), tmp_path)
        try:
            r = send_trickled(gw.port, 12, 0.15)  # ~1.8 s of upload
            assert r.status == 200, r.body
            doc = json.loads(r.body)
            assert doc["body_len"] == 12
            r = send_trickled(gw.port, 12, 0.15, b"X-Demo-Delay: 3000\r\n")
            doc = assert_error_resp(r, 504)
            assert "per-try" in doc["error"]
        finally:
            gw.stop()


def test_per_try_timeout_while_connecting_is_retried_as_a_connect_failure(tmp_path):
    """A target whose accept queue is full (connects to it hang) and a
    connect_timeout longer than per_try_timeout: the per-try deadline
    ends each attempt while connecting, which is a connect failure,
    retried under `connect_failure` alone."""
    with unaccepting_port() as port:
        log = log_path(tmp_path)
        retries = {"attempts": 2, "on": ["connect_failure"], "per_try_timeout": "300ms"}
        gw = Gateway(retry_config([port], retries, access_log={"path": log},
                                  connect_timeout="30s"), tmp_path)
        try:
            r = requests.get(gw.u("/hang"), timeout=scaled(20))
            doc = assert_error_response(r, 504)
            assert doc["error"] == "upstream connect timeout (per-try)"
            assert access_log_lines(log, 1)[0].get("retries") == 1
        finally:
            gw.stop()


def test_read_timeout_without_timeout_listed_is_a_504_not_retried(tmp_path):
    with backend("slow", delay=3000) as slow:
        gw = Gateway(retry_config([slow.port], {"attempts": 3, "on": ["connect_failure"]},
                                  read_timeout="300ms"), tmp_path)
        try:
            slow.reset()
            r = requests.get(gw.u("/rt"), timeout=scaled(10))
            assert_error_response(r, 504)
            # One connection, one attempt (a delayed request is counted only
            # when answered, so count connections).
            assert slow.stats()["accepts"] == 1
        finally:
            gw.stop()


def test_retry_after_a_reload_mid_request_picks_without_the_old_round_robin_state(tmp_path):
    """A reload between the first attempt and its retry makes the worker
    free its round-robin state (sized for the old generation); the retry,
    finding no untried target, must pick without it. The ASan pass
    reports any read of the freed state (Gateway.stop raises)."""
    per_try = int(scaled(1.5) * 1000)  # room for the reload within the first attempt
    with backend("slow", delay=3 * per_try) as slow:
        retries = {"attempts": 2, "on": ["timeout"], "per_try_timeout": "%dms" % per_try}
        routes = [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}]
        cfg = make_config(free_port(), {"u": upstream(slow.port, retries=retries)}, routes,
                          workers=1)
        gw = Gateway(cfg, tmp_path)
        try:
            slow.reset()
            res = {}

            def call():
                try:
                    res["r"] = requests.get(gw.u("/rr"), timeout=scaled(20))
                except Exception as e:  # reported below
                    res["e"] = e

            t = threading.Thread(target=call)
            t.start()
            wait_until(lambda: slow.stats()["accepts"] >= 1, scaled(5),
                       what="first attempt at the slow target")
            # Another upstream: the new generation's state has another size.
            ups2 = {"u": upstream(slow.port, retries=retries),
                    "v": upstream(*[free_port() for _ in range(8)])}
            cfg2 = make_config(gw.port, ups2, routes, workers=1)
            cfg2["admin"] = cfg["admin"]
            gw.reload(cfg2)
            t.join(scaled(20))
            assert not t.is_alive()
            assert "e" not in res, res.get("e")
            # Both attempts ran out of per-try time at the one slow target.
            doc = assert_error_response(res["r"], 504)
            assert "per-try" in doc["error"]
            assert slow.stats()["accepts"] == 2
            # Still serving.
            slow.control(delay=0)
            r = requests.get(gw.u("/after"), timeout=scaled(10))
            assert r.status_code == 200
        finally:
            gw.stop()


# ---------------------------------------------------------------- the budget


def test_retry_budget_bounds_upstream_attempts_when_every_target_fails(tmp_path):
    with backend("a", status=503, threads=2) as a, backend("b", status=503, threads=2) as b:
        gw = Gateway(retry_config([a.port, b.port],
                                  {"attempts": 3, "on": [503], "budget": "20%"}), tmp_path)
        try:
            a.reset()
            b.reset()
            stop = time.monotonic() + 3.0
            counts = []

            def client():
                c = http_conn(gw.port)
                k = 0
                while time.monotonic() < stop and k < 2000:  # under 10k requests in all
                    c.request("GET", "/budget")
                    r = c.getresponse()
                    r.read()
                    assert r.status == 503
                    k += 1
                counts.append(k)
                c.close()

            t0 = time.monotonic()
            ts = [threading.Thread(target=client) for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            elapsed = time.monotonic() - t0
            n = sum(counts)
            attempts = requests_at(a, b)
            bound = n * 1.2 + 10 * math.ceil(elapsed + 1)
            print("requests %d in %.1fs, upstream attempts %d, bound %.0f" %
                  (n, elapsed, attempts, bound))
            assert n > 0
            assert attempts > n  # retries did happen (the floor at least)
            assert attempts <= bound
        finally:
            gw.stop()


# ---------------------------------------------------------------- safety


def send_streamed(port, method, total, extra_headers=b"", first=None, pause=0.3):
    """Sends `method` with a Content-Length body of `total` bytes on a raw
    socket: `first` bytes, a pause (so the gateway streams them upstream),
    then the rest. Returns the parsed response."""
    body = bytes((i * 7) & 0xff for i in range(total))
    first = first if first is not None else total // 2
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    try:
        s.sendall(b"%s /safety HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n"
                  % (method, total, extra_headers) + body[:first])
        time.sleep(pause)
        try:
            s.sendall(body[first:])
        except OSError:
            pass  # the gateway may have answered and closed already
        return read_responses(s, 1)[0], body
    finally:
        s.close()


@pytest.mark.parametrize("method,size", [(b"POST", 8 * 1024), (b"POST", 300 * 1024),
                                         (b"PUT", 300 * 1024)])
def test_request_whose_body_started_streaming_is_never_sent_twice(tmp_path, method, size):
    """A POST once its bytes went out, and a PUT whose body is past
    max_replay_body once it started streaming: a reset is not retried."""
    with backend("a") as a, backend("b") as b:
        retries = {"attempts": 3, "on": ["connect_failure", "reset", 502, 503, 504],
                   "max_replay_body": "64KiB"}
        gw = Gateway(retry_config([a.port, b.port], retries), tmp_path)
        try:
            a.reset()
            b.reset()
            r, _ = send_streamed(gw.port, method, size, b"X-Demo-Break: reset\r\n")
            assert r.status == 502
            assert requests_at(a, b) == 1
        finally:
            gw.stop()


def test_held_put_body_is_retried_after_a_reset(tmp_path):
    """The control for the test above: an idempotent request whose body is
    held is sent again on a reset, to every attempt."""
    with backend("a") as a, backend("b") as b:
        retries = {"attempts": 3, "on": ["reset"]}
        gw = Gateway(retry_config([a.port, b.port], retries), tmp_path)
        try:
            a.reset()
            b.reset()
            r, _ = send_streamed(gw.port, b"PUT", 8 * 1024, b"X-Demo-Break: reset\r\n")
            assert r.status == 502
            assert requests_at(a, b) == 3
        finally:
            gw.stop()


@pytest.mark.parametrize("chunked", [False, True])
def test_held_put_body_is_replayed_intact(tmp_path, chunked):
    with backend("bad", status=503) as bad, backend("good") as good:
        retries = {"attempts": 2, "on": [503]}
        gw = Gateway(retry_config([bad.port, good.port], retries), tmp_path)
        try:
            with requests.Session() as s:
                for i in range(6):
                    body = os.urandom(20000 + i * 5000)
                    data = iter([body[:7000], body[7000:]]) if chunked else body
                    r = s.put(gw.u("/put/%d" % i), data=data, timeout=scaled(10))
                    assert r.status_code == 200, r.text
                    doc = r.json()
                    assert doc["backend"] == "good"
                    assert doc["body_len"] == len(body)
                    assert doc["body_crc32"] == crc32_hex(body)
            assert bad.stats()["requests"] > 0  # some were replayed
        finally:
            gw.stop()


# ---------------------------------------------------------------- failover


def load(port, stop, errors, served, nthreads=4):
    def run():
        c = http_conn(port)
        while not stop.is_set():
            try:
                c.request("GET", "/load")
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
                else:
                    served.append(r.getheader("X-Backend"))
            except (OSError, http_client_errors()) as e:
                errors.append(repr(e))
                c.close()
                c = http_conn(port)
        c.close()

    ts = [threading.Thread(target=run) for _ in range(nthreads)]
    for t in ts:
        t.start()
    return ts


def http_client_errors():
    import http.client
    return http.client.HTTPException


def test_failover_under_load_loses_nothing_and_a_restarted_target_returns(tmp_path):
    ports = [free_port() for _ in range(3)]
    bs = [Backend("b%d" % i, [p], threads=2) for i, p in enumerate(ports)]
    gw = None
    stop = threading.Event()
    ts = []
    try:
        # The default budget (20%, 10 a second): a dead target fails one
        # first attempt in three until passive health ejects it, after 3
        # in a row; after that it is tried again only when an ejection
        # ends (1 s, doubling), and the retries stay within the floor.
        retries = {"attempts": 3, "on": ["connect_failure", "reset"]}
        passive = {"passive": {"consecutive_failures": 3, "eject_for": "1s"}}
        gw = Gateway(retry_config(ports, retries, health_check=passive), tmp_path)
        errors, served = [], []
        ts = load(gw.port, stop, errors, served)
        wait_until(lambda: len(served) > 300, scaled(20), what="traffic")
        bs[2].stop()  # killed mid-traffic: in-flight requests are reset
        seen = len(served)
        wait_until(lambda: len(served) > seen + 2000, scaled(30), what="traffic after the kill")
        assert errors == []
        after_kill = served[seen + 50:]
        assert not any(s.endswith(":%d" % ports[2]) for s in after_kill)
        # Back on the same port: traffic returns to it.
        bs[2] = Backend("b2", [ports[2]], threads=2)
        wait_until(lambda: bs[2].stats()["requests"] > 20, scaled(30),
                   what="traffic back on the restarted target")
        stop.set()
        for t in ts:
            t.join(scaled(10))
        assert errors == []
    finally:
        stop.set()
        for t in ts:
            t.join(scaled(10))
        if gw:
            gw.stop()
        for b in bs:
            b.stop()


# ---------------------------------------------------------------- config


def test_retries_config_errors_name_file_line_and_column(tmp_path):
    from conftest import validate_errors
    cfg = (
        "listeners: [{name: p, address: 127.0.0.1:%d}]\n"
        "admin: {address: 127.0.0.1:%d}\n"
        "upstreams:\n"
        "  u:\n"
        "    targets: [127.0.0.1:9]\n"
        "    retries:\n"
        "      attempts: 0\n"
        "      on: [connect_failure, rest, 503, 5030, 99, 101]\n"
        "      budget: 120%%\n"
        "      per_try_timeout: 2x\n"
        "      max_replay_body: 1GiB\n"
        "      tries: 1\n"
        "routes: [{name: r, upstream: u}]\n" % (free_port(), free_port()))
    rc, out = validate_errors(tmp_path, cfg)
    assert rc != 0
    expect = [
        ":7:17: ", "`attempts`",
        ":8:29: unknown retry condition `rest`", "did you mean `reset`",
        ":8:40: retry status `5030`",
        ":8:46: retry status `99` must be a 3-digit HTTP status (200-599)",
        ":8:50: retry status `101` is informational (1xx): only a final status (200-599)",
        ":9:15: expected a percentage",
        ":10:24: invalid duration `2x`",
        ":11:24: `max_replay_body` is at most 16MiB",
        ":12:7: unknown key `tries` in retries",
    ]
    for e in expect:
        assert e in out, (e, out)


def test_retries_config_accepts_every_key(tmp_path):
    from conftest import validate_errors
    cfg = make_config(free_port(), {"u": upstream(9, retries={
        "attempts": 3, "on": ["connect_failure", "reset", "timeout", 502, 503, 504, 429],
        "per_try_timeout": "250ms", "budget": "25%", "max_replay_body": "1MiB"})},
        [{"name": "r", "upstream": "u"}])
    rc, out = validate_errors(tmp_path, cfg)
    assert rc == 0, out
