"""Path normalisation before routing (limits.normalize_path, merge_slashes).

Without it `/public/../admin/x` matched the `/public` route (no filters)
while a backend that resolves dot segments served `/admin/x`, past the
admin route's rules. Now routing, filters and the upstream all see one
spelling: dot segments resolved, unreserved escapes decoded, slashes
merged; a path that climbs above the root is a 400."""

import pytest

from conftest import (Gateway, backend, free_port, make_config, parse_response, raw_ex, scaled,
                      upstream)


def cfg(port, bport, **limits):
    return make_config(
        port, {"pub": upstream(bport), "adm": upstream(bport)}, limits=limits or None,
        routes=[
            {"name": "public", "match": {"path_prefix": "/public"}, "upstream": "pub"},
            {"name": "admin", "match": {"path_prefix": "/admin"}, "upstream": "adm",
             "filters": {"request_transform": {"set_headers": {"X-Admin-Checked": "yes"}}}},
        ])


@pytest.fixture(scope="module")
def gws(tmp_path_factory):
    with backend("pn") as b:
        started = {}
        try:  # a gateway that fails to start must not leave the others running
            for name, limits in (("on", {}), ("off", {"normalize_path": False}),
                                 ("keep", {"merge_slashes": False}),
                                 ("escaped_keep", {"escaped_slashes": "keep"})):
                started[name] = Gateway(cfg(free_port(), b.port, **limits),
                                        tmp_path_factory.mktemp(name))
            yield started
        finally:
            for g in started.values():
                g.stop()


def get(gw, target):
    data, _ = raw_ex(gw.port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                     timeout=scaled(5))
    return parse_response(data)


def seen(r):
    """(path the backend got, whether the admin route's filter ran)."""
    doc = r.json()
    return doc["path"], any(k.lower() == "x-admin-checked" for k, _ in doc["headers"])


@pytest.mark.parametrize("target,path", [
    (b"/public/../admin/x", "/admin/x"),
    (b"/public/%2e%2e/admin/x", "/admin/x"),
    (b"/public/%2E%2e/admin/x?q=1", "/admin/x"),
    (b"/public//../admin/x", "/admin/x"),
    (b"/public/./../admin/./x", "/admin/x"),
    (b"//admin//x", "/admin/x"),
    (b"/%61dmin/x", "/admin/x"),
])
def test_one_spelling_for_routing_and_upstream(gws, target, path):
    r = get(gws["on"], target)
    assert r.status == 200, r
    assert seen(r) == (path, True)


def test_encoded_slash_is_refused_by_default(gws):
    """limits.escaped_slashes: reject (the default): a backend that decodes
    `%2F` would read another path than the one routed. More in
    test_path_rules.py."""
    r = get(gws["on"], b"/public/a%2Fb/../c")
    assert r.status == 400, r
    assert "escaped slash" in r.json()["error"]


def test_encoded_slash_is_kept_with_keep(gws):
    """escaped_slashes: keep: `%2F` is data inside one segment, routed and
    forwarded as sent."""
    r = get(gws["escaped_keep"], b"/public/a%2Fb/../c")
    assert r.status == 200, r
    assert seen(r) == ("/public/c", False)


@pytest.mark.parametrize("target", [b"/..", b"/../etc/passwd", b"/public/../../etc/passwd",
                                    b"/%2e%2e/admin",
                                    # a broken escape could pair with a decoded one at the
                                    # next hop: %%32%65 would become %2e there
                                    b"/public/%%32%65%%32%65/admin/x", b"/public/%zz", b"/a%"])
def test_climbing_above_the_root_or_a_broken_escape_is_400(gws, target):
    r = get(gws["on"], target)
    assert r.status == 400, r
    assert "invalid path" in r.json()["error"]


def test_a_rewrite_cannot_put_dot_segments_back(tmp_path):
    """A regex capture can be part of a segment, so `..` even after the
    request path was normalised: the rewritten path is normalised too."""
    with backend("rw") as b:
        gw = Gateway(make_config(free_port(), {"u": upstream(b.port)}, routes=[
            {"name": "pdf", "match": {"path_regex": "^/reports/(?<name>[^/]+)\\.pdf$"},
             "upstream": "u", "rewrite": "/static/pdf/{name}/file.pdf"},
            {"name": "top", "match": {"path_regex": "^/top/(?<name>[^/]+)\\.x$"},
             "upstream": "u", "rewrite": "/{name}/file"}]), tmp_path)
        try:
            r = get(gw, b"/reports/...pdf")
            assert r.status == 200, r
            assert r.json()["path"] == "/static/file.pdf"  # not /static/pdf/../file.pdf
            r = get(gw, b"/top/...x")
            assert r.status == 400, r
            assert "invalid path after rewrite" in r.json()["error"]
        finally:
            gw.stop()


def test_normalize_path_false_routes_as_sent(gws):
    r = get(gws["off"], b"/public/../admin/x")
    assert r.status == 200, r
    assert seen(r) == ("/public/../admin/x", False)


def test_merge_slashes_false_keeps_them(gws):
    r = get(gws["keep"], b"/admin//x/./y")
    assert r.status == 200, r
    assert seen(r) == ("/admin//x/y", True)
