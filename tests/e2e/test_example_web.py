"""examples/web.yaml as shipped (only its ports moved), against the demo
backends: the answers its comments promise for CORS, the cache and the
JSON body rules both ways."""

import json
import os

import pytest
import requests

from conftest import E2E_IO_BACKEND, ROOT, Gateway, backend, free_port, scaled

EXAMPLE = os.path.join(ROOT, "examples", "web.yaml")


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with backend("users", nports=2) as users, backend("orders") as orders:
        port, admin = free_port(), free_port()
        with open(EXAMPLE) as f:
            text = f.read()
        moves = {"127.0.0.1:8080": port, "127.0.0.1:9901": admin,
                 "127.0.0.1:9001": users.ports[0], "127.0.0.1:9002": users.ports[1],
                 "127.0.0.1:9003": orders.port}
        for old, new in moves.items():
            assert old in text, old
            text = text.replace(old, "127.0.0.1:%d" % new)
        if E2E_IO_BACKEND:
            text += "\nio_backend: %s\n" % E2E_IO_BACKEND
        g = Gateway(text, tmp_path_factory.mktemp("web"))
        g.admin_url = "http://127.0.0.1:%d" % admin
        try:
            yield g
        finally:
            g.stop()


def test_cors_preflight_and_actual_requests(web):
    r = requests.options(web.u("/v1/orders"), timeout=scaled(5), headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert r.headers["Access-Control-Max-Age"] == "600"
    r = requests.get(web.u("/v1/users"), timeout=scaled(5),
                     headers={"Origin": "https://shop.example.com"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert "X-Cache" in r.headers["Access-Control-Expose-Headers"]
    r = requests.get(web.u("/v1/users"), timeout=scaled(5),
                     headers={"Origin": "https://evil.example.net"})
    assert r.status_code == 200
    assert not [k for k in r.headers if k.lower().startswith("access-control-")]


def test_cached_user_shaped_by_response_rules(web):
    requests.delete(web.admin_url + "/cache", timeout=scaled(5)).raise_for_status()
    first = requests.get(web.u("/v1/users/1"), timeout=scaled(5))
    second = requests.get(web.u("/v1/users/1"), timeout=scaled(5))
    assert first.headers["X-Cache"] == "MISS" and second.headers["X-Cache"] == "HIT"
    assert "Age" in second.headers
    want = {"id": 1, "name": "Ada Lovelace", "picture": "https://avatars.example.com/ada.png",
            "meta": {"api_version": 1}}
    assert first.json() == want and second.content == first.content


def test_order_body_edited_on_the_way_in(web):
    sent = {"item": "book", "qty": 2, "card": {"number": "4242", "cvc": "123"}, "debug": True}
    r = requests.post(web.u("/v1/orders"), json=sent, timeout=scaled(5))
    assert r.status_code == 200
    got = json.loads(r.json()["body"])
    assert got == {"item": "book", "card": {"number": "4242"}, "quantity": 2,
                   "meta": {"request_id": r.headers["X-Request-ID"], "source": "web"}}
