"""key_auth and top-level consumers end to end: a real gateway in front of a
demo backend (which echoes what it received), consumers with raw and
`sha256:` keys from YAML, keys in a header and in a query parameter,
hide_credentials, optional, refusals (401 + WWW-Authenticate + JSON), the
removal of client-sent X-Consumer-* fields, huge and malformed keys, key
rotation by reload, the access log's consumer, and load-time errors.
acl and either-of auth are in test_acl.py."""

import hashlib
import json
import os
import re
import socket
import subprocess

import pytest
import requests

from conftest import (ROOT, Gateway, PORTICO, assert_error_response, backend, echo_headers,
                      free_port, make_config, parse_response, scaled, upstream, validate_errors)


def sha(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


CONSUMERS = [
    {"name": "alice", "groups": ["mobile"], "api_keys": ["k-alice", sha("k-alice-2")]},
    {"name": "bob", "groups": ["partners", "beta"], "api_keys": ["k-bob"]},
    {"name": "carol", "api_keys": ["k+c/=d%e"]},  # needs encoding in a query
]


def route(name, prefix, filters):
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": "app",
            "filters": filters}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("app") as b:
        cfg = make_config(
            free_port(), {"app": upstream(b.port)},
            [route("header", "/ka/header", {"key_auth": {}}),
             route("query", "/ka/query", {"key_auth": {"query": "api_key"}}),
             route("hide", "/ka/hide", {"key_auth": {"query": "api_key",
                                                     "hide_credentials": True}}),
             route("optional", "/ka/optional", {"key_auth": {"optional": True}}),
             route("custom", "/ka/custom", {"key_auth": {"header": "X-Key"}}),
             route("open", "/open", {})])
        cfg["consumers"] = CONSUMERS
        gw = Gateway(cfg, tmp_path_factory.mktemp("key_auth"))
        try:
            yield gw, b
        finally:
            gw.stop()


def get(gw, path, **kw):
    kw.setdefault("timeout", scaled(10))
    return requests.get(gw.u(path), **kw)


def raw_get(gw, target, fields=b""):
    """A GET sent byte for byte (no client library re-encoding it)."""
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    try:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + fields +
                  b"Connection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return parse_response(data)


def upstream_count(b):
    return b.stats()["requests"]


def assert_refused(r, error=None):
    """A key_auth 401: the ApiKey challenge (with the RFC 6750 error code
    when a credential came) and the gateway's JSON body."""
    assert r.status_code == 401, r.text[:300]
    want = 'ApiKey realm="portico"' + (', error="%s"' % error if error else "")
    assert r.headers.get("WWW-Authenticate") == want, r.headers
    doc = assert_error_response(r, 401)
    if error:
        assert doc["error"] == error
    return doc


# ---------------------------------------------------------------- finding the consumer


