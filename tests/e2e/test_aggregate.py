"""The `aggregate` filter (Backend for Frontend): one client request fans
out to several calls through the outbound client and one merged JSON answer
comes back (issue 20, "How it is checked").

Real processes throughout: demo backends (tools/demo_backend.c: /users/ID,
/orders?user=, a JSON echo of any other request, X-Demo-Delay and
X-Demo-Status per request, /__stats counting requests and open
connections) and, for exact nested JSON, a small Python server.
"""

import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import (PORTICO, ROOT, SAN, free_port, make_config, read_head, scaled,
                      unaccepting_port, upstream, wait_until)


def agg_route(calls, name="bff", path="/p/{id}", **extra):
    f = {"calls": calls}
    f.update(extra)
    return {"name": name, "match": {"path_template": path}, "filters": {"aggregate": f}}


def delayed(name, ms, up="a", **kw):
    c = {"name": name, "upstream": up, "path": "/echo/%s/{id}" % name,
         "headers": {"X-Demo-Delay": str(ms)}}
    c.update(kw)
    return c


def start(gateway, ups, routes, limits=None, workers=1):
    return gateway(make_config(free_port(), ups, routes, workers=workers, limits=limits))


def metric_value(gw, name, **labels):
    """The sum of a /metrics family's samples with these labels."""
    text = requests.get("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=scaled(5)).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all('%s="%s"' % kv in line for kv in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def timed_get(url, **kw):
    t = time.monotonic()
    r = requests.get(url, timeout=scaled(10), **kw)
    return r, time.monotonic() - t


def test_parallel_fan_out_takes_the_longest_not_the_sum(gateway, backends):
    b = backends("svc")
    gw = start(gateway, {"a": upstream(b.port)},
               [agg_route([delayed("one", 100), delayed("two", 200), delayed("three", 300)])])
    requests.get(gw.u("/p/1"), timeout=scaled(10))  # connections warm
    r, took = timed_get(gw.u("/p/7"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(body) == ["one", "three", "two"]
    for n in ("one", "two", "three"):
        assert body[n]["path"] == "/echo/%s/7" % n
    assert took >= 0.3
    if not SAN:
        assert took <= 0.35, took


def test_dependent_chain_waits_for_its_call_only(gateway, backends):
    b = backends("svc")
    # A (200 ms) → B (200 ms) while C (350 ms) runs beside them: ≈ 400 ms.
    a = delayed("a", 200)
    bb = {"name": "b", "upstream": "a", "path": "/echo/b/${call.a.path}",
          "headers": {"X-Demo-Delay": "200"}}
    c = delayed("c", 350)
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route([a, bb, c])])
    requests.get(gw.u("/p/1"), timeout=scaled(10))
    r, took = timed_get(gw.u("/p/5"))
    assert r.status_code == 200, r.text
    # B's path carries A's answer field, percent-encoded into one segment.
    assert r.json()["b"]["path"] == "/echo/b/%2Fecho%2Fa%2F5"
    assert took >= 0.4
    if not SAN:
        assert took < 0.55, took  # not A + B + C (750 ms)


def test_optional_part_failed_gives_the_rest_and_the_partial_marker(gateway, backends):
    b = backends("svc")
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "orders", "upstream": "a", "path": "/orders?user={id}",
              "optional": True, "headers": {"X-Demo-Status": "503"}}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/2"), timeout=scaled(10))
    assert r.status_code == 200, r.text
    assert r.headers["X-Partial-Response"] == "true"
    body = r.json()
    assert body["user"]["name"] == "Alan Turing"
    assert "orders" not in body
    assert body["_errors"] == [{"part": "orders", "error": "the upstream failed",
                                "status": 503}]


def test_errors_member_name_is_configurable(gateway, backends):
    b = backends("svc")
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "extra", "upstream": "a", "path": "/users/999", "optional": True}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls, errors_field="failed")])
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 200
    assert r.json()["failed"][0]["part"] == "extra"
    assert r.json()["failed"][0]["status"] == 404


def test_all_parts_ok_has_no_partial_marker(gateway, backends):
    b = backends("svc")
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "orders", "upstream": "a", "path": "/orders?user={id}&limit=1",
              "optional": True}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 200
    assert "X-Partial-Response" not in r.headers
    assert r.json() == {
        "user": {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com",
                 "avatar": "https://avatars.example.com/ada.png"},
        "orders": [{"id": 1001, "user_id": 1, "item": "Analytical Engine punch cards",
                    "quantity": 3, "total_cents": 4500, "status": "shipped"}]}


def test_required_404_passes_through_with_its_body(gateway, backends):
    b = backends("svc")
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "orders", "upstream": "a", "path": "/orders?user={id}"}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/42"), timeout=scaled(10))
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}


def test_required_5xx_gives_502_naming_the_part(gateway, backends):
    b = backends("svc")
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "billing", "upstream": "a", "path": "/billing/{id}",
              "headers": {"X-Demo-Status": "500"}}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 502
    assert r.json()["part"] == "billing"
    assert r.json()["error"] == "bad gateway"


