"""`portico validate FILE`: "FILE: ok" and exit 0, or file:line:col
messages (with "did you mean" where a key is close) and exit 1.

Columns are 1-based. For an unknown key the position is the key's; for a
bad value it is the value's.
"""

import os
import re
import subprocess

import pytest

from conftest import PORTICO, require_binaries, scaled

GOOD = """\
workers: 2
listeners:
  - name: public
    address: 127.0.0.1:18080
admin:
  address: 127.0.0.1:19901
limits:
  max_body_bytes: 1MiB
  header_timeout: 5s
access_log:
  path: off
upstreams:
  users:
    targets:
      - address: 127.0.0.1:19001
        weight: 3
      - address: 127.0.0.1:19002
    connect_timeout: 1s
    read_timeout: 30s
filters:
  response_transform:
    remove_headers: [Server]
routes:
  - name: users-v1
    match:
      hosts: [api.example.com, "*.example.com"]
      path_prefix: /v1/users
      methods: [GET, POST]
      headers: { X-Client: mobile }
      query: { version: "2" }
    priority: 1
    upstream: users
    strip_prefix: /v1
    timeout: 5s
    filters:
      request_transform:
        add_headers: { X-Request: "${request_id}" }
  - name: users-one
    match: { path_template: "/v2/users/{id}" }
    upstream: users
    rewrite: "/users/{id}"
    filters:
      response_transform: off
"""


