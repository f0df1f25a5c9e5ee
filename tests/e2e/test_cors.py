"""The cors filter, driven with python requests (the real-browser check is
test_cors_browser.py): preflights answered at the gateway (204 for an
allowed origin, 403 without CORS fields for a refused one) and never seen
by the upstream unless preflight_continue; actual responses decorated with
the echoed origin, credentials and exposed headers, Vary: Origin appended
to the upstream's Vary, the upstream's own Access-Control-* answer
replaced; a refused origin proxied without any CORS field; exact, wildcard
subdomain, regex and "*" origins; a route whose methods lack OPTIONS still
answering a preflight; responses the gateway makes after cors (a 401)
decorated too; config errors with file:line:col."""

import json
import subprocess

import pytest
import requests

from conftest import (Gateway, backend, free_port, make_config, scaled, upstream,
                      validate_errors)

APP = "https://app.example.com"


def route(name, cors, match=None, extra_filters=None):
    m = {"path_prefix": "/" + name}
    m.update(match or {})
    filters = {"cors": cors}
    filters.update(extra_filters or {})
    return {"name": name, "match": m, "upstream": "echo", "filters": filters}


ROUTES = [
    route("exact", {"origins": [APP, "http://localhost:3000"], "credentials": True,
                    "allow_headers": ["Content-Type", "X-Token"],
                    "expose_headers": ["X-Request-ID", "X-Total"], "max_age": "10m"}),
    route("wild", {"origins": ["https://*.example.com"], "methods": ["GET", "PUT"]}),
    route("re", {"origins": ["~^https://[a-z]+\\.example\\.org(:[0-9]+)?$"]}),
    route("star", {"origins": "*", "allow_headers": "*", "expose_headers": "*"}),
    route("cont", {"origins": [APP], "preflight_continue": True}),
    route("getonly", {"origins": [APP]}, match={"methods": ["GET"]}),
    route("pna", {"origins": [APP], "private_network": True}),
    route("auth", {"origins": [APP], "credentials": True},
          extra_filters={"key_auth": {"header": "X-API-Key"}}),
    {"name": "plain", "match": {"path_prefix": "/plain", "methods": ["GET"]}, "upstream": "echo"},
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with backend("cors") as b:
        cfg = make_config(free_port(), {"echo": upstream(b.port)}, ROUTES)
        cfg["consumers"] = [{"name": "web", "api_keys": ["k-1"]}]
        cfg["listeners"][0]["http2"] = True  # h2c with prior knowledge beside HTTP/1.1
        cfg["access_log"] = {"path": "stdout", "format": "json"}
        g = Gateway(cfg, tmp_path_factory.mktemp("cors"))
        try:
            yield g, b
        finally:
            g.stop()


def preflight(g, path, origin, method="PUT", headers=None, extra=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    h.update(extra or {})
    return requests.options(g.u(path), headers=h, timeout=scaled(5))


def cors_fields(r):
    return {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("access-control-")}


def vary(r):
    return [v.strip().lower() for v in r.headers.get("Vary", "").split(",") if v.strip()]


def test_preflight_is_answered_by_the_gateway(gw):
    g, b = gw
    b.reset()
    r = preflight(g, "/exact/items", APP, "PUT", "content-type, x-token")
    assert r.status_code == 204, r.text
    assert r.content == b"" and "Content-Length" not in r.headers
    f = cors_fields(r)
    assert f["access-control-allow-origin"] == APP
    assert f["access-control-allow-credentials"] == "true"
    assert f["access-control-allow-methods"] == "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS"
    assert f["access-control-allow-headers"] == "Content-Type, X-Token"
    assert f["access-control-max-age"] == "600"
    assert "access-control-expose-headers" not in f  # meaningless on a preflight
    assert vary(r) == ["origin", "access-control-request-method",
                       "access-control-request-headers"]
    assert r.headers["X-Request-ID"]
    assert b.stats()["requests"] == 0, "the upstream saw the preflight"


def test_preflight_from_a_refused_origin_gets_no_cors_fields(gw):
    g, b = gw
    b.reset()
    r = preflight(g, "/exact/items", "https://evil.example.net")
    assert r.status_code == 403
    assert r.json()["error"] == "CORS origin not allowed"
    assert cors_fields(r) == {}
    assert "origin" in vary(r)
    assert b.stats()["requests"] == 0


def test_actual_request_from_an_allowed_origin_is_decorated(gw):
    g, b = gw
    b.reset()
    r = requests.get(g.u("/exact/items"), headers={"Origin": APP}, timeout=scaled(5))
    assert r.status_code == 200
    f = cors_fields(r)
    assert f == {"access-control-allow-origin": APP,
                 "access-control-allow-credentials": "true",
                 "access-control-expose-headers": "X-Request-ID, X-Total"}
    assert vary(r) == ["origin"]
    assert b.stats()["requests"] == 1


def test_refused_origin_is_still_proxied_without_cors_fields(gw):
    # CORS is not access control: the browser withholds the answer, the
    # request itself goes through.
    g, b = gw
    b.reset()
    r = requests.post(g.u("/exact/items"), headers={"Origin": "https://evil.example.net"},
                      data=b"x", timeout=scaled(5))
    assert r.status_code == 200 and r.json()["method"] == "POST"
    assert cors_fields(r) == {}
    assert vary(r) == ["origin"]
    assert b.stats()["requests"] == 1


def test_request_without_origin_still_varies_on_origin(gw):
    # A shared cache must not serve this answer to a CORS request.
    g, _ = gw
    r = requests.get(g.u("/exact/x"), timeout=scaled(5))
    assert r.status_code == 200 and cors_fields(r) == {}
    assert vary(r) == ["origin"]


def test_origin_is_appended_to_the_upstreams_vary(gw):
    g, _ = gw
    r = requests.get(g.u("/exact/x"), timeout=scaled(5),
                     headers={"Origin": APP, "X-Demo-Header": "Vary: Accept-Encoding"})
    assert r.headers["Vary"] == "Accept-Encoding, Origin"
    r = requests.get(g.u("/exact/x"), timeout=scaled(5),
                     headers={"Origin": APP, "X-Demo-Header": "Vary: origin, Accept"})
    assert r.headers["Vary"] == "origin, Accept"  # already there: not repeated


def test_upstream_cors_fields_are_replaced(gw):
    g, _ = gw
    up = ["Access-Control-Allow-Origin: *", "Access-Control-Expose-Headers: X-Secret",
          "Access-Control-Allow-Credentials: false"]
    for line in up:
        r = requests.get(g.u("/exact/x"), timeout=scaled(5),
                         headers={"Origin": "https://evil.example.net", "X-Demo-Header": line})
        assert cors_fields(r) == {}, line
        r = requests.get(g.u("/exact/x"), timeout=scaled(5),
                         headers={"Origin": APP, "X-Demo-Header": line})
        f = cors_fields(r)
        assert f["access-control-allow-origin"] == APP
        assert f["access-control-allow-credentials"] == "true"
        assert f["access-control-expose-headers"] == "X-Request-ID, X-Total"


@pytest.mark.parametrize("origin,ok", [
    ("https://a.example.com", True),
    ("https://A.Example.COM", True),
    ("https://a.b.example.com", True),
    ("https://example.com", False),          # the apex is not a subdomain
    ("https://evilexample.com", False),
    ("https://a.example.com.evil.net", False),
    ("http://a.example.com", False),         # another scheme
    ("https://a.example.com:8443", False),   # another port
    ("https://.example.com", False),
])
def test_wildcard_subdomain_origins(gw, origin, ok):
    g, _ = gw
    r = preflight(g, "/wild", origin)
    assert r.status_code == (204 if ok else 403)
    if ok:
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert r.headers["Access-Control-Allow-Methods"] == "GET, PUT"
        assert "Access-Control-Allow-Credentials" not in r.headers
    r = requests.get(g.u("/wild"), headers={"Origin": origin}, timeout=scaled(5))
    assert r.headers.get("Access-Control-Allow-Origin") == (origin if ok else None)


@pytest.mark.parametrize("origin,ok", [
    ("https://shop.example.org", True),
    ("https://shop.example.org:8443", True),
    ("https://shop.example.org.evil.net", False),   # anchored as written
    ("https://sh0p.example.org", False),
    ("http://shop.example.org", False),
])
def test_regex_origins(gw, origin, ok):
    g, _ = gw
    r = requests.get(g.u("/re"), headers={"Origin": origin}, timeout=scaled(5))
    assert r.status_code == 200
    assert r.headers.get("Access-Control-Allow-Origin") == (origin if ok else None)


def test_star_answers_star_and_reflects_request_headers(gw):
    g, _ = gw
    r = requests.get(g.u("/star"), headers={"Origin": "https://any.where"}, timeout=scaled(5))
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Expose-Headers"] == "*"
    assert "origin" not in vary(r)  # the same answer for every origin
    r = preflight(g, "/star", "https://any.where", "DELETE", "x-one, authorization")
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Headers"] == "x-one, authorization"
    r = preflight(g, "/star", "https://any.where", "DELETE")
    assert "Access-Control-Allow-Headers" not in r.headers


def test_preflight_continue_reaches_the_upstream(gw):
    g, b = gw
    b.reset()
    r = preflight(g, "/cont", APP, "PUT", "x-token",
                  extra={"X-Demo-Header": "Access-Control-Allow-Methods: PUT"})
    assert r.status_code == 200 and r.json()["method"] == "OPTIONS"
    assert b.stats()["requests"] == 1
    # the upstream answers the preflight; the gateway still says who may read it
    assert r.headers["Access-Control-Allow-Methods"] == "PUT"
    assert r.headers["Access-Control-Allow-Origin"] == APP


def test_route_without_options_still_answers_a_preflight(gw):
    g, b = gw
    b.reset()
    for method in ("PUT", "GET", "PROPFIND"):
        r = preflight(g, "/getonly", APP, method)
        assert r.status_code == 204, (method, r.text)
        assert r.headers["Access-Control-Allow-Origin"] == APP
    assert b.stats()["requests"] == 0
    # a plain OPTIONS is no preflight: the route's methods still apply
    r = requests.options(g.u("/getonly"), headers={"Origin": APP}, timeout=scaled(5))
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    # nor does a route without cors answer one
    r = preflight(g, "/plain", APP)
    assert r.status_code == 405 and cors_fields(r) == {}


def test_private_network_preflight(gw):
    g, _ = gw
    r = preflight(g, "/pna", APP, extra={"Access-Control-Request-Private-Network": "true"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Private-Network"] == "true"
    assert "access-control-request-private-network" in vary(r)
    r = preflight(g, "/exact", APP, extra={"Access-Control-Request-Private-Network": "true"})
    assert "Access-Control-Allow-Private-Network" not in r.headers


def test_preflight_needs_no_credentials_and_errors_are_readable(gw):
    # cors runs before auth: the preflight (which carries no key) is
    # answered; the 401 an unauthenticated request gets is decorated, so
    # the page can read why.
    g, b = gw
    b.reset()
    r = preflight(g, "/auth", APP, "POST", "x-api-key")
    assert r.status_code == 204
    r = requests.get(g.u("/auth"), headers={"Origin": APP}, timeout=scaled(5))
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert "origin" in vary(r)
    r = requests.get(g.u("/auth"), headers={"Origin": APP, "X-API-Key": "k-1"},
                     timeout=scaled(5))
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == APP
    assert b.stats()["requests"] == 1


def test_keep_alive_after_a_preflight(gw):
    # The bodiless 204 leaves the connection usable for the next request.
    g, _ = gw
    with requests.Session() as s:
        for _ in range(3):
            r = s.options(g.u("/exact"), timeout=scaled(5),
                          headers={"Origin": APP, "Access-Control-Request-Method": "PUT"})
            assert r.status_code == 204
            r = s.get(g.u("/exact"), headers={"Origin": APP}, timeout=scaled(5))
            assert r.status_code == 200


@pytest.mark.parametrize("cors,want", [
    ({"origins": "*", "credentials": True}, "does not go with `credentials: true`"),
    ({"origins": [APP], "allow_headers": "*", "credentials": True},
     "`*` in `allow_headers` does not go with"),
    ({"origins": [APP + "/"]}, "did you mean `https://app.example.com`"),
    ({"origins": [APP + "/api"]}, "no path"),
    ({"origins": ["app.example.com"]}, "scheme://host[:port]"),
    ({"origins": ["https://app.*.com"]}, "a wildcard origin is"),
    ({"origins": ["~^https://(unclosed$"]}, "invalid regex"),
    ({"origins": [APP, "*"]}, "stands alone"),
    ({"methods": ["GET", "P UT"], "origins": [APP]}, "`P UT` in `methods`"),
    ({"origins": [APP], "max_age": "500ms"}, "whole seconds"),
    ({"credentials": True}, "give `origins`"),
    ({"origins": [APP], "max_ages": "1m"}, "max_age"),
])
def test_config_errors(tmp_path, cors, want):
    cfg = make_config(free_port(), {"echo": upstream(free_port())}, [route("r", cors)])
    rc, out = validate_errors(tmp_path, cfg)
    assert rc == 1 and "bad.yaml:" in out and want in out, out


def test_preflight_over_http2(gw):
    # A bodiless 204 on an h2 stream: no content-length, or the client's
    # nghttp2 resets the stream.
    g, b = gw
    b.reset()
    out = subprocess.run(["curl", "-s", "-i", "--http2-prior-knowledge", "-X", "OPTIONS",
                          g.u("/exact/h2"), "-H", "Origin: " + APP,
                          "-H", "Access-Control-Request-Method: PUT"],
                         capture_output=True, text=True, timeout=scaled(10))
    assert out.returncode == 0, out.stderr
    head = out.stdout.lower()
    assert head.startswith("http/2 204")
    assert "access-control-allow-origin: " + APP in head
    assert "\ncontent-length:" not in head and "\ncontent-type:" not in head
    out = subprocess.run(["curl", "-s", "-i", "--http2-prior-knowledge", g.u("/exact/h2"),
                          "-H", "Origin: " + APP], capture_output=True, text=True,
                         timeout=scaled(10))
    assert out.returncode == 0 and "access-control-allow-origin: " + APP in out.stdout.lower()
    assert b.stats()["requests"] == 1


def test_access_log_notes(gw):
    g, _ = gw
    preflight(g, "/exact/logged-preflight", APP)
    requests.get(g.u("/exact/logged-refused"), headers={"Origin": "https://evil.example.net"},
                 timeout=scaled(5))

    def lines():
        out = {}
        for line in g.stdout_text().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                out[rec["path"]] = rec
        return out if {"/exact/logged-preflight", "/exact/logged-refused"} <= out.keys() else None

    from conftest import wait_until
    recs = wait_until(lines, scaled(5), what="access log lines")
    pre = recs["/exact/logged-preflight"]
    assert pre["status"] == 204 and pre["cors"] == "preflight" and "error" not in pre
    assert recs["/exact/logged-refused"]["cors"] == "refused"
