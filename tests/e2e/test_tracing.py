"""Tracing (`tracing:`) end to end: a real gateway, demo backends that echo
what they were sent, an auth service, and a small OTLP/HTTP receiver (a
Python http.server collecting the JSON the gateway posts to /v1/traces).

Checks W3C trace context (continued, started, invalid, unsampled parent,
tracestate), the traceparent each upstream attempt and each auth call
gets, the exported spans (ids, parents, kinds, attributes), sampling,
Server-Timing and the trace id in the access log."""

import http.client
import http.server
import json
import os
import re
import threading
import time

import pytest
import requests

from conftest import (Gateway, backend, echo_headers, free_port, make_config, scaled, upstream,
                      validate_errors, wait_until)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


class Collector:
    """An OTLP/HTTP receiver: keeps every span POSTed to /v1/traces."""

    def __init__(self, status=200):
        self.port = free_port()
        self.lock = threading.Lock()
        self.spans = []
        self.posts = []  # (path, content-type, resource attributes)
        self.status = status
        col = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                doc = json.loads(body)
                with col.lock:
                    for rs in doc["resourceSpans"]:
                        res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                        col.posts.append((self.path, self.headers.get("Content-Type"), res))
                        for ss in rs["scopeSpans"]:
                            col.spans.extend(ss["spans"])
                out = b"{}"
                self.send_response(col.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/v1/traces" % self.port

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def of_trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s["traceId"] == trace_id]

    def wait_trace(self, trace_id, n):
        return wait_until(lambda: (lambda s: s if len(s) >= n else None)(self.of_trace(trace_id)),
                          scaled(10), what="%d spans of trace %s" % (n, trace_id))


class AuthService:
    """Answers 200 to every check and keeps the traceparent it got."""

    def __init__(self):
        self.port = free_port()
        self.seen = []
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                svc.seen.append(self.headers.get("traceparent"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        v = a["value"]
        out[a["key"]] = v.get("stringValue", v.get("intValue"))
    return out


def tracing_config(b, col, auth, tracing, workers=1, log=None):
    ups = {"app": upstream(b.port),
           "flaky": upstream(*b.ports, retries={"attempts": 2, "on": [503]}),
           "authz": upstream(auth.port)}
    routes = [
        {"name": "users", "match": {"path_prefix": "/api"}, "upstream": "app"},
        {"name": "flaky", "match": {"path_prefix": "/flaky"}, "upstream": "flaky"},
        {"name": "guarded", "match": {"path_prefix": "/guarded"}, "upstream": "app",
         "filters": {"ext_auth": {"upstream": "authz", "path": "/check"}}},
    ]
    cfg = make_config(free_port(), ups, routes, workers=workers,
                      access_log={"path": log, "format": "json"} if log else None)
    t = {"otlp_endpoint": col.url, "flush_every": "100ms"}
    t.update(tracing)
    cfg["tracing"] = t
    return cfg


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    col = Collector()
    auth = AuthService()
    try:
        with backend("tr", nports=2) as b:
            d = tmp_path_factory.mktemp("tracing")
            log = os.path.join(str(d), "access.log")
            gw = Gateway(tracing_config(b, col, auth, {"sample": 1.0, "server_timing": True},
                                        log=log), d)
            try:
                yield gw, b, col, auth, log
            finally:
                gw.stop()
    finally:
        auth.stop()
        col.stop()


def upstream_traceparent(resp):
    tp = echo_headers(resp.json(), "traceparent")
    assert len(tp) == 1, tp  # the client's copy was replaced, not added to
    return tp[0]


def test_continued_trace_ids_and_parents(env):
    gw, b, col, _, _ = env
    r = requests.get(gw.u("/api/7?q=1"), headers={
        "traceparent": "00-%s-%s-01" % (TRACE, PARENT), "tracestate": "vendor=abc,x=1"},
        timeout=scaled(5))
    assert r.status_code == 200
    tp = upstream_traceparent(r)
    version, trace, attempt_span, flags = tp.split("-")
    assert (version, trace, flags) == ("00", TRACE, "01")
    assert attempt_span != PARENT and HEX16.match(attempt_span)
    # tracestate goes on unchanged with the trace it belongs to
    assert echo_headers(r.json(), "tracestate") == ["vendor=abc,x=1"]
    spans = col.wait_trace(TRACE, 2)
    server = [s for s in spans if s["kind"] == 2]
    client = [s for s in spans if s["kind"] == 3]
    assert len(server) == 1 and len(client) == 1, spans
    srv, cli = server[0], client[0]
    assert srv["parentSpanId"] == PARENT
    assert srv["name"] == "users"
    assert cli["parentSpanId"] == srv["spanId"]
    assert cli["spanId"] == attempt_span  # the upstream names its parent: the attempt span
    a = attrs(srv)
    assert a["http.request.method"] == "GET"
    assert a["url.path"] == "/api/7"
    assert a["http.route"] == "/api"
    assert a["http.response.status_code"] == "200"
    assert a["server.address"].startswith("127.0.0.1:")
    assert a["client.address"] == "127.0.0.1"
    assert a["portico.request_id"] == r.headers["X-Request-ID"]
    c = attrs(cli)
    assert c["server.address"] == "127.0.0.1:%d" % b.port
    assert c["portico.attempt"] == "1"
    assert c["http.response.status_code"] == "200"
    assert "status" not in srv and "status" not in cli
    for s in (srv, cli):
        start, end = int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])
        assert abs(start / 1e9 - time.time()) < 60 and end >= start
    assert int(cli["startTimeUnixNano"]) >= int(srv["startTimeUnixNano"])
    assert int(cli["endTimeUnixNano"]) <= int(srv["endTimeUnixNano"])
    path, ctype, res = col.posts[0]
    assert path == "/v1/traces" and ctype == "application/json"
    assert res["service.name"] == {"stringValue": "portico"}