def test_required_connection_failure_gives_502(gateway, backends):
    b = backends("svc")
    dead = free_port()
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "gone", "upstream": "dead", "path": "/x"}]
    gw = start(gateway, {"a": upstream(b.port), "dead": upstream(dead)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 502
    assert r.json()["part"] == "gone"


def test_required_timeout_gives_504_at_the_per_call_timeout(gateway, backends):
    b = backends("svc")
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "slow", "upstream": "a", "path": "/slow", "timeout": "300ms",
              "headers": {"X-Demo-Delay": "3000"}}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r, took = timed_get(gw.u("/p/1"))
    assert r.status_code == 504
    assert r.json()["part"] == "slow"
    assert took >= 0.3
    if not SAN:
        assert took < 0.8, took


def test_non_json_required_part_is_its_failure(gateway, backends):
    b = backends("svc")
    calls = [{"name": "blob", "upstream": "a", "path": "/bytes/10"}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 502
    assert r.json()["part"] == "blob"
    assert "JSON" in r.json()["detail"]


def test_optional_part_that_is_not_json_is_named_by_its_reason(gateway, backends):
    # the part's upstream answered 200: `status` would say nothing went wrong
    b = backends("svc")
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "blob", "upstream": "a", "path": "/bytes/10", "optional": True}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 200 and r.headers["X-Partial-Response"] == "true"
    assert r.json()["_errors"] == [{"part": "blob", "error": "the answer is not JSON"}]


def test_required_client_error_keeps_its_authenticate_and_retry_after_fields(
        gateway, json_server):
    auth = json_server({"error": "unauthorized"}, 401,
                       [("WWW-Authenticate", 'Bearer realm="api"'),
                        ("WWW-Authenticate", 'Basic realm="api"'), ("X-Internal", "secret")])
    busy = json_server({"error": "slow down"}, 429, [("Retry-After", "7")])
    ok = json_server({"id": 1})
    ups = {"auth": upstream(auth.port), "busy": upstream(busy.port), "ok": upstream(ok.port)}
    gw = start(gateway, ups, [
        agg_route([{"name": "me", "upstream": "auth", "path": "/me"},
                   {"name": "x", "upstream": "ok", "path": "/x"}], name="a", path="/a/{id}"),
        agg_route([{"name": "q", "upstream": "busy", "path": "/q"}], name="b", path="/b/{id}"),
        agg_route([{"name": "x", "upstream": "ok", "path": "/x"},
                   {"name": "q", "upstream": "busy", "path": "/q", "optional": True}],
                  name="c", path="/c/{id}")])
    r = requests.get(gw.u("/a/1"), timeout=scaled(10))
    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
    assert r.raw.headers.getlist("WWW-Authenticate") == ['Bearer realm="api"', 'Basic realm="api"']
    assert "X-Internal" not in r.headers
    r = requests.get(gw.u("/b/1"), timeout=scaled(10))
    assert r.status_code == 429 and r.headers["Retry-After"] == "7", r.headers
    # an optional part's 429 is its failure only: the client is not told to wait
    r = requests.get(gw.u("/c/1"), timeout=scaled(10))
    assert r.status_code == 200 and "Retry-After" not in r.headers
    assert r.json()["_errors"] == [{"part": "q", "error": "the upstream refused the request",
                                    "status": 429}]


def test_required_connect_timeout_gives_504_naming_the_part(gateway, backends):
    """A target whose accept queue is full (connects to it hang) behind a
    300 ms connect_timeout: the part timed out (504, as a proxied request
    and `connect_timeout` say), not a connection failure (502)."""
    b = backends("svc")
    with unaccepting_port() as port:
        ups = {"a": upstream(b.port), "hole": upstream(port, connect_timeout="300ms")}
        calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
                 {"name": "far", "upstream": "hole", "path": "/x"}]
        gw = start(gateway, ups, [agg_route(calls)])
        r = requests.get(gw.u("/p/1"), timeout=scaled(10))
        assert r.status_code == 504, r.text
        assert r.json()["part"] == "far"
        assert r.json()["error"] == "gateway timeout"


def test_route_timeout_is_each_calls_default_timeout(gateway, backends):
    """On an aggregating route the route's `timeout` bounds a call without
    its own (not the upstream's 30 s read timeout), and the part that
    passes it is the 504's `part`; a call's own `timeout` still wins."""
    b = backends("svc")
    slow = {"name": "slow", "upstream": "a", "path": "/slow", "headers": {"X-Demo-Delay": "3000"}}
    ok = {"name": "ok", "upstream": "a", "path": "/ok", "headers": {"X-Demo-Delay": "500"},
          "timeout": "2s"}
    r1 = agg_route([{"name": "user", "upstream": "a", "path": "/users/{id}"}, slow])
    r1["timeout"] = "300ms"
    r2 = agg_route([ok], name="own", path="/own/{id}")
    r2["timeout"] = "300ms"
    gw = start(gateway, {"a": upstream(b.port)}, [r1, r2])
    r, took = timed_get(gw.u("/p/1"))
    assert r.status_code == 504, r.text
    assert r.json()["part"] == "slow"
    assert took >= 0.3
    r = requests.get(gw.u("/own/1"), timeout=scaled(10))
    assert r.status_code == 200, r.text
    assert r.json()["ok"]["path"] == "/ok"


