"""Prometheus metrics at admin /metrics, end to end: a real gateway (2
workers) in front of a demo backend. A known mix of requests (several
routes, upstream statuses, a dead upstream with a retry, a rate limit that
refuses, key_auth 401s, a JWT verified-token cache) must show up as exactly
those counts; histograms must be consistent; a reload must not make a
counter go backwards and must add the new route's series; `promtool check
metrics` must accept a scrape taken under load; `metrics.enabled: false`
records nothing; connections are counted per listener."""

import math
import re
import shutil
import socket
import subprocess
import threading
import time

import jwt as pyjwt
import pytest
import requests

from conftest import (Gateway, backend, free_port, make_config, scaled, upstream,
                      validate_errors, wait_until)

SECRET = "metrics-test-secret-0123456789abcdef"
CONSUMERS = [{"name": "alice", "api_keys": ["k-alice"]}]


def route(name, prefix, up="app", filters=None):
    r = {"name": name, "match": {"path_prefix": prefix}, "upstream": up}
    if filters:
        r["filters"] = filters
    return r


ROUTES = [
    route("plain", "/plain"),
    route("keyed", "/keyed", filters={"key_auth": {}}),
    route("limited", "/limited",
          filters={"rate_limit": {"limits": [{"key": "header:X-T", "rate": "2/m"}]}}),
    route("token", "/token", filters={"jwt": {"secret": SECRET}}),
    route("dead", "/dead", up="dead"),
    # Two filters that both leave a note; rate_limit runs only for callers
    # jwt let through.
    route("guarded", "/guarded", filters={"jwt": {"secret": SECRET},
                                          "rate_limit": {"limits": [{"key": "ip",
                                                                     "rate": "100/m"}]}}),
]


def config(port, b):
    cfg = make_config(port, {"app": upstream(b.port),
                             "dead": upstream(free_port(), retries={"attempts": 2})},
                      list(ROUTES))
    cfg["consumers"] = CONSUMERS
    return cfg


# ---------------------------------------------------------------- a strict parser

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(?:\{(%s(?:,%s)*)\})? (\S+)$" % (NAME, LABEL, LABEL))


def parse(text):
    """Text format 0.0.4, strictly: every sample belongs to the family the
    latest `# TYPE` named, HELP and TYPE come once per family, values are
    floats. Returns ({(name, frozenset(labels)): value}, {family: type})."""
    assert text.endswith("\n")
    samples, types, helps, family = {}, {}, set(), None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, "second HELP for " + name
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name not in types and typ in ("counter", "gauge", "histogram")
            types[name] = typ
            family = name
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.group(1), m.group(2), m.group(3)
        base = family
        if types[family] == "histogram":
            assert name in (family + "_bucket", family + "_sum", family + "_count"), line
        else:
            assert name == base, line
        lab = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or ""))
        key = (name, lab)
        assert key not in samples, "duplicate series " + line
        samples[key] = float(value)
    return samples, types


def scrape(gw):
    r = requests.get("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=scaled(10))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return r.text


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def check_histograms(samples, types):
    """Buckets are cumulative, +Inf equals _count."""
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                rest = frozenset(x for x in labels if x[0] != "le")
                le = dict(labels)["le"]
                series.setdefault(rest, []).append((math.inf if le == "+Inf" else float(le), v))
        for rest, buckets in series.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), (fam, rest, buckets)
            assert buckets[-1][0] == math.inf
            assert samples[(fam + "_count", rest)] == counts[-1]


# ---------------------------------------------------------------- the mix


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("app") as b:
        gw = Gateway(config(free_port(), b), tmp_path_factory.mktemp("metrics"))
        try:
            yield gw, b
        finally:
            gw.stop()