def get_with_fields(gw, path, fields):
    """A GET that sends `fields` (name, value) as given, repeats included."""
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=scaled(5))
    try:
        c.putrequest("GET", path)
        for name, value in fields:
            c.putheader(name, value)
        c.endheaders()
        resp = c.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        c.close()


def test_tracestate_fields_are_joined_into_one_list(env):
    gw, _, _, _, _ = env
    tp = ("traceparent", "00-%s-%s-01" % (TRACE, PARENT))
    status, body = get_with_fields(gw, "/api/ts", [
        tp, ("tracestate", "a=1,b=2"), ("tracestate", "c=3")])
    assert status == 200
    assert echo_headers(body, "tracestate") == ["a=1,b=2,c=3"]
    # 512 bytes joined is still kept (W3C: propagate at least 512) ...
    first, second = "a=" + "x" * 300, "b=" + "y" * 207
    assert len(first) + 1 + len(second) == 512
    status, body = get_with_fields(gw, "/api/ts", [
        tp, ("tracestate", first), ("tracestate", second)])
    assert echo_headers(body, "tracestate") == [first + "," + second]
    # ... one more and the whole list is dropped, never cut
    status, body = get_with_fields(gw, "/api/ts", [
        tp, ("tracestate", first), ("tracestate", second + "z")])
    assert status == 200 and echo_headers(body, "tracestate") == []


def test_started_trace_when_none_came(env):
    gw, _, col, _, _ = env
    r = requests.get(gw.u("/api/new"), timeout=scaled(5))
    version, trace, span, flags = upstream_traceparent(r).split("-")
    assert version == "00" and HEX32.match(trace) and trace != "0" * 32 and flags == "01"
    spans = col.wait_trace(trace, 2)
    srv = [s for s in spans if s["kind"] == 2][0]
    assert "parentSpanId" not in srv  # a root
    assert [s for s in spans if s["kind"] == 3][0]["spanId"] == span