@pytest.mark.heavy
def test_a_dependent_chain_past_30s_still_names_the_part_that_timed_out(gateway, backends):
    """The fan-out's suspension lasts as long as its calls' own deadlines
    add up (here 15.5 s + 16 s), past the gateway's generic 30 s bound for
    a suspended filter, so the call that timed out is the 504's `part`."""
    b = backends("svc")
    first = {"name": "first", "upstream": "a", "path": "/first",
             "headers": {"X-Demo-Delay": "15500"}}
    then = {"name": "then", "upstream": "a", "path": "/then/${call.first.path}",
            "headers": {"X-Demo-Delay": "20000"}}
    rt = agg_route([first, then])
    rt["timeout"] = "16s"
    gw = start(gateway, {"a": upstream(b.port, read_timeout="60s")}, [rt])
    r, took = timed_get_long(gw.u("/p/1"))
    assert r.status_code == 504, r.text
    assert r.json()["part"] == "then"
    assert took >= 31.5


def timed_get_long(url):
    t = time.monotonic()
    r = requests.get(url, timeout=scaled(60))
    return r, time.monotonic() - t


def test_every_call_counts_on_its_upstreams_metrics(gateway, backends):
    """Each call is an upstream request in the metrics: its upstream's
    duration histogram and retries count it, and the time the calls were
    out is upstream time, not the route's gateway overhead."""
    b = backends("svc")
    ups = {"a": upstream(b.port), "b": upstream(b.port),
           "r": upstream(b.port, retries={"attempts": 2, "on": [503]})}
    calls = [delayed("one", 300), delayed("two", 300), delayed("three", 300, up="b"),
             {"name": "flaky", "upstream": "r", "path": "/flaky", "optional": True,
              "headers": {"X-Demo-Status": "503"}}]
    gw = start(gateway, ups, [agg_route(calls)])
    n = 3
    for i in range(n):
        r = requests.get(gw.u("/p/%d" % i), timeout=scaled(10))
        assert r.status_code == 200, r.text
        assert r.json()["_errors"][0]["part"] == "flaky"

    def counts():
        return [metric_value(gw, "portico_upstream_duration_seconds_count", upstream=u)
                for u in ("a", "b", "r")]
    wait_until(lambda: counts() == [2 * n, n, n], scaled(5),
               what="every call on its upstream's histogram: %r" % (counts(),))
    assert metric_value(gw, "portico_upstream_retries_total", upstream="r") == n
    total = metric_value(gw, "portico_request_duration_seconds_sum", route="bff")
    overhead = metric_value(gw, "portico_overhead_seconds_sum", route="bff")
    # every request waited ≥ 300 ms on its calls: none of it is overhead
    assert overhead <= total - 0.3 * n, (overhead, total)


BREAKER = {"error_rate": 0.5, "min_requests": 5, "window": "10s", "open_for": "30s"}


def test_failing_calls_open_the_breaker_and_then_are_not_made(gateway, backends):
    """A call's failures count for its upstream's circuit breaker as a
    proxied request's do; once open, the part fails at once (503 naming
    it) without its upstream being contacted, and the state shows in the
    admin API and /metrics as for a proxied route."""
    b = backends("svc")
    flaky = backends("flaky")
    ups = {"a": upstream(b.port), "f": upstream(flaky.port, circuit_breaker=BREAKER)}
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "billing", "upstream": "f", "path": "/billing/{id}",
              "headers": {"X-Demo-Status": "503"}}]
    gw = start(gateway, ups, [agg_route(calls)])
    for _ in range(5):  # min_requests failures: the fifth opens it
        r = requests.get(gw.u("/p/1"), timeout=scaled(10))
        assert r.status_code == 502 and r.json()["part"] == "billing", r.text
    doc = requests.get("http://127.0.0.1:%d/upstreams" % gw.admin_port, timeout=scaled(5)).json()
    st = [u for u in doc["upstreams"] if u["name"] == "f"][0]["circuit_breaker"]
    assert st["state"] == "open" and st["window"]["failures"] == 5, st
    assert metric_value(gw, "portico_circuit_open", upstream="f") == 1
    flaky.reset()
    for _ in range(3):
        r = requests.get(gw.u("/p/1"), timeout=scaled(10))
        assert r.status_code == 503, r.text
        assert r.json()["part"] == "billing"
        assert r.json()["detail"] == "circuit breaker open"
    assert flaky.stats()["requests"] == 0