def send_mix(gw):
    s = requests.Session()
    get = lambda path, **kw: s.get(gw.u(path), timeout=scaled(10), **kw)
    for _ in range(5):
        assert get("/plain").status_code == 200
    for st in (404, 404, 503):
        assert get("/plain", headers={"X-Demo-Status": str(st)}).status_code == st
    for _ in range(2):
        assert get("/keyed").status_code == 401
    for _ in range(3):
        assert get("/keyed", headers={"X-API-Key": "k-alice"}).status_code == 200
    got = [get("/limited", headers={"X-T": "one"}).status_code for _ in range(5)]
    assert got == [200, 200, 429, 429, 429]
    tok = pyjwt.encode({"sub": "u1", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    for _ in range(3):
        assert get("/token", headers={"Authorization": "Bearer " + tok}).status_code == 200
    assert get("/dead").status_code == 502
    assert get("/nowhere").status_code == 404
    assert get("/guarded").status_code == 401
    for _ in range(2):
        assert get("/guarded", headers={"Authorization": "Bearer " + tok}).status_code == 200


def test_counters_equal_the_requests_sent(env):
    gw, _ = env
    send_mix(gw)
    samples, types = parse(scrape(gw))
    req = lambda route, up, code: value(samples, "portico_requests_total", route=route,
                                        upstream=up, code=str(code))
    assert req("plain", "app", 200) == 5
    assert req("plain", "app", 404) == 2
    assert req("plain", "app", 503) == 1
    assert req("keyed", "", 401) == 2  # answered by key_auth: never went upstream
    assert req("keyed", "app", 200) == 3
    assert req("limited", "app", 200) == 2
    assert req("limited", "", 429) == 3
    assert req("token", "app", 200) == 3
    assert req("dead", "dead", 502) == 1
    # no route: no route label to count it under
    assert not any(dict(l).get("route") == "" for (n, l) in samples)
    total = sum(v for (n, _), v in samples.items() if n == "portico_requests_total")
    assert total == 5 + 3 + 5 + 5 + 3 + 1 + 3

    count = lambda fam, **l: value(samples, fam + "_count", **l)
    assert count("portico_request_duration_seconds", route="plain") == 8
    assert count("portico_overhead_seconds", route="keyed") == 5
    assert count("portico_upstream_duration_seconds", upstream="app") == 5 + 3 + 3 + 2 + 3 + 2
    assert count("portico_filter_duration_seconds", route="keyed", filter="key_auth") == 5
    assert count("portico_filter_duration_seconds", route="limited", filter="rate_limit") == 5
    check_histograms(samples, types)
    # the gateway's own time is part of the whole request's
    assert (value(samples, "portico_overhead_seconds_sum", route="plain")
            <= value(samples, "portico_request_duration_seconds_sum", route="plain"))

    auth = lambda r: value(samples, "portico_auth_results_total", route="keyed",
                           filter="key_auth", result=r)
    assert (auth("allow"), auth("deny"), auth("error")) == (3, 2, 0)
    assert value(samples, "portico_ratelimit_rejected_total", route="limited") == 3
    note = lambda f, r, route: value(samples, "portico_filter_notes_total", route=route,
                                     filter=f, result=r)
    assert note("rate_limit", "refused", "limited") == 3
    assert note("jwt_cache", "miss", "token") == 1
    assert note("jwt_cache", "hit", "token") == 2
    # every note of a request counts, not only the last filter's
    assert note("jwt_cache", "miss", "guarded") == 1
    assert note("jwt_cache", "hit", "guarded") == 1
    assert note("rate_limit", "admitted", "guarded") == 2
    # a filter is observed only when it ran: rate_limit not for the 401
    assert count("portico_filter_duration_seconds", route="guarded", filter="jwt") == 3
    assert count("portico_filter_duration_seconds", route="guarded", filter="rate_limit") == 2
    assert value(samples, "portico_upstream_retries_total", upstream="dead") == 1
    assert value(samples, "portico_config_generation") == 1
    assert types["portico_upstream_target_healthy"] == "gauge"
    assert value(samples, "portico_upstream_target_healthy", upstream="app",
                 target="127.0.0.1:%d" % env[1].port) == 1


def test_connections_active_per_listener(env):
    gw, _ = env
    socks = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(3)]
    try:
        for s in socks:  # a whole request each, so the worker has accepted it
            s.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        samples, _ = parse(scrape(gw))
        assert value(samples, "portico_connections_active", listener="public") == 3
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: value(parse(scrape(gw))[0], "portico_connections_active",
                             listener="public") == 0, scaled(5), what="connections closed")


# ---------------------------------------------------------------- reload


