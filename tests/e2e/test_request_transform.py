"""request_transform: add/set/remove/rename on the way to the upstream,
with ${request_id}, ${remote_addr}, ${path.<param>}, ${method}, ${path}
templates; runs only on routes that name it."""

import requests

from conftest import echo_headers, scaled


def test_request_transform(tenv):
    gw = tenv
    r = requests.get(gw.u("/t/42"), timeout=scaled(5), headers={
        "X-Set": "old", "X-Remove-Me": "secret", "X-Old": "renamed-value"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    rid = r.headers["X-Request-ID"]
    assert echo_headers(doc, "X-Added") == ["v1"]
    assert echo_headers(doc, "X-Rid") == [rid]
    assert echo_headers(doc, "X-Remote") == ["127.0.0.1"]
    assert echo_headers(doc, "X-Param") == ["item-42"]
    assert echo_headers(doc, "X-Meth") == ["GET"]
    assert echo_headers(doc, "X-Path") == ["/t/42"]
    assert echo_headers(doc, "X-Set") == ["new"]
    assert echo_headers(doc, "X-Remove-Me") == []
    assert echo_headers(doc, "X-Old") == []
    assert echo_headers(doc, "X-New") == ["renamed-value"]


def test_request_transform_set_when_absent(tenv):
    gw = tenv
    r = requests.get(gw.u("/t/7"), timeout=scaled(5))
    doc = r.json()
    assert echo_headers(doc, "X-Set") == ["new"]
    assert echo_headers(doc, "X-Param") == ["item-7"]
    assert echo_headers(doc, "X-New") == []


def test_transforms_do_not_leak_between_routes(tenv):
    gw = tenv
    r = requests.get(gw.u("/inherit/x"), timeout=scaled(5), headers={"X-Remove-Me": "keep"})
    doc = r.json()
    assert echo_headers(doc, "X-Added") == []
    assert echo_headers(doc, "X-Remove-Me") == ["keep"]
    assert "X-Resp-Added" not in r.headers
