"""The shared response cache (`cache` filter, `cache_store`, admin /cache):
hits with Age and X-Cache, request coalescing across workers, Vary, what is
never shared between users, stale answers, revalidation, purge, reload,
eviction, HEAD, metrics and the access log field."""
import concurrent.futures
import http.server
import json
import subprocess
import threading
import time

import pytest
import requests
import urllib3

from conftest import (access_log_lines, backend, free_port, make_config, scaled, upstream,
                      wait_until)
from tls_certs import tls_certs  # noqa: F401  (the session fixture)


def cfg_for(port, up_port, cache=None, admin_port=None, workers=2, extra_routes=(),
            access_log=None, store=None, route_filters=None):
    filters = {"cache": cache if cache is not None else {"ttl": "60s"}}
    if route_filters:
        filters.update(route_filters)
    routes = list(extra_routes) + [
        {"name": "cached", "match": {"path_prefix": "/"}, "upstream": "app", "filters": filters}]
    cfg = make_config(port, {"app": upstream(up_port)}, routes, admin_port=admin_port,
                      workers=workers, access_log=access_log)
    if store:
        cfg["cache_store"] = store
    return cfg


def demo_header(v):
    return {"X-Demo-Header": v}


def count(b):
    return b.stats()["requests"]


def test_miss_then_hit_with_age_and_x_cache(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        r1 = requests.get(gw.u("/item?a=1"))
        assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS"
        r2 = requests.get(gw.u("/item?a=1"))
        assert r2.status_code == 200 and r2.headers["X-Cache"] == "HIT"
        assert r2.json() == r1.json()
        assert r2.headers["Content-Type"] == r1.headers["Content-Type"]
        assert int(r2.headers["Age"]) >= 0
        assert requests.get(gw.u("/item?a=2")).headers["X-Cache"] == "MISS"  # query is in the key
        assert count(b) == 2


def test_hundred_concurrent_cold_misses_make_one_upstream_fetch(gateway):
    with backend(threads=4) as b:
        gw = gateway(cfg_for(free_port(), b.port, workers=2))
        b.reset()
        h = {"X-Demo-Delay": "300"}
        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            rs = list(pool.map(lambda _: requests.get(gw.u("/cold"), headers=h, timeout=scaled(10)),
                               range(100)))
        assert all(r.status_code == 200 for r in rs)
        assert count(b) == 1
        assert sum(r.headers["X-Cache"] == "MISS" for r in rs) >= 1


def test_uncacheable_answer_releases_waiters_at_once(gateway):
    with backend(threads=4) as b:
        gw = gateway(cfg_for(free_port(), b.port, workers=2))
        b.reset()
        h = {"X-Demo-Delay": "300", "X-Demo-Header": "Cache-Control: no-store"}
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            rs = list(pool.map(lambda _: requests.get(gw.u("/nostore"), headers=h), range(10)))
        assert all(r.status_code == 200 for r in rs)
        assert count(b) == 10  # each went upstream: nothing was stored
        assert time.monotonic() - t0 < 0.3 * 10  # not one after another for lock_timeout


def test_never_stored_set_cookie_private_no_store(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        for path, hv in (("/c", "Set-Cookie: sid=alice"), ("/p", "Cache-Control: private"),
                         ("/n", "Cache-Control: no-store")):
            r1 = requests.get(gw.u(path), headers=demo_header(hv))
            r2 = requests.get(gw.u(path))
            assert r1.headers["X-Cache"] == "MISS" and r2.headers["X-Cache"] == "MISS", path
            assert "sid=alice" not in r2.headers.get("Set-Cookie", "")


def test_authorization_is_not_shared_without_per_consumer(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        r1 = requests.get(gw.u("/me"), headers={"Authorization": "Bearer alice"})
        assert r1.headers["X-Cache"] == "BYPASS"
        r2 = requests.get(gw.u("/me"), headers={"Authorization": "Bearer bob"})
        assert r2.headers["X-Cache"] == "BYPASS"
        assert "Bearer bob" in json.dumps(r2.json())


def test_per_consumer_with_key_auth(gateway):
    with backend() as b:
        cfg = cfg_for(free_port(), b.port, cache={"ttl": "60s", "per_consumer": True},
                      route_filters={"key_auth": {"header": "X-API-Key"}})
        cfg["consumers"] = [{"name": "alice", "api_keys": ["ka"]}, {"name": "bob", "api_keys": ["kb"]}]
        gw = gateway(cfg)
        ra = requests.get(gw.u("/mine"), headers={"X-API-Key": "ka", "Authorization": "x"})
        assert ra.headers["X-Cache"] == "MISS"
        rb = requests.get(gw.u("/mine"), headers={"X-API-Key": "kb", "Authorization": "x"})
        assert rb.headers["X-Cache"] == "MISS"  # bob never gets alice's entry
        ra2 = requests.get(gw.u("/mine"), headers={"X-API-Key": "ka", "Authorization": "x"})
        assert ra2.headers["X-Cache"] == "HIT" and ra2.json() == ra.json()


def test_per_consumer_without_an_auth_filter_still_bypasses_authorization(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port, cache={"ttl": "60s", "per_consumer": True}))
        for who in ("alice", "bob"):
            r = requests.get(gw.u("/acct"), headers={"Authorization": "Bearer " + who})
            assert r.headers["X-Cache"] == "BYPASS" and ("Bearer " + who) in json.dumps(r.json())
        assert count(b) == 2


def test_vary_headers_and_response_vary(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port,
                             cache={"ttl": "60s", "vary_headers": ["Accept-Language"]}))
        en = {"Accept-Language": "en"}
        de = {"Accept-Language": "de"}
        assert requests.get(gw.u("/v"), headers=en).headers["X-Cache"] == "MISS"
        assert requests.get(gw.u("/v"), headers=de).headers["X-Cache"] == "MISS"
        assert requests.get(gw.u("/v"), headers=en).headers["X-Cache"] == "HIT"
        # the response's own Vary: X-Tenant
        h1 = {"X-Tenant": "a", "X-Demo-Header": "Vary: X-Tenant"}
        h2 = {"X-Tenant": "b", "X-Demo-Header": "Vary: X-Tenant"}
        assert requests.get(gw.u("/rv"), headers=h1).headers["X-Cache"] == "MISS"
        r = requests.get(gw.u("/rv"), headers={"X-Tenant": "b"})
        assert r.headers["X-Cache"] != "HIT"
        assert requests.get(gw.u("/rv"), headers={"X-Tenant": "a"}).headers["X-Cache"] == "HIT"
        # Vary: * is never stored
        star = {"X-Demo-Header": "Vary: *"}
        requests.get(gw.u("/star"), headers=star)
        assert requests.get(gw.u("/star"), headers=star).headers["X-Cache"] == "MISS"
        del h2


def test_response_max_age_wins_over_ttl_unless_override(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port, cache={"ttl": "60s"}))
        h = demo_header("Cache-Control: max-age=1")
        requests.get(gw.u("/short"), headers=h)
        assert requests.get(gw.u("/short")).headers["X-Cache"] == "HIT"
        time.sleep(1.3)
        assert requests.get(gw.u("/short"), headers=h).headers["X-Cache"] == "MISS"


