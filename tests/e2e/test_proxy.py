"""Proxying: headers added and removed on the way up (an empty
X-Forwarded-For adds no comma), the Host an upstream sees (HTTP/1.0 without
one, absolute-form targets), X-Request-ID, weighted round-robin. (Header
transforms: test_request_transform.py and test_response_transform.py.)"""

import collections
import concurrent.futures

import pytest
import requests

from conftest import (Gateway, backend, backend_of, echo_headers, free_port, make_config,
                      one_route, parse_response, raw_ex, raw_responses, scaled, upstream)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("px") as b:
        cfg = make_config(free_port(), {"echo": upstream(b.port)},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "echo"}])
        gw = Gateway(cfg, tmp_path_factory.mktemp("proxy"))
        try:
            yield gw, b
        finally:
            gw.stop()


def get_echo(gw, path="/echo", headers=None, **kw):
    r = requests.get(gw.u(path), headers=headers or {}, timeout=scaled(5), **kw)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r, r.json()


def test_forwarded_headers_added(env):
    gw, _ = env
    r, doc = get_echo(gw, headers={"Host": "shop.example.test"})
    assert echo_headers(doc, "X-Forwarded-For") == ["127.0.0.1"]
    assert echo_headers(doc, "X-Forwarded-Proto") == ["http"]
    assert echo_headers(doc, "X-Forwarded-Host") == ["shop.example.test"]