def run_validate(path, cwd=None):
    require_binaries()
    p = subprocess.run([PORTICO, "validate", path], capture_output=True, text=True,
                       timeout=scaled(20), cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def write(tmp_path, text, name="cfg.yaml"):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_validate_ok(tmp_path):
    path = write(tmp_path, GOOD)
    rc, out, err = run_validate(path)
    assert rc == 0, (out, err)
    assert out.strip().splitlines()[-1].startswith("%s: ok" % path), out


def test_validate_ok_relative_name(tmp_path):
    write(tmp_path, GOOD, "rel.yaml")
    rc, out, err = run_validate("rel.yaml", cwd=str(tmp_path))
    assert rc == 0, err
    assert "rel.yaml: ok" in out


def test_version():
    require_binaries()
    p = subprocess.run([PORTICO, "version"], capture_output=True, text=True, timeout=scaled(10))
    assert p.returncode == 0
    assert re.search(r"\d+\.\d+", p.stdout + p.stderr), p.stdout


BASE = GOOD.splitlines()


def with_line(n, new):
    """BASE with 1-based line n replaced."""
    lines = list(BASE)
    lines[n - 1] = new
    return "\n".join(lines) + "\n"


def line_of(prefix, nth=1):
    """1-based number of the nth line of BASE starting with prefix (after indentation)."""
    k = 0
    for i, l in enumerate(BASE, 1):
        if l.strip().startswith(prefix):
            k += 1
            if k == nth:
                return i
    raise KeyError(prefix)


L_LISTENERS = line_of("listeners:")
L_UPSTREAM = line_of("upstream: users")
L_TIMEOUT = line_of("timeout: 5s")
L_HEADER_TIMEOUT = line_of("header_timeout:")
L_MAXBODY = line_of("max_body_bytes:")
L_NAME2 = line_of("- name: users-one")
L_WEIGHT = line_of("weight: 3")
L_STRIP = line_of("strip_prefix:")
L_LISTENER_ADDR = line_of("address: 127.0.0.1:18080")
L_WORKERS = line_of("workers:")

# (id, text, line, col, substrings that must appear in that message)
BAD = [
    ("unknown-top-level-key", with_line(L_LISTENERS, "listners:"), L_LISTENERS, 1,
     ["did you mean", "listeners"]),
    ("unknown-route-key", with_line(L_UPSTREAM, "    upstrem: users"), L_UPSTREAM, 5,
     ["did you mean", "upstream"]),
    ("unknown-limits-key", with_line(L_HEADER_TIMEOUT, "  header_timout: 5s"), L_HEADER_TIMEOUT, 3,
     ["did you mean", "header_timeout"]),
    ("bad-duration", with_line(L_TIMEOUT, "    timeout: 5parsecs"), L_TIMEOUT, 14, ["5parsecs"]),
    ("bad-size", with_line(L_MAXBODY, "  max_body_bytes: lots"), L_MAXBODY, 19, ["lots"]),
    ("bad-underscores-mode", with_line(L_MAXBODY, "  headers_with_underscores: keep"), L_MAXBODY,
     29, ["drop", "reject", "allow", "keep"]),
    ("dangling-upstream", with_line(L_UPSTREAM, "    upstream: userz"), L_UPSTREAM, 15,
     ["userz", "did you mean", "users"]),
    ("duplicate-route-name", with_line(L_NAME2, "  - name: users-v1"), L_NAME2, 11,
     ["users-v1"]),
    ("negative-weight", with_line(L_WEIGHT, "        weight: -3"), L_WEIGHT, 17, []),
    ("wrong-type-workers", with_line(L_WORKERS, "workers: [1, 2]"), L_WORKERS, 10, []),
    ("bad-address", with_line(L_LISTENER_ADDR, "    address: 127.0.0.1:notaport"),
     L_LISTENER_ADDR, 14, []),
    ("tls-without-certificates", GOOD.replace("    address: 127.0.0.1:18080\n",
                                              "    address: 127.0.0.1:18080\n    tls: {}\n"),
     L_LISTENER_ADDR + 1, 10, ["`tls` needs `certificates`"]),
    ("bad-retry-condition",
     GOOD.replace("    read_timeout: 30s\n",
                  "    read_timeout: 30s\n    retries: {attempts: 2, on: [rset, 503]}\n"),
     line_of("read_timeout: 30s") + 1, 33, ["unknown retry condition", "did you mean `reset`"]),
    ("split-unknown-upstream", with_line(L_UPSTREAM, "    split: [{upstream: userz, weight: 1}]"),
     L_UPSTREAM, 24, ["userz", "did you mean", "users"]),
    ("strip-and-rewrite", GOOD.replace("    strip_prefix: /v1\n",
                                       "    strip_prefix: /v1\n    rewrite: /x\n"),
     None, None, []),
]


@pytest.mark.parametrize("name,text,line,col,needles", BAD, ids=[b[0] for b in BAD])
def test_validate_bad(tmp_path, name, text, line, col, needles):
    path = write(tmp_path, text)
    rc, out, err = run_validate(path)
    assert rc == 1, (rc, out, err)
    assert not out.strip().endswith(": ok"), out
    lines = [l for l in err.splitlines() if l.strip()]
    pat = re.compile(r"^%s:(\d+):(\d+): " % re.escape(path))
    diag = [l for l in lines if pat.match(l)]
    assert diag, "no file:line:col diagnostics in stderr:\n" + err
    if line is None:
        return
    want = "%s:%d:%d: " % (path, line, col)
    hit = [l for l in diag if l.startswith(want)]
    assert hit, "want a message at %s, got:\n%s" % (want, err)
    msg = hit[0].lower()
    for n in needles:
        assert n.lower() in msg, "%r not in %r" % (n, hit[0])


def test_validate_reports_every_error(tmp_path):
    text = with_line(L_LISTENERS, "listners:")
    text = text.replace("    upstream: users\n    strip_prefix", "    upstrem: users\n    strip_prefix")
    path = write(tmp_path, text)
    rc, _, err = run_validate(path)
    assert rc == 1
    pat = re.compile(r"^%s:(\d+):(\d+): " % re.escape(path))
    diag_lines = {int(pat.match(l).group(1)) for l in err.splitlines() if pat.match(l)}
    assert L_LISTENERS in diag_lines and L_UPSTREAM in diag_lines, err


def test_validate_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "workers: 2\nlisteners:\n  - name: [unclosed\nroutes: []\n")
    rc, out, err = run_validate(path)
    assert rc == 1
    assert re.search(r"^%s:\d+:\d+: " % re.escape(path), err, re.M), err


def test_validate_missing_file(tmp_path):
    path = os.path.join(str(tmp_path), "nope.yaml")
    rc, out, err = run_validate(path)
    assert rc == 1
    assert "nope.yaml" in err


def test_validate_env_var_unset(tmp_path):
    text = GOOD.replace("address: 127.0.0.1:19001", 'address: "${PORTICO_TEST_SURELY_UNSET_VAR}"')
    path = write(tmp_path, text)
    rc, _, err = run_validate(path)
    assert rc == 1
    assert "PORTICO_TEST_SURELY_UNSET_VAR" in err


def test_validate_env_var_set(tmp_path):
    text = GOOD.replace("address: 127.0.0.1:19001", 'address: "${PORTICO_TEST_TARGET}"')
    path = write(tmp_path, text)
    require_binaries()
    p = subprocess.run([PORTICO, "validate", path], capture_output=True, text=True,
                       timeout=scaled(20),
                       env=dict(os.environ, PORTICO_TEST_TARGET="127.0.0.1:19003"))
    assert p.returncode == 0, p.stderr
