"""request_transform: add/set/remove/rename on the way to the upstream,
with ${request_id}, ${remote_addr}, ${path.<param>}, ${method}, ${path}
templates; runs only on routes that name it. Environment values are
literal: only the file's own text is a template."""

import json

import requests

from conftest import Gateway, backend, echo_headers, one_route, scaled


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


def test_environment_values_in_header_templates_are_literal(tmp_path):
    """A secret holding `$$` or `${method}` is sent as it is: only the
    file's own text is a template."""
    with backend("env") as b:
        cfg = one_route(b.port)
        cfg["routes"][0]["filters"] = {"request_transform": {"set_headers": {
            "Authorization": "Bearer ${PT_TEST_TOKEN}",
            "X-Both": "${method}:${PT_TEST_TOKEN}:$${x}"}}}
        gw = Gateway(cfg, tmp_path, env_extra={"PT_TEST_TOKEN": "s3cr$$t${method}"})
        try:
            doc = requests.get(gw.u("/echo"), timeout=scaled(5)).json()
            assert echo_headers(doc, "Authorization") == ["Bearer s3cr$$t${method}"]
            assert echo_headers(doc, "X-Both") == ["GET:s3cr$$t${method}:${x}"]
        finally:
            gw.stop()


def test_consumer_template_names_the_authenticated_caller(tmp_path):
    """`${consumer}` in a header value and in a JSON body field is the
    consumer the route's auth filter identified (empty when anonymous), not
    an environment variable."""
    with backend("who") as b:
        cfg = one_route(b.port)
        cfg["consumers"] = [{"name": "alice", "api_keys": ["k-alice"]}]
        cfg["routes"][0]["filters"] = {
            "key_auth": {"optional": True},
            "request_transform": {"set_headers": {"X-Who": "[${consumer}]"},
                                  "add_body_fields": {"consumer": "${consumer}"}}}
        gw = Gateway(cfg, tmp_path)
        try:
            r = requests.post(gw.u("/echo"), json={"a": 1}, headers={"X-API-Key": "k-alice"},
                              timeout=scaled(5))
            assert r.status_code == 200, r.text
            doc = r.json()
            assert echo_headers(doc, "X-Who") == ["[alice]"]
            assert json.loads(doc["body"]) == {"a": 1, "consumer": "alice"}
            doc = requests.post(gw.u("/echo"), json={"a": 1}, timeout=scaled(5)).json()
            assert echo_headers(doc, "X-Who") == ["[]"]
            assert json.loads(doc["body"]) == {"a": 1, "consumer": ""}
        finally:
            gw.stop()
