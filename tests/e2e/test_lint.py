"""`portico lint FILE [--strict]`: the file is loaded as `validate` loads it
(errors are errors: exit 1), then each anti-pattern rule warns with
"file:line:col: warning: <message> [rule-name]" at the node concerned.
Exit 0 with warnings, 1 with --strict when there is any.

One config per rule, each caught at its position with its rule name; one
that triggers none; the shipped examples lint clean. (The body-transform
rule needs body rules the loader does not accept yet: it is covered by
tests/unit/test_lint.c on the YAML tree, and here by the loader's error.)
"""

import glob
import os
import re
import subprocess

import pytest

from conftest import PORTICO, ROOT, require_binaries, scaled

BASE = """\
listeners: [{ address: "127.0.0.1:18080" }]
access_log: { path: off }
upstreams:
  users:
    targets: [127.0.0.1:19001, 127.0.0.1:19002]
  orders:
    targets: [127.0.0.1:19003, 127.0.0.1:19004]
"""
# BASE is 7 lines: a config's own lines start at 8.

CLEAN = BASE + """\
filters:
  response_transform: { remove_headers: [Server] }
routes:
  - name: users
    match: { path_prefix: /v1/users }
    upstream: users
    timeout: 30s
    filters:
      key_auth: {}
  - name: users-health
    match: { path: /healthz }
    upstream: users
  - name: orders
    match: { path_prefix: /orders }
    upstream: orders
    filters:
      request_transform: { add_headers: { X-A: "1" }, remove_headers: [X-B] }
      response_transform: { set_headers: { X-C: "2" } }
"""

LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): warning: (?P<msg>.*) "
                  r"\[(?P<rule>[a-z-]+)\]$")


def lint(tmp_path, text, *flags):
    require_binaries()
    path = os.path.join(str(tmp_path), "cfg.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([PORTICO, "lint", *flags, path], capture_output=True, text=True,
                       timeout=scaled(20))
    warnings = []
    for l in p.stderr.splitlines():
        m = LINE.match(l)
        assert m, "not a warning line: %r" % l
        assert m["file"] == path
        warnings.append((int(m["line"]), int(m["col"]), m["rule"], m["msg"]))
    return p.returncode, warnings, p.stdout


def test_clean_config_has_no_warnings(tmp_path):
    rc, warnings, out = lint(tmp_path, CLEAN)
    assert (rc, warnings) == (0, [])
    assert "ok, no warnings" in out
    rc, warnings, _ = lint(tmp_path, CLEAN, "--strict")
    assert (rc, warnings) == (0, [])


def test_default_filter_switched_off_on_half_the_routes(tmp_path):
    text = BASE + """\
filters:
  response_transform: { remove_headers: [Server] }
routes:
  - { name: a, match: { path_prefix: /a }, upstream: users, filters: { response_transform: off } }
  - { name: b, match: { path_prefix: /b }, upstream: orders }
"""
    rc, warnings, _ = lint(tmp_path, text)
    assert rc == 0
    assert [(w[0], w[1], w[2]) for w in warnings] == [(9, 3, "default-filter-mostly-off")]
    assert "1 of 2 routes" in warnings[0][3]
    # Off on fewer than half: fine.
    text2 = text + "  - { name: c, match: { path_prefix: /c }, upstream: orders }\n"
    assert lint(tmp_path, text2)[1] == []


def test_body_rules_without_route_limit_warn(tmp_path):
    # Body rules load; a route with them and no max_body_bytes is flagged.
    text = BASE + """\
routes:
  - name: a
    match: { path_prefix: /a }
    upstream: users
    filters:
      request_transform: { rename_body_fields: { a: b } }
"""
    require_binaries()
    path = os.path.join(str(tmp_path), "cfg.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([PORTICO, "lint", path], capture_output=True, text=True,
                       timeout=scaled(20))
    assert "body-transform-without-limit" in p.stdout + p.stderr
    assert "rename_body_fields" in p.stdout + p.stderr
    assert "not supported" not in p.stdout + p.stderr
    text2 = text.replace("    upstream: users\n", "    upstream: users\n    max_body_bytes: 64KiB\n")
    with open(path, "w") as f:
        f.write(text2)
    p = subprocess.run([PORTICO, "lint", path], capture_output=True, text=True,
                       timeout=scaled(20))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "body-transform-without-limit" not in p.stdout + p.stderr


