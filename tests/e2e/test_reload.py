"""SIGHUP reload: under load with zero failed requests, bad configs
rejected while the old one keeps serving, in-flight requests finish on the
generation they started with; changing io_backend warns, naming the
backend that keeps running until the next restart."""

import collections
import threading
import time

import requests

from conftest import (Gateway, RawUpstream, backend, backend_of, free_port, low_quarantine_env,
                      make_config, one_route, request_heads, scaled, upstream, wait_until)


def two_configs(port, admin_port, a_port, b_port, extra_routes_a=(), extra_routes_b=()):
    ups = {"ua": upstream(a_port), "ub": upstream(b_port)}
    a = make_config(port, ups, [{"name": "main", "match": {"path_prefix": "/"},
                                 "upstream": "ua"}] + list(extra_routes_a), admin_port=admin_port)
    b = make_config(port, ups, [{"name": "main", "match": {"path_prefix": "/"},
                                 "upstream": "ub"}] + list(extra_routes_b), admin_port=admin_port)
    return a, b


class Load:
    """4 client threads hammering the gateway until stopped; records every
    outcome."""

    def __init__(self, gw, nthreads=4, path="/tiny"):
        self.gw = gw
        self.path = path
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.seen = collections.Counter()
        self.failures = []
        self.ok = 0
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(nthreads)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        # half the threads keep connections alive, half open a new one each time
        s = requests.Session() if i % 2 == 0 else None
        while not self.stop_ev.is_set():
            try:
                get = s.get if s else requests.get
                r = get(self.gw.u(self.path), timeout=scaled(10))
                if r.status_code != 200:
                    with self.lock:
                        self.failures.append((r.status_code, r.text[:200]))
                    continue
                name = backend_of(r)[0]
                with self.lock:
                    self.ok += 1
                    self.seen[name] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failures.append(repr(e))

    def snapshot(self):
        with self.lock:
            return dict(self.seen), self.ok

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(scaled(15))


def test_reload_under_load_zero_failures(tmp_path):
    with backend("cfg-a") as ba, backend("cfg-b") as bb:
        cfg_a, cfg_b = two_configs(free_port(), free_port(), ba.port, bb.port)
        gw = Gateway(cfg_a, tmp_path)
        load = Load(gw)
        try:
            wait_until(lambda: load.snapshot()[1] > 20, scaled(10), what="load to start")
            reloads = 0
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline or reloads < 6:
                gw.reload(cfg_b if reloads % 2 == 0 else cfg_a)
                reloads += 1
                before = load.snapshot()[1]
                # let some requests run on the new generation
                wait_until(lambda: load.snapshot()[1] > before + 20, scaled(10),
                           what="requests after reload %d" % reloads)
        finally:
            load.stop()
        seen, ok = load.snapshot()
        try:
            assert not load.failures, "%d failed requests, e.g. %r" % (
                len(load.failures), load.failures[:5])
            assert seen.get("cfg-a", 0) > 0 and seen.get("cfg-b", 0) > 0, seen
            assert ok > 100
            # every reload was logged as a new generation
            n = gw.err.count(lambda l: "reloaded" in l and "generation" in l)
            assert n == reloads, (n, reloads)
            # the last config applied is the one serving
            want = "cfg-b" if reloads % 2 == 1 else "cfg-a"
            assert backend_of(requests.get(gw.u("/tiny"), timeout=scaled(5)))[0] == want
        finally:
            gw.stop()


def test_bad_config_rejected_old_keeps_serving(tmp_path):
    with backend("cfg-a") as ba, backend("cfg-b") as bb:
        cfg_a, cfg_b = two_configs(free_port(), free_port(), ba.port, bb.port)
        gw = Gateway(cfg_a, tmp_path)
        load = Load(gw)
        try:
            wait_until(lambda: load.snapshot()[1] > 20, scaled(10), what="load to start")
            bad_texts = [
                # unknown key
                gw._cfg_text.replace("routes:", "routez:"),
                # dangling upstream reference
                gw._cfg_text.replace("upstream: ua", "upstream: nowhere"),
                # not YAML at all
                "workers: [unclosed\n  - {",
            ]
            for bad in bad_texts:
                line = gw.reload(bad, expect_ok=False)
                assert "reload failed" in line
                before = load.snapshot()
                wait_until(lambda: load.snapshot()[1] > before[1] + 20, scaled(10),
                           what="requests after a rejected reload")
            seen_during_bad, _ = load.snapshot()
            assert set(seen_during_bad) == {"cfg-a"}, seen_during_bad
            # still reloadable afterwards
            gw.reload(cfg_b)
            wait_until(lambda: load.snapshot()[0].get("cfg-b", 0) > 5, scaled(10),
                       what="the good config to serve")
        finally:
            load.stop()
        try:
            assert not load.failures, load.failures[:5]
            assert gw.proc.poll() is None
        finally:
            gw.stop()


