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
            # route, limit id, the state's shape (g: gcra, s<window s>: sliding)
            assert "t16:shared:#1:header:x-t:g=" + key in keys, keys
            assert all(k.startswith("t16:") for k in keys), keys
            # GCRA: until the bucket is full again (one interval, 6 s)
            pttl = r.cmd("PTTL", "t16:shared:#1:header:x-t:g=" + key)
            assert 0 < pttl <= 6000
            # sliding window: two windows
            wk = [k for k in keys if k.startswith("t16:window:") and key in k][0]
            assert wk == "t16:window:#1:header:x-t:s3600=" + key, wk
            assert 3600 * 1000 < r.cmd("PTTL", wk) <= 2 * 3600 * 1000
            assert r.cmd("TYPE", wk) == "hash"
            # a long key value is stored as its SHA-256, so keys stay bounded
            long_value = "v" * 300
            assert requests.get(gw.u("/shared"), headers={"X-T": long_value}).status_code == 200
            hashed = [k for k in r.cmd("KEYS", "t16:shared:*") if "#" in k.split("x-t", 1)[1]]
            assert len(hashed) == 1 and re.search(r":g#[0-9a-f]{64}$", hashed[0]), hashed
        finally:
            gw.stop()


def test_store_failure_modes_and_recovery(two):
    a, c, r, b = two
    # warm up: the connection is made on first use, and on a busy machine
    # its set-up (connect, PING) may outlast store_timeout once: the
    # request is then allowed without a decision, so ask again.
    for _ in range(50):
        k0 = uuid.uuid4().hex
        got = requests.get(a.u("/allow"), headers={"X-T": k0}).headers.get("RateLimit-Limit")
        if got is not None:
            break
        time.sleep(0.1)
    assert got == "2"
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


def test_reload_changing_the_algorithm_keeps_deciding(tmp_path, redis_server):
    """A reload that turns a cluster limit from gcra into a sliding window
    (a string state into a hash) gets a new key: the store keeps deciding
    (no WRONGTYPE, so `deny` never answers 503), and a rate change alone
    keeps the key and its state."""
    r = redis_server()

    base = {}

    def cfg(app_port, algorithm, rate):
        lim = {"key": "header:X-T", "rate": rate, "algorithm": algorithm}
        c = config(app_port, r.url, routes=[route("alg", rl(lim, on_store_failure="deny"))])
        # the same listener and admin ports across reloads
        for k in ("listeners", "admin"):
            c[k] = base.setdefault(k, c[k])
        return c
    with backend("app") as b:
        gw = Gateway(cfg(b.port, "gcra", "3/m"), tmp_path)
        try:
            key = uuid.uuid4().hex
            got = [requests.get(gw.u("/alg"), headers={"X-T": key}, timeout=scaled(5))
                   for _ in range(2)]
            assert [x.status_code for x in got] == [200, 200]
            assert got[1].headers["RateLimit-Remaining"] == "1"
            # a rate change keeps the state (the TAT, 40 s ahead: with 4/m
            # this request leaves 0, where a fresh state would leave 3)
            gw.reload(cfg(b.port, "gcra", "4/m"))
            x = requests.get(gw.u("/alg"), headers={"X-T": key}, timeout=scaled(5))
            assert x.status_code == 200 and x.headers["RateLimit-Remaining"] == "0", x.headers
            # the algorithm changes: a new, empty state of the other shape
            gw.reload(cfg(b.port, "sliding_window", "4/m"))
            got = [requests.get(gw.u("/alg"), headers={"X-T": key}, timeout=scaled(5))
                   for _ in range(5)]
            assert [x.status_code for x in got] == [200] * 4 + [429], [
                (x.status_code, x.text) for x in got]
            assert [x.headers["RateLimit-Remaining"] for x in got[:4]] == ["3", "2", "1", "0"]
            assert "shared store failed" not in gw.stderr_text()
            keys = sorted(k for k in r.cmd("KEYS", "portico:rl:alg:*") if key in k)
            assert [k.split(":")[-1][:3] for k in keys] == ["g=" + key[0], "s60"], keys
        finally:
            gw.stop()


