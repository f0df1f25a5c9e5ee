"""acl and either-of authentication end to end: a gateway in front of a demo
backend, consumers with groups from YAML identified by key_auth, and a
small Python auth service for ext_auth. Checks allow / deny (403), nobody
identified (401 with the optional filters' challenges), and a route that
accepts an API key OR what the auth service vouches for, with acl
deciding; plus the load-time errors."""

import http.server
import threading

import pytest
import requests

from conftest import (Gateway, assert_error_response, backend, echo_headers, free_port,
                      make_config, scaled, upstream, validate_errors)

CONSUMERS = [
    {"name": "alice", "groups": ["mobile"], "api_keys": ["k-alice"]},
    {"name": "bob", "groups": ["partners", "beta"], "api_keys": ["k-bob"]},
    {"name": "eve", "groups": ["partners", "banned"], "api_keys": ["k-eve"]},
    {"name": "nogroups", "api_keys": ["k-none"]},
]


class AuthService:
    """Answers GET /check: `Authorization: Bearer good` → 200 with X-User:
    svc-user; anything else → 401 with its own challenge. Counts calls."""

    def __init__(self):
        self.port = free_port()
        self.calls = 0
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                svc.calls += 1
                if self.headers.get("Authorization") == "Bearer good":
                    status, hdrs = 200, [("X-User", "svc-user")]
                else:
                    status, hdrs = 401, [("WWW-Authenticate", 'Bearer realm="svc"')]
                self.send_response(status)
                for k, v in hdrs:
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def route(name, prefix, filters):
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": "app",
            "filters": filters}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    auth = AuthService()
    try:
        with backend("app") as b:
            either = {"ext_auth": {"upstream": "authz", "path": "/check",
                                   "forward_headers": ["Authorization"],
                                   "consumer_header": "X-User", "optional": True},
                      "key_auth": {"optional": True},
                      "acl": {"deny": ["banned"]}}
            cfg = make_config(
                free_port(), {"app": upstream(b.port), "authz": upstream(auth.port)},
                [route("allow", "/acl/allow", {"key_auth": {}, "acl": {"allow": ["mobile"]}}),
                 route("allow2", "/acl/any-of",
                       {"key_auth": {}, "acl": {"allow": ["mobile", "beta"]}}),
                 route("deny", "/acl/deny", {"key_auth": {}, "acl": {"deny": ["banned"]}}),
                 route("both", "/acl/both",
                       {"key_auth": {}, "acl": {"allow": ["partners"], "deny": ["banned"]}}),
                 route("optional", "/acl/optional",
                       {"key_auth": {"optional": True}, "acl": {"allow": ["mobile"]}}),
                 route("either", "/either", either)])
            cfg["consumers"] = CONSUMERS
            gw = Gateway(cfg, tmp_path_factory.mktemp("acl"))
            try:
                yield gw, b, auth
            finally:
                gw.stop()
    finally:
        auth.stop()


def get(gw, path, key=None, **kw):
    kw.setdefault("timeout", scaled(10))
    if key:
        kw.setdefault("headers", {})["X-API-Key"] = key
    return requests.get(gw.u(path), **kw)


def consumer_upstream(r):
    assert r.status_code == 200, r.text[:300]
    names = echo_headers(r.json(), "X-Consumer-Name")
    return names[0] if names else None


def assert_forbidden(r):
    assert r.status_code == 403, r.text[:300]
    assert "WWW-Authenticate" not in r.headers
    assert_error_response(r, 403)


# ---------------------------------------------------------------- allow / deny


def test_allow_lets_members_in_and_others_get_403(env):
    gw, b, _ = env
    before = b.stats()["requests"]
    assert consumer_upstream(get(gw, "/acl/allow", "k-alice")) == "alice"
    assert_forbidden(get(gw, "/acl/allow", "k-bob"))
    assert_forbidden(get(gw, "/acl/allow", "k-none"))  # no groups at all
    assert b.stats()["requests"] == before + 1


def test_allow_any_of_several_groups(env):
    gw, b, _ = env
    assert consumer_upstream(get(gw, "/acl/any-of", "k-alice")) == "alice"
    assert consumer_upstream(get(gw, "/acl/any-of", "k-bob")) == "bob"  # via beta
    assert_forbidden(get(gw, "/acl/any-of", "k-eve"))


def test_deny_refuses_members_only(env):
    gw, b, _ = env
    assert_forbidden(get(gw, "/acl/deny", "k-eve"))
    assert consumer_upstream(get(gw, "/acl/deny", "k-bob")) == "bob"
    assert consumer_upstream(get(gw, "/acl/deny", "k-none")) == "nogroups"


def test_deny_wins_over_allow(env):
    gw, b, _ = env
    assert consumer_upstream(get(gw, "/acl/both", "k-bob")) == "bob"
    assert_forbidden(get(gw, "/acl/both", "k-eve"))  # in partners and banned
    assert_forbidden(get(gw, "/acl/both", "k-alice"))