def test_unversioned_path_beside_a_versioned_sibling(tmp_path):
    text = BASE + """\
routes:
  - name: v1
    match: { path_prefix: /v1/users }
    upstream: users
  - name: legacy
    match: { path_prefix: /users }
    upstream: users
  - name: health
    match: { path: /healthz }
    upstream: users
  - name: orders
    match: { path_prefix: /orders }
    upstream: orders
"""
    rc, warnings, _ = lint(tmp_path, text)
    assert rc == 0
    # Only `legacy`: /healthz is an exact path, orders has another upstream.
    assert [(w[0], w[1], w[2]) for w in warnings] == [(13, 27, "unversioned-path")]
    assert "route `legacy`" in warnings[0][3] and "route `v1` (line 10)" in warnings[0][3]


def test_version_segment_at_the_end_counts(tmp_path):
    text = BASE + """\
routes:
  - { name: a, match: { path_prefix: /api/v2 }, upstream: users }
  - { name: b, match: { path_template: "/api/v10/{id}" }, upstream: users }
  - { name: c, match: { path_prefix: /api/v2x }, upstream: users }
"""
    rc, warnings, _ = lint(tmp_path, text)
    assert [(w[0], w[2]) for w in warnings] == [(11, "unversioned-path")]


def test_single_target_without_active_health_check(tmp_path):
    text = BASE + """\
  lonely:
    targets: [127.0.0.1:19005]
  checked:
    targets: [127.0.0.1:19006]
    health_check: { active: { path: /healthz } }
routes:
  - { name: a, match: { path_prefix: /a }, upstream: lonely }
  - { name: b, match: { path_prefix: /b }, upstream: checked }
"""
    rc, warnings, _ = lint(tmp_path, text)
    assert rc == 0
    assert [(w[0], w[1], w[2]) for w in warnings] == [
        (8, 3, "single-target-without-health-check")]
    assert "upstream `lonely`" in warnings[0][3]


def test_long_timeout_without_retries(tmp_path):
    text = BASE.replace("    targets: [127.0.0.1:19003, 127.0.0.1:19004]\n",
                        "    targets: [127.0.0.1:19003, 127.0.0.1:19004]\n"
                        "    retries: { attempts: 2 }\n") + """\
routes:
  - { name: slow, match: { path_prefix: /slow }, upstream: users, timeout: 61s }
  - { name: ok, match: { path_prefix: /ok }, upstream: users, timeout: 60s }
  - { name: retried, match: { path_prefix: /r }, upstream: orders, timeout: 5m }
"""
    rc, warnings, _ = lint(tmp_path, text)
    assert rc == 0
    assert [(w[0], w[1], w[2]) for w in warnings] == [(10, 76, "long-timeout-without-retries")]
    assert "route `slow`" in warnings[0][3]


def at(text, line_has, word):
    """(line, col) of `word` on the first line of `text` containing `line_has`."""
    for n, l in enumerate(text.splitlines(), 1):
        if line_has in l:
            return n, l.index(word) + 1
    raise AssertionError(line_has)


def test_long_timeout_inherited_from_the_upstream_and_split_sides(tmp_path):
    text = BASE.replace("    targets: [127.0.0.1:19003, 127.0.0.1:19004]\n",
                        "    targets: [127.0.0.1:19003, 127.0.0.1:19004]\n"
                        "    retries: { attempts: 2 }\n"
                        "    read_timeout: 5m\n"
                        "  slow:\n"
                        "    targets: [127.0.0.1:19005, 127.0.0.1:19006]\n"
                        "    read_timeout: 90s\n") + """\
routes:
  - { name: inherits, match: { path_prefix: /i }, upstream: slow }
  - { name: capped, match: { path_prefix: /c }, upstream: slow, timeout: 10s }
  - { name: retried, match: { path_prefix: /r }, upstream: orders }
  - name: canary
    match: { path_prefix: /s }
    split: [{ upstream: users, weight: 1 }, { upstream: slow, weight: 9 }]
  - name: canary-long
    match: { path_prefix: /l }
    timeout: 2m
    split: [{ upstream: orders, weight: 1 }, { upstream: users, weight: 9 }]
"""
    rc, warnings, _ = lint(tmp_path, text)
    assert rc == 0
    got = [(w[0], w[1], w[2]) for w in warnings]
    rule = "long-timeout-without-retries"
    assert got == [
        at(text, "name: inherits", "slow") + (rule,),        # inherits read_timeout 90s
        at(text, "{ upstream: slow, weight: 9", "slow, weight: 9")
        + (rule,),                                           # a split side inheriting it
        at(text, "timeout: 2m", "2m") + (rule,),             # the route's own, for side users
    ], warnings
    assert "route `inherits`" in warnings[0][3] and "read_timeout: 90s" in warnings[0][3]
    assert "route `canary`" in warnings[1][3] and "upstream `slow`" in warnings[1][3]
    assert "route `canary-long`" in warnings[2][3] and "upstream `users`" in warnings[2][3]


