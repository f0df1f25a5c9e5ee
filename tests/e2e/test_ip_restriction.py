"""The ip_restriction filter: allow and deny CIDR lists judged on the
real client address (the X-Forwarded-For walk from a trusted peer: every
request here comes from 127.0.0.1, which the gateway trusts, so different
clients are presented through X-Forwarded-For); deny wins; a refusal is a
403 JSON error, logged as such, and never reaches the upstream. That an
untrusted peer's claim is not judged is in test_client_address.py."""

import pytest
import requests

from conftest import (Gateway, backend, echo_headers, free_port, make_config, scaled, upstream,
                      validate_errors)


def route(name, prefix, rules):
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": "echo",
            "filters": {"ip_restriction": rules,
                        "request_transform": {"set_headers": {"X-Client": "${remote_addr}"}}}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with backend("ipr") as b:
        cfg = make_config(free_port(), {"echo": upstream(b.port)}, [
            route("allow", "/allow", {"allow": ["198.51.100.0/24", "2001:db8::/32"]}),
            route("deny", "/deny", {"deny": ["203.0.113.0/24"]}),
            route("both", "/both", {"allow": ["198.51.100.0/24"], "deny": ["198.51.100.66"]}),
        ])
        cfg["trusted_proxies"] = ["127.0.0.1", "10.0.0.0/8"]
        g = Gateway(cfg, tmp_path_factory.mktemp("ip_restriction"))
        try:
            yield g, b
        finally:
            g.stop()


@pytest.mark.parametrize("path,client,status", [
    ("/allow", "198.51.100.1", 200),
    ("/allow", "2001:db8::1", 200),
    ("/allow", "203.0.113.5", 403),    # outside allow
    ("/allow", None, 403),             # the peer 127.0.0.1 is outside allow too
    ("/deny", "203.0.113.5", 403),
    ("/deny", "198.51.100.1", 200),
    ("/deny", None, 200),
    ("/both", "198.51.100.1", 200),
    ("/both", "198.51.100.66", 403),   # in allow and deny: deny wins
    ("/both", "192.0.2.1", 403),
])
def test_verdicts(gw, path, client, status):
    g, b = gw
    before = b.stats()["requests"]
    # a trusted hop (10.0.0.2) behind the client, as a balancer would add
    headers = {"X-Forwarded-For": client + ", 10.0.0.2"} if client else {}
    r = requests.get(g.u(path), headers=headers, timeout=scaled(5))
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["status"] == 403 and r.json()["request_id"]
        assert b.stats()["requests"] == before, "a refused request reached the upstream"
    else:
        assert echo_headers(r.json(), "X-Client") == [client or "127.0.0.1"]


def test_rules_are_checked_at_load(tmp_path):
    # Host bits past the prefix, a name, and a filter with no list at all
    # (it would look like protection and be none): each a file:line:col error.
    for rules, want in [({"allow": ["10.0.0.1/8"]}, "10.0.0.0/8"),
                        ({"deny": ["gateway.internal"]}, "gateway.internal"),
                        ({}, "ip_restriction")]:
        cfg = make_config(free_port(), {"echo": upstream(free_port())}, [route("r", "/", rules)])
        rc, out = validate_errors(tmp_path, cfg)
        assert rc == 1 and "bad.yaml:" in out and want in out, out
