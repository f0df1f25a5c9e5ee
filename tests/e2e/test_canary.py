"""Canary and traffic split (routes[].split, sticky, override_header):
weighted sides between two real demo backends named differently (their
X-Backend header tells the side), sticky users that never switch sides
(across requests, workers and a reload that keeps the weights), the
sticky cookie the gateway sets when it is missing, the override header
(only when configured, only for upstreams in the split), a weight-0 side
that gets nothing, the access log's and admin's view, and the config
errors."""

import collections
import concurrent.futures
import http.client
import json
import os

import pytest
import requests

from conftest import (Gateway, backend, free_port, make_config, scaled, upstream,
                      validate_errors, wait_until)

THREADS = 4


def ups(stable, canary, **more):
    u = {"users": upstream(stable.port), "users-v2": upstream(canary.port)}
    u.update(more)
    return u


def split_route(w_canary, w_stable, name="canary", prefix="/", **extra):
    r = {"name": name, "match": {"path_prefix": prefix},
         "split": [{"upstream": "users-v2", "weight": w_canary},
                   {"upstream": "users", "weight": w_stable}]}
    r.update(extra)
    return r


def side_of(resp):
    """The demo backend name of an http.client response: the split side."""
    v = resp.getheader("X-Backend")
    assert v, "response did not come from a demo backend (status %d)" % resp.status
    return v.rpartition(":")[0]


def run_requests(port, reqs, threads=THREADS):
    """Sends reqs (a list of (path, headers)) over `threads` keep-alive
    connections; returns [(side, response headers)] in order."""
    out = [None] * len(reqs)

    def worker(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(10))
        try:
            for i in range(k, len(reqs), threads):
                path, headers = reqs[i]
                c.request("GET", path, headers=headers)
                r = c.getresponse()
                r.read()
                assert r.status == 200, (r.status, path, headers)
                out[i] = (side_of(r), r.getheaders())
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        for f in [ex.submit(worker, k) for k in range(threads)]:
            f.result()
    return out


@pytest.fixture
def pair():
    with backend("stable") as stable, backend("canary") as canary:
        yield stable, canary


# ---------------------------------------------------------------- weights

@pytest.mark.heavy
def test_split_10_90_lands_within_2_percent(tmp_path, pair):
    stable, canary = pair
    gw = Gateway(make_config(free_port(), ups(stable, canary), [split_route(10, 90)]), tmp_path)
    try:
        n = 10000
        sides = collections.Counter(s for s, _ in run_requests(gw.port, [("/w", {})] * n))
        assert sum(sides.values()) == n
        share = sides["canary"] / n
        assert 0.08 <= share <= 0.12, dict(sides)
        # The backends saw the same: nothing went anywhere else.
        assert canary.stats()["requests"] == sides["canary"]
        assert stable.stats()["requests"] == sides["stable"]
    finally:
        gw.stop()


def test_weight_zero_side_gets_nothing(tmp_path, pair):
    stable, canary = pair
    gw = Gateway(make_config(free_port(), ups(stable, canary),
                             [split_route(0, 100, sticky="header:X-User-ID")]), tmp_path)
    try:
        reqs = [("/z", {})] * 300 + [("/z", {"X-User-ID": "u%d" % i}) for i in range(300)]
        sides = collections.Counter(s for s, _ in run_requests(gw.port, reqs))
        assert sides == {"stable": 600}
        assert canary.stats()["requests"] == 0
    finally:
        gw.stop()


# ---------------------------------------------------------------- stickiness

def sticky_sides(port, users, rounds=1):
    reqs = [("/s/%d" % r, {"X-User-ID": u}) for r in range(rounds) for u in users]
    got = run_requests(port, reqs)
    seen = collections.defaultdict(set)
    for (path, h), (side, _) in zip(reqs, got):
        seen[h["X-User-ID"]].add(side)
    return seen


