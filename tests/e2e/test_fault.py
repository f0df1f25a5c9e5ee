"""fault (fault injection) end to end: configured delays and aborts and
their percentages, the X-Portico-Fault-* header trigger (cap, invalid
values, off by default), the fault headers never reaching the upstream, a
delay that does not hold up other requests on the same worker, client
hang-ups during a delay, and a reload while 100 requests sit in a delay
(each finishes on the generation it started with)."""

import select
import socket
import threading
import time

import pytest
import requests

from conftest import (Gateway, assert_error_response, backend, backend_of,
                      echo_headers, free_port, make_config, read_responses, scaled,
                      upstream, validate_errors, wait_until)

FAULT_HEADERS = {"X-Portico-Fault-Delay": "0", "x-portico-fault-abort": "200",
                 "X-PORTICO-FAULT-Extra": "1"}


def route(name, prefix, fault, up="app"):
    r = {"name": name, "match": {"path_prefix": prefix}, "upstream": up}
    if fault is not None:
        r["filters"] = {"fault": fault}
    return r


def active_connections(admin_port):
    r = requests.get("http://127.0.0.1:%d/status" % admin_port, timeout=scaled(5))
    return r.json()["connections_active"]


def no_client_connections(admin_port):
    """Waits until the gateway holds no client connection and returns 0.
    Closes (the start-up port probe's, earlier tests') are noticed by the
    gateway on their own events, so a count read at once may still include
    one that is about to go, and "above the base" would then never come."""
    wait_until(lambda: active_connections(admin_port) == 0, scaled(5),
               what="earlier client connections to be closed")
    return 0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("app") as b:
        admin = free_port()
        cfg = make_config(
            free_port(), {"app": upstream(b.port)},
            [route("f-delay", "/f/delay", {"delay": {"duration": "300ms"}}),
             route("f-abort", "/f/abort", {"abort": {"status": 503}}),
             route("f-never", "/f/never", {"abort": {"status": 503, "percent": 0}}),
             route("f-half", "/f/half", {"abort": {"status": 418, "percent": "50%"}}),
             route("f-both", "/f/both", {"delay": {"duration": "200ms", "percent": 100},
                                         "abort": {"status": 504}}),
             route("f-trigger", "/f/trigger", {"header_trigger": True, "max_delay": "300ms"}),
             route("f-hold", "/f/hold", {"header_trigger": True, "max_delay": "1m"}),
             route("f-plain", "/f/plain", {}),
             route("open", "/open", None)],
            admin_port=admin, workers=2)
        gw = Gateway(cfg, tmp_path_factory.mktemp("fault"))
        gw.admin_port = admin
        try:
            yield gw, b
        finally:
            gw.stop()


def get(gw, path, **kw):
    kw.setdefault("timeout", scaled(15))
    return requests.get(gw.u(path), **kw)


def timed_get(gw, path, **kw):
    t0 = time.monotonic()
    r = get(gw, path, **kw)
    return r, time.monotonic() - t0


def upstream_requests(b):
    return b.stats()["requests"]


# ---------------------------------------------------------------- configured faults


def test_configured_delay(env):
    gw, b = env
    r, took = timed_get(gw, "/f/delay/x")
    assert r.status_code == 200, r.text[:300]
    assert backend_of(r)[0] == "app"
    assert took >= 0.3, took


def test_configured_abort(env):
    gw, b = env
    before = upstream_requests(b)
    r = get(gw, "/f/abort/x")
    assert_error_response(r, 503)
    assert upstream_requests(b) == before, "an aborted request reached the upstream"


def test_abort_percent_zero_never_aborts(env):
    gw, b = env
    with requests.Session() as s:
        for _ in range(30):
            assert s.get(gw.u("/f/never"), timeout=scaled(5)).status_code == 200


def test_abort_percent_half(env):
    gw, b = env
    codes = []
    with requests.Session() as s:
        for _ in range(200):
            codes.append(s.get(gw.u("/f/half"), timeout=scaled(5)).status_code)
    assert set(codes) <= {200, 418}, set(codes)
    aborted = codes.count(418)
    assert 50 <= aborted <= 150, aborted  # 100 expected; 7 standard deviations either side


def test_delay_then_abort(env):
    gw, b = env
    before = upstream_requests(b)
    r, took = timed_get(gw, "/f/both")
    assert_error_response(r, 504)
    assert took >= 0.2, took
    assert upstream_requests(b) == before