def test_no_consumer_is_401_with_the_optional_filters_challenge(env):
    gw, b, _ = env
    r = get(gw, "/acl/optional")
    assert r.status_code == 401
    assert r.headers.get("WWW-Authenticate") == 'ApiKey realm="portico"'
    assert_error_response(r, 401)
    assert consumer_upstream(get(gw, "/acl/optional", "k-alice")) == "alice"
    assert_forbidden(get(gw, "/acl/optional", "k-bob"))


def test_spoofed_groups_do_not_pass_acl(env):
    gw, b, _ = env
    r = get(gw, "/acl/allow", "k-bob",
            headers={"X-Consumer-Groups": "mobile", "X-Consumer-Name": "alice"})
    assert_forbidden(r)
    r = get(gw, "/acl/optional", headers={"X-Consumer-Name": "alice",
                                          "X-Consumer-Groups": "mobile"})
    assert r.status_code == 401


# ---------------------------------------------------------------- either-of


def test_either_of_accepts_an_api_key(env):
    gw, b, auth = env
    calls = auth.calls
    r = get(gw, "/either/x", "k-alice")
    assert consumer_upstream(r) == "alice"
    assert echo_headers(r.json(), "X-Consumer-Groups") == ["mobile"]
    assert auth.calls == calls  # no Authorization: ext_auth did not ask


def test_either_of_accepts_the_auth_services_caller(env):
    gw, b, auth = env
    calls = auth.calls
    r = get(gw, "/either/x", headers={"Authorization": "Bearer good"})
    assert consumer_upstream(r) == "svc-user"
    assert auth.calls == calls + 1


def test_either_of_without_any_credential_is_401(env):
    gw, b, auth = env
    before = b.stats()["requests"]
    r = get(gw, "/either/x")
    assert r.status_code == 401
    # key_auth's challenge (ext_auth has none of its own to offer)
    assert r.headers.get("WWW-Authenticate") == 'ApiKey realm="portico"'
    assert b.stats()["requests"] == before


def test_either_of_invalid_credentials_are_always_401(env):
    gw, b, auth = env
    r = get(gw, "/either/x", "k-nobody")
    assert r.status_code == 401
    assert r.headers.get("WWW-Authenticate") == 'ApiKey realm="portico", error="invalid_token"'
    r = get(gw, "/either/x", headers={"Authorization": "Bearer bad"})
    assert r.status_code == 401
    assert r.headers.get("WWW-Authenticate") == 'Bearer realm="svc"'
    # a good key does not excuse a bad token
    r = get(gw, "/either/x", "k-alice", headers={"Authorization": "Bearer bad"})
    assert r.status_code == 401


def test_either_of_acl_still_decides(env):
    gw, b, _ = env
    assert_forbidden(get(gw, "/either/x", "k-eve"))


def test_either_of_both_valid_first_filter_identifies(env):
    gw, b, auth = env
    calls = auth.calls
    r = get(gw, "/either/x", "k-alice", headers={"Authorization": "Bearer good"})
    # key_auth (priority 1250) identified the caller; ext_auth (1240) still
    # checked its credential but the first identity stands
    assert consumer_upstream(r) == "alice"
    assert echo_headers(r.json(), "X-Consumer-Groups") == ["mobile"]
    assert auth.calls == calls + 1
    # and a bad key costs no call to the auth service
    r = get(gw, "/either/x", "k-nobody", headers={"Authorization": "Bearer good"})
    assert r.status_code == 401
    assert auth.calls == calls + 1


# ---------------------------------------------------------------- config


def test_acl_config_errors(tmp_path):
    cfg = make_config(free_port(), {"app": upstream(free_port())},
                      [route("a", "/a", {"acl": {"allow": ["mobile"]}}),
                       route("b", "/b", {"key_auth": {}, "acl": {}}),
                       route("c", "/c", {"key_auth": {}, "acl": {"allow": ["a,b", "ok"],
                                                                 "deny": ["x y"]}}),
                       route("d", "/d", {"key_auth": {}, "acl": {"alow": ["x"]}})])
    rc, err = validate_errors(tmp_path, cfg)
    assert rc != 0, err
    for want in ("filter `acl` needs an auth filter on the same route",
                 "give `allow`, `deny` or both",
                 'allow: group "a,b" has a space, a control character or a comma',
                 'deny: group "x y"',
                 "did you mean `allow`"):
        assert want in err, (want, err)


def test_ext_auth_optional_needs_forward_headers(tmp_path):
    cfg = make_config(free_port(), {"app": upstream(free_port()), "z": upstream(free_port())},
                      [route("a", "/a", {"ext_auth": {"upstream": "z", "forward_headers": [],
                                                      "optional": True}})])
    rc, err = validate_errors(tmp_path, cfg)
    assert rc != 0 and "optional: true needs `forward_headers`" in err, err