def test_forwarded_for_appended(env):
    gw, _ = env
    r, doc = get_echo(gw, headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    xff = echo_headers(doc, "X-Forwarded-For")
    # one header (or a list) whose last element is the real peer
    joined = ", ".join(xff)
    parts = [p.strip() for p in joined.split(",")]
    assert parts == ["203.0.113.7", "10.0.0.1", "127.0.0.1"], xff


def test_forwarded_proto_not_trusted_from_client(env):
    """The client cannot make the upstream believe the request came over https."""
    gw, _ = env
    r, doc = get_echo(gw, headers={"X-Forwarded-Proto": "https"})
    assert echo_headers(doc, "X-Forwarded-Proto") == ["http"]


def test_request_hop_by_hop_removed(env):
    gw, b = env
    req = (b"GET /echo HTTP/1.1\r\nHost: a.test\r\n"
           b"Connection: close, X-Secret-Hop\r\n"
           b"Keep-Alive: timeout=5\r\n"
           b"X-Secret-Hop: must-not-pass\r\n"
           b"TE: trailers\r\n"
           b"Trailer: X-T\r\n"
           b"Proxy-Connection: keep-alive\r\n"
           b"X-Keep-Me: yes\r\n\r\n")
    data, closed = raw_ex(gw.port, req, timeout=scaled(5))
    r = parse_response(data)
    assert r.status == 200, r
    doc = r.json()
    names = {k.lower() for k, _ in doc["headers"]}
    for h in ("keep-alive", "x-secret-hop", "te", "trailer", "proxy-connection"):
        assert h not in names, (h, doc["headers"])
    for v in echo_headers(doc, "Connection"):
        assert "x-secret-hop" not in v.lower(), v
    assert echo_headers(doc, "X-Keep-Me") == ["yes"]
    # Connection: close from the client is honoured on the client side
    assert closed, "client asked Connection: close but the gateway kept the connection open"


def test_request_upgrade_not_forwarded(env):
    """What `curl --http2 http://...` sends: the server may ignore the
    upgrade offer (RFC 9110 §7.8) and must answer over HTTP/1.1."""
    gw, _ = env
    req = (b"GET /echo HTTP/1.1\r\nHost: a.test\r\n"
           b"Connection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
    data, _ = raw_ex(gw.port, req, timeout=scaled(5))
    r = parse_response(data)
    assert r.status == 200, r  # Upgrade is hop-by-hop: dropped, request proxied
    doc = r.json()
    assert echo_headers(doc, "Upgrade") == [], doc["headers"]
    assert echo_headers(doc, "HTTP2-Settings") == [], doc["headers"]


def test_transfer_encoding_reframed(env):
    """A chunked request body arrives intact and the upstream never sees
    the client's Transfer-Encoding value with extra codings."""
    gw, _ = env
    body = b"hello world"
    req = (b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    data, _ = raw_ex(gw.port, req, timeout=scaled(5))
    r = parse_response(data)
    assert r.status == 200, r
    doc = r.json()
    assert doc["body_len"] == len(body)
    assert doc["body"] == "hello world"


def test_response_hop_by_hop_removed(env):
    gw, _ = env
    r = requests.get(gw.u("/echo"), headers={"X-Demo-Header": "Keep-Alive: timeout=99"},
                     timeout=scaled(5))
    assert r.status_code == 200
    assert r.headers.get("Keep-Alive") != "timeout=99"
    # sanity: the control header really makes the backend emit headers
    r2 = requests.get(gw.u("/echo"), headers={"X-Demo-Header": "X-Plain-Resp: here"},
                      timeout=scaled(5))
    assert r2.headers.get("X-Plain-Resp") == "here"


def test_response_connection_listed_header_removed(env):
    gw, _ = env
    r = requests.get(gw.u("/echo"), headers={"X-Demo-Header": "Proxy-Connection: keep-alive"},
                     timeout=scaled(5))
    assert r.status_code == 200
    assert "Proxy-Connection" not in r.headers


def test_request_id_generated(env):
    gw, _ = env
    r1, d1 = get_echo(gw)
    r2, d2 = get_echo(gw)
    id1, id2 = r1.headers.get("X-Request-ID"), r2.headers.get("X-Request-ID")
    assert id1 and id2 and id1 != id2
    assert 1 <= len(id1) <= 128 and id1.isprintable()
    assert echo_headers(d1, "X-Request-ID") == [id1]
    assert echo_headers(d2, "X-Request-ID") == [id2]


def test_request_id_kept(env):
    gw, _ = env
    rid = "client-id-0123456789abcdef"
    r, doc = get_echo(gw, headers={"X-Request-ID": rid})
    assert r.headers.get("X-Request-ID") == rid
    assert echo_headers(doc, "X-Request-ID") == [rid]


def test_request_id_too_long_replaced(env):
    gw, _ = env
    rid = "x" * 200
    r, doc = get_echo(gw, headers={"X-Request-ID": rid})
    got = r.headers.get("X-Request-ID")
    assert got and got != rid and len(got) <= 128
    assert echo_headers(doc, "X-Request-ID") == [got]


def test_request_id_unique_under_concurrency(env):
    gw, _ = env

    def one(_):
        return requests.get(gw.u("/tiny"), timeout=scaled(5)).headers.get("X-Request-ID")

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(one, range(200)))
    assert all(ids)
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------- round robin

@pytest.mark.heavy
def test_weighted_round_robin_3_to_1(tmp_path):
    with backend("rr", nports=2) as b:
        heavy, light = b.ports
        cfg = make_config(free_port(), {"w": upstream(heavy, light, weights=[3, 1])},
                          [{"name": "rr", "match": {"path_prefix": "/"}, "upstream": "w"}])
        gw = Gateway(cfg, tmp_path)
        try:
            def run(_):
                s = requests.Session()
                c = collections.Counter()
                for _ in range(100):
                    r = s.get(gw.u("/tiny"), timeout=scaled(5))
                    assert r.status_code == 200
                    c[backend_of(r)[1]] += 1
                return c

            total = collections.Counter()
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                for c in ex.map(run, range(4)):
                    total.update(c)
            assert sum(total.values()) == 400
            share = total[heavy] / 400.0
            assert 0.70 <= share <= 0.80, dict(total)
            assert total[light] > 0
        finally:
            gw.stop()


@pytest.mark.heavy
def test_round_robin_equal_weights_spread(tmp_path):
    with backend("rr", nports=3) as b:
        cfg = make_config(free_port(), {"w": upstream(*b.ports)},
                          [{"name": "rr", "match": {"path_prefix": "/"}, "upstream": "w"}])
        gw = Gateway(cfg, tmp_path)
        try:
            s = requests.Session()
            c = collections.Counter(backend_of(s.get(gw.u("/tiny"), timeout=scaled(5)))[1]
                                    for _ in range(300))
            for p in b.ports:
                assert 85 <= c[p] <= 115, dict(c)
        finally:
            gw.stop()


# ---------------------------------------------------------------- Host and X-Forwarded-For

def test_http10_request_without_host_goes_upstream_with_one(tmp_path):
    """HTTP/1.0 makes Host optional, but the request goes upstream as
    HTTP/1.1, where it is required: it went without one and upstreams
    rejected it (400)."""
    with backend("h10") as b:
        gw = Gateway(one_route(b.port), tmp_path)
        try:
            for target in (b"/echo", b"http://a.example/echo"):
                data, _ = raw_ex(gw.port, b"GET " + target + b" HTTP/1.0\r\n\r\n",
                                 timeout=scaled(5))
                r = parse_response(data)
                assert r.status == 200, (target, r)
                hosts = echo_headers(r.json(), "host")
                assert len(hosts) == 1 and hosts[0], hosts
            data, _ = raw_ex(gw.port, b"GET /echo HTTP/1.0\r\n\r\n", timeout=scaled(5))
            assert echo_headers(parse_response(data).json(), "host") == ["127.0.0.1:%d" % b.port]
        finally:
            gw.stop()


def test_absolute_form_authority_replaces_host(tmp_path):
    """With an absolute-form target the gateway routed by the target's
    authority but forwarded the client's (different) Host field, so the
    upstream saw a host the route never matched. RFC 9112 3.2.2: the
    authority replaces the Host field."""
    with backend("abs") as b:
        routes = [{"name": "a", "match": {"hosts": ["a.example"], "path_prefix": "/"},
                   "upstream": "u"}]
        gw = Gateway(one_route(b.port, routes), tmp_path)
        try:
            data, _ = raw_ex(gw.port, b"GET http://a.example/echo HTTP/1.1\r\n"
                                      b"Host: b.example\r\n\r\n", timeout=scaled(5),
                             until_complete=True)
            r = parse_response(data)
            assert r.status == 200, r
            assert echo_headers(r.json(), "host") == ["a.example"]
            # origin-form is untouched
            r = requests.get(gw.u("/echo"), headers={"Host": "a.example:8080"}, timeout=scaled(5))
            assert echo_headers(r.json(), "host") == ["a.example:8080"]
        finally:
            gw.stop()


def test_an_empty_x_forwarded_for_adds_no_comma(tmp_path):
    with backend("xff") as b:
        gw = Gateway(one_route(b.port), tmp_path)
        try:
            r = raw_responses(gw.port, b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:\r\n"
                              b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: \r\n\r\n")
            assert r[0].status == 200, r
            assert echo_headers(r[0].json(), "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
        finally:
            gw.stop()