@pytest.mark.parametrize("bad", [
    "00-%s-%s-01" % (TRACE.upper(), PARENT),          # uppercase hex
    "00-%s-%s-01" % ("0" * 32, PARENT),               # all-zero trace id
    "00-%s-%s-01" % (TRACE, "0" * 16),                # all-zero parent id
    "ff-%s-%s-01" % (TRACE, PARENT),                  # version ff
    "00-%s-%s-01-extra" % (TRACE, PARENT),            # version 00 with more fields
    "00-%s-%s-1" % (TRACE, PARENT),                   # short flags
    "00_%s_%s_01" % (TRACE, PARENT),                  # wrong separators
])
def test_invalid_traceparent_starts_a_new_trace(env, bad):
    gw, _, _, _, _ = env
    r = requests.get(gw.u("/api/bad"), headers={"traceparent": bad, "tracestate": "v=1"},
                     timeout=scaled(5))
    version, trace, _, _ = upstream_traceparent(r).split("-")
    assert version == "00" and trace not in (TRACE, TRACE.upper()) and HEX32.match(trace)
    assert echo_headers(r.json(), "tracestate") == []  # it belonged to the trace dropped


def test_future_version_is_read_by_version_00_rules(env):
    gw, _, _, _, _ = env
    r = requests.get(gw.u("/api/f"), headers={
        "traceparent": "cc-%s-%s-01-what-the-future-adds" % (TRACE, PARENT)}, timeout=scaled(5))
    assert upstream_traceparent(r).split("-")[:2] == ["00", TRACE]


def test_retried_request_has_two_attempt_spans(env):
    gw, b, col, _, _ = env
    trace = "11112222333344445555666677778888"
    r = requests.get(gw.u("/flaky/x"), headers={
        "traceparent": "00-%s-%s-01" % (trace, PARENT), "X-Demo-Status": "503"},
        timeout=scaled(5))
    assert r.status_code == 503
    spans = col.wait_trace(trace, 3)
    srv = [s for s in spans if s["kind"] == 2][0]
    tries = sorted((s for s in spans if s["kind"] == 3), key=lambda s: attrs(s)["portico.attempt"])
    assert [attrs(s)["portico.attempt"] for s in tries] == ["1", "2"]
    assert all(s["parentSpanId"] == srv["spanId"] for s in tries)
    assert tries[0]["spanId"] != tries[1]["spanId"]
    assert {attrs(s)["server.address"] for s in tries} == {"127.0.0.1:%d" % p for p in b.ports}
    assert all(s["status"]["code"] == 2 for s in tries)  # 503: an error
    assert srv["status"]["code"] == 2
    # the attempt the client saw is the one its response came from
    assert r.json()["headers"] and upstream_traceparent(r).split("-")[2] == tries[1]["spanId"]


def test_ext_auth_call_has_its_span(env):
    gw, _, col, auth, _ = env
    trace = "aaaabbbbccccddddeeeeffff00001111"
    r = requests.get(gw.u("/guarded/x"), headers={"traceparent": "00-%s-%s-01" % (trace, PARENT)},
                     timeout=scaled(5))
    assert r.status_code == 200
    spans = col.wait_trace(trace, 3)
    srv = [s for s in spans if s["kind"] == 2][0]
    calls = [s for s in spans if s["name"] == "ext_auth"]
    assert len(calls) == 1 and calls[0]["kind"] == 3
    assert calls[0]["parentSpanId"] == srv["spanId"]
    sent = [tp for tp in auth.seen if tp and trace in tp]
    assert sent == ["00-%s-%s-01" % (trace, calls[0]["spanId"])]
    up = upstream_traceparent(r)
    assert up.split("-")[2] not in (calls[0]["spanId"], srv["spanId"])


def test_server_timing_values_are_sane(env):
    gw, _, _, _, _ = env
    t0 = time.monotonic()
    r = requests.get(gw.u("/api/slow"), headers={"X-Demo-Delay": "80"}, timeout=scaled(5))
    took_ms = (time.monotonic() - t0) * 1000
    m = re.fullmatch(r"gateway;dur=([0-9.]+), upstream;dur=([0-9.]+)", r.headers["Server-Timing"])
    assert m, r.headers["Server-Timing"]
    gw_ms, up_ms = float(m.group(1)), float(m.group(2))
    assert 80 <= up_ms <= took_ms
    assert 0 <= gw_ms < up_ms and gw_ms + up_ms <= took_ms
    # a response the gateway made itself has only its own time
    r = requests.get(gw.u("/nowhere"), timeout=scaled(5))
    assert r.status_code == 404
    assert re.fullmatch(r"gateway;dur=[0-9.]+", r.headers["Server-Timing"])