# ---------------------------------------------------------------- header trigger


def test_header_abort(env):
    gw, b = env
    before = upstream_requests(b)
    r = get(gw, "/f/trigger", headers={"X-Portico-Fault-Abort": "418"})
    assert_error_response(r, 418)
    assert upstream_requests(b) == before


def test_header_delay_and_cap(env):
    gw, b = env
    r, took = timed_get(gw, "/f/trigger", headers={"X-Portico-Fault-Delay": "200"})
    assert r.status_code == 200 and took >= 0.2, (r.status_code, took)
    r, took = timed_get(gw, "/f/trigger", headers={"X-Portico-Fault-Delay": "250ms"})
    assert r.status_code == 200 and took >= 0.25, (r.status_code, took)
    # capped at max_delay (300ms): well under the 10s asked
    r, took = timed_get(gw, "/f/trigger", headers={"X-Portico-Fault-Delay": "10s"})
    assert r.status_code == 200
    assert 0.3 <= took < 5.0, took


def test_header_invalid_values_are_ignored(env):
    gw, b = env
    for name, value in [("X-Portico-Fault-Delay", "abc"), ("X-Portico-Fault-Delay", "-1"),
                        ("X-Portico-Fault-Delay", "5 ms"), ("X-Portico-Fault-Delay", "1e9"),
                        ("X-Portico-Fault-Abort", "200"), ("X-Portico-Fault-Abort", "600"),
                        ("X-Portico-Fault-Abort", "abc"), ("X-Portico-Fault-Abort", "5030")]:
        r = get(gw, "/f/trigger", headers={name: value})
        assert r.status_code == 200, (name, value, r.status_code, r.text[:200])


def test_headers_do_nothing_without_trigger(env):
    gw, b = env
    r = get(gw, "/f/plain", headers={"X-Portico-Fault-Abort": "503"})
    assert r.status_code == 200
    # a long delay asked on a route without the trigger is not applied
    r, took = timed_get(gw, "/f/plain", headers={"X-Portico-Fault-Delay": "60s"})
    assert r.status_code == 200 and took < 30, took
    r = get(gw, "/open", headers={"X-Portico-Fault-Abort": "503"})
    assert r.status_code == 200


def test_fault_headers_never_reach_the_upstream(env):
    gw, b = env
    for path in ("/f/plain", "/f/trigger", "/f/delay", "/f/never"):
        headers = dict(FAULT_HEADERS)
        headers["X-Portico-Faulty"] = "kept"
        r = get(gw, path, headers=headers)
        assert r.status_code == 200, (path, r.status_code)
        names = [k.lower() for k, _ in r.json()["headers"]]
        leaked = [n for n in names if n.startswith("x-portico-fault-")]
        assert not leaked, (path, leaked)
        assert echo_headers(r.json(), "X-Portico-Faulty") == ["kept"]


# ---------------------------------------------------------------- hang-ups


