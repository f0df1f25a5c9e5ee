"""Path rules (issue 13 item 1): what a backend reads differently from the
router is refused or made one meaning before routing.

With a route `/admin` (its filter marks the request) and a route `/`,
each bypass string of the issue, and its encoded, double-encoded and
mixed-case variants, either gets a 400 naming the rule or is routed and
forwarded identically: the backend sees the path the router matched on,
under every setting of limits.escaped_slashes and limits.semicolons.
Requests are raw bytes: `requests` and curl rewrite paths themselves."""

import os
import re
import subprocess

import pytest

from conftest import (PORTICO, Gateway, backend, free_port, make_config, require_binaries, scaled,
                      upstream)
from test_path_normalization import get, seen  # raw request; (backend path, admin route ran)


def cfg(port, bport, limits=None, ci=False):
    admin_match = {"path_prefix": "/admin"}
    if ci:
        admin_match["case_sensitive"] = False
    return make_config(
        port, {"pub": upstream(bport), "adm": upstream(bport)}, limits=limits,
        routes=[
            {"name": "admin", "match": admin_match, "upstream": "adm",
             "filters": {"request_transform": {"set_headers": {"X-Admin-Checked": "yes"}}}},
            {"name": "api", "match": {"path_prefix": "/API", "case_sensitive": False},
             "upstream": "pub", "strip_prefix": "/API"},
            {"name": "files", "match": {"path_regex": "^/files/[a-z]+$", "case_sensitive": False},
             "upstream": "pub", "rewrite": "/rewritten"},
            {"name": "rest", "match": {"path_regex": "^/"}, "upstream": "pub"},
        ])


SETTINGS = {
    "default": None,  # escaped_slashes: reject, semicolons: reject
    "keep": {"escaped_slashes": "keep", "semicolons": "keep"},
    "decode": {"escaped_slashes": "decode"},
    "ci": None,
}


@pytest.fixture(scope="module")
def gws(tmp_path_factory):
    with backend("pr") as b:
        started = {}
        try:  # a gateway that fails to start must not leave the others running
            for name, limits in SETTINGS.items():
                started[name] = Gateway(cfg(free_port(), b.port, limits, ci=name == "ci"),
                                        tmp_path_factory.mktemp(name))
            yield started
        finally:
            for g in started.values():
                g.stop()


DOT = "dot segment with parameters"
CTL = "percent-encoded control character"
ESC = "escaped slash"
SEMI = "semicolon"
BSL = "backslash"

# target → what each of default / keep / decode gives: a rule's 400, or
# (path at the backend, whether the admin route took it).
CASES = [
    # the bypass strings
    (b"/..;/admin", DOT, DOT, DOT),
    (b"/admin;x", SEMI, ("/admin;x", False), SEMI),
    (b"/admin%2fx", ESC, ("/admin%2fx", False), ("/admin/x", True)),
    (b"/admin%2Fsecret", ESC, ("/admin%2Fsecret", False), ("/admin/secret", True)),
    (b"/admin\\x", BSL, BSL, BSL),
    (b"/admin%00", CTL, CTL, CTL),
    (b"/%0aadmin", CTL, CTL, CTL),
    # encoded and mixed-case variants
    (b"/%2e%2e;/admin", DOT, DOT, DOT),
    (b"/public/%2E.;x/admin", DOT, DOT, DOT),
    (b"/.;x/admin", DOT, DOT, DOT),
    (b"/x%2f..;/admin", ESC, DOT, DOT),
    (b"/admin%5Cx", ESC, ("/admin%5Cx", False), ("/admin/x", True)),
    (b"/admin%5cx", ESC, ("/admin%5cx", False), ("/admin/x", True)),
    (b"/x%2F..%2Fadmin", ESC, ("/x%2F..%2Fadmin", False), ("/admin", True)),
    (b"/%0A", CTL, CTL, CTL),
    (b"/x%1f", CTL, CTL, CTL),
    (b"/x%7F", CTL, CTL, CTL),
    (b"/x%7f", CTL, CTL, CTL),
    (b"/admin;jsessionid=1", SEMI, ("/admin;jsessionid=1", False), SEMI),
    # double-encoded: an escaped `%`, decoded at most once, never twice
    (b"/x%252Fadmin", ("/x%252Fadmin", False), ("/x%252Fadmin", False), ("/x%252Fadmin", False)),
    (b"/x%255Cadmin", ("/x%255Cadmin", False), ("/x%255Cadmin", False), ("/x%255Cadmin", False)),
    (b"/admin/%2500", ("/admin/%2500", True), ("/admin/%2500", True), ("/admin/%2500", True)),
    (b"/%252e%252e;/admin", SEMI, ("/%252e%252e;/admin", False), SEMI),
    # an escaped `;` is data, not a parameter
    (b"/admin%3Bx", ("/admin%3Bx", False), ("/admin%3Bx", False), ("/admin%3Bx", False)),
    # still normalised after the rules
    (b"/admin/%2e/x", ("/admin/x", True), ("/admin/x", True), ("/admin/x", True)),
]