def test_head_is_served_from_the_get_entry(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        g = requests.get(gw.u("/h"))
        h = requests.head(gw.u("/h"))
        assert h.headers["X-Cache"] == "HIT" and h.content == b""
        assert int(h.headers["Content-Length"]) == len(g.content)


def test_conditional_client_request_gets_304(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        requests.get(gw.u("/etag"), headers=demo_header('ETag: "v1"'))
        r = requests.get(gw.u("/etag"), headers={"If-None-Match": '"v1"'})
        assert r.status_code == 304 and r.headers["X-Cache"] == "HIT"
        assert r.headers["ETag"] == '"v1"'
        r = requests.get(gw.u("/etag"), headers={"If-None-Match": '"v0"'})
        assert r.status_code == 200


class _Origin(http.server.BaseHTTPRequestHandler):
    """An origin with an ETag that answers If-None-Match with 304, or 500
    while `fail` is set; counts what it got."""
    protocol_version = "HTTP/1.1"
    hits = []
    fail = False

    def do_GET(self):
        _Origin.hits.append(self.headers.get("If-None-Match"))
        if _Origin.fail:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.headers.get("If-None-Match") == '"e1"':
            self.send_response(304)
            self.send_header("ETag", '"e1"')
            self.send_header("Cache-Control", "max-age=1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"origin body"
        self.send_response(200)
        self.send_header("ETag", '"e1"')
        self.send_header("Cache-Control", "max-age=1")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def _origin():
    _Origin.hits = []
    _Origin.fail = False
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_revalidation_with_etag_refreshes_on_304(gateway):
    srv = _origin()
    try:
        gw = gateway(cfg_for(free_port(), srv.server_port))
        assert requests.get(gw.u("/r")).text == "origin body"
        time.sleep(1.2)
        r = requests.get(gw.u("/r"))
        assert r.status_code == 200 and r.text == "origin body"
        assert _Origin.hits == [None, '"e1"']
        assert requests.get(gw.u("/r")).headers["X-Cache"] == "HIT"  # fresh again
        assert len(_Origin.hits) == 2
    finally:
        srv.shutdown()


class _Gated(http.server.BaseHTTPRequestHandler):
    """An origin whose answers say `v<N>` (N: the request's number, 1 on)
    with max-age=1; from the second request on it answers only once
    `release` is set. Records the request heads it got."""
    protocol_version = "HTTP/1.1"
    heads = []
    release = threading.Event()
    etag = None

    def do_GET(self):
        _Gated.heads.append(dict(self.headers))
        n = len(_Gated.heads)
        if n > 1:
            _Gated.release.wait(30)
        if _Gated.etag and self.headers.get("If-None-Match") == _Gated.etag:
            self.send_response(304)
            self.send_header("ETag", _Gated.etag)
            self.send_header("Cache-Control", "max-age=60")
            self.send_header("X-Revalidated", "yes")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"v%d" % n
        self.send_response(200)
        self.send_header("Cache-Control", "max-age=1")
        if _Gated.etag:
            self.send_header("ETag", _Gated.etag)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def _gated(etag=None):
    _Gated.heads = []
    _Gated.release = threading.Event()
    _Gated.etag = etag
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Gated)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_stale_while_revalidate_answers_at_once_while_one_background_refresh_runs(gateway):
    srv = _gated()
    try:
        admin = free_port()
        gw = gateway(cfg_for(free_port(), srv.server_port, admin_port=admin,
                             cache={"ttl": "1s", "stale_while_revalidate": "30s"}))
        assert requests.get(gw.u("/swr")).text == "v1"
        time.sleep(1.2)
        # The origin holds every refresh until released: each of these is
        # answered from the stale entry while the one refresh is pending,
        # the first (which started it) included, on both workers.
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            rs = list(pool.map(lambda _: requests.get(gw.u("/swr"), timeout=scaled(10)),
                               range(20)))
        assert all(r.headers["X-Cache"] == "STALE" and r.text == "v1" for r in rs)
        wait_until(lambda: len(_Gated.heads) == 2, scaled(5), what="the refresh to reach the origin")
        assert not _Gated.release.is_set()  # every answer above came before the refresh's
        _Gated.release.set()
        wait_until(lambda: requests.get(gw.u("/swr")).headers["X-Cache"] == "HIT", scaled(5),
                   what="the refreshed entry")
        r = requests.get(gw.u("/swr"))
        assert r.text == "v2" and r.headers["X-Cache"] == "HIT"
        assert len(_Gated.heads) == 2  # one refresh for 20 stale answers
        st = requests.get("http://127.0.0.1:%d/cache" % admin).json()
        assert st["refreshes"] == 1 and st["refresh_failures"] == 0
    finally:
        _Gated.release.set()
        srv.shutdown()
        srv.server_close()


def test_background_refresh_revalidates_with_the_entry_validator(gateway):
    srv = _gated(etag='"e7"')
    _Gated.release.set()
    try:
        gw = gateway(cfg_for(free_port(), srv.server_port,
                             cache={"ttl": "1s", "stale_while_revalidate": "30s"}))
        assert requests.get(gw.u("/reval?x=1")).text == "v1"
        time.sleep(1.2)
        # the client's own validator is not what the refresh sends
        r = requests.get(gw.u("/reval?x=1"), headers={"If-None-Match": '"other"'})
        assert r.status_code == 200 and r.headers["X-Cache"] == "STALE" and r.text == "v1"
        wait_until(lambda: requests.get(gw.u("/reval?x=1")).headers["X-Cache"] == "HIT",
                   scaled(5), what="the revalidated entry")
        assert len(_Gated.heads) == 2
        assert _Gated.heads[1].get("If-None-Match") == '"e7"'
        r = requests.get(gw.u("/reval?x=1"))
        # the stored body, with the 304's fields merged in (RFC 9111 §4.3.4)
        assert r.text == "v1" and r.headers["X-Revalidated"] == "yes"
        assert "max-age=60" in r.headers["Cache-Control"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_failed_background_refresh_keeps_the_stale_entry(gateway):
    with backend() as b:
        admin = free_port()
        gw = gateway(cfg_for(free_port(), b.port, admin_port=admin,
                             cache={"ttl": "1s", "stale_while_revalidate": "30s"}))
        first = requests.get(gw.u("/keep")).json()
        time.sleep(1.2)
        # the refresh goes with the request's fields: this one gets a 503
        fail = {"X-Demo-Status": "503"}
        r = requests.get(gw.u("/keep"), headers=fail)
        assert r.status_code == 200 and r.headers["X-Cache"] == "STALE" and r.json() == first
        stats = "http://127.0.0.1:%d/cache" % admin
        wait_until(lambda: requests.get(stats).json()["refresh_failures"] == 1, scaled(5),
                   what="the failed refresh")
        r = requests.get(gw.u("/keep"))
        assert r.headers["X-Cache"] == "STALE" and r.json() == first  # still there
        wait_until(lambda: requests.get(gw.u("/keep")).headers["X-Cache"] == "HIT", scaled(5),
                   what="the second refresh")
        assert requests.get(stats).json()["refreshes"] == 2


def test_background_refresh_ends_cleanly_when_the_gateway_stops(gateway):
    srv = _gated()
    try:
        gw = gateway(cfg_for(free_port(), srv.server_port,
                             cache={"ttl": "1s", "stale_while_revalidate": "30s"}))
        requests.get(gw.u("/stop"))
        time.sleep(1.2)
        assert requests.get(gw.u("/stop")).headers["X-Cache"] == "STALE"
        wait_until(lambda: len(_Gated.heads) == 2, scaled(5), what="the refresh to start")
        gw.stop()  # the refresh is still held by the origin: cancelled, no leak (ASan build)
    finally:
        _Gated.release.set()
        srv.shutdown()
        srv.server_close()


def test_stale_if_error_during_an_outage(gateway):
    srv = _origin()
    try:
        gw = gateway(cfg_for(free_port(), srv.server_port,
                             cache={"ttl": "1s", "stale_if_error": "60s"}))
        requests.get(gw.u("/sie"))
        time.sleep(1.2)
        _Origin.fail = True
        r = requests.get(gw.u("/sie"))
        assert r.status_code == 200 and r.text == "origin body"
        assert r.headers["X-Cache"] == "STALE"
    finally:
        srv.shutdown()
        srv.server_close()
    # the origin is gone (connection refused)
    r = requests.get(gw.u("/sie"))
    assert r.status_code == 200 and r.headers["X-Cache"] == "STALE"


def test_purge_all_route_prefix_and_reload_keeps_entries(gateway):
    with backend() as b:
        admin = free_port()
        port = free_port()
        other = {"name": "other", "match": {"path_prefix": "/o/"}, "upstream": "app",
                 "filters": {"cache": {"ttl": "60s"}}}
        cfg = cfg_for(port, b.port, admin_port=admin, extra_routes=[other])
        gw = gateway(cfg)
        a = "http://127.0.0.1:%d/cache" % admin

        def warm():
            for p in ("/a/1", "/a/2", "/b/1", "/o/1"):
                requests.get(gw.u(p))

        def state(p):
            return requests.get(gw.u(p)).headers["X-Cache"]
        warm()
        assert requests.delete(a + "?prefix=/a/").json() == {"purged": 2}
        assert state("/a/1") == "MISS" and state("/b/1") == "HIT"
        assert requests.delete(a + "?route=other").json() == {"purged": 1}
        assert state("/o/1") == "MISS" and state("/b/1") == "HIT"
        gw.reload(cfg)
        assert state("/b/1") == "HIT"
        assert requests.delete(a).json()["purged"] >= 3
        assert state("/b/1") == "MISS"
        assert requests.delete(a + "?bogus=1").status_code == 400


def test_eviction_under_max_bytes(gateway):
    with backend() as b:
        admin = free_port()
        gw = gateway(cfg_for(free_port(), b.port, admin_port=admin,
                             store={"max_bytes": "256KiB", "shards": 1}))
        for i in range(10):
            requests.get(gw.u("/bytes/40000?i=%d" % i))
        st = requests.get("http://127.0.0.1:%d/cache" % admin).json()
        assert st["bytes"] <= 256 * 1024 and st["evictions"] >= 4
        assert requests.get(gw.u("/bytes/40000?i=9")).headers["X-Cache"] == "HIT"
        assert requests.get(gw.u("/bytes/40000?i=0")).headers["X-Cache"] == "MISS"


def test_metrics_and_access_log_field(gateway, tmp_path):
    with backend() as b:
        admin = free_port()
        log = str(tmp_path / "access.log")
        gw = gateway(cfg_for(free_port(), b.port, admin_port=admin,
                             access_log={"path": log, "format": "json"}))
        requests.get(gw.u("/m"))
        requests.get(gw.u("/m"))
        requests.post(gw.u("/m"))
        lines = access_log_lines(log, 3)
        assert sorted(l.get("cache") for l in lines) == ["bypass", "hit", "miss"]
        text = requests.get("http://127.0.0.1:%d/metrics" % admin).text
        assert 'portico_cache_requests_total{route="cached",result="hit"} 1' in text
        assert 'portico_cache_requests_total{route="cached",result="miss"} 1' in text
        assert 'portico_cache_requests_total{route="cached",result="bypass"} 1' in text


def test_bad_config_is_reported_with_position(tmp_path):
    import subprocess
    from conftest import PORTICO
    p = tmp_path / "c.yaml"
    p.write_text("listeners: [{address: 127.0.0.1:1}]\ncache_store: { max_bytes: 1KiB }\n"
                 "upstreams: {a: {targets: [{address: 127.0.0.1:2}]}}\n"
                 "routes: [{name: r, match: {path_prefix: /}, upstream: a,"
                 " filters: {cache: {vary_headers: ['bad name']}}}]\n")
    r = subprocess.run([PORTICO, "validate", str(p)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "c.yaml:2:" in r.stderr + r.stdout and "64KiB" in r.stderr + r.stdout
    assert "vary_headers" in r.stderr + r.stdout


def test_cors_route_hit_carries_one_decoration_per_origin(gateway):
    """A cached response on a cors route: each origin gets its own variant
    (Vary: Origin), and a hit carries the CORS fields once, not the stored
    copy beside the fresh decoration."""
    with backend() as b:
        cors = {"cors": {"origins": ["https://a.example", "https://b.example"],
                         "credentials": True}}
        gw = gateway(cfg_for(free_port(), b.port, route_filters=cors))
        for origin in ("https://a.example", "https://b.example"):
            for want in ("MISS", "HIT"):
                r = requests.get(gw.u("/users"), headers={"Origin": origin})
                assert r.headers["X-Cache"] == want
                raw = r.raw.headers
                assert raw.getlist("Access-Control-Allow-Origin") == [origin]
                assert raw.getlist("Access-Control-Allow-Credentials") == ["true"]
                assert raw.getlist("Vary") == ["Origin"]
        assert count(b) == 2


def test_five_xx_and_truncated_answers_are_never_stored(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        r = requests.get(gw.u("/e5"), headers={"X-Demo-Status": "503"})
        assert r.status_code == 503
        r = requests.get(gw.u("/e5"))
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        # the cut answer reaches the client cut (its Content-Length kept and
        # the connection closed short of it, or a chunked stream broken):
        # never as a complete one
        try:
            r = requests.get(gw.u("/short"), headers={"X-Demo-Break": "short"}, stream=True)
            body = r.raw.read()
            assert "Content-Length" in r.headers and len(body) < int(r.headers["Content-Length"])
        except (requests.exceptions.RequestException, urllib3.exceptions.ProtocolError):
            pass
        b.reset()
        r = requests.get(gw.u("/short"))
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS" and count(b) == 1


def test_must_revalidate_turns_off_stale_if_error(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port, cache={"ttl": "60s", "stale_if_error": "60s"}))
        requests.get(gw.u("/mr"), headers=demo_header("Cache-Control: max-age=1, must-revalidate"))
        requests.get(gw.u("/plain"), headers=demo_header("Cache-Control: max-age=1"))
        time.sleep(1.2)
        fail = {"X-Demo-Status": "500"}
        r = requests.get(gw.u("/plain"), headers=fail)
        assert r.status_code == 200 and r.headers["X-Cache"] == "STALE"
        r = requests.get(gw.u("/mr"), headers=fail)
        assert r.status_code == 500 and r.headers["X-Cache"] == "MISS"


def test_vary_on_several_fields_with_odd_spacing_and_case(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        # every answer of the origin says the same Vary
        vary = demo_header("Vary: x-a ,  X-B,accept-LANGUAGE")
        base = {"X-A": "1", "X-B": "2", "Accept-Language": "en", **vary}
        assert requests.get(gw.u("/mv"), headers=base).headers["X-Cache"] == "MISS"
        assert requests.get(gw.u("/mv"), headers=base).headers["X-Cache"] == "HIT"
        assert requests.get(gw.u("/mv"), headers={"x-a": "1", "x-b": "2", "accept-language": "en",
                                                  **vary}).headers["X-Cache"] == "HIT"
        for name in ("X-A", "X-B", "Accept-Language"):
            other = {**base, name: "other"}
            assert requests.get(gw.u("/mv"), headers=other).headers["X-Cache"] == "MISS", name
        missing = {k: v for k, v in base.items() if k != "X-B"}
        assert requests.get(gw.u("/mv"), headers=missing).headers["X-Cache"] == "MISS"


def test_age_counts_the_upstreams_age_and_the_time_stored(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        h = {"X-Demo-Header": "Age: 100"}
        requests.get(gw.u("/aged"), headers={**h, "X-Demo-Delay": "0"},
                     ).raise_for_status()
        requests.get(gw.u("/aged2"), headers=demo_header("Cache-Control: max-age=1000, public"))
        time.sleep(1.1)
        r = requests.get(gw.u("/aged2"))
        assert r.headers["X-Cache"] == "HIT" and int(r.headers["Age"]) >= 1
        # an upstream Age beyond the lifetime: stored already stale, not a hit
        assert requests.get(gw.u("/aged")).headers["X-Cache"] == "MISS"
        requests.get(gw.u("/aged3"), headers={"X-Demo-Header": "Cache-Control: max-age=1000"})
        r = requests.get(gw.u("/aged3"))
        assert r.headers["X-Cache"] == "HIT"


def test_purge_while_a_large_hit_is_being_sent(gateway):
    with backend() as b:
        admin = free_port()
        gw = gateway(cfg_for(free_port(), b.port, admin_port=admin,
                             cache={"ttl": "60s", "max_object_bytes": "4MiB"},
                             store={"max_bytes": "64MiB", "shards": 4}))
        whole = requests.get(gw.u("/bytes/3000000")).content
        assert len(whole) == 3000000
        r = requests.get(gw.u("/bytes/3000000"), stream=True)
        assert r.headers["X-Cache"] == "HIT"
        first = r.raw.read(1000)
        assert requests.delete("http://127.0.0.1:%d/cache" % admin).json()["purged"] == 1
        rest = r.raw.read()
        assert first + rest == whole  # the entry lives until the answer is sent
        assert requests.get(gw.u("/bytes/3000000")).headers["X-Cache"] == "MISS"


def test_reload_with_a_new_max_bytes_keeps_entries_and_shrinks_in_place(gateway):
    with backend() as b:
        admin = free_port()
        port = free_port()
        cfg = cfg_for(port, b.port, admin_port=admin, store={"max_bytes": "2MiB", "shards": 1})
        gw = gateway(cfg)
        stats = "http://127.0.0.1:%d/cache" % admin
        for i in range(10):
            requests.get(gw.u("/bytes/40000?i=%d" % i))
        assert requests.get(stats).json()["entries"] == 10
        cfg["cache_store"] = {"max_bytes": "128KiB", "shards": 1}
        gw.reload(cfg)
        st = requests.get(stats).json()
        assert st["max_bytes"] == 128 * 1024 and st["bytes"] <= 128 * 1024
        assert 0 < st["entries"] < 10 and st["evictions"] >= 1
        assert requests.get(gw.u("/bytes/40000?i=9")).headers["X-Cache"] == "HIT"  # newest kept
        assert requests.get(gw.u("/bytes/40000?i=0")).headers["X-Cache"] == "MISS"  # oldest gone
        cfg["cache_store"] = {"max_bytes": "4MiB", "shards": 1}
        gw.reload(cfg)
        assert requests.get(gw.u("/bytes/40000?i=9")).headers["X-Cache"] == "HIT"
        cfg["cache_store"] = {"max_bytes": "4MiB", "shards": 2}  # new shards: a new, empty store
        gw.reload(cfg)
        assert requests.get(gw.u("/bytes/40000?i=9")).headers["X-Cache"] == "MISS"


def _curl(args, timeout=20):
    out = subprocess.run(["curl", "-sS", "--max-time", str(scaled(10)), "-D", "-", "-o",
                          "/dev/null", "-w", "%{http_version}"] + args,
                         capture_output=True, text=True, timeout=scaled(timeout))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    fields = {}
    for l in lines[1:-1]:
        if ":" in l:
            k, _, v = l.partition(":")
            fields[k.strip().lower()] = v.strip()
    return lines[0].split()[1], fields, lines[-1]


def test_hits_and_304s_over_tls_with_http2_and_http1(gateway, tls_certs):
    name = "cache.test"
    with backend() as b:
        cert, key = tls_certs.server("cachetls", [name], kind="ec")
        cfg = cfg_for(free_port(), b.port)
        cfg["listeners"][0]["tls"] = {"certificates": [{"cert": cert, "key": key}]}
        cfg["listeners"][0]["http2"] = True
        gw = gateway(cfg)
        base = ["--resolve", "%s:%d:127.0.0.1" % (name, gw.port), "--cacert", tls_certs.ca]
        url = "https://%s:%d/tls-item" % (name, gw.port)
        etag = ["-H", 'X-Demo-Header: ETag: "t1"']
        st, f, ver = _curl(["--http2"] + base + etag + [url])
        assert (st, f["x-cache"], ver) == ("200", "MISS", "2")
        st, f, ver = _curl(["--http2"] + base + [url])
        assert (st, f["x-cache"], ver) == ("200", "HIT", "2")
        st, f, ver = _curl(["--http1.1"] + base + [url])
        assert (st, f["x-cache"], ver) == ("200", "HIT", "1.1")
        assert int(f["content-length"]) > 0 and "age" in f
        for v in ("--http2", "--http1.1"):
            st, f, _ = _curl([v] + base + ["-H", 'If-None-Match: "t1"', url])
            # a 304 from the cache: the entry's validator, no framing or
            # JSON type of its own (RFC 9110 15.4.5)
            assert (st, f["x-cache"], f["etag"]) == ("304", "HIT", '"t1"'), v
            assert "content-length" not in f and "application/json" not in f.get(
                "content-type", ""), (v, f)
        assert b.stats()["requests"] == 1


def test_hit_over_cleartext_http2(gateway):
    with backend() as b:
        cfg = cfg_for(free_port(), b.port)
        cfg["listeners"][0]["http2"] = True
        gw = gateway(cfg)
        url = gw.u("/h2c-item")
        assert _curl(["--http2-prior-knowledge", url])[1]["x-cache"] == "MISS"
        st, f, ver = _curl(["--http2-prior-knowledge", url])
        assert (st, f["x-cache"], ver) == ("200", "HIT", "2")


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers request N (0 on) as plan[N]: (delay s, status); 200s carry
    ETag "s1" and max-age=1, a 304 only the ETag. Records If-None-Match."""
    protocol_version = "HTTP/1.1"
    plan = []
    seen = []
    lock = threading.Lock()

    def do_GET(self):
        with _Scripted.lock:
            n = len(_Scripted.seen)
            _Scripted.seen.append(self.headers.get("If-None-Match"))
        delay, st = _Scripted.plan[min(n, len(_Scripted.plan) - 1)]
        time.sleep(delay)
        body = b"" if st == 304 else b"scripted %d" % n
        self.send_response(st)
        self.send_header("ETag", '"s1"')
        if st == 200:
            self.send_header("Cache-Control", "max-age=1")
            self.send_header("Content-Type", "text/plain")
        if st != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_a_waiter_whose_fetch_revalidates_gets_the_stored_answer_not_a_bare_304(gateway):
    _Scripted.plan = [(0, 200), (0.5, 500), (0, 304)]
    _Scripted.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Scripted)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        gw = gateway(cfg_for(free_port(), srv.server_port))
        assert requests.get(gw.u("/s")).text == "scripted 0"
        time.sleep(1.2)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            lead = pool.submit(requests.get, gw.u("/s"))
            wait_until(lambda: len(_Scripted.seen) == 2, scaled(5), what="the leader's fetch")
            waiter = pool.submit(requests.get, gw.u("/s"))  # parks on the leader's flight
            assert lead.result().status_code == 500
            r = waiter.result()
        # the leader's 500 ended the flight: the waiter fetched itself with
        # the entry's validator and got the stored answer back, fresh again
        assert _Scripted.seen == [None, '"s1"', '"s1"']
        assert r.status_code == 200 and r.text == "scripted 0"
        assert requests.get(gw.u("/s")).headers["X-Cache"] == "HIT"
    finally:
        srv.shutdown()
        srv.server_close()


def test_concurrent_http2_streams_on_a_cold_key_make_one_fetch(gateway):
    from test_http2 import H2Client
    with backend(threads=4) as b:
        cfg = cfg_for(free_port(), b.port)
        cfg["listeners"][0]["http2"] = True
        gw = gateway(cfg)
        b.reset()
        # 30 streams on one connection (one worker): 29 park on the flight
        # and are woken together when the one fetch stores its answer
        c = H2Client(gw.port)
        try:
            sids = [c.request("GET", "/h2cold", headers=[("x-demo-delay", "300")])
                    for _ in range(30)]
            res = c.wait(sids)
        finally:
            c.close()
        heads = [dict(r["headers"]) for r in res]
        assert all(h[b":status"] == b"200" for h in heads)
        assert sorted(h[b"x-cache"] for h in heads) == [b"HIT"] * 29 + [b"MISS"]
        assert len({bytes(r["data"]) for r in res}) == 1
        assert count(b) == 1


def test_a_miss_keeps_the_upstream_framing(gateway):
    """Storing only reads the body: a miss keeps the upstream's
    Content-Length (no switch to chunked), as the hit that follows has."""
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port))
        for want in ("MISS", "HIT"):
            r = requests.get(gw.u("/framing"), stream=True)
            assert r.headers["X-Cache"] == want
            assert "Transfer-Encoding" not in r.headers
            body = r.raw.read()
            assert int(r.headers["Content-Length"]) == len(body) > 0


def test_routes_that_rewrite_to_one_path_never_share_an_entry(gateway):
    with backend("one") as b1, backend("two") as b2:
        admin = free_port()
        port = free_port()
        routes = [{"name": "v1", "match": {"path_prefix": "/v1/"}, "strip_prefix": "/v1",
                   "upstream": "one", "filters": {"cache": {"ttl": "60s"}}},
                  {"name": "v2", "match": {"path_prefix": "/v2/"}, "strip_prefix": "/v2",
                   "upstream": "two", "filters": {"cache": {"ttl": "60s"}}}]
        gw = gateway(make_config(port, {"one": upstream(b1.port), "two": upstream(b2.port)},
                                 routes, admin_port=admin))
        r1 = requests.get(gw.u("/v1/items/2"))
        assert r1.headers["X-Cache"] == "MISS" and r1.json()["path"] == "/items/2"
        r2 = requests.get(gw.u("/v2/items/2"))
        assert r2.headers["X-Cache"] == "MISS"
        assert r2.headers["X-Backend"].startswith("two:")
        assert requests.get(gw.u("/v1/items/2")).headers["X-Backend"].startswith("one:")
        h2 = requests.get(gw.u("/v2/items/2"))
        assert h2.headers["X-Cache"] == "HIT" and h2.headers["X-Backend"].startswith("two:")
        assert count(b1) == 1 and count(b2) == 1
        # the purge prefix is on the path clients asked for
        a = "http://127.0.0.1:%d/cache" % admin
        assert requests.delete(a + "?prefix=/items/").json() == {"purged": 0}
        assert requests.delete(a + "?prefix=/v1/").json() == {"purged": 1}
        assert requests.get(gw.u("/v1/items/2")).headers["X-Cache"] == "MISS"
        assert requests.get(gw.u("/v2/items/2")).headers["X-Cache"] == "HIT"


def test_routes_told_apart_by_match_headers_never_share_an_entry(gateway):
    with backend("mobile") as b1, backend("web") as b2:
        routes = [{"name": "mobile", "match": {"path_prefix": "/", "headers": {"X-Client": "mobile"}},
                   "upstream": "mobile", "filters": {"cache": {"ttl": "60s"}}},
                  {"name": "web", "match": {"path_prefix": "/"},
                   "upstream": "web", "filters": {"cache": {"ttl": "60s"}}}]
        gw = gateway(make_config(free_port(), {"mobile": upstream(b1.port),
                                               "web": upstream(b2.port)}, routes))
        m = {"X-Client": "mobile"}
        assert requests.get(gw.u("/home"), headers=m).headers["X-Cache"] == "MISS"
        r = requests.get(gw.u("/home"))
        assert r.headers["X-Cache"] == "MISS" and r.headers["X-Backend"].startswith("web:")
        r = requests.get(gw.u("/home"), headers=m)
        assert r.headers["X-Cache"] == "HIT" and r.headers["X-Backend"].startswith("mobile:")
        assert count(b1) == 1 and count(b2) == 1


JWT_SECRET = "cache-secret-cache-secret-0123456789"


def _hs256(sub):
    import base64
    import hashlib
    import hmac

    def b64u(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    now = int(time.time())
    si = (b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." +
          b64u(json.dumps({"sub": sub, "iat": now, "exp": now + 300}).encode()))
    return si + "." + b64u(hmac.new(JWT_SECRET.encode(), si.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize("hide", ["jwt", "remove", "rename"])
def test_authorization_hidden_by_a_filter_is_still_never_shared(gateway, hide):
    """What counts is what the client sent: an Authorization that jwt's
    hide_credentials or a request_transform removed, or renamed to a field
    of the upstream's, still keeps the answer out of the shared cache."""
    with backend() as b:
        if hide == "jwt":
            f = {"jwt": {"secret": JWT_SECRET, "hide_credentials": True}}
        elif hide == "remove":
            f = {"jwt": {"secret": JWT_SECRET},
                 "request_transform": {"remove_headers": ["Authorization"]}}
        else:
            f = {"jwt": {"secret": JWT_SECRET},
                 "request_transform": {"rename_headers": {"Authorization": "X-Upstream-Auth"}}}
        gw = gateway(cfg_for(free_port(), b.port, route_filters=f))
        for who in ("alice", "bob", "alice"):
            tok = _hs256(who)
            r = requests.get(gw.u("/me"), headers={"Authorization": "Bearer " + tok})
            assert r.status_code == 200 and r.headers["X-Cache"] == "BYPASS", who
            seen = {k.lower(): v for k, v in r.json()["headers"]}
            assert "authorization" not in seen
            assert seen.get("x-upstream-auth") == ("Bearer " + tok if hide == "rename" else None)
        assert count(b) == 3


def test_authorization_hidden_by_jwt_is_cached_per_consumer(gateway):
    with backend() as b:
        f = {"jwt": {"secret": JWT_SECRET, "hide_credentials": True}}
        gw = gateway(cfg_for(free_port(), b.port, cache={"ttl": "60s", "per_consumer": True},
                             route_filters=f))

        def get(who):
            return requests.get(gw.u("/me"), headers={"Authorization": "Bearer " + _hs256(who)})
        ra = get("alice")
        assert ra.headers["X-Cache"] == "MISS"
        assert get("bob").headers["X-Cache"] == "MISS"  # never alice's entry
        ra2 = get("alice")
        assert ra2.headers["X-Cache"] == "HIT" and ra2.json() == ra.json()
        assert count(b) == 2


def test_refresh_on_a_transformed_route_stores_what_a_miss_stores(gateway):
    with backend(threads=4) as b:
        rt = {"response_transform": {"remove_headers": ["X-Backend"],
                                     "remove_body_fields": ["headers"]}}
        gw = gateway(cfg_for(free_port(), b.port, route_filters=rt,
                             cache={"ttl": "1s", "stale_while_revalidate": "30s"}))

        def bare(r):
            return "X-Backend" not in r.headers and "headers" not in r.json()
        r = requests.get(gw.u("/swr-t"))
        assert r.headers["X-Cache"] == "MISS" and bare(r)
        assert requests.get(gw.u("/swr-t")).headers["X-Cache"] == "HIT"
        time.sleep(1.2)
        slow = {"X-Demo-Delay": "800"}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            refresh = pool.submit(requests.get, gw.u("/swr-t"), headers=slow, timeout=scaled(10))
            time.sleep(0.3)
            other = requests.get(gw.u("/swr-t"))  # while the refresh runs
            r = refresh.result()
        assert other.headers["X-Cache"] == "STALE" and bare(other)
        assert r.status_code == 200 and bare(r)
        wait_until(lambda: requests.get(gw.u("/swr-t")).headers["X-Cache"] == "HIT", scaled(5),
                   what="the refreshed entry")
        hit = requests.get(gw.u("/swr-t"))
        assert hit.headers["X-Cache"] == "HIT" and bare(hit)
        assert count(b) == 2


class _Empty(http.server.BaseHTTPRequestHandler):
    """Answers /s/<status> with an empty body and no Content-Type."""
    protocol_version = "HTTP/1.1"
    hits = 0

    def do_GET(self):
        _Empty.hits += 1
        status = int(self.path.split("/")[2])
        self.send_response(status)
        if status == 301:
            self.send_header("Location", "/moved")
        if status != 204:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("status,stored", [(200, True), (203, True), (204, True), (301, True),
                                           (404, True), (410, True), (302, False),
                                           (500, False)])
def test_empty_answers_of_cacheable_statuses_are_stored_and_served_empty(gateway, status,
                                                                           stored):
    _Empty.hits = 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Empty)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        gw = gateway(cfg_for(free_port(), srv.server_port))
        path = gw.u("/s/%d" % status)
        r1 = requests.get(path, allow_redirects=False)
        assert r1.status_code == status and r1.content == b""
        assert r1.headers["X-Cache"] == "MISS"
        r2 = requests.get(path, allow_redirects=False)
        assert r2.status_code == status and r2.content == b""  # not a JSON error body
        assert r2.headers["X-Cache"] == ("HIT" if stored else "MISS")
        assert _Empty.hits == (1 if stored else 2)
        if stored:
            assert "Content-Type" not in r2.headers  # none was stored
            if status == 301:
                assert r2.headers["Location"] == "/moved"
            if status != 204:
                assert r2.headers["Content-Length"] == "0"
            h = requests.head(path, allow_redirects=False)
            assert h.status_code == status and h.headers["X-Cache"] == "HIT"
    finally:
        srv.shutdown()
        srv.server_close()


def test_override_ttl_stores_no_cache_and_max_age_0_but_never_no_store(gateway):
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port, cache={"ttl": "60s", "override_ttl": True}))
        for path, hv, stored in (("/nc", "Cache-Control: no-cache", True),
                                 ("/m0", "Cache-Control: max-age=0", True),
                                 ("/m1", "Cache-Control: max-age=1", True),
                                 ("/ns", "Cache-Control: no-store", False),
                                 ("/pv", "Cache-Control: private", False),
                                 ("/sc", "Set-Cookie: sid=alice", False)):
            assert requests.get(gw.u(path), headers=demo_header(hv)).headers["X-Cache"] == "MISS"
            r = requests.get(gw.u(path), headers=demo_header(hv))
            assert r.headers["X-Cache"] == ("HIT" if stored else "MISS"), path
        time.sleep(1.3)  # past max-age=1: ttl (60s) is what counts
        assert requests.get(gw.u("/m1")).headers["X-Cache"] == "HIT"
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port, cache={"ttl": "60s"}))
        h = demo_header("Cache-Control: no-cache")
        requests.get(gw.u("/nc"), headers=h)
        assert requests.get(gw.u("/nc"), headers=h).headers["X-Cache"] == "MISS"  # without it


def test_expires_alone_gives_the_freshness(gateway):
    import email.utils
    with backend() as b:
        gw = gateway(cfg_for(free_port(), b.port, cache={"ttl": "0s"}))  # no ttl to fall back on
        later = demo_header("Expires: " + email.utils.formatdate(time.time() + 60, usegmt=True))
        past = demo_header("Expires: " + email.utils.formatdate(time.time() - 60, usegmt=True))
        assert requests.get(gw.u("/later"), headers=later).headers["X-Cache"] == "MISS"
        r = requests.get(gw.u("/later"))
        assert r.headers["X-Cache"] == "HIT" and "Expires" in r.headers
        requests.get(gw.u("/past"), headers=past)
        assert requests.get(gw.u("/past"), headers=past).headers["X-Cache"] == "MISS"
        requests.get(gw.u("/bad"), headers=demo_header("Expires: 0"))  # invalid: expired
        assert requests.get(gw.u("/bad")).headers["X-Cache"] == "MISS"


def test_stale_if_error_while_the_circuit_breaker_is_open(gateway):
    with backend() as b:
        breaker = {"error_rate": 0.5, "min_requests": 3, "window": "10s", "open_for": "30s"}
        routes = [{"name": "cached", "match": {"path_prefix": "/"}, "upstream": "app",
                   "filters": {"cache": {"ttl": "1s", "stale_if_error": "60s"}}}]
        gw = gateway(make_config(free_port(), {"app": upstream(b.port, circuit_breaker=breaker)},
                                 routes))
        first = requests.get(gw.u("/sie-cb"))
        assert first.headers["X-Cache"] == "MISS"
        time.sleep(1.2)  # stale now
        fail = {"X-Demo-Status": "503"}
        for i in range(20):
            r = requests.get(gw.u("/fail?n=%d" % i), headers=fail)
            if r.headers.get("X-Backend") is None:
                assert r.status_code == 503 and r.json()["error"] == "circuit breaker open"
                break
        else:
            raise AssertionError("the breaker never opened")
        served = count(b)
        r = requests.get(gw.u("/sie-cb"))
        assert r.status_code == 200 and r.headers["X-Cache"] == "STALE"
        assert r.json() == first.json()
        assert count(b) == served  # the upstream was not contacted
        assert requests.get(gw.u("/cold-cb")).status_code == 503  # nothing stored to fall back on