def test_sticky_header_users_never_switch_sides_nor_across_a_reload(tmp_path, pair):
    stable, canary = pair
    port, admin = free_port(), free_port()
    route = split_route(10, 90, sticky="header:X-User-ID")
    cfg = make_config(port, ups(stable, canary), [route], admin_port=admin)
    gw = Gateway(cfg, tmp_path)
    try:
        users = ["user-%d" % i for i in range(1000)]
        seen = sticky_sides(gw.port, users, rounds=3)
        flips = [u for u, s in seen.items() if len(s) != 1]
        assert not flips, flips[:10]
        first = {u: next(iter(s)) for u, s in seen.items()}
        on_canary = sum(1 for s in first.values() if s == "canary")
        # 1000 users at 10%: ~100 (σ ≈ 9.5); the bounds are > 4σ away.
        assert 50 <= on_canary <= 150, on_canary

        # A reload that keeps the weights (the sides listed the other way
        # round, and an unrelated route added) keeps every user's side.
        route2 = dict(route, split=list(reversed(route["split"])))
        other = {"name": "other", "match": {"path_prefix": "/other"}, "upstream": "users"}
        gw.reload(make_config(port, ups(stable, canary), [route2, other], admin_port=admin))
        after = sticky_sides(gw.port, users, rounds=2)
        moved = [u for u in users if after[u] != {first[u]}]
        assert not moved, moved[:10]
    finally:
        gw.stop()


def test_shifting_weights_moves_users_only_towards_the_side_that_gained(tmp_path, pair):
    stable, canary = pair
    port, admin = free_port(), free_port()
    cfg = lambda wc, ws: make_config(port, ups(stable, canary),
                                     [split_route(wc, ws, sticky="header:X-User-ID")],
                                     admin_port=admin)
    gw = Gateway(cfg(10, 90), tmp_path)
    try:
        users = ["user-%d" % i for i in range(1000)]
        before = {u: next(iter(s)) for u, s in sticky_sides(gw.port, users).items()}
        gw.reload(cfg(30, 70))
        after = {u: next(iter(s)) for u, s in sticky_sides(gw.port, users).items()}
        moved = [u for u in users if before[u] != after[u]]
        assert all(before[u] == "stable" and after[u] == "canary" for u in moved), moved[:10]
        # ~20% of the users move (σ ≈ 13 of 1000).
        assert 120 <= len(moved) <= 280, len(moved)
    finally:
        gw.stop()


def test_sticky_cookie_set_when_missing_and_followed(tmp_path, pair):
    stable, canary = pair
    gw = Gateway(make_config(free_port(), ups(stable, canary),
                             [split_route(50, 50, sticky="cookie:pt_side")]), tmp_path)
    try:
        got = run_requests(gw.port, [("/c", {})] * 200)
        ids = {}
        for side, headers in got:
            cookies = [v for k, v in headers if k.lower() == "set-cookie"]
            assert len(cookies) == 1, headers
            name_value, *attrs = cookies[0].split("; ")
            assert attrs == ["Path=/", "HttpOnly", "SameSite=Lax"], cookies[0]
            name, _, value = name_value.partition("=")
            assert name == "pt_side" and value, cookies[0]
            ids[value] = side
        assert len(ids) == 200  # a fresh id per cookie-less client
        assert set(ids.values()) == {"stable", "canary"}

        # Sent back, each cookie keeps its side, with no new Set-Cookie;
        # among other cookies, and in a second Cookie field too.
        reqs = []
        for i, value in enumerate(ids):
            if i % 3 == 0:
                h = {"Cookie": "pt_side=%s" % value}
            elif i % 3 == 1:
                h = {"Cookie": "a=1; pt_sidex=zz; pt_side=%s; b=2" % value}
            else:
                h = [("Cookie", "a=1"), ("Cookie", "pt_side=%s" % value)]
            reqs.append(("/c", h))
        got = run_requests_multi(gw.port, reqs * 2)
        for (path, h), (side, headers) in zip(reqs * 2, got):
            value = dict(h)["Cookie"].split("pt_side=")[1].split(";")[0] \
                if isinstance(h, dict) else h[1][1].split("=", 1)[1]
            assert side == ids[value], (h, side)
            assert not [v for k, v in headers if k.lower() == "set-cookie"], headers
    finally:
        gw.stop()


