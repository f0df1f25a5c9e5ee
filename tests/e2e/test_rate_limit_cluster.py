"""rate_limit with `scope: cluster`, end to end: two real gateways sharing
one real redis-server (started on a loopback port by the test).

What it proves: two instances hitting the same key from concurrent clients
admit exactly the limit between them (one atomic script per decision,
identical keys on every node); the keys carry the prefix and a TTL, and an
over-long key value is stored as a hash; with Redis stopped each failure
mode is what the route says (allow: through without RateLimit-*, deny: 503
+ Retry-After: 1, local: this node's own exact limit) and the streak is
logged once; after a restart (an empty server: NOSCRIPT) the limit is exact
again; AUTH with a password that is never logged; `scope: cluster` without
`cluster.redis` is a config error at the filter's line."""

import concurrent.futures
import json
import os
import re
import subprocess
import time
import uuid

import pytest
import requests

from conftest import (PORTICO, Gateway, assert_error_response, backend, free_port, make_config,
                      scaled, upstream, wait_until)


def rl(*limits, **opts):
    d = {"limits": list(limits), "scope": "cluster"}
    d.update(opts)
    return {"rate_limit": d}


def route(name, filters):
    return {"name": name, "match": {"path_prefix": "/" + name}, "upstream": "app",
            "filters": filters}


ROUTES = [
    route("shared", rl({"key": "header:X-T", "rate": "10/m"})),
    route("window", rl({"key": "header:X-T", "rate": "10/h", "algorithm": "sliding_window"})),
    route("several", rl({"name": "sec", "key": "header:X-T", "rate": "2/m"},
                        {"name": "day", "key": "header:X-T", "rate": "5/d"})),
    route("allow", rl({"key": "header:X-T", "rate": "2/m"}, on_store_failure="allow")),
    route("deny", rl({"key": "header:X-T", "rate": "2/m"}, on_store_failure="deny")),
    route("local", rl({"key": "header:X-T", "rate": "2/m"}, on_store_failure="local")),
]


def config(app_port, redis_url, prefix=None, routes=ROUTES):
    cfg = make_config(free_port(), {"app": upstream(app_port)}, routes)
    cfg["cluster"] = {"redis": redis_url}
    if prefix:
        cfg["cluster"]["redis_prefix"] = prefix
    return cfg


def burst(gws, path, key, n, threads=8):
    """n requests with one key spread over the gateways, concurrently:
    (statuses, seconds taken)."""
    def one(i):
        return requests.get(gws[i % len(gws)].u(path), headers={"X-T": key},
                            timeout=scaled(10)).status_code
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        codes = list(ex.map(one, range(n)))
    return codes, time.monotonic() - t0


@pytest.fixture
def two(tmp_path, redis_server):
    r = redis_server()
    with backend("app") as b:
        a = Gateway(config(b.port, r.url), _mk(tmp_path / "a"))
        c = Gateway(config(b.port, r.url), _mk(tmp_path / "b"))
        try:
            yield a, c, r, b
        finally:
            a.stop()
            c.stop()


def _mk(p):
    p.mkdir(exist_ok=True)
    return p