def test_inflight_request_survives_route_removal(tmp_path):
    with backend("cfg-a") as ba, backend("cfg-b") as bb:
        slow_route = {"name": "slow", "match": {"path_prefix": "/slow"}, "upstream": "ua"}
        port, admin = free_port(), free_port()
        ups = {"ua": upstream(ba.port), "ub": upstream(bb.port)}
        cfg_with = make_config(port, ups, [slow_route, {"name": "other", "match": {
            "path_prefix": "/other"}, "upstream": "ub"}], admin_port=admin)
        cfg_without = make_config(port, ups, [{"name": "other", "match": {
            "path_prefix": "/other"}, "upstream": "ub"}], admin_port=admin)
        gw = Gateway(cfg_with, tmp_path)
        try:
            result = {}
            idle_active = ba.stats()["active"]  # whatever the stats call itself counts

            def slow():
                try:
                    r = requests.get(gw.u("/slow/x"), headers={"X-Demo-Delay": "1500"},
                                     timeout=scaled(15))
                    result["status"] = r.status_code
                    result["backend"] = backend_of(r)[0] if r.status_code == 200 else None
                except Exception as e:  # noqa: BLE001
                    result["error"] = repr(e)

            t = threading.Thread(target=slow)
            t.start()
            # the request is at the backend (not just queued in the gateway)
            wait_until(lambda: ba.stats()["active"] > idle_active or "status" in result, scaled(5),
                       what="slow request in flight")
            assert "status" not in result, "slow request finished before the reload"
            gw.reload(cfg_without)
            r = requests.get(gw.u("/slow/x"), timeout=scaled(5))
            assert r.status_code == 404, "route should be gone after reload"
            t.join(scaled(15))
            assert result.get("status") == 200, result
            assert result.get("backend") == "cfg-a"
        finally:
            gw.stop()


def test_reload_adds_route_and_upstream(tmp_path):
    with backend("cfg-a") as ba, backend("cfg-b") as bb:
        port, admin = free_port(), free_port()
        c1 = make_config(port, {"ua": upstream(ba.port)},
                         [{"name": "a", "match": {"path_prefix": "/a"}, "upstream": "ua"}],
                         admin_port=admin)
        c2 = make_config(port, {"ua": upstream(ba.port), "ub": upstream(bb.port)},
                         [{"name": "a", "match": {"path_prefix": "/a"}, "upstream": "ua"},
                          {"name": "b", "match": {"path_prefix": "/b"}, "upstream": "ub"}],
                         admin_port=admin)
        gw = Gateway(c1, tmp_path)
        try:
            assert requests.get(gw.u("/b/1"), timeout=scaled(5)).status_code == 404
            gw.reload(c2)
            r = requests.get(gw.u("/b/1"), timeout=scaled(5))
            assert r.status_code == 200
            assert backend_of(r)[0] == "cfg-b"
            gw.reload(c1)
            assert requests.get(gw.u("/b/1"), timeout=scaled(5)).status_code == 404
        finally:
            gw.stop()


def test_many_reloads_bounded_memory(tmp_path):
    """50 reloads: old generations are freed (RSS does not keep growing)."""
    with backend("cfg-a") as ba, backend("cfg-b") as bb:
        port, admin = free_port(), free_port()
        routes = [{"name": "r%d" % i, "match": {"path_prefix": "/r%d" % i,
                                                "headers": {"X-V": "~^v[0-9]+$"}},
                   "upstream": "ua"} for i in range(200)]
        cfg_a, cfg_b = two_configs(port, admin, ba.port, bb.port, routes, routes)
        gw = Gateway(cfg_a, tmp_path, env_extra=low_quarantine_env())
        try:
            for i in range(10):
                gw.reload(cfg_b if i % 2 == 0 else cfg_a)
                requests.get(gw.u("/tiny"), timeout=scaled(5))
            base = gw.rss_kb()
            for i in range(40):
                gw.reload(cfg_b if i % 2 == 0 else cfg_a)
                requests.get(gw.u("/tiny"), timeout=scaled(5))
            grown = gw.rss_kb() - base
            assert grown < 8 * 1024, "RSS grew %d KiB over 40 reloads" % grown
        finally:
            gw.stop()


