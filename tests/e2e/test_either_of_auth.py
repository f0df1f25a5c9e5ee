"""Either-of authentication across filters: one route that accepts a JWT
(jwt, optional) OR an API key (key_auth, optional), with acl deciding on
the groups whichever of them found. Tokens are minted with python3-jwt;
consumers come from YAML. A credential that is present but invalid is a
401 whatever the other one says."""

import time

import jwt as pyjwt
import pytest
import requests

from conftest import (assert_error_response, backend, echo_headers, free_port, make_config,
                      scaled, upstream)

SECRET = "either-of-test-secret-0123456789abcdef"

CONSUMERS = [
    {"name": "mobile-app", "groups": ["mobile"], "api_keys": ["k-mobile"]},
    {"name": "old-app", "groups": ["mobile", "suspended"], "api_keys": ["k-old"]},
]


def token(sub, groups, secret=SECRET, exp_in=3600):
    claims = {"sub": sub, "groups": groups, "exp": int(time.time()) + exp_in}
    return pyjwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from conftest import Gateway
    with backend("users") as b:
        route = {"name": "either", "match": {"path_prefix": "/"}, "upstream": "users",
                 "filters": {
                     "jwt": {"secret": SECRET, "groups_claim": "groups", "optional": True},
                     "key_auth": {"optional": True},
                     "acl": {"allow": ["mobile"], "deny": ["suspended"]},
                 }}
        cfg = make_config(free_port(), {"users": upstream(b.port)}, [route])
        cfg["consumers"] = CONSUMERS
        gw = Gateway(cfg, tmp_path_factory.mktemp("either"))
        try:
            yield gw
        finally:
            gw.stop()


def get(gw, headers=None):
    return requests.get(gw.u("/echo"), headers=headers or {}, timeout=scaled(5))


def test_a_token_alone_gets_in_as_its_subject(env):
    r = get(env, {"Authorization": "Bearer " + token("ops-bot", ["mobile"])})
    assert r.status_code == 200, r.text
    assert echo_headers(r.json(), "X-Consumer-Name") == ["ops-bot"]
    assert echo_headers(r.json(), "X-Consumer-Groups") == ["mobile"]


def test_a_key_alone_gets_in_as_its_consumer(env):
    r = get(env, {"X-API-Key": "k-mobile"})
    assert r.status_code == 200, r.text
    assert echo_headers(r.json(), "X-Consumer-Name") == ["mobile-app"]


def test_no_credential_is_401_offering_both_schemes(env):
    r = get(env)
    assert_error_response(r, 401)
    challenges = r.raw.headers.getlist("WWW-Authenticate")
    assert any(c.startswith("Bearer") for c in challenges), challenges
    assert any(c.startswith("ApiKey") for c in challenges), challenges


def test_an_invalid_token_is_401_even_with_a_valid_key(env):
    bad = token("ops-bot", ["mobile"], secret="another-secret-0123456789abcdefghij")
    r = get(env, {"Authorization": "Bearer " + bad, "X-API-Key": "k-mobile"})
    assert_error_response(r, 401)
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_an_unknown_key_is_401_even_with_a_valid_token(env):
    r = get(env, {"Authorization": "Bearer " + token("ops-bot", ["mobile"]),
                  "X-API-Key": "k-nobody"})
    assert_error_response(r, 401)


def test_acl_decides_on_the_groups_either_filter_found(env):
    assert get(env, {"Authorization": "Bearer " + token("guest", ["web"])}).status_code == 403
    assert get(env, {"Authorization": "Bearer " + token("x", ["mobile", "suspended"])}
               ).status_code == 403
    assert get(env, {"X-API-Key": "k-old"}).status_code == 403


def test_spoofed_consumer_fields_never_reach_the_upstream(env):
    r = get(env, {"X-API-Key": "k-mobile", "X-Consumer-Name": "root",
                  "X-Consumer-Groups": "admin"})
    assert r.status_code == 200
    assert echo_headers(r.json(), "X-Consumer-Name") == ["mobile-app"]
    assert echo_headers(r.json(), "X-Consumer-Groups") == ["mobile"]


def test_underscore_spellings_of_consumer_fields_are_stripped_too(tmp_path):
    # With underscores allowed through, `X_Consumer_Name` would be
    # X-Consumer-Name to a CGI/WSGI upstream: it goes like the dashed one.
    from conftest import Gateway
    with backend("users") as b:
        route = {"name": "r", "match": {"path_prefix": "/"}, "upstream": "users",
                 "filters": {"key_auth": {"optional": True}}}
        cfg = make_config(free_port(), {"users": upstream(b.port)}, [route],
                          limits={"headers_with_underscores": "allow"})
        cfg["consumers"] = CONSUMERS
        gw = Gateway(cfg, tmp_path)
        try:
            r = requests.get(gw.u("/echo"), timeout=scaled(5),
                             headers={"X_Consumer_Name": "root", "x-consumer_groups": "admin",
                                      "X_Other": "kept"})
            assert r.status_code == 200
            names = [k.lower() for k, _ in r.json()["headers"]]
            assert "x_consumer_name" not in names and "x-consumer_groups" not in names
            assert "x_other" in names
        finally:
            gw.stop()
