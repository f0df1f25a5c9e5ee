"""response_transform: edits on the way back to the client; a top-level
default inherited by every route, replaced by a route's own, switched off
with `off`."""

import requests

from conftest import scaled


def test_default_filter_inherited(tenv):
    gw = tenv
    r = requests.get(gw.u("/inherit/x"), timeout=scaled(5))
    assert r.status_code == 200
    assert r.headers.get("X-Default") == "yes"
    r = requests.get(gw.u("/t/1"), timeout=scaled(5))
    assert r.headers.get("X-Default") == "yes"  # route sets only request_transform


def test_default_filter_off(tenv):
    gw = tenv
    r = requests.get(gw.u("/off/x"), timeout=scaled(5))
    assert r.status_code == 200
    assert "X-Default" not in r.headers
    assert r.headers.get("X-Backend")  # the response itself is intact


def test_response_transform_overrides_default(tenv):
    gw = tenv
    r = requests.get(gw.u("/resp/x"), timeout=scaled(5),
                     headers={"X-Demo-Header": "X-Demo-Renamed: rv"})
    assert r.status_code == 200
    rid = r.headers["X-Request-ID"]
    assert r.headers.get("X-Resp-Added") == "r-" + rid
    assert r.headers.get("X-Set-Resp") == "s"
    assert "X-Backend" not in r.headers
    assert "X-Demo-Renamed" not in r.headers
    assert r.headers.get("X-Renamed") == "rv"
    # the route's own response_transform replaces the default one
    assert "X-Default" not in r.headers