def run_requests_multi(port, reqs):
    """Like run_requests, but headers may be a list of (name, value) pairs
    (the same name twice: two fields)."""
    out = [None] * len(reqs)

    def worker(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(10))
        try:
            for i in range(k, len(reqs), THREADS):
                path, headers = reqs[i]
                pairs = headers.items() if isinstance(headers, dict) else headers
                c.putrequest("GET", path)
                for name, value in pairs:
                    c.putheader(name, value)
                c.endheaders()
                r = c.getresponse()
                r.read()
                assert r.status == 200, r.status
                out[i] = (side_of(r), r.getheaders())
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        for f in [ex.submit(worker, k) for k in range(THREADS)]:
            f.result()
    return out


def test_sticky_cookie_also_on_gateway_made_errors(tmp_path, pair):
    """A request whose side is down still gets its cookie, so its retry
    lands on the same side."""
    stable, canary = pair
    dead = free_port()
    u = {"users": upstream(dead), "users-v2": upstream(dead)}
    gw = Gateway(make_config(free_port(), u, [split_route(1, 1, sticky="cookie:sid")]), tmp_path)
    try:
        r = requests.get(gw.u("/e"), timeout=scaled(10))
        assert r.status_code in (502, 503), r.status_code
        assert r.headers.get("Content-Type", "").startswith("application/json")
        sc = r.headers.get("Set-Cookie", "")
        assert sc.startswith("sid=") and sc.endswith("; Path=/; HttpOnly; SameSite=Lax"), sc
    finally:
        gw.stop()


# ---------------------------------------------------------------- override

def test_override_header_only_when_configured_and_only_for_split_upstreams(tmp_path, pair):
    stable, canary = pair
    with backend("outsider") as outsider:
        more = {"outsider": upstream(outsider.port)}
        routes = [split_route(0, 100, name="with", prefix="/with",
                              override_header="X-Canary"),
                  split_route(0, 100, name="without", prefix="/without"),
                  {"name": "out", "match": {"path_prefix": "/outsider"}, "upstream": "outsider"}]
        gw = Gateway(make_config(free_port(), ups(stable, canary, **more), routes), tmp_path)
        try:
            def sides(path, value, n=40):
                h = {"X-Canary": value} if value is not None else {}
                return collections.Counter(s for s, _ in run_requests(gw.port, [(path, h)] * n))

            # Configured: forces the weight-0 canary, or the stable side.
            assert sides("/with", "users-v2") == {"canary": 40}
            assert sides("/with", "users") == {"stable": 40}
            # An upstream outside the split, an unknown name, a near miss
            # and an empty value are ignored: the weights decide (100% stable).
            for v in ("outsider", "nope", "USERS-V2", "users-v2x", ""):
                assert sides("/with", v) == {"stable": 40}, v
            assert sides("/with", None) == {"stable": 40}
            # Not configured: the header does nothing.
            assert sides("/without", "users-v2") == {"stable": 40}
            assert outsider.stats()["requests"] == 0
        finally:
            gw.stop()


def test_override_beats_sticky_without_touching_the_users_side(tmp_path, pair):
    stable, canary = pair
    gw = Gateway(make_config(free_port(), ups(stable, canary),
                             [split_route(0, 1, sticky="header:X-User-ID",
                                          override_header="X-Canary")]), tmp_path)
    try:
        got = run_requests(gw.port, [("/o", {"X-User-ID": "u1", "X-Canary": "users-v2"}),
                                     ("/o", {"X-User-ID": "u1"})], threads=1)
        assert [s for s, _ in got] == ["canary", "stable"]
    finally:
        gw.stop()


# ---------------------------------------------------------------- observing it