def send_request(port, data):
    """A connection with `data` on the wire (the caller closes it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    s.sendall(data)
    return s


def test_client_hangup_during_delay(env):
    gw, b = env
    delay_ms = int(scaled(1.5) * 1000)
    req = ("GET /f/hold HTTP/1.1\r\nHost: x\r\nX-Portico-Fault-Delay: %d\r\n\r\n"
           % delay_ms).encode()
    base = no_client_connections(gw.admin_port)
    before = upstream_requests(b)
    for _ in range(5):
        s = send_request(gw.port, req)
        try:
            wait_until(lambda: active_connections(gw.admin_port) > base, scaled(5),
                       what="the delayed request to arrive")
        finally:
            s.close()  # the client goes while its request sits in the delay
        wait_until(lambda: active_connections(gw.admin_port) <= base, scaled(10),
                   what="the hung-up connection to close")
    # The same delay asked after the hang-ups: by the time it is answered,
    # the hung-up requests' delays are over, so had any been forwarded the
    # upstream would have counted it.
    r = get(gw, "/f/hold", headers={"X-Portico-Fault-Delay": str(delay_ms)})
    assert r.status_code == 200
    assert upstream_requests(b) == before + 1, "a hung-up request reached the upstream"
    assert gw.proc.poll() is None


# ---------------------------------------------------------------- not blocking


def test_delay_does_not_hold_other_routes(tmp_path):
    """One worker: a request sitting in a 300ms delay must not delay a
    request on another route handled by the same worker."""
    with backend("app") as b:
        admin = free_port()
        delay_ms = int(scaled(2) * 1000)
        cfg = make_config(free_port(), {"app": upstream(b.port)},
                          [route("slow", "/slow", {"delay": {"duration": "%dms" % delay_ms}}),
                           route("fast", "/fast", None)],
                          admin_port=admin, workers=1)
        gw = Gateway(cfg, tmp_path)
        try:
            base = no_client_connections(admin)
            t0 = time.monotonic()
            s = send_request(gw.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                wait_until(lambda: active_connections(admin) > base, scaled(5),
                           what="the delayed request to arrive")
                r = get(gw, "/fast")
                assert r.status_code == 200
                # answered while the slow request is still inside its delay
                # (its answer has not come): a worker that waited out the
                # delay could not have answered yet
                assert not select.select([s], [], [], 0)[0], "the other route waited for the delay"
                (slow,) = read_responses(s, 1, scaled(15))
                slow_done = time.monotonic()
            finally:
                s.close()
            assert slow.status == 200
            assert slow_done - t0 >= delay_ms / 1000.0
        finally:
            gw.stop()


# ---------------------------------------------------------------- reload


def test_reload_while_100_requests_sit_in_a_delay(tmp_path):
    n = 100
    delay_ms = int(scaled(2.0) * 1000)
    with backend("cfg-a") as ba, backend("cfg-b") as bb:
        port, admin = free_port(), free_port()
        ups = {"ua": upstream(ba.port), "ub": upstream(bb.port)}
        cfg_a = make_config(port, ups, [route("main", "/", {"delay": {
            "duration": "%dms" % delay_ms}}, up="ua")], admin_port=admin, workers=2)
        cfg_b = make_config(port, ups, [route("main", "/", None, up="ub")], admin_port=admin,
                            workers=2)
        gw = Gateway(cfg_a, tmp_path)
        try:
            base = no_client_connections(admin)
            results = [None] * n
            sent = threading.Semaphore(0)

            def one(i):
                s = None
                try:
                    s = send_request(port, b"GET /r/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                    sent.release()  # on the wire before the reload
                    rs = read_responses(s, 1, scaled(30))
                    r = rs[0] if rs else None
                    results[i] = ((r.status, r.header("X-Backend", "").rpartition(":")[0])
                                  if r else ("no response", None))
                except Exception as e:  # noqa: BLE001 - every failure counts
                    sent.release()
                    results[i] = ("error", repr(e))
                finally:
                    if s:
                        s.close()

            threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for _ in range(n):
                assert sent.acquire(timeout=scaled(10))
            wait_until(lambda: active_connections(admin) >= base + n, scaled(10),
                       what="%d requests in the gateway" % n)
            assert ba.stats()["requests"] == 0, "the delay ended before the reload"
            gw.reload(cfg_b)
            # the new generation serves new requests at once
            r = requests.get(gw.u("/new"), timeout=scaled(10))
            assert r.status_code == 200 and backend_of(r)[0] == "cfg-b"
            for t in threads:
                t.join(scaled(40))
            bad = [(i, res) for i, res in enumerate(results) if res != (200, "cfg-a")]
            assert not bad, "%d of %d not 200 from the old generation, e.g. %r" % (
                len(bad), n, bad[:5])
            assert ba.stats()["requests"] == n
        finally:
            gw.stop()


# ---------------------------------------------------------------- config errors


def test_invalid_configs_are_rejected(tmp_path):
    cfg = make_config(free_port(), {"app": upstream(free_port())}, [
        route("r1", "/1", {"abort": {"status": 200}, "delay": {"duration": "2h"},
                           "max_delay": "2h"}),
        route("r2", "/2", {"delay": {"duration": "10ms", "percent": 150},
                           "abort": {"status": 503, "percent": "x"}}),
        route("r3", "/3", {"delay": {"percent": 10}, "abort": {"percent": 10}})])
    rc, err = validate_errors(tmp_path, cfg)
    assert rc != 0, err
    for want in ("abort.status: 200 is not an error status", "delay.duration: at most 1h",
                 "max_delay: at most 1h", "delay.percent: expected a percentage",
                 "abort.percent: expected a percentage", "delay: `duration` is required",
                 "abort: `status` is required"):
        assert want in err, (want, err)
    assert err.count("bad.yaml:") == 7, err  # file:line:col, one line per problem
