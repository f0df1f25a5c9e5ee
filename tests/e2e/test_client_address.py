"""The real client address (issue 13, item 2): from a peer in
`trusted_proxies` the X-Forwarded-For chain is walked from the right
(across every field, skipping trusted hops, stopping at a malformed entry,
the left-most when all are trusted); an untrusted peer is the client. The
same address is ${remote_addr} (seen at the backend through a
request_transform), the access log's remote_addr (the peer stays as
peer_addr), X-Real-IP with forward_real_ip, and what ip_restriction
judges (its own verdicts: test_ip_restriction.py). Every request here comes from 127.0.0.1, so different clients are
presented through X-Forwarded-For from that trusted peer."""

import os

import pytest

from conftest import (Gateway, access_log_lines, backend, echo_headers, free_port, make_config,
                      raw_responses, scaled, upstream, wait_until)

CLIENT = {"request_transform": {"set_headers": {"X-Client": "${remote_addr}"}}}


def route(name, prefix, **filters):
    f = dict(CLIENT)
    f.update(filters)
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": "echo", "filters": f}


ROUTES = [
    route("allow", "/allow", ip_restriction={"allow": ["198.51.100.0/24", "2001:db8::/32"]}),
    route("deny", "/deny", ip_restriction={"deny": ["203.0.113.0/24"]}),
    route("both", "/both", ip_restriction={"allow": ["198.51.100.0/24"],
                                           "deny": ["198.51.100.66"]}),
    route("all", "/"),
]


def start(tmp, b, trusted, real_ip, name):
    tmp_path = tmp / name  # a directory each: the gateway's stdout file lives there
    tmp_path.mkdir()
    log = os.path.join(str(tmp_path), "access.log")
    cfg = make_config(free_port(), {"echo": upstream(b.port)}, ROUTES, access_log={"path": log})
    cfg["trusted_proxies"] = trusted
    cfg["forward_real_ip"] = real_ip
    return Gateway(cfg, tmp_path), log


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client_address")
    with backend("ca") as b:
        # 127.0.0.1 (every test's peer) is trusted, as are 10/8 and fd00::/8.
        trusted, tlog = start(tmp, b, ["127.0.0.1", "10.0.0.0/8", "fd00::/8"], True, "trusted")
        # 127.0.0.1 is not: its X-Forwarded-For is never believed.
        untrusted, ulog = start(tmp, b, ["10.0.0.0/8"], False, "untrusted")
        try:
            yield {"trusted": (trusted, tlog), "untrusted": (untrusted, ulog)}
        finally:
            trusted.stop()
            untrusted.stop()


_seq = [0]


def send(gw, path="/echo", xff=(), extra=()):
    """One request with these X-Forwarded-For fields (each its own field
    line, in order): (Resp, the backend's echo or None, request id)."""
    _seq[0] += 1
    rid = "ca-%d" % _seq[0]
    head = "GET %s HTTP/1.1\r\nHost: ca.test\r\nX-Request-ID: %s\r\n" % (path, rid)
    for v in xff:
        head += "X-Forwarded-For: %s\r\n" % v
    for k, v in extra:
        head += "%s: %s\r\n" % (k, v)
    head += "Connection: close\r\n\r\n"
    rs = raw_responses(gw.port, head.encode())
    r = rs[-1]
    doc = r.json() if r.status == 200 else None
    return r, doc, rid


def client_of(gw, xff, path="/echo"):
    r, doc, _ = send(gw, path, xff)
    assert r.status == 200, r
    return echo_headers(doc, "X-Client")


def log_entry(log, rid):
    def find():
        for d in access_log_lines(log, 1):
            if d.get("request_id") == rid:
                return d
        return None
    return wait_until(find, scaled(10), what="the log line of " + rid)


@pytest.mark.parametrize("xff,want", [
    ((), "127.0.0.1"),                                          # no field: the peer
    (("198.51.100.1",), "198.51.100.1"),                        # one entry
    (("192.0.2.66, 198.51.100.1, 10.0.0.2",), "198.51.100.1"),  # trusted hop skipped
    (("192.0.2.66", "198.51.100.1, 10.1.1.1", "10.0.0.2"), "198.51.100.1"),  # several fields
    (("192.0.2.66, 10.9.9.9", "10.0.0.2"), "192.0.2.66"),
    (("10.0.0.3, 10.0.0.2", "fd00::7"), "10.0.0.3"),            # all trusted: the left-most
    (("198.51.100.1, bogus, 10.0.0.2",), "10.0.0.2"),           # malformed: last good address
    (("198.51.100.1", "garbage"), "127.0.0.1"),                 # right-most malformed: the peer
    (("[2001:DB8::9]:443, 10.0.0.2:1234",), "2001:db8::9"),     # ports, brackets; canonical
    (("198.51.100.1,, 10.0.0.2,",), "198.51.100.1"),            # empty elements skipped
])
def test_trusted_peer_walk(env, xff, want):
    gw, _ = env["trusted"]
    assert client_of(gw, xff) == [want]


def test_forwarded_for_still_appends_the_peer(env):
    gw, _ = env["trusted"]
    r, doc, _ = send(gw, xff=("198.51.100.1", "10.0.0.2"))
    parts = [p.strip() for p in ", ".join(echo_headers(doc, "X-Forwarded-For")).split(",")]
    assert parts == ["198.51.100.1", "10.0.0.2", "127.0.0.1"]


def test_log_has_client_and_peer(env):
    gw, log = env["trusted"]
    r, _, rid = send(gw, xff=("192.0.2.66, 198.51.100.1, 10.0.0.2",))
    assert r.status == 200
    d = log_entry(log, rid)
    assert d["remote_addr"] == "198.51.100.1" and d["peer_addr"] == "127.0.0.1", d
    # A request refused before routing (a path above the root: 400) logs the client too.
    r, _, rid = send(gw, path="/../x", xff=("198.51.100.9",))
    assert r.status == 400
    d = log_entry(log, rid)
    assert d["remote_addr"] == "198.51.100.9" and d["peer_addr"] == "127.0.0.1", d


def test_untrusted_peer_cannot_spoof(env):
    gw, log = env["untrusted"]
    for xff in (("198.51.100.1",), ("198.51.100.1", "10.0.0.2"), ("10.0.0.2",)):
        assert client_of(gw, xff) == ["127.0.0.1"]
    r, _, rid = send(gw, xff=("198.51.100.1",))
    d = log_entry(log, rid)
    assert d["remote_addr"] == "127.0.0.1" and d["peer_addr"] == "127.0.0.1", d
    # ip_restriction judges the peer, not the claim.
    r, _, _ = send(gw, "/allow", xff=("198.51.100.1",))
    assert r.status == 403
    r, _, _ = send(gw, "/deny", xff=("203.0.113.5",))
    assert r.status == 200


def test_forward_real_ip(env):
    gw, _ = env["trusted"]
    # Set to the client, replacing whatever the client sent.
    r, doc, _ = send(gw, xff=("198.51.100.1",), extra=[("X-Real-IP", "6.6.6.6")])
    assert echo_headers(doc, "X-Real-IP") == ["198.51.100.1"]
    r, doc, _ = send(gw)
    assert echo_headers(doc, "X-Real-IP") == ["127.0.0.1"]
    # forward_real_ip: false leaves the field alone: not added, not removed.
    gw, _ = env["untrusted"]
    r, doc, _ = send(gw)
    assert echo_headers(doc, "X-Real-IP") == []
    r, doc, _ = send(gw, extra=[("X-Real-IP", "6.6.6.6")])
    assert echo_headers(doc, "X-Real-IP") == ["6.6.6.6"]