def test_part_whose_upstream_has_no_healthy_target_is_503_naming_it(gateway, backends):
    """Every target of a call's upstream down (active checks against a
    closed port): the part fails as a proxied request would, 503, naming
    the part, and the rest of the answer is not sent."""
    b = backends("svc")
    check = {"active": {"path": "/healthz", "interval": "100ms", "timeout": "500ms",
                        "healthy": 1, "unhealthy": 1}}
    ups = {"a": upstream(b.port), "down": upstream(free_port(), health_check=check)}
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "gone", "upstream": "down", "path": "/x"}]
    gw = start(gateway, ups, [agg_route(calls)])

    def down_unhealthy():
        doc = requests.get("http://127.0.0.1:%d/upstreams" % gw.admin_port,
                           timeout=scaled(5)).json()
        targets = [u for u in doc["upstreams"] if u["name"] == "down"][0]["targets"]
        return not any(t["healthy"] for t in targets)
    wait_until(down_unhealthy, scaled(5), what="the target marked unhealthy")
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 503, r.text
    assert r.json()["part"] == "gone"
    assert "healthy" in r.json()["detail"]

def test_max_concurrent_refuses_the_call_past_the_cap(gateway, backends):
    """max_concurrent counts a fan-out's calls as proxied requests: with a
    cap of 1, the second of two parallel calls to one upstream is refused
    before contact (503 naming it) and counted as an overflow."""
    b = backends("svc")
    capped = dict(BREAKER, max_concurrent=1)
    ups = {"c": upstream(b.port, circuit_breaker=capped)}
    calls = [delayed("one", 200, up="c"), delayed("two", 200, up="c", optional=True)]
    gw = start(gateway, ups, [agg_route(calls)])
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 200, r.text
    assert r.json()["one"]["path"] == "/echo/one/1"
    assert r.json()["_errors"] == [{"part": "two", "error": "upstream concurrency limit"}]
    assert b.stats()["requests"] == 1
    assert metric_value(gw, "portico_upstream_overflow_total", upstream="c") == 1
    # the slot came back with the call: the next fan-out gets it again
    r = requests.get(gw.u("/p/2"), timeout=scaled(10))
    assert r.json()["one"]["path"] == "/echo/one/2"


class _Holder:
    """An upstream that reads a request and never answers: it counts the
    requests that started and the connections the gateway closed."""

    def __init__(self, raw_upstream):
        self.started = 0
        self.closed = 0
        self.up = raw_upstream(self.handle)

    def handle(self, s):
        read_head(s)
        self.started += 1
        while s.recv(4096):
            pass
        self.closed += 1


def test_client_hang_up_cancels_every_outstanding_call(gateway, raw_upstream):
    hs = [_Holder(raw_upstream) for _ in range(3)]
    ups = {"u%d" % i: upstream(h.up.port) for i, h in enumerate(hs)}
    calls = [{"name": "c%d" % i, "upstream": "u%d" % i, "path": "/hang", "timeout": "20s"}
             for i in range(3)]
    gw = start(gateway, ups, [agg_route(calls)])
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    s.sendall(b"GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: all(h.started == 1 for h in hs), scaled(5),
               what="every call to reach its backend")
    assert all(h.closed == 0 for h in hs)
    s.close()
    # the gateway closes every call's connection, long before any timeout
    wait_until(lambda: all(h.closed == 1 for h in hs), scaled(3),
               what="the gateway to close every call")
    assert [h.started for h in hs] == [1, 1, 1]  # no retry, no second call
    assert [h.up.accepts for h in hs] == [1, 1, 1]
    gw.stop()  # an ASan build reports any leak here


class _JSONServer:
    """Answers every GET with a fixed JSON document (and status and extra
    fields); records the targets."""

    def __init__(self, doc, status=200, fields=()):
        self.targets = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.targets.append(self.path)
                b = json.dumps(doc).encode()
                self.send_response(status)
                for k, v in fields:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def json_server():
    made = []

    def make(doc, status=200, fields=()):
        s = _JSONServer(doc, status, fields)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


PROFILE = {
    "id": 7, "name": "Grace", "secret": "x",
    "address": {"city": "Arlington", "zip": "22201", "geo": {"lat": 38.88, "lon": -77.1}},
    "tags": [{"k": "a", "v": 1, "drop": True}, {"k": "b", "v": 2}, 5],
}