def test_unauthenticated_route_under_an_authenticated_prefix(tmp_path):
    text = BASE + """\
routes:
  - name: admin
    match: { path_prefix: /api/admin }
    upstream: users
    filters:
      key_auth: {}
  - name: public
    match: { path_prefix: /api/public }
    upstream: users
  - name: other-host
    match: { path_prefix: /api/x, hosts: [b.example.com] }
    upstream: users
  - name: v1-health
    match: { path: /v1/health }
    upstream: users
  - name: v1-users
    match: { path: /v1/users }
    upstream: users
    filters:
      jwt: { secret: "0123456789abcdef0123456789abcdef" }
"""
    rc, warnings, _ = lint(tmp_path, text)
    assert rc == 0
    # `other-host` shares the segment and (no hosts on admin) its host too;
    # /v1/health and /v1/users group by `health` and `users`, not `v1`.
    assert [(w[0], w[1], w[2]) for w in warnings] == [
        (15, 27, "unauthenticated-sibling"), (18, 27, "unauthenticated-sibling")]
    assert "route `admin` (line 10)" in warnings[0][3] and "`key_auth`" in warnings[0][3]
    assert "`/api`" in warnings[0][3]


def test_more_than_three_transforms_on_a_route(tmp_path):
    text = BASE + """\
filters:
  response_transform: { remove_headers: [Server], add_headers: { X-A: "1" } }
routes:
  - name: busy
    match: { path_prefix: /busy }
    upstream: users
    filters:
      request_transform: { set_headers: { X-B: "2" }, add_headers: { X-C: "3" } }
  - name: three
    match: { path_prefix: /three }
    upstream: users
    filters:
      request_transform: { set_headers: { X-B: "2" }, remove_headers: [] }
"""
    rc, warnings, _ = lint(tmp_path, text)
    assert rc == 0
    # busy: 2 inherited response + 2 own request = 4; three: 2 + 1 (an
    # empty list is no transform) = 3.
    assert [(w[0], w[1], w[2]) for w in warnings] == [(11, 11, "too-many-transforms")]
    assert "4 transforms" in warnings[0][3]


def test_strict_fails_on_any_warning(tmp_path):
    text = BASE + """\
  lonely: { targets: [127.0.0.1:19005] }
routes:
  - { name: a, match: { path_prefix: /a }, upstream: lonely }
"""
    rc, warnings, out = lint(tmp_path, text)
    assert rc == 0 and len(warnings) == 1 and "1 warning" in out
    rc, warnings, out = lint(tmp_path, text, "--strict")
    assert rc == 1 and len(warnings) == 1 and "--strict" in out


def test_config_errors_exit_1(tmp_path):
    require_binaries()
    path = os.path.join(str(tmp_path), "bad.yaml")
    with open(path, "w") as f:
        f.write(BASE + "routes:\n  - { name: a, upstream: nope }\n")
    p = subprocess.run([PORTICO, "lint", path], capture_output=True, text=True,
                       timeout=scaled(20))
    assert p.returncode == 1
    assert re.search(r"bad\.yaml:9:\d+: .*nope", p.stderr), p.stderr


@pytest.mark.parametrize("example", sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml"))),
                         ids=os.path.basename)
def test_examples_lint_clean(example):
    require_binaries()
    # examples/edge.yaml names the demo certificates `make run` makes.
    subprocess.run([os.path.join(ROOT, "scripts", "demo-certs.sh")], check=True,
                   capture_output=True, timeout=scaled(60))
    p = subprocess.run([PORTICO, "lint", "--strict", example], capture_output=True, text=True,
                       timeout=scaled(20), cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