def _pair(path):
    """The same limits twice: /l<path> local, /c<path> cluster."""
    def mk(scope):
        return rl({"name": "hour", "key": "header:X-T", "rate": "2/h"},
                  {"name": "sec", "key": "header:X-T", "rate": "1/s"},
                  {"name": "win", "key": "header:X-T", "rate": "3/m",
                   "algorithm": "sliding_window"},
                  scope=scope)
    return [route("l" + path, mk("local")), route("c" + path, mk("cluster"))]


def _fields(x):
    h = x.headers
    return (x.status_code, h.get("RateLimit-Limit"), h.get("RateLimit-Remaining"),
            int(h.get("RateLimit-Reset", "-1")), int(h.get("Retry-After", "-1")))


def test_local_and_cluster_answer_alike(tmp_path, redis_server):
    """One request sequence on a local route and on a cluster route with
    the same three limits: the same statuses and RateLimit-* / Retry-After
    (Reset and Retry-After within the second the two requests are apart).
    The 429s describe the refusing limit (`sec`), not `hour`, which has
    nothing left either but did not refuse."""
    r = redis_server()
    with backend("app") as b:
        gw = Gateway(config(b.port, r.url, routes=_pair("p")), tmp_path)
        try:
            key = uuid.uuid4().hex
            steps = [0, 0, 1.1, 0, 0]  # seconds to wait before each request
            seen = []
            for wait in steps:
                time.sleep(wait)
                pair = [_fields(requests.get(gw.u(p), headers={"X-T": key},
                                             timeout=scaled(5)))
                        for p in ("/lp", "/cp")]
                seen.append(pair)
            for i, (loc, clu) in enumerate(seen):
                assert loc[:3] == clu[:3], (i, seen)
                assert abs(loc[3] - clu[3]) <= 1 and abs(loc[4] - clu[4]) <= 1, (i, seen)
            codes = [loc[0] for loc, _ in seen]
            assert codes == [200, 429, 200, 429, 429], seen
            # 1: sec has 0 left (the fewest); 2: sec refuses (hour, charged,
            # would show 0 left and an hour's reset: not what refused)
            assert seen[0][0][1:3] == ("1", "0")
            assert seen[1][0][1:3] == ("1", "0") and seen[1][0][4] == 1, seen
            # 3: hour has 0 left, with the longest reset
            assert seen[2][0][1:3] == ("2", "0") and seen[2][0][3] > 3000, seen
            # 4: hour and sec both refuse: the longer wait is hour's
            assert seen[3][0][1] == "2" and seen[3][0][4] > 1000, seen
        finally:
            gw.stop()


def test_client_gone_while_the_store_hangs(tmp_path, redis_server):
    """Redis stops answering (SIGSTOP) while decisions are pending, and
    their clients hang up after 100 ms: the gateway stays healthy (other
    routes answer, nothing leaks: also run under ASan), and once Redis
    runs again (SIGCONT) cluster decisions come back."""
    import signal
    import socket
    r = redis_server()
    routes = [route("hang", rl({"key": "header:X-T", "rate": "100/s"}, store_timeout="2s",
                               on_store_failure="deny")),
              {"name": "plain", "match": {"path_prefix": "/plain"}, "upstream": "app"}]
    with backend("app") as b:
        gw = Gateway(config(b.port, r.url, routes=routes), tmp_path)
        try:
            for _ in range(4):  # connections made on every worker
                assert requests.get(gw.u("/hang"), headers={"X-T": "w"},
                                    timeout=scaled(5)).status_code == 200
            os.kill(r.proc.pid, signal.SIGSTOP)
            try:
                for i in range(8):
                    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
                    s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\nX-T: k%d\r\n\r\n" % i)
                    time.sleep(0.1)
                    s.close()
                assert requests.get(gw.u("/plain"), timeout=scaled(5)).status_code == 200
                # while Redis hangs, decisions fail over (deny), never hang
                x = requests.get(gw.u("/hang"), headers={"X-T": "z"}, timeout=scaled(10))
                assert x.status_code == 503, x.status_code
            finally:
                os.kill(r.proc.pid, signal.SIGCONT)

            def decided():
                x = requests.get(gw.u("/hang"), headers={"X-T": uuid.uuid4().hex},
                                 timeout=scaled(5))
                return x.status_code == 200 and "RateLimit-Limit" in x.headers
            for _ in range(4):  # each worker's connection
                wait_until(decided, scaled(15), what="the store deciding again")
            assert gw.proc.poll() is None
        finally:
            gw.stop()