@pytest.mark.parametrize("target,default,keep,decode", CASES,
                         ids=[c[0].decode("latin-1") for c in CASES])
def test_rule_or_one_meaning(gws, target, default, keep, decode):
    for name, want in (("default", default), ("keep", keep), ("decode", decode)):
        r = get(gws[name], target)
        if isinstance(want, str):
            assert r.status == 400, (name, r)
            err = r.json()["error"]
            assert "path rule" in err and want in err, (name, err)
        else:
            assert r.status == 200, (name, r)
            assert seen(r) == want, name


@pytest.mark.parametrize("target", [b"/admin\x01", b"/a\x7f", b"/a\tb"])
def test_raw_control_bytes_are_400(gws, target):
    for name in ("default", "keep", "decode"):
        assert get(gws[name], target).status == 400, name


def test_escaped_slash_is_kept_with_keep(gws):
    r = get(gws["keep"], b"/public/a%2Fb/../c")
    assert r.status == 200, r
    assert seen(r) == ("/public/c", False)


def test_case_sensitive_false(gws):
    # A case-sensitive route keeps its case ...
    r = get(gws["default"], b"/ADMIN/x")
    assert r.status == 200 and seen(r) == ("/ADMIN/x", False)
    # ... a case-insensitive one matches any case and forwards the path as sent.
    for target in (b"/ADMIN/x", b"/Admin", b"/aDmIn/X"):
        r = get(gws["ci"], target)
        assert r.status == 200, r
        assert seen(r) == (target.decode(), True)
    assert seen(get(gws["ci"], b"/ADMINx")) == ("/ADMINx", False)
    # strip_prefix on such a route strips the prefix in whatever case it came.
    for target in (b"/api/x", b"/API/x", b"/Api/x"):
        assert seen(get(gws["default"], target)) == ("/x", False), target
    # path_regex compiles with PCRE2_CASELESS.
    assert seen(get(gws["default"], b"/FILES/Abc")) == ("/rewritten", False)


def test_refusal_is_json_and_keeps_the_connection_policy(gws):
    r = get(gws["default"], b"/admin;x")
    assert r.status == 400
    ctype = [v for k, v in r.headers if k.lower() == "content-type"]
    assert ctype and ctype[0].startswith("application/json"), r.headers
    assert r.json()["error"] == "path rule: semicolon (limits.semicolons)"


# ---- config errors ----

BASE = """\
listeners:
  - name: public
    address: 127.0.0.1:18080
limits:
  escaped_slashes: reject
  semicolons: reject
upstreams:
  u:
    targets:
      - address: 127.0.0.1:19001
routes:
  - name: r
    match:
      path_prefix: /a
      case_sensitive: true
    upstream: u
"""


def validate(tmp_path, text):
    require_binaries()
    path = os.path.join(str(tmp_path), "cfg.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([PORTICO, "validate", path], capture_output=True, text=True,
                       timeout=scaled(20))
    return path, p.returncode, p.stderr


@pytest.mark.parametrize("old,new,line,col,needles", [
    ("escaped_slashes: reject", "escaped_slashes: decod", 5, 20,
     ["`reject`, `keep` or `decode`", "did you mean `decode`"]),
    ("semicolons: reject", "semicolons: rejekt", 6, 15, ["`reject` or `keep`", "did you mean `reject`"]),
    ("semicolons: reject", "semicolon: reject", 6, 3, ["did you mean `semicolons`"]),
    ("case_sensitive: true", "case_sensitive: maybe", 15, 23, ["case_sensitive"]),
    ("case_sensitive: true", "case_sensitiv: true", 15, 7, ["did you mean `case_sensitive`"]),
    ("path_prefix: /a", "path_prefix: /a;b", 14, 20, ["can never match", "semicolon"]),
    ("path_prefix: /a", "path_prefix: /a%2Fb", 14, 20, ["can never match", "escaped slash"]),
])
def test_config_errors(tmp_path, old, new, line, col, needles):
    path, rc, err = validate(tmp_path, BASE.replace(old, new))
    assert rc == 1, err
    want = "%s:%d:%d: " % (path, line, col)
    hit = [l for l in err.splitlines() if l.startswith(want)]
    assert hit, "want a message at %s, got:\n%s" % (want, err)
    for n in needles:
        assert n in hit[0], (n, hit[0])


def test_config_decode_route_with_escaped_slash_can_never_match(tmp_path):
    text = BASE.replace("escaped_slashes: reject", "escaped_slashes: decode").replace(
        "path_prefix: /a", "path_prefix: /a%2Fb")
    _, rc, err = validate(tmp_path, text)
    assert rc == 1 and re.search(r"can never match: `limits.escaped_slashes: decode`", err), err


def test_config_keep_allows_them(tmp_path):
    text = BASE.replace("escaped_slashes: reject", "escaped_slashes: keep").replace(
        "semicolons: reject", "semicolons: keep").replace("path_prefix: /a", "path_prefix: /a;b%2Fc")
    _, rc, err = validate(tmp_path, text)
    assert rc == 0, err