def test_fields_and_rename_shape_nested_json_exactly(gateway, json_server):
    srv = json_server(PROFILE)
    calls = [{"name": "p", "upstream": "j", "path": "/p/{id}",
              "fields": ["id", "name", "address.geo.lat", "address.city", "tags.k", "missing.x"],
              "rename": {"name": "full_name", "address.city": "location.city"}},
             {"name": "whole", "upstream": "j", "path": "/w"}]
    gw = start(gateway, {"j": upstream(srv.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/7"), timeout=scaled(10))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "p": {"id": 7, "full_name": "Grace",
              "address": {"geo": {"lat": 38.88}},
              "location": {"city": "Arlington"},
              "tags": [{"k": "a"}, {"k": "b"}, 5]},
        "whole": PROFILE,
    }


def test_top_level_fields_map_and_deep_merge(gateway, json_server):
    one = json_server({"id": 1, "profile": {"name": "A", "bio": "b"}, "x": 1})
    two = json_server({"profile": {"avatar": "p.png"}, "x": 2, "y": 3})
    ups = {"one": upstream(one.port), "two": upstream(two.port)}
    calls = [{"name": "first", "upstream": "one", "path": "/1"},
             {"name": "second", "upstream": "two", "path": "/2"}]
    gw = start(gateway, ups, [
        agg_route(calls, name="last", path="/last/{id}", merge="deep",
                  fields={"first": ["id", "profile.name", "x"]}),
        agg_route(calls, name="first", path="/first/{id}", merge="deep", on_conflict="first"),
        agg_route(calls, name="err", path="/err/{id}", merge="deep", on_conflict="error")])
    r = requests.get(gw.u("/last/1"), timeout=scaled(10))
    assert r.json() == {"id": 1, "profile": {"name": "A", "avatar": "p.png"}, "x": 2, "y": 3}
    r = requests.get(gw.u("/first/1"), timeout=scaled(10))
    assert r.json()["x"] == 1
    r = requests.get(gw.u("/err/1"), timeout=scaled(10))
    assert r.status_code == 502
    assert r.json()["part"] == "second" and "`x`" in r.json()["detail"]


def test_deep_merge_applies_the_collision_policy_to_a_part_that_is_not_an_object(
        gateway, json_server):
    # An array part goes under its call's name; an object part that merged
    # first may already hold that key.
    obj = json_server({"id": 1, "tags": "from-obj"})
    arr = json_server([1, 2])
    ups = {"o": upstream(obj.port), "t": upstream(arr.port)}
    calls = [{"name": "obj", "upstream": "o", "path": "/o"},
             {"name": "tags", "upstream": "t", "path": "/t"}]
    gw = start(gateway, ups, [
        agg_route(calls, name="last", path="/last/{id}", merge="deep"),
        agg_route(calls, name="first", path="/first/{id}", merge="deep", on_conflict="first"),
        agg_route(calls, name="err", path="/err/{id}", merge="deep", on_conflict="error"),
        agg_route(calls[::-1], name="rev", path="/rev/{id}", merge="deep", on_conflict="error")])
    r = requests.get(gw.u("/last/1"), timeout=scaled(10))
    assert r.status_code == 200 and r.json() == {"id": 1, "tags": [1, 2]}, r.text
    r = requests.get(gw.u("/first/1"), timeout=scaled(10))
    assert r.status_code == 200 and r.json() == {"id": 1, "tags": "from-obj"}, r.text
    for route in ("err", "rev"):
        r = requests.get(gw.u("/%s/1" % route), timeout=scaled(10))
        assert r.status_code == 502, r.text
        assert r.json()["part"] == ("tags" if route == "err" else "obj")
        assert "`tags`" in r.json()["detail"]


@pytest.mark.parametrize("slashes", ["reject", "keep"])
@pytest.mark.parametrize("value,segment", [
    ("..%2F..%2Fadmin", "..%2F..%2Fadmin"),
    ("a%3Fb=c", "a%3Fb%3Dc"),
    ("x&y", "x%26y"),
])
def test_injection_stays_percent_encoded_inside_its_segment(gateway, backends, value, segment,
                                                            slashes):
    b = backends("svc")
    calls = [{"name": "e", "upstream": "a", "path": "/items/{id}/detail?q=${query.q}"}]
    # reject is the default: left out of the config
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)],
               limits={"escaped_slashes": "keep"} if slashes == "keep" else None)
    r = requests.get(gw.u("/p/" + value) + "?q=" + value.replace("&", "%26"), timeout=scaled(10))
    if slashes == "reject" and "%2F" in value:
        # an escaped slash in the path is refused before any call is made
        assert r.status_code == 400, r.text
        assert b.stats()["requests"] == 0
        return
    assert r.status_code == 200, r.text
    assert r.json()["e"]["target"] == "/items/%s/detail?q=%s" % (segment, segment)
    assert r.json()["e"]["path"] == "/items/%s/detail" % segment