def test_key_in_header_identifies_the_consumer(env):
    gw, b = env
    r = get(gw, "/ka/header/x", headers={"X-API-Key": "k-bob"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-Consumer-Name") == ["bob"]
    assert echo_headers(doc, "X-Consumer-Groups") == ["partners,beta"]
    assert echo_headers(doc, "X-API-Key") == ["k-bob"]  # not hidden by default


def test_sha256_key_from_config_matches_the_raw_key(env):
    gw, b = env
    r = get(gw, "/ka/header", headers={"X-API-Key": "k-alice-2"})
    assert r.status_code == 200, r.text[:300]
    assert echo_headers(r.json(), "X-Consumer-Name") == ["alice"]
    # the digest text itself is not a key
    assert_refused(get(gw, "/ka/header", headers={"X-API-Key": sha("k-alice-2")}),
                   "invalid_token")


def test_consumer_without_groups_gets_no_groups_field(env):
    gw, b = env
    r = get(gw, "/ka/custom", headers={"X-Key": "k+c/=d%e"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-Consumer-Name") == ["carol"]
    assert echo_headers(doc, "X-Consumer-Groups") == []


def test_custom_header_name_ignores_the_default_one(env):
    gw, b = env
    assert_refused(get(gw, "/ka/custom", headers={"X-API-Key": "k-bob"}))


def test_key_in_query_parameter_decoded(env):
    gw, b = env
    r = get(gw, "/ka/query/q", params=[("a", "1"), ("api_key", "k+c/=d%e"), ("b", "2")])
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-Consumer-Name") == ["carol"]
    # without hide_credentials the query goes upstream as sent
    assert doc["query"] == "a=1&api_key=k%2Bc%2F%3Dd%25e&b=2"


def test_header_is_looked_at_before_the_query(env):
    gw, b = env
    r = get(gw, "/ka/query?api_key=k-nobody", headers={"X-API-Key": "k-alice"})
    assert r.status_code == 200, r.text[:300]
    assert echo_headers(r.json(), "X-Consumer-Name") == ["alice"]
    # a query key on a header-only route is no key at all
    assert_refused(get(gw, "/ka/header?api_key=k-alice"))


def test_hide_credentials_removes_field_and_parameter(env):
    gw, b = env
    r = get(gw, "/ka/hide/h", headers={"X-API-Key": "k-bob"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-API-Key") == []
    assert echo_headers(doc, "X-Consumer-Name") == ["bob"]

    r = requests.get(gw.u("/ka/hide/h?x=1&api_key=k%2Bc%2F%3Dd%25e&y=a%20b&flag&z="),
                     timeout=scaled(10))
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-Consumer-Name") == ["carol"]
    assert doc["query"] == "x=1&y=a%20b&flag&z="  # the rest exactly as sent
    assert doc["path"] == "/ka/hide/h"

    # the key as the only parameter: no query left at all
    r = get(gw, "/ka/hide/h?api_key=k-bob")
    assert r.status_code == 200
    assert r.json()["target"] == "/ka/hide/h"


# ---------------------------------------------------------------- refusals


def test_missing_key_is_401_with_challenge_and_never_reaches_upstream(env):
    gw, b = env
    before = upstream_count(b)
    doc = assert_refused(get(gw, "/ka/header/x"))
    assert doc["status"] == 401
    assert upstream_count(b) == before


def test_unknown_key_is_401_invalid_token(env):
    gw, b = env
    before = upstream_count(b)
    doc = assert_refused(get(gw, "/ka/header", headers={"X-API-Key": "k-nobody"}),
                         "invalid_token")
    assert "k-nobody" not in json.dumps(doc)
    assert_refused(get(gw, "/ka/query?api_key=k-nobody"), "invalid_token")
    # near misses: case, a prefix, surrounding bytes
    for k in ("K-BOB", "k-bo", "k-bobb", "xk-bob"):
        assert_refused(get(gw, "/ka/header", headers={"X-API-Key": k}), "invalid_token")
    assert upstream_count(b) == before


def test_two_keys_or_a_broken_encoding_are_invalid_requests(env):
    gw, b = env
    want = 'ApiKey realm="portico", error="invalid_request"'
    for target, fields in ((b"/ka/header", b"X-API-Key: k-bob\r\nX-API-Key: k-alice\r\n"),
                           (b"/ka/query?api_key=k-bob&api_key=k-bob", b""),
                           (b"/ka/query?api_key=k-b%zzob", b""),
                           (b"/ka/query?api_key=k-bob%2", b""),
                           (b"/ka/query?api_key=", b"")):
        r = raw_get(gw, target, fields)
        assert r.status == 401, (target, r)
        assert r.header("WWW-Authenticate") == want, (target, r)
        assert r.json()["error"] == "invalid_request"


def test_huge_or_binary_keys_are_refused_not_crashed(env):
    gw, b = env
    assert_refused(get(gw, "/ka/header", headers={"X-API-Key": "k" * 12000}), "invalid_token")
    r = get(gw, "/ka/header", headers={"X-API-Key": "k" * 20000})
    assert r.status_code == 431
    r = get(gw, "/ka/query?api_key=" + "k" * 7000)
    assert r.status_code == 401
    r = get(gw, "/ka/query?api_key=" + "k" * 20000)
    assert r.status_code in (414, 431)
    r = raw_get(gw, b"/ka/header", b"X-API-Key: k-\xff\xfe\x80bob\r\n")
    assert r.status in (400, 401), r
    r = raw_get(gw, b"/ka/query?api_key=%00%ff%0d%0a", b"")
    assert r.status == 401, r
    # and it still serves
    assert get(gw, "/ka/header", headers={"X-API-Key": "k-bob"}).status_code == 200


# ---------------------------------------------------------------- optional


def test_optional_without_key_passes_on_unauthenticated(env):
    gw, b = env
    r = get(gw, "/ka/optional/o", headers={"X-Consumer-Name": "admin"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-Consumer-Name") == []
    r = get(gw, "/ka/optional/o", headers={"X-API-Key": "k-alice"})
    assert echo_headers(r.json(), "X-Consumer-Name") == ["alice"]


def test_optional_with_a_bad_key_is_still_401(env):
    gw, b = env
    assert_refused(get(gw, "/ka/optional", headers={"X-API-Key": "k-nobody"}), "invalid_token")


# ---------------------------------------------------------------- no spoofing


def test_client_x_consumer_fields_are_removed_on_auth_routes(env):
    gw, b = env
    spoof = {"X-API-Key": "k-alice", "X-Consumer-Name": "root", "x-consumer-groups": "admin",
             "X-Consumer-Custom-ID": "42", "X-Consumerish": "kept"}
    r = get(gw, "/ka/header", headers=spoof)
    assert r.status_code == 200
    doc = r.json()
    assert echo_headers(doc, "X-Consumer-Name") == ["alice"]
    assert echo_headers(doc, "X-Consumer-Groups") == ["mobile"]
    assert echo_headers(doc, "X-Consumer-Custom-ID") == []
    assert echo_headers(doc, "X-Consumerish") == ["kept"]  # not an X-Consumer-* field
    # a route without an auth filter is not the gateway's business
    r = get(gw, "/open", headers=spoof)
    assert echo_headers(r.json(), "X-Consumer-Name") == ["root"]


# ---------------------------------------------------------------- reload, log


def test_reload_rotates_keys_and_adds_consumers(tmp_path):
    with backend("app") as b:
        port = free_port()
        routes = [route("r", "/", {"key_auth": {}})]
        cfg = make_config(port, {"app": upstream(b.port)}, routes)
        cfg["consumers"] = [{"name": "alice", "groups": ["mobile"], "api_keys": ["k-old"]}]
        gw = Gateway(cfg, tmp_path)
        try:
            assert get(gw, "/", headers={"X-API-Key": "k-old"}).status_code == 200
            assert get(gw, "/", headers={"X-API-Key": "k-new"}).status_code == 401
            cfg2 = make_config(port, {"app": upstream(b.port)}, routes,
                               admin_port=gw.admin_port)
            cfg2["consumers"] = [
                {"name": "alice", "groups": ["mobile"], "api_keys": [sha("k-new")]},
                {"name": "dave", "groups": ["ops"], "api_keys": ["k-dave"]}]
            gw.reload(cfg2)
            # the first request after the reload sees the new keys
            r = get(gw, "/", headers={"X-API-Key": "k-new"})
            assert r.status_code == 200
            assert echo_headers(r.json(), "X-Consumer-Name") == ["alice"]
            assert_refused(get(gw, "/", headers={"X-API-Key": "k-old"}), "invalid_token")
            r = get(gw, "/", headers={"X-API-Key": "k-dave"})
            assert echo_headers(r.json(), "X-Consumer-Groups") == ["ops"]
            # a rejected reload keeps the running consumers
            bad = dict(cfg2)
            bad["consumers"] = [{"name": "x", "api_keys": ["k-1"]},
                                {"name": "y", "api_keys": ["k-1"]}]
            gw.reload(bad, expect_ok=False)
            assert get(gw, "/", headers={"X-API-Key": "k-new"}).status_code == 200
        finally:
            gw.stop()


def test_access_log_names_the_consumer(tmp_path):
    with backend("app") as b:
        cfg = make_config(free_port(), {"app": upstream(b.port)},
                          [route("r", "/", {"key_auth": {"optional": True}})],
                          access_log={"path": "stdout", "format": "json"})
        cfg["consumers"] = [{"name": "alice", "api_keys": ["k-secret-alice"]}]
        gw = Gateway(cfg, tmp_path)
        try:
            for rid, key in (("with-key", "k-secret-alice"), ("no-key", None),
                             ("bad-key", "k-secret-wrong")):
                h = {"X-Request-ID": rid}
                if key:
                    h["X-API-Key"] = key
                get(gw, "/", headers=h)
        finally:
            gw.stop()
    out = gw.stdout_text()
    lines = {json.loads(l)["request_id"]: json.loads(l) for l in out.splitlines()
             if l.startswith("{")}
    assert lines["with-key"]["consumer"] == "alice"
    assert lines["with-key"]["status"] == 200
    assert "consumer" not in lines["no-key"]
    assert lines["bad-key"]["status"] == 401 and "consumer" not in lines["bad-key"]
    # keys never reach a log
    assert "k-secret" not in out and "k-secret" not in gw.stderr_text()


# ---------------------------------------------------------------- config


def test_config_errors_are_located_and_never_quote_a_key(tmp_path):
    cfg = make_config(free_port(), {"app": upstream(free_port())},
                      [route("r", "/", {"key_auth": {"header": "Bad Name", "query": "a&b"}}),
                       route("r2", "/2", {"key_auth": {"header": "X-Consumer-Key"}}),
                       route("r3", "/3", {"key_auth": {"optinal": True}})])
    cfg["consumers"] = [
        {"name": "alice", "api_keys": ["k-dup-secret", "k-dup-secret"]},
        {"name": "bob", "api_keys": [sha("k-dup-secret")]},
        {"name": "alice", "api_keys": ["k-other"]},
        {"name": "bad name", "api_keys": ["k-x"]},
        {"name": "carol", "api_keys": ["sha256:abc", " k-space", ""], "groups": ["a,b"]},
        {"groups": ["g"]},
        {"name": "dave", "keys": ["k"]},
    ]
    rc, err = validate_errors(tmp_path, cfg)
    assert rc != 0, err
    for want in ("consumer `alice`: this API key is listed twice",
                 "consumer `bob`: this API key is consumer `alice`'s already",
                 "consumer `alice` is defined twice",
                 "consumer name `bad name` must be",
                 "`sha256:` must be followed by the key's SHA-256 as 64 hex digits",
                 "starts or ends with a space", "an API key",
                 "group `a,b` must be non-empty, without spaces",
                 "a consumer needs a `name`",
                 "unknown key `keys` in a consumer",
                 'invalid header name "Bad Name"',
                 'query: "a&b" is not a query parameter name',
                 "X-Consumer-* fields are the gateway's own",
                 "did you mean `optional`"):
        assert want in err, (want, err)
    assert "k-dup-secret" not in err and "k-space" not in err
    lines = [l for l in err.strip().splitlines() if "bad.yaml" in l]
    assert len(lines) >= 14, err
    for line in lines:
        assert re.search(r"bad\.yaml:\d+:\d+: ", line), line


def test_consumers_must_be_a_list(tmp_path):
    cfg = make_config(free_port(), {"app": upstream(free_port())}, [route("r", "/", {})])
    cfg["consumers"] = {"alice": {"api_keys": ["k"]}}
    rc, err = validate_errors(tmp_path, cfg)
    assert rc != 0 and "`consumers`" in err, err


def test_example_auth_yaml_validates():
    p = subprocess.run([PORTICO, "validate", os.path.join(ROOT, "examples", "auth.yaml")],
                       capture_output=True, text=True, timeout=scaled(20))
    assert p.returncode == 0, p.stdout + p.stderr