def test_two_instances_share_one_gcra_limit_exactly(two):
    a, c, r, b = two
    b.reset()
    key = uuid.uuid4().hex
    codes, took = burst([a, c], "/shared", key, 60)
    # 10 at once, then one every 6 s: what refilled during the run counts.
    want = 10 + int(took // 6)
    assert codes.count(200) == want, (codes, took)
    assert set(codes) <= {200, 429}
    assert b.stats()["requests"] == want  # a refusal never reaches the upstream


def test_two_instances_share_one_sliding_window(two):
    a, c, r, b = two
    key = uuid.uuid4().hex
    codes, _ = burst([a, c], "/window", key, 40)
    # one hour window: 10, or one more when the run straddles the hour
    assert codes.count(200) in (10, 11), codes


def test_refused_costs_nothing_on_the_store(two):
    a, c, r, _ = two
    key = uuid.uuid4().hex
    got = [requests.get(g.u("/several"), headers={"X-T": key}, timeout=scaled(5))
           for g in (a, c, a, c, a, c)]
    assert [x.status_code for x in got] == [200, 200, 429, 429, 429, 429]
    # the daily quota was charged twice, not six times
    day = [k for k in r.cmd("KEYS", "portico:rl:several:day:*") if key in k]
    assert len(day) == 1
    tat = int(r.cmd("GET", day[0]))
    t = r.cmd("TIME")
    now_us = int(t[0]) * 10**6 + int(t[1])
    interval = 86400 * 10**6 // 5
    assert tat - now_us == pytest.approx(2 * interval, abs=5 * 10**6)


def test_keys_have_the_prefix_and_a_ttl(tmp_path, redis_server):
    r = redis_server()
    with backend("app") as b:
        gw = Gateway(config(b.port, r.url, prefix="t16:"), tmp_path)
        try:
            key = uuid.uuid4().hex
            assert requests.get(gw.u("/shared"), headers={"X-T": key}).status_code == 200
            assert requests.get(gw.u("/window"), headers={"X-T": key}).status_code == 200
            keys = r.cmd("KEYS", "*")
            assert "t16:shared:#1:header:x-t:=" + key in keys, keys
            assert all(k.startswith("t16:") for k in keys), keys
            # GCRA: until the bucket is full again (one interval, 6 s)
            pttl = r.cmd("PTTL", "t16:shared:#1:header:x-t:=" + key)
            assert 0 < pttl <= 6000
            # sliding window: two windows
            wk = [k for k in keys if k.startswith("t16:window:") and key in k][0]
            assert 3600 * 1000 < r.cmd("PTTL", wk) <= 2 * 3600 * 1000
            assert r.cmd("TYPE", wk) == "hash"
            # a long key value is stored as its SHA-256, so keys stay bounded
            long_value = "v" * 300
            assert requests.get(gw.u("/shared"), headers={"X-T": long_value}).status_code == 200
            hashed = [k for k in r.cmd("KEYS", "t16:shared:*") if ":#" in k.split("x-t", 1)[1]]
            assert len(hashed) == 1 and re.search(r":#[0-9a-f]{64}$", hashed[0]), hashed
        finally:
            gw.stop()


def test_store_failure_modes_and_recovery(two):
    a, c, r, b = two
    # warm up: the connection is made on first use
    k0 = uuid.uuid4().hex
    assert requests.get(a.u("/allow"), headers={"X-T": k0}).headers.get("RateLimit-Limit") == "2"
    r.stop()
    key = uuid.uuid4().hex

    allow = [requests.get(a.u("/allow"), headers={"X-T": key}, timeout=scaled(5))
             for _ in range(5)]
    assert [x.status_code for x in allow] == [200] * 5
    assert all("RateLimit-Limit" not in x.headers for x in allow)

    deny = requests.get(a.u("/deny"), headers={"X-T": key}, timeout=scaled(5))
    assert_error_response(deny, 503)
    assert deny.json()["error"] == "rate limit store unavailable"
    assert deny.headers["Retry-After"] == "1"

    # local: this node's own exact limit, on each node
    loc = [requests.get(a.u("/local"), headers={"X-T": key}, timeout=scaled(5)).status_code
           for _ in range(4)]
    assert loc == [200, 200, 429, 429]

    # logged once per streak, not per request
    wait_until(lambda: "shared store failed" in a.stderr_text(), scaled(5), what="warning")
    assert a.stderr_text().count("shared store failed") == 1

    # back: an empty server (no cached script: NOSCRIPT, then EVAL)
    r.start()
    k2 = uuid.uuid4().hex

    def decided_by_store():
        x = requests.get(a.u("/allow"), headers={"X-T": uuid.uuid4().hex}, timeout=scaled(5))
        y = requests.get(c.u("/allow"), headers={"X-T": uuid.uuid4().hex}, timeout=scaled(5))
        return "RateLimit-Limit" in x.headers and "RateLimit-Limit" in y.headers
    # each worker reconnects on its own backoff (≤ 5 s)
    for _ in range(4):
        wait_until(decided_by_store, scaled(15), what="the store deciding again")
    codes, took = burst([a, c], "/shared", k2, 40)
    assert codes.count(200) == 10 + int(took // 6), codes
    wait_until(lambda: "answers again" in a.stderr_text(), scaled(5), what="recovery log")
    assert r.url.split("@")[-1] in a.stderr_text() or "connection" in a.stderr_text()


def test_auth_password_is_used_and_never_logged(tmp_path, redis_server):
    r = redis_server(password="hunter2-secret")
    with backend("app") as b:
        gw = Gateway(config(b.port, r.url), tmp_path)
        try:
            key = uuid.uuid4().hex
            got = [requests.get(gw.u("/shared"), headers={"X-T": key}).status_code
                   for _ in range(12)]
            assert got == [200] * 10 + [429] * 2
            assert any(key in k for k in r.cmd("KEYS", "portico:rl:*"))
            r.stop()  # a lost connection is logged, with the URL but not the password
            requests.get(gw.u("/shared"), headers={"X-T": key})
            wait_until(lambda: "connection lost" in gw.stderr_text(), scaled(5), what="log")
            assert "hunter2" not in gw.stderr_text() + gw.stdout_text()
            assert ":***@" in gw.stderr_text()
        finally:
            gw.stop()


def test_scope_cluster_without_cluster_redis_is_a_config_error(tmp_path):
    text = """listeners: [{ address: 127.0.0.1:%d }]
upstreams:
  app: { targets: [{ address: 127.0.0.1:9 }] }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: app
    filters:
      rate_limit:
        limits: [{ key: ip, rate: 10/s }]
        scope: cluster
""" % free_port()
    path = os.path.join(str(tmp_path), "c.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([PORTICO, "validate", path], capture_output=True, text=True,
                       timeout=scaled(20))
    assert p.returncode != 0
    assert re.search(r"c\.yaml:11:\d+: .*cluster\.redis", p.stderr), p.stderr


@pytest.mark.parametrize("url,why", [
    ("http://127.0.0.1:6379", "redis://"),
    ("redis://127.0.0.1:0/0", "port"),
    ("redis://127.0.0.1:6379/x", "database"),
    ("redis://no-such-host.invalid:6379/0", "resolve"),
])
def test_bad_cluster_redis_url_is_a_config_error(tmp_path, url, why):
    text = """listeners: [{ address: 127.0.0.1:%d }]
cluster:
  redis: "%s"
  postgres: postgresql://x@127.0.0.1/x
routes: []
""" % (free_port(), url)
    path = os.path.join(str(tmp_path), "c.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([PORTICO, "validate", path], capture_output=True, text=True,
                       timeout=scaled(20))
    assert p.returncode != 0
    assert re.search(r"c\.yaml:3:\d+: `cluster\.redis`: .*%s" % why, p.stderr), p.stderr
    assert re.search(r"c\.yaml:4:\d+: `postgres` is not supported by this build yet", p.stderr)


def test_example_cluster_yaml_validates():
    """examples/cluster.yaml, the documented two-instance setup, loads."""
    from conftest import ROOT, scaled
    p = subprocess.run([PORTICO, "validate", os.path.join(ROOT, "examples", "cluster.yaml")],
                       capture_output=True, text=True, timeout=scaled(20))
    assert p.returncode == 0, p.stdout + p.stderr