def test_reload_keeps_counters_and_adds_new_routes(tmp_path):
    with backend("app") as b:
        port = free_port()
        cfg = config(port, b)
        gw = Gateway(cfg, tmp_path)
        try:
            for _ in range(4):
                requests.get(gw.u("/plain"), timeout=scaled(10))
            assert requests.get(gw.u("/dead"), timeout=scaled(10)).status_code == 502
            before, _ = parse(scrape(gw))
            new = config(port, b)
            new["admin"] = cfg["admin"]
            new["routes"] = [r for r in new["routes"] if r["name"] != "dead"]
            new["routes"].append(route("fresh", "/fresh"))
            gw.reload(new)
            for _ in range(2):
                requests.get(gw.u("/plain"), timeout=scaled(10))
                requests.get(gw.u("/fresh"), timeout=scaled(10))
            # while the old generation is still live and once it is freed
            # (folded into the retired totals): never backwards
            seen_live = set()
            deadline = time.monotonic() + scaled(10)
            while True:
                after, types = parse(scrape(gw))
                for key, v in before.items():
                    if types.get(key[0]) == "counter" or key[0].endswith(("_count", "_bucket")):
                        assert after.get(key, 0) >= v, key
                live = value(after, "portico_config_generations_live")
                seen_live.add(live)
                if live == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert live == 1, "the old generation was never freed"
            # the removed route's counts live on in the retired totals
            assert value(after, "portico_requests_total", route="dead", upstream="dead",
                         code="502") == 1
            assert value(after, "portico_upstream_retries_total", upstream="dead") == 1
            assert value(after, "portico_requests_total", route="plain", upstream="app",
                         code="200") == 6
            assert value(after, "portico_requests_total", route="fresh", upstream="app",
                         code="200") == 2
            assert value(after, "portico_config_generation") == 2
            assert value(after, "portico_config_reloads_total", result="ok") == 1
            assert value(after, "portico_request_duration_seconds_count", route="plain") == 6
        finally:
            gw.stop()


# ---------------------------------------------------------------- format under load


def test_promtool_accepts_a_scrape_under_load(env, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed (Debian `prometheus`; scripts/deps.sh)"
    gw, _ = env
    stop = threading.Event()
    errors = []

    def load(path, headers):
        s = requests.Session()
        while not stop.is_set():
            try:
                s.get(gw.u(path), headers=headers, timeout=scaled(10))
            except requests.RequestException as e:
                errors.append(e)

    threads = [threading.Thread(target=load, args=a) for a in
               [("/plain", {}), ("/keyed", {"X-API-Key": "k-alice"}), ("/keyed", {}),
                ("/limited", {"X-T": "load"}), ("/plain", {"X-Demo-Status": "500"})]]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        texts = [scrape(gw) for _ in range(3)]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    for text in texts:
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=scaled(30))
        assert p.returncode == 0, p.stdout + p.stderr
        samples, types = parse(text)
        check_histograms(samples, types)


# ---------------------------------------------------------------- switched off


def test_metrics_disabled_records_nothing(tmp_path):
    with backend("app") as b:
        cfg = config(free_port(), b)
        cfg["metrics"] = {"enabled": False}
        gw = Gateway(cfg, tmp_path)
        try:
            for _ in range(3):
                assert requests.get(gw.u("/plain"), timeout=scaled(10)).status_code == 200
            samples, types = parse(scrape(gw))
            assert not any(n == "portico_requests_total" for n, _ in samples)
            assert types["portico_requests_total"] == "counter"  # the family is still described
            assert value(samples, "portico_config_generation") == 1
        finally:
            gw.stop()


def test_metrics_enabled_must_be_a_boolean(tmp_path):
    rc, out = validate_errors(tmp_path, "listeners: [{address: 127.0.0.1:1}]\n"
                                        "metrics:\n  enabled: maybe\n")
    assert rc != 0
    assert re.search(r"bad\.yaml:3:12: .*metrics\.enabled", out), out
    rc, out = validate_errors(tmp_path, "listeners: [{address: 127.0.0.1:1}]\n"
                                        "metrics: {enable: true}\n")
    assert rc != 0 and "bad.yaml:2:" in out, out