def test_access_log_has_the_trace_id(env):
    gw, _, _, _, log = env
    trace = "0123456789abcdef0123456789abcdef"
    r = requests.get(gw.u("/api/logged"), headers={"traceparent": "00-%s-%s-00" % (trace, PARENT)},
                     timeout=scaled(5))
    rid = r.headers["X-Request-ID"]

    def line():
        if not os.path.exists(log):
            return None
        with open(log) as f:
            docs = [json.loads(l) for l in f if l.strip()]
        return next((d for d in docs if d["request_id"] == rid), None)

    d = wait_until(line, scaled(10), what="the access log line")
    assert d["trace_id"] == trace
    assert HEX16.match(d["span_id"]) and d["span_id"] != PARENT


def test_sampling_follows_parent_and_ratio(tmp_path):
    """sample: 0 exports no new trace and no unsampled parent's, but still
    propagates (flags 00); a sampled parent is always followed."""
    col = Collector()
    auth = AuthService()
    try:
        with backend("tr0", nports=2) as b:
            gw = Gateway(tracing_config(b, col, auth, {"sample": 0}), tmp_path)
            try:
                quiet = []
                for i in range(20):
                    r = requests.get(gw.u("/api/%d" % i), timeout=scaled(5))
                    _, trace, _, flags = upstream_traceparent(r).split("-")
                    assert flags == "00"
                    quiet.append(trace)
                unsampled = "99990000999900009999000099990000"
                r = requests.get(gw.u("/api/u"), headers={
                    "traceparent": "00-%s-%s-00" % (unsampled, PARENT)}, timeout=scaled(5))
                assert upstream_traceparent(r).split("-")[1::2] == [unsampled, "00"]
                # the positive control: a sampled parent, exported after the
                # others on the same (single) worker
                sampled = "77770000777700007777000077770000"
                r = requests.get(gw.u("/api/s"), headers={
                    "traceparent": "00-%s-%s-01" % (sampled, PARENT)}, timeout=scaled(5))
                assert upstream_traceparent(r).split("-")[3] == "01"
                col.wait_trace(sampled, 2)
                with col.lock:
                    traces = {s["traceId"] for s in col.spans}
                assert traces == {sampled}
            finally:
                gw.stop()
    finally:
        auth.stop()
        col.stop()


def test_export_failures_do_not_touch_requests(tmp_path):
    """A collector answering 500 and one that is down: requests are served
    as before; the failure is logged."""
    col = Collector(status=500)
    auth = AuthService()
    try:
        with backend("trf") as b:
            cfg = tracing_config(b, col, auth, {"sample": 1.0})
            gw = Gateway(cfg, tmp_path)
            try:
                for _ in range(5):
                    assert requests.get(gw.u("/api/x"), timeout=scaled(5)).status_code == 200
                wait_until(lambda: "the collector answered 500" in gw.stderr_text(), scaled(10),
                           what="the export failure logged")
                # ... and counted: every queued span either failed or waits.
                def trace_metrics():
                    text = requests.get("http://127.0.0.1:%d/metrics" % gw.admin_port,
                                        timeout=scaled(5)).text
                    return {l.split()[0]: int(l.split()[1]) for l in text.splitlines()
                            if l.startswith("portico_trace_spans_")}
                wait_until(lambda: trace_metrics()["portico_trace_spans_export_failed_total"] >= 5,
                           scaled(10), what="failed spans counted in /metrics")
                m = trace_metrics()
                assert m["portico_trace_spans_queued_total"] >= 10  # server + attempt span each
                assert m["portico_trace_spans_exported_total"] == 0
                col.stop()
                for _ in range(5):
                    assert requests.get(gw.u("/api/y"), timeout=scaled(5)).status_code == 200
            finally:
                gw.stop()
    finally:
        auth.stop()