def test_reload_effective_once_logged(tmp_path):
    """Once "config reloaded: generation N" is logged, every new request is
    routed by generation N. Repeated 60 times because a worker that picks up
    the new generation only at the start of its next loop turn answers an
    occasional request (one that arrives in the same epoll batch as the
    wake-up) with the old routes."""
    with backend("cfg-a") as ba:
        port, admin = free_port(), free_port()
        ups = {"ua": upstream(ba.port)}
        a_only = [{"name": "a", "match": {"path_prefix": "/a"}, "upstream": "ua"}]
        c1 = make_config(port, ups, a_only, admin_port=admin)
        c2 = make_config(port, ups, a_only + [{"name": "b", "match": {"path_prefix": "/b"},
                                               "upstream": "ua"}], admin_port=admin)
        gw = Gateway(c1, tmp_path)
        try:
            stale = []
            for i in range(30):
                gw.reload(c2)
                s = requests.get(gw.u("/b/1"), timeout=scaled(5)).status_code
                if s != 200:
                    stale.append((2 * i, "with /b", s))
                gw.reload(c1)
                s = requests.get(gw.u("/b/1"), timeout=scaled(5)).status_code
                if s != 404:
                    stale.append((2 * i + 1, "without /b", s))
            assert not stale, "requests answered by the previous generation: %r" % stale
        finally:
            gw.stop()


def test_one_long_request_does_not_block_later_reloads(tmp_path):
    """Reclamation used to treat every generation newer than the oldest
    pinned one as busy: one slow request on generation 1 kept generations
    2…15 alive, and the 15th reload was refused ("older generations still
    have requests in flight"). Only the generation a request uses is pinned.
    The upstream holds the long request until the reloads are done, so no
    timing decides the outcome."""
    arrived, release = threading.Event(), threading.Event()

    def handler(s):
        for head in request_heads(s):
            if head.startswith(b"GET /long "):
                arrived.set()
                release.wait(scaled(60))
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = RawUpstream(handler)
    port = free_port()
    cfgs = [make_config(port, {"u": upstream(up.port)},
                        [{"name": "r%d" % i, "match": {"path_prefix": "/"}, "upstream": "u"}])
            for i in range(2)]
    gw = Gateway(cfgs[0], tmp_path)
    try:
        result = {}

        def slow():
            try:
                r = requests.get(gw.u("/long"), timeout=scaled(60))
                result["status"] = r.status_code
            except Exception as e:  # noqa: BLE001
                result["error"] = repr(e)

        t = threading.Thread(target=slow)
        t.start()
        assert arrived.wait(scaled(5)), "the long request never reached the upstream"
        for i in range(20):
            gw.reload(cfgs[(i + 1) % 2])
        assert requests.get(gw.u("/tiny"), timeout=scaled(5)).status_code == 200
        release.set()
        t.join(scaled(30))
        assert result.get("status") == 200, result
    finally:
        release.set()
        gw.stop()
        up.close()


def test_reload_cannot_widen_a_listener_on_the_same_port(tmp_path):
    """127.0.0.1:P → 0.0.0.0:P is refused: the probe that keeps another
    process from sharing the port unseen (SO_REUSEPORT) collides with our
    own socket there. The refusal says why (it used to read as if some
    other process held the address), and the old listener keeps serving."""
    with backend("wide") as b:
        port = free_port()
        narrow = make_config(port, {"u": upstream(b.port)},
                             [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "u"}])
        gw = Gateway(narrow, tmp_path)
        try:
            wide = dict(narrow)
            wide["listeners"] = [{"name": "public", "address": "0.0.0.0:%d" % port}]
            gw.reload(wide, expect_ok=False)
            assert "shares its port with the running listener public (127.0.0.1:%d)" % port \
                in gw.stderr_text()
            assert requests.get(gw.u("/tiny"), timeout=scaled(5)).status_code == 200
        finally:
            gw.stop()


def test_the_io_backend_reload_warning_names_the_running_backend(tmp_path):
    with backend("iob") as b:
        base = one_route(b.port)
        base["io_backend"] = "epoll"
        gw = Gateway(base, tmp_path)
        try:
            other = dict(base, io_backend="io_uring")
            warned = lambda: [l for l in gw.stderr_text().splitlines()
                              if "io_backend:" in l and "next restart" in l]
            gw.reload(other)
            assert len(warned()) == 1 and "epoll → io_uring" in warned()[0], warned()
            gw.reload(base)  # back to what runs: nothing to warn about
            assert len(warned()) == 1, warned()
            gw.reload(other)
            gw.reload(other)  # still not what runs: warned again
            assert len(warned()) == 3, warned()
        finally:
            gw.stop()
