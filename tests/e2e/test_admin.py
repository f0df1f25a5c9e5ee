"""Admin API: status, route table with effective filters, upstreams,
reload through the API, bearer token enforcement, idle clients evicted,
a client that half-closes after its request still answered."""

import json
import socket
import time

import requests

from conftest import (free_port, make_config, parse_response, port_open, recv_all, scaled, to_yaml,
                      upstream, wait_until)


def cfg(port, admin, bport, token=None, extra_route=None):
    c = make_config(port, {"users": upstream(bport)},
                    [{"name": "users", "match": {"path_prefix": "/users", "methods": ["GET"]},
                      "upstream": "users", "strip_prefix": "/users",
                      "filters": {"request_transform": {"add_headers": {"X-A": "1"}}}}],
                    admin_port=admin,
                    filters={"response_transform": {"remove_headers": ["X-Backend"]}})
    if token:
        c["admin"]["token"] = token
    if extra_route:
        c["routes"].append(extra_route)
    return c


def test_status_routes_upstreams(gateway, backends):
    be = backends("users")
    port, admin = free_port(), free_port()
    gw = gateway(cfg(port, admin, be.port))
    assert requests.get(gw.u("/users/tiny")).status_code == 200
    st = requests.get("http://127.0.0.1:%d/status" % admin).json()
    assert st["generation"] == 1 and st["workers"] == 2 and st["routes"] == 1
    # Counted when the worker ends the request, just after the response's
    # last byte went out: the client may ask before that.
    wait_until(lambda: requests.get("http://127.0.0.1:%d/status" % admin).json()
               ["requests_served"] >= 1, scaled(5), what="the request to be counted")
    routes = requests.get("http://127.0.0.1:%d/routes" % admin).json()["routes"]
    assert routes[0]["name"] == "users" and routes[0]["upstream"] == "users"
    assert routes[0]["match"]["path_prefix"] == "/users"
    assert routes[0]["match"]["methods"] == ["GET"]
    # no route timeout: the upstream's read_timeout (30 s by default) is in force
    assert routes[0]["timeout_ms"] == 30000, routes[0]
    # the default filter is inherited: both are on the effective list
    assert sorted(routes[0]["filters"]) == ["request_transform", "response_transform"]
    ups = requests.get("http://127.0.0.1:%d/upstreams" % admin).json()["upstreams"]
    assert ups[0]["targets"][0]["address"] == "127.0.0.1:%d" % be.port
    r = requests.get("http://127.0.0.1:%d/nope" % admin)
    assert r.status_code == 404 and "error" in r.json()
    assert requests.delete("http://127.0.0.1:%d/status" % admin).status_code == 405


def test_reload_via_api(gateway, backends):
    be = backends("users")
    port, admin = free_port(), free_port()
    gw = gateway(cfg(port, admin, be.port))
    assert requests.get(gw.u("/other/tiny")).status_code == 404
    # a bad file: 400 with file:line:col errors, generation unchanged
    open(gw.config_path, "w").write("routes: [ { name: x, upstrem: y } ]\n")
    r = requests.post("http://127.0.0.1:%d/reload" % admin)
    assert r.status_code == 400
    body = r.json()
    assert body["reloaded"] is False and ":1:" in body["errors"] and "upstream" in body["errors"]
    assert requests.get("http://127.0.0.1:%d/status" % admin).json()["generation"] == 1
    assert requests.get(gw.u("/users/tiny")).status_code == 200
    # a good file with one more route: applied
    open(gw.config_path, "w").write(to_yaml(cfg(port, admin, be.port, extra_route={
        "name": "other", "match": {"path_prefix": "/other"}, "upstream": "users",
        "strip_prefix": "/other"})))
    r = requests.post("http://127.0.0.1:%d/reload" % admin)
    assert r.status_code == 200 and r.json() == {"reloaded": True, "generation": 2}
    assert requests.get(gw.u("/other/tiny")).status_code == 200
    st = requests.get("http://127.0.0.1:%d/status" % admin).json()
    assert st["reloads"] == {"ok": 1, "failed": 1}


def test_token_required_when_set(gateway, backends):
    be = backends("users")
    port, admin = free_port(), free_port()
    gateway(cfg(port, admin, be.port, token="s3cret"))
    base = "http://127.0.0.1:%d" % admin
    assert requests.get(base + "/status").status_code == 401
    assert requests.get(base + "/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.get(base + "/status",
                        headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_idle_connections_cannot_lock_the_api_out(gateway, backends):
    """The admin API serves 32 clients at a time and used to keep an idle
    one for 10 s: 32 connections that send nothing (no token needed) locked
    every operator out. A new client now takes the slot of the one that has
    waited longest without a whole request, and such clients are dropped
    after 2 s even when nothing else happens."""
    be = backends("idle")
    port, admin = free_port(), free_port()
    gateway(cfg(port, admin, be.port))
    idle = [socket.create_connection(("127.0.0.1", admin), timeout=scaled(5)) for _ in range(40)]
    try:
        for _ in range(3):
            r = requests.get("http://127.0.0.1:%d/status" % admin, timeout=scaled(5))
            assert r.status_code == 200
        # The idle ones still open are closed by the deadline sweep.
        deadline = time.monotonic() + scaled(6)
        for s in idle:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for s in idle:
            s.close()


def test_reload_moves_the_admin_address_or_is_refused(gateway, backends):
    """Moving admin.address by a reload used to log a bind error and answer
    "reloaded" while the API stayed on the old address (with the new
    token). Now the move happens before the swap: widening 127.0.0.1:P to
    0.0.0.0:P (a port our own socket holds) works; an address someone else
    holds refuses the reload, and the old API keeps answering."""
    be = backends("adm")
    port, admin = free_port(), free_port()
    gw = gateway(cfg(port, admin, be.port))
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    try:
        busy = cfg(port, admin, be.port, token="s3cret")
        busy["admin"]["address"] = "127.0.0.1:%d" % other.getsockname()[1]
        line = gw.reload(busy, expect_ok=False)
        assert "admin" in line, line
        st = requests.get("http://127.0.0.1:%d/status" % admin, timeout=scaled(5))
        assert st.status_code == 200 and st.json()["generation"] == 1
    finally:
        other.close()
    wide = cfg(port, admin, be.port, token="s3cret")
    wide["admin"]["address"] = "0.0.0.0:%d" % admin
    gw.reload(wide)
    auth = {"Authorization": "Bearer s3cret"}
    st = requests.get("http://127.0.0.1:%d/status" % admin, headers=auth, timeout=scaled(5))
    assert st.status_code == 200 and st.json()["generation"] == 2
    # Bound to every address now: another loopback address reaches it.
    st = requests.get("http://127.0.0.2:%d/status" % admin, headers=auth, timeout=scaled(5))
    assert st.status_code == 200


def test_admin_answers_a_half_closed_client(gateway, backends):
    """A client that sends its request and shuts down its write side (nc -N,
    many scripts) got no answer: EOF closed the admin connection before the
    complete request in the buffer was handled."""
    be = backends("ad")
    port, admin = free_port(), free_port()
    gateway(cfg(port, admin, be.port))
    wait_until(lambda: port_open(admin), scaled(5), what="the admin API")
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", admin), timeout=scaled(5))
        try:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            buf, how = recv_all(s)
        finally:
            s.close()
        assert how == "eof", (how, buf[:200])
        r = parse_response(buf)
        assert r.status == 200, buf[:200]
        assert "generation" in json.loads(r.body)