def test_access_log_and_admin_show_the_split(tmp_path, pair):
    stable, canary = pair
    log = os.path.join(str(tmp_path), "access.log")
    admin = free_port()
    route = split_route(10, 90, sticky="cookie:sid", override_header="X-Canary")
    gw = Gateway(make_config(free_port(), ups(stable, canary), [route], admin_port=admin,
                             access_log={"path": log, "format": "json"}), tmp_path)
    try:
        got = run_requests(gw.port, [("/l", {"X-Canary": "users-v2", "X-Request-ID": "c1"}),
                                     ("/l", {"X-Canary": "users", "X-Request-ID": "s1"})],
                           threads=1)
        assert [s for s, _ in got] == ["canary", "stable"]

        def lines():
            if not os.path.exists(log):
                return None
            with open(log) as f:
                ls = [json.loads(l) for l in f if l.strip()]
            return ls if len(ls) >= 2 else None

        by_id = {d["request_id"]: d for d in wait_until(lines, scaled(10), what="2 log lines")}
        assert by_id["c1"]["upstream"] == "users-v2"
        assert by_id["c1"]["upstream_target"] == "127.0.0.1:%d" % canary.port
        assert by_id["s1"]["upstream"] == "users"

        doc = requests.get("http://127.0.0.1:%d/routes" % admin, timeout=scaled(5)).json()
        r = doc["routes"][0]
        assert r["upstream"] is None
        assert r["split"] == [{"upstream": "users", "weight": 90},
                              {"upstream": "users-v2", "weight": 10}]
        assert r["sticky"] == "cookie:sid"
        assert r["override_header"] == "X-Canary"
    finally:
        gw.stop()


# ---------------------------------------------------------------- config errors

BASE = """\
listeners: [{name: public, address: 127.0.0.1:18080}]
upstreams:
  users: {targets: [{address: 127.0.0.1:19001}]}
  users-v2: {targets: [{address: 127.0.0.1:19002}]}
routes:
  - name: r
    match: {path_prefix: /}
"""


@pytest.mark.parametrize("route,line,col,needle", [
    ("    upstream: users\n    split: [{upstream: users-v2, weight: 1}]\n", 9, 5,
     "`split` conflicts with `upstream` (at "),
    ("    split: [{upstream: users-v3, weight: 1}]\n", 8, 24,
     "unknown upstream `users-v3` (did you mean `users-v2`?)"),
    ("    split: []\n", 8, 12, "`split` is empty"),
    ("    split: [{upstream: users, weight: 0}, {upstream: users-v2, weight: 0}]\n", 8, 12,
     "every weight in `split` is 0"),
    ("    split: [{upstream: users, weight: 1}, {upstream: users, weight: 2}]\n", 8, 54,
     "upstream `users` appears twice in `split` (first at "),
    ("    split: [{upstream: users, weight: 10001}]\n", 8, 39, "`weight` must be from 0 to 10000"),
    ("    split: [{upstream: users, weight: 1.5}]\n", 8, 39, "`weight`"),
    ("    split: [{upstream: users}]\n", 8, 13, "`split` entry has no `weight`"),
    ("    split: [{upstream: users, weight: 1}]\n    sticky: header\n", 9, 13,
     "`sticky` must be `header:NAME` or `cookie:NAME`, not `header`"),
    ("    split: [{upstream: users, weight: 1}]\n    sticky: ip\n", 9, 13,
     "`sticky` must be `header:NAME` or `cookie:NAME`"),
    ("    split: [{upstream: users, weight: 1}]\n    sticky: \"cookie:a b\"\n", 9, 13,
     "`a b` is not a valid cookie name"),
    ("    split: [{upstream: users, weight: 1}]\n    override_header: \"X Canary\"\n", 9, 22,
     "`X Canary` is not a valid header name"),
    ("    upstream: users\n    sticky: header:X-User\n", 9, 13,
     "`sticky` applies to a `split`"),
    ("    upstream: users\n    override_header: X-Canary\n", 9, 22,
     "`override_header` applies to a `split`"),
    ("    sticky: header:X-User\n", 6, 5, "route `r` has no `upstream` (or `split`)"),
])
def test_config_errors(tmp_path, route, line, col, needle):
    rc, out = validate_errors(tmp_path, BASE + route)
    assert rc == 1, out
    want = "bad.yaml:%d:%d: " % (line, col)
    hits = [l for l in out.splitlines() if needle in l]
    assert hits and want in hits[0], (want, needle, out)


def test_good_split_validates(tmp_path):
    rc, out = validate_errors(tmp_path, BASE + "    split:\n"
                              "      - {upstream: users-v2, weight: 10}\n"
                              "      - {upstream: users, weight: 90}\n"
                              "    sticky: cookie:canary\n"
                              "    override_header: X-Canary\n")
    assert rc == 0, out