def test_a_dot_segment_value_has_its_dots_encoded(gateway, backends):
    b = backends("svc")
    calls = [{"name": "e", "upstream": "a", "path": "/items/${query.q}/detail"}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/1?q=.."), timeout=scaled(10))
    assert r.json()["e"]["target"] == "/items/%2E%2E/detail"
    r = requests.get(gw.u("/p/1?q=v1.2"), timeout=scaled(10))
    assert r.json()["e"]["target"] == "/items/v1.2/detail"



def hs256_token(claims, secret):
    import base64
    import hashlib
    import hmac

    def b64u(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    head = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64u(json.dumps(claims).encode())
    sig = hmac.new(secret, ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (head, body, b64u(sig))


def test_consumer_and_jwt_claims_fill_paths_percent_encoded(gateway, backends):
    """`${consumer}` and `${jwt.<claim>}` come from the route's verified
    token (the jwt filter runs first); a claim holding `/`, `?` or `..`
    stays inside its segment, a missing claim renders empty, and without a
    valid token the jwt filter answers before any call is made."""
    secret = b"bff-test-secret-0123456789abcdef"
    b = backends("svc")
    calls = [{"name": "me", "upstream": "a", "path": "/who/${consumer}/t/${jwt.tenant}"},
             {"name": "odd", "upstream": "a", "path": "/x/${jwt.path}?n=${jwt.nothing}"}]
    route = agg_route(calls)
    route["filters"] = {"jwt": {"secret": secret.decode()}, "aggregate": route["filters"]["aggregate"]}
    gw = start(gateway, {"a": upstream(b.port)}, [route])
    now = int(time.time())
    tok = hs256_token({"sub": "alice@example.com", "tenant": "acme/eu", "path": "../a?b=c",
                       "exp": now + 300}, secret)
    r = requests.get(gw.u("/p/1"), headers={"Authorization": "Bearer " + tok}, timeout=scaled(10))
    assert r.status_code == 200, r.text
    assert r.json()["me"]["target"] == "/who/alice%40example.com/t/acme%2Feu"
    assert r.json()["odd"]["target"] == "/x/..%2Fa%3Fb%3Dc?n="
    before = b.stats()["requests"]
    r = requests.get(gw.u("/p/1"), timeout=scaled(10))
    assert r.status_code == 401
    bad = hs256_token({"sub": "mallory", "exp": now + 300}, b"another-secret-0123456789abcdef")
    r = requests.get(gw.u("/p/1"), headers={"Authorization": "Bearer " + bad}, timeout=scaled(10))
    assert r.status_code == 401
    assert b.stats()["requests"] == before


def test_identity_and_tracing_headers_are_forwarded_by_default(gateway, backends):
    b = backends("svc")
    calls = [{"name": "d", "upstream": "a", "path": "/d"},
             {"name": "none", "upstream": "a", "path": "/n", "forward_headers": []}]
    gw = start(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    r = requests.get(gw.u("/p/1"), timeout=scaled(10),
                     headers={"X-Request-ID": "rid-123", "Cookie": "s=1",
                              "Authorization": "Bearer t"})
    names = {k.lower(): v for k, v in r.json()["d"]["headers"]}
    assert names["x-request-id"] == "rid-123"
    assert names["x-forwarded-for"] == "127.0.0.1"
    assert "cookie" not in names and "authorization" not in names
    bare = {k.lower() for k, _ in r.json()["none"]["headers"]}
    assert "x-request-id" not in bare and "x-forwarded-for" not in bare


def test_fields_an_auth_filter_adds_go_only_where_listed(gateway, backends):
    # jwt's claims_to_headers (like ext_auth's copy_headers) adds fields of
    # the route's choosing: the default forward_headers cannot know them.
    secret = b"bff-test-secret-0123456789abcdef"
    b = backends("svc")
    calls = [{"name": "d", "upstream": "a", "path": "/d"},
             {"name": "listed", "upstream": "a", "path": "/l",
              "forward_headers": ["X-Tenant", "X-Request-ID"]}]
    route = agg_route(calls)
    jwt = {"secret": secret.decode(), "claims_to_headers": {"tenant": "X-Tenant"}}
    route["filters"] = {"jwt": jwt, "aggregate": route["filters"]["aggregate"]}
    gw = start(gateway, {"a": upstream(b.port)}, [route])
    tok = hs256_token({"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 300}, secret)
    r = requests.get(gw.u("/p/1"), timeout=scaled(10),
                     headers={"Authorization": "Bearer " + tok, "X-Request-ID": "rid-7"})
    assert r.status_code == 200, r.text
    d = {k.lower(): v for k, v in r.json()["d"]["headers"]}
    listed = {k.lower(): v for k, v in r.json()["listed"]["headers"]}
    assert "x-tenant" not in d and d["x-consumer-name"] == "alice"
    assert listed["x-tenant"] == "acme" and listed["x-request-id"] == "rid-7"
    assert "x-consumer-name" not in listed


def test_merged_and_part_body_caps(gateway, backends):
    b = backends("svc")
    calls = [{"name": "big", "upstream": "a", "path": "/users"}]
    gw = start(gateway, {"a": upstream(b.port)}, [
        agg_route(calls, name="part", path="/part/{id}", max_part_body=100),
        agg_route(calls, name="merged", path="/merged/{id}", max_body=100),
        agg_route(calls, name="fits", path="/fits/{id}")])
    r = requests.get(gw.u("/part/1"), timeout=scaled(10))
    assert r.status_code == 502 and "max_part_body" in r.json()["detail"]
    r = requests.get(gw.u("/merged/1"), timeout=scaled(10))
    assert r.status_code == 502 and "max_body" in r.json()["detail"]
    assert requests.get(gw.u("/fits/1"), timeout=scaled(10)).status_code == 200


def validate(tmp_path, text):
    p = os.path.join(str(tmp_path), "agg.yaml")
    with open(p, "w") as f:
        f.write(text)
    return subprocess.run([PORTICO, "validate", p], capture_output=True, text=True, timeout=30)


BASE = """\
listeners: [{name: public, address: "127.0.0.1:%d"}]
upstreams:
  a: {targets: [{address: "127.0.0.1:9"}]}
routes:
  - name: bff
    match: { path_template: "/p/{id}" }
%s    filters:
      aggregate:
        calls:
%s"""


def base(calls, extra=""):
    return BASE % (free_port(), extra, calls)


def test_config_error_cycle(tmp_path):
    r = validate(tmp_path, base(
        '          - { name: x, upstream: a, path: "/x/${call.y.id}" }\n'
        '          - { name: y, upstream: a, path: "/y/${call.x.id}" }\n'))
    assert r.returncode != 0
    assert "agg.yaml:10:" in r.stderr and "agg.yaml:11:" in r.stderr, r.stderr
    assert "cycle" in r.stderr and "has no `upstream`" not in r.stderr


def test_config_error_unknown_call(tmp_path):
    r = validate(tmp_path, base(
        '          - { name: x, upstream: a, path: "/x/${call.nobody.id}" }\n'))
    assert r.returncode != 0
    assert "agg.yaml:10:" in r.stderr and "names no call" in r.stderr, r.stderr


def test_config_error_unknown_upstream_and_both_upstream_and_aggregate(tmp_path):
    r = validate(tmp_path, base('          - { name: x, upstream: nope, path: "/x" }\n'))
    assert r.returncode != 0 and "agg.yaml:10:" in r.stderr and "nope" in r.stderr, r.stderr
    r = validate(tmp_path, base('          - { name: x, upstream: a, path: "/x" }\n',
                                "    upstream: a\n"))
    assert r.returncode != 0 and "agg.yaml:7:" in r.stderr and "aggregate" in r.stderr, r.stderr


def test_config_error_duplicate_call_name(tmp_path):
    # Parts are named by their calls: two of one name would overwrite each
    # other in the answer and in ${call.<name>...}.
    r = validate(tmp_path, base(
        '          - { name: x, upstream: a, path: "/x" }\n'
        '          - { name: x, upstream: a, path: "/y" }\n'))
    assert r.returncode != 0
    assert "agg.yaml:11:21:" in r.stderr and "duplicate call name `x`" in r.stderr, r.stderr


def test_config_error_call_path_parameter_the_route_does_not_define(tmp_path):
    # `{idd}` would render empty: /users/ calls the list endpoint.
    r = validate(tmp_path, base(
        '          - { name: x, upstream: a, path: "/users/{idd}?q=${query.q}&u={id}" }\n'))
    assert r.returncode != 0
    assert "agg.yaml:10:" in r.stderr, r.stderr
    assert "`{idd}`, which the path_template does not define (did you mean `{id}`?)" in r.stderr
    assert "`{id}`" not in r.stderr.replace("did you mean `{id}`", "")
    # a route without parameters: every {param} is unknown
    r = validate(tmp_path, base('          - { name: x, upstream: a, path: "/u/{id}" }\n')
                 .replace('path_template: "/p/{id}"', 'path: "/p"'))
    assert r.returncode != 0
    assert "agg.yaml:10:" in r.stderr and "defines no parameters" in r.stderr, r.stderr
    # the same filter in the top-level defaults is checked against each route
    text = """\
listeners: [{name: public, address: "127.0.0.1:%d"}]
upstreams:
  a: {targets: [{address: "127.0.0.1:9"}]}
filters:
  aggregate:
    calls:
      - { name: x, upstream: a, path: "/u/{user}" }
routes:
  - { name: good, match: { path_template: "/g/{user}" } }
  - { name: bad, match: { path_template: "/b/{uid}" } }
""" % free_port()
    r = validate(tmp_path, text)
    assert r.returncode != 0
    assert "agg.yaml:7:" in r.stderr and "`{user}`, which the path_template" in r.stderr, r.stderr
    assert r.stderr.count("does not define") == 1, r.stderr


def test_config_error_too_many_parts(tmp_path):
    calls = "".join('          - { name: c%d, upstream: a, path: "/x" }\n' % i for i in range(3))
    r = validate(tmp_path, base(calls).replace("        calls:", "        max_parts: 2\n        calls:"))
    assert r.returncode != 0 and "max_parts" in r.stderr, r.stderr


def test_config_error_max_parts_zero(tmp_path):
    # 0 is not "the default": it is refused like any other number outside 1-32
    calls = '          - { name: c, upstream: a, path: "/x" }\n'
    for bad in ("0", "33", "two"):
        r = validate(tmp_path, base(calls).replace("        calls:",
                                                   "        max_parts: %s\n        calls:" % bad))
        assert r.returncode != 0 and "agg.yaml:9:20:" in r.stderr, r.stderr
        assert "`max_parts` is 1 to 32 (got `%s`)" % bad in r.stderr, r.stderr
    r = validate(tmp_path,
                 base(calls).replace("        calls:", "        max_parts: 1\n        calls:"))
    assert r.returncode == 0, r.stderr


def test_aggregate_route_without_upstream_validates(tmp_path):
    r = validate(tmp_path, base('          - { name: x, upstream: a, path: "/x/{id}" }\n'))
    assert r.returncode == 0, r.stderr


def h2c_gateway(gateway, ups, routes):
    cfg = make_config(free_port(), ups, routes)
    h2 = free_port()
    cfg["listeners"].append({"name": "h2c", "address": "127.0.0.1:%d" % h2, "http2": True})
    return gateway(cfg), h2


def test_http2_client_gets_the_merged_answer(gateway, backends):
    b = backends("svc")
    calls = [{"name": "user", "upstream": "a", "path": "/users/{id}"},
             {"name": "orders", "upstream": "a", "path": "/orders?user={id}", "optional": True},
             {"name": "gone", "upstream": "a", "path": "/users/999", "optional": True}]
    gw, h2 = h2c_gateway(gateway, {"a": upstream(b.port)}, [agg_route(calls)])
    # two streams at once on one connection, each its own fan-out
    out = subprocess.run(
        ["nghttp", "-v", "http://127.0.0.1:%d/p/1" % h2, "http://127.0.0.1:%d/p/2" % h2],
        capture_output=True, timeout=scaled(10))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    streams = sorted(set(re.findall(r"recv \(stream_id=(\d+)\) :status: 200", text)), key=int)
    assert len(streams) == 2, text
    for sid in streams:
        m = re.search(r"recv \(stream_id=%s\) content-length: (\d+)" % sid, text)
        assert m, text
        assert re.search(r"recv \(stream_id=%s\) x-partial-response: true" % sid, text)
    docs = [json.loads(d) for d in re.findall(r'(\{"user".*?\]\})\[', text)]
    assert sorted(d["user"]["name"] for d in docs) == ["Ada Lovelace", "Alan Turing"]
    for d in docs:
        assert d["_errors"][0]["part"] == "gone"
    # curl, one stream: the DATA length is the content-length
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-",
                          "http://127.0.0.1:%d/p/1" % h2], capture_output=True,
                         timeout=scaled(10))
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200")
    m = re.search(rb"content-length: (\d+)", head)
    assert m and int(m.group(1)) == len(body)
    assert json.loads(body)["user"]["name"] == "Ada Lovelace"


def test_http2_client_hang_up_cancels_every_outstanding_call(gateway, raw_upstream):
    hs = [_Holder(raw_upstream) for _ in range(3)]
    ups = {"u%d" % i: upstream(h.up.port) for i, h in enumerate(hs)}
    calls = [{"name": "c%d" % i, "upstream": "u%d" % i, "path": "/hang", "timeout": "20s"}
             for i in range(3)]
    gw, h2 = h2c_gateway(gateway, ups, [agg_route(calls)])
    p = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge",
                          "http://127.0.0.1:%d/p/1" % h2],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: all(h.started == 1 for h in hs), scaled(5),
                   what="every call to reach its backend")
    finally:
        p.kill()
        p.wait()
    wait_until(lambda: all(h.closed == 1 for h in hs), scaled(3),
               what="the gateway to close every call")
    gw.stop()  # an ASan build reports any leak here


def test_config_error_path_with_too_many_pieces(tmp_path):
    # 33 variables with literal text between: 66 pieces. Accepted before,
    # it then failed every request as "out of memory" (a 502).
    path = "/x" + "-{id}" * 33
    r = validate(tmp_path, base('          - { name: x, upstream: a, path: "%s" }\n' % path))
    assert r.returncode != 0
    assert "agg.yaml:10:" in r.stderr and "more than 64" in r.stderr, r.stderr
    ok = validate(tmp_path, base('          - { name: x, upstream: a, path: "%s" }\n'
                                 % ("/x" + "-{id}" * 32)))
    assert ok.returncode == 0, ok.stderr


def _bound_ports(example):
    import yaml
    with open(os.path.join(ROOT, "examples", example)) as f:
        doc = yaml.safe_load(f)
    addrs = [l["address"] for l in doc.get("listeners", [])]
    addrs.append(doc.get("admin", {}).get("address", "127.0.0.1:9901"))
    return {int(str(a).rsplit(":", 1)[1]) for a in addrs}


def test_bff_example_runs_next_to_make_run():
    # examples/bff.yaml runs against `make run`'s demo backends while make
    # run's two gateways (quickstart, edge) hold their ports
    with open(os.path.join(ROOT, "scripts", "run-demo.sh")) as f:
        run = f.read()
    started = re.findall(r"portico\" -c examples/(\S+\.yaml)", run)
    assert "bff.yaml" not in started and started, run
    bff = _bound_ports("bff.yaml")
    for ex in started:
        assert not bff & _bound_ports(ex), (ex, bff & _bound_ports(ex))
    backends = {int(p) for p in re.findall(r"--listen 127\.0\.0\.1:(\d+)", run)}
    assert not bff & backends
    with open(os.path.join(ROOT, "examples", "bff.yaml")) as f:
        text = f.read()
    listen = sorted(_bound_ports("bff.yaml") - {9903})
    assert set(re.findall(r"http://127\.0\.0\.1:(\d+)/", text)) == {str(p) for p in listen}