def test_tracing_off_passes_traceparent_through(tmp_path):
    with backend("trn") as b:
        cfg = make_config(free_port(), {"app": upstream(b.port)},
                          [{"name": "users", "match": {"path_prefix": "/"}, "upstream": "app"}])
        gw = Gateway(cfg, tmp_path)
        try:
            tp = "00-%s-%s-01" % (TRACE, PARENT)
            r = requests.get(gw.u("/x"), headers={"traceparent": tp}, timeout=scaled(5))
            assert upstream_traceparent(r) == tp
            assert "Server-Timing" not in r.headers
        finally:
            gw.stop()


@pytest.mark.parametrize("tracing,msg", [
    ({"sample": 1.5}, "`tracing.sample` must be from 0 to 1"),
    ({"sample": "often"}, "expected a ratio"),
    ({"otlp_endpoint": "ftp://collector:4318/v1/traces"}, "is not an http:// or https:// URL"),
    ({"batch": 0}, "`tracing.batch` must be from 1"),
    ({"batch": 100, "max_queue": 50}, "is above `tracing.max_queue`"),
    ({"flush_every": "0s"}, "tracing.flush_every"),
    ({"sampel": 0.5}, "did you mean `sample`"),
])
def test_bad_tracing_config_is_refused_with_a_position(tmp_path, tracing, msg):
    cfg = make_config(free_port(), {"app": upstream(free_port())},
                      [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "app"}])
    cfg["tracing"] = tracing
    rc, out = validate_errors(tmp_path, cfg)
    assert rc != 0
    assert msg in out, out
    assert re.search(r"bad\.yaml:\d+:\d+: ", out), out


def test_reload_resizes_and_switches_tracing(tmp_path):
    """A reload that changes max_queue and sample applies to the next
    requests (the ring is remade), and one that removes `tracing` stops
    both export and propagation; no request fails on the way."""
    col = Collector()
    auth = AuthService()
    try:
        with backend("trr", nports=2) as b:
            cfg = tracing_config(b, col, auth, {"sample": 1.0})
            gw = Gateway(cfg, tmp_path)
            try:
                r = requests.get(gw.u("/api/one"), timeout=scaled(5))
                first = upstream_traceparent(r).split("-")[1]
                col.wait_trace(first, 2)
                cfg2 = tracing_config(b, col, auth, {"sample": 0, "max_queue": 64, "batch": 8})
                cfg2["listeners"], cfg2["admin"] = cfg["listeners"], cfg["admin"]
                gw.reload(cfg2)
                r = requests.get(gw.u("/api/two"), timeout=scaled(5))
                assert upstream_traceparent(r).endswith("-00")  # not sampled now
                sampled = "5555aaaa5555aaaa5555aaaa5555aaaa"
                for i in range(20):  # past one batch of the new ring
                    r = requests.get(gw.u("/api/s%d" % i), headers={
                        "traceparent": "00-%s-%s-01" % (sampled, PARENT)}, timeout=scaled(5))
                    assert r.status_code == 200
                col.wait_trace(sampled, 40)
                off = make_config(free_port(), {"app": upstream(b.port)},
                                  [{"name": "users", "match": {"path_prefix": "/api"},
                                    "upstream": "app"}], workers=1)
                off["listeners"] = cfg["listeners"]
                off["admin"] = cfg["admin"]
                gw.reload(off)
                tp = "00-%s-%s-01" % (TRACE, PARENT)
                r = requests.get(gw.u("/api/three"), headers={"traceparent": tp},
                                 timeout=scaled(5))
                assert upstream_traceparent(r) == tp  # untouched again
            finally:
                gw.stop()
    finally:
        auth.stop()
        col.stop()


def test_exported_spans_are_counted_in_metrics(env):
    """/metrics counts the spans the collector accepted: after a traced
    request is exported, exported_total has grown by at least its spans."""
    gw, b, col, auth, log = env

    def exported():
        text = requests.get("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=scaled(5)).text
        return sum(int(l.split()[1]) for l in text.splitlines()
                   if l.startswith("portico_trace_spans_exported_total "))
    before = exported()
    assert requests.get(gw.u("/api/counted"), timeout=scaled(5)).status_code == 200
    wait_until(lambda: exported() >= before + 2, scaled(10),
               what="the request's two spans counted as exported")
