"""ext_auth (forward authentication) end to end: a real gateway in front of
a demo backend, with a small Python auth service on its own port answering
by path: 200 with identity fields, 401 with a challenge and a body, 403
with JSON, 302 to a login page, 500, an answer held until released (for
timeouts and hang-ups). Checks what the auth service is sent, what the
upstream and the client get, and that hang-ups and timeouts leave the
gateway serving (the ASan build fails the module on a leak at stop)."""

import http.server
import select
import socket
import threading
import time

import pytest
import requests

from conftest import (Gateway, assert_error_response, backend, echo_headers, free_port,
                      make_config, scaled, upstream, validate_errors, wait_until)

HOLD_MAX = 60.0  # the longest the auth service holds an answer


class AuthService:
    """A threaded HTTP/1.1 auth service that records every call."""

    def __init__(self):
        self.port = free_port()
        self.lock = threading.Lock()
        self.calls = []      # {"method", "target", "headers": [(k, v)], "body"}
        self.hangups = []    # targets of held calls whose caller closed first
        self.release = threading.Event()
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                svc._handle(self)

            do_POST = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self):
        with self.lock:
            self.calls.clear()
            self.hangups.clear()

    def calls_to(self, prefix):
        with self.lock:
            return [c for c in self.calls if c["target"].startswith(prefix)]

    def hung_up(self, prefix):
        with self.lock:
            return [t for t in self.hangups if t.startswith(prefix)]

    @staticmethod
    def _send(h, status, headers=(), body=b""):
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body:
            h.wfile.write(body)

    def _hold(self, h):
        """Holds the answer until released, or until the caller closes the
        connection (recorded as a hang-up). True when released."""
        deadline = time.monotonic() + HOLD_MAX
        sock = h.connection
        while time.monotonic() < deadline:
            if self.release.is_set():
                return True
            r, _, _ = select.select([sock], [], [], 0.02)
            if r:
                try:
                    peek = sock.recv(1, socket.MSG_PEEK)
                except OSError:
                    peek = b""
                if not peek:
                    with self.lock:
                        self.hangups.append(h.path)
                    h.close_connection = True
                    return False
        return False

    def _handle(self, h):
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        with self.lock:
            self.calls.append({"method": h.command, "target": h.path,
                               "headers": list(h.headers.items()), "body": body})
        path = h.path.split("?", 1)[0]
        if path == "/ok":
            self._send(h, 200, [("X-User-ID", "alice"), ("X-User-Groups", "dev"),
                                ("X-User-Groups", "ops"), ("X-Secret", "not-copied")])
        elif path == "/check":
            if h.headers.get("Authorization") == "Bearer good":
                self._send(h, 204, [("X-User-ID", "bob")])
            else:
                self._send(h, 401, [("WWW-Authenticate", 'Bearer realm="check"'),
                                    ("Content-Type", "text/plain")], b"bad token\n")
        elif path == "/deny":
            self._send(h, 401, [("WWW-Authenticate", 'Bearer realm="api"'),
                                ("WWW-Authenticate", "Basic"),
                                ("Content-Type", "text/plain; charset=utf-8"),
                                ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                                ("X-User-ID", "mallory"), ("X-Secret", "internal")],
                       b"login required\n")
        elif path == "/forbidden":
            self._send(h, 403, [("Content-Type", "application/json")],
                       b'{"reason":"blocked by policy"}')
        elif path == "/redirect":
            self._send(h, 302, [("Location", "https://login.example.com/?next=%2Fa")])
        elif path == "/fail":
            self._send(h, 500, [("X-User-ID", "eve"), ("Content-Type", "text/plain")], b"boom")
        elif path == "/slow":
            if self._hold(h):
                self._send(h, 200, [("X-User-ID", "late")])
        else:
            self._send(h, 404)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    auth = AuthService()
    try:
        with backend("app") as b:
            def ea(path, **extra):
                conf = {"upstream": "authz", "path": path}
                conf.update(extra)
                return {"ext_auth": conf}

            ident = {"copy_headers": ["X-User-ID", "X-User-Groups"],
                     "consumer_header": "X-User-ID"}

            def route(name, prefix, filters):
                return {"name": name, "match": {"path_prefix": prefix}, "upstream": "app",
                        "filters": filters}

            cfg = make_config(
                free_port(),
                {"app": upstream(b.port), "authz": upstream(auth.port),
                 "down": upstream(free_port())},
                [route("a-ok", "/a/ok", ea("/ok", **ident)),
                 route("a-check", "/a/check",
                       ea("/check?from=gw", forward_headers=["Authorization", "Cookie", "X-Tenant"],
                          **ident)),
                 route("a-deny", "/a/deny", ea("/deny", **ident)),
                 route("a-forbidden", "/a/forbidden", ea("/forbidden")),
                 route("a-redirect", "/a/redirect", ea("/redirect")),
                 route("a-fail", "/a/fail-deny", ea("/fail", on_error="deny", **ident)),
                 route("a-fail-allow", "/a/fail-allow", ea("/fail", on_error="allow", **ident)),
                 route("a-timeout", "/a/timeout-deny", ea("/slow", timeout="300ms", **ident)),
                 route("a-timeout-allow", "/a/timeout-allow",
                       ea("/slow", timeout="300ms", on_error="allow", **ident)),
                 route("a-hold", "/a/hold", ea("/slow", timeout="30s")),
                 route("a-down", "/a/down", {"ext_auth": {"upstream": "down"}}),
                 route("open", "/open", {})],
                workers=2)
            gw = Gateway(cfg, tmp_path_factory.mktemp("ext_auth"))
            try:
                yield gw, b, auth
            finally:
                gw.stop()
    finally:
        auth.stop()


def get(gw, path, **kw):
    kw.setdefault("timeout", scaled(10))
    kw.setdefault("allow_redirects", False)
    return requests.get(gw.u(path), **kw)


def header_values(headers, name):
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def upstream_requests(b):
    return b.stats()["requests"]


# ---------------------------------------------------------------- the call


def test_auth_call_carries_the_request(env):
    gw, b, auth = env
    auth.reset()
    r = requests.post(gw.u("/a/ok/items?page=2&q=x"), data=b"payload", timeout=scaled(10),
                      headers={"Authorization": "Bearer t0k", "Cookie": "sid=1",
                               "X-Forwarded-For": "198.51.100.7", "X-Other": "not-forwarded",
                               "X-Request-ID": "ext-auth-call-1"})
    assert r.status_code == 200, r.text[:300]
    calls = auth.calls_to("/ok")
    assert len(calls) == 1, calls
    c = calls[0]
    h = c["headers"]
    # a GET without a body to upstream + path
    assert c["method"] == "GET"
    assert c["target"] == "/ok"
    assert c["body"] == b""
    assert header_values(h, "Content-Length") in ([], ["0"])
    assert header_values(h, "Transfer-Encoding") == []
    # the listed request fields, as the client sent them
    assert header_values(h, "Authorization") == ["Bearer t0k"]
    assert header_values(h, "Cookie") == ["sid=1"]
    assert header_values(h, "X-Other") == []
    # what the auth service learns about the request
    assert header_values(h, "X-Forwarded-Method") == ["POST"]
    assert header_values(h, "X-Forwarded-Uri") == ["/a/ok/items?page=2&q=x"]
    assert header_values(h, "X-Forwarded-Proto") == ["http"]
    assert header_values(h, "X-Forwarded-Host") == ["127.0.0.1:%d" % gw.port]
    assert header_values(h, "X-Forwarded-For") == ["198.51.100.7, 127.0.0.1"]
    assert header_values(h, "X-Request-ID") == ["ext-auth-call-1"]
    assert r.headers["X-Request-ID"] == "ext-auth-call-1"
    # the upstream got the request itself, body included
    doc = r.json()
    assert doc["method"] == "POST" and doc["body"] == "payload"


def test_auth_call_x_forwarded_for_without_prior_chain(env):
    gw, b, auth = env
    auth.reset()
    r = get(gw, "/a/ok", headers={"X-Request-ID": "ext-auth-xff"})
    assert r.status_code == 200
    (c,) = auth.calls_to("/ok")
    assert header_values(c["headers"], "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(c["headers"], "X-Forwarded-Uri") == ["/a/ok"]
    assert header_values(c["headers"], "X-Forwarded-Method") == ["GET"]


def test_forward_headers_listed_and_path_with_query(env):
    gw, b, auth = env
    auth.reset()
    r = get(gw, "/a/check", headers={"Authorization": "Bearer good", "X-Tenant": "t1",
                                     "X-Not-Listed": "1"})
    assert r.status_code == 200, r.text[:300]
    (c,) = auth.calls_to("/check")
    assert c["target"] == "/check?from=gw"
    assert header_values(c["headers"], "X-Tenant") == ["t1"]
    assert header_values(c["headers"], "Authorization") == ["Bearer good"]
    assert header_values(c["headers"], "X-Not-Listed") == []
    assert header_values(c["headers"], "Cookie") == []  # listed, but not sent by the client
    assert echo_headers(r.json(), "X-User-ID") == ["bob"]
    # the same route refuses a bad token with the auth service's answer
    r = get(gw, "/a/check", headers={"Authorization": "Bearer bad"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="check"'
    assert r.content == b"bad token\n"


# ---------------------------------------------------------------- 2xx


def test_allow_copies_identity_and_drops_spoofs(env):
    gw, b, auth = env
    r = get(gw, "/a/ok/x", headers={"X-User-ID": "spoofed", "x-user-groups": "admin",
                                    "X-Secret": "client-own"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-User-ID") == ["alice"]
    assert echo_headers(doc, "X-User-Groups") == ["dev", "ops"]
    # only the listed fields are copied; the client's own others stay
    assert echo_headers(doc, "X-Secret") == ["client-own"]
    assert doc["path"] == "/a/ok/x"
    # nothing of the auth answer reaches the client
    assert "X-User-ID" not in r.headers


# ---------------------------------------------------------------- 3xx / 4xx


def test_401_passes_the_auth_answer_through(env):
    gw, b, auth = env
    before = upstream_requests(b)
    r = get(gw, "/a/deny/x", headers={"X-User-ID": "spoofed"})
    assert r.status_code == 401
    raw = r.raw.headers
    assert raw.getlist("WWW-Authenticate") == ['Bearer realm="api"', "Basic"]
    assert raw.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.content == b"login required\n"
    assert "X-Secret" not in r.headers and "X-User-ID" not in r.headers
    assert r.headers.get("X-Request-ID")
    assert upstream_requests(b) == before, "the upstream was contacted on a 401"


def test_403_json_body_passes_through(env):
    gw, b, auth = env
    before = upstream_requests(b)
    r = get(gw, "/a/forbidden")
    assert r.status_code == 403
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"reason": "blocked by policy"}
    assert upstream_requests(b) == before


def test_302_location_without_body(env):
    gw, b, auth = env
    before = upstream_requests(b)
    r = get(gw, "/a/redirect")
    assert r.status_code == 302
    assert r.headers["Location"] == "https://login.example.com/?next=%2Fa"
    assert_error_response(r, 302)  # an empty auth body: the gateway's JSON error
    assert upstream_requests(b) == before


# ---------------------------------------------------------------- failures


def test_5xx_deny_answers_503(env):
    gw, b, auth = env
    before = upstream_requests(b)
    r = get(gw, "/a/fail-deny")
    assert_error_response(r, 503)
    assert r.content.find(b"boom") < 0 and "X-User-ID" not in r.headers
    assert upstream_requests(b) == before


def test_5xx_allow_continues_without_identity(env):
    gw, b, auth = env
    r = get(gw, "/a/fail-allow", headers={"X-User-ID": "spoofed"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-User-ID") == []  # neither the spoof nor the 500's
    wait_until(lambda: "ext_auth" in gw.stderr_text(), scaled(5),
               what="a warning about the failed auth call")


def test_timeout_deny_and_allow(env):
    gw, b, auth = env
    auth.reset()
    t0 = time.monotonic()
    r = get(gw, "/a/timeout-deny")
    assert_error_response(r, 503)
    assert time.monotonic() - t0 < scaled(10)
    r = get(gw, "/a/timeout-allow", headers={"X-User-ID": "spoofed"})
    assert r.status_code == 200
    assert echo_headers(r.json(), "X-User-ID") == []
    # the timed-out calls were given up: the gateway closed them
    wait_until(lambda: len(auth.hung_up("/slow")) >= 2, scaled(10),
               what="the auth service to see both timed-out calls closed")


def test_connection_failure_denies(env):
    gw, b, auth = env
    r = get(gw, "/a/down")
    assert_error_response(r, 503)


# ---------------------------------------------------------------- hang-ups


def test_client_hangup_during_auth_call(env):
    gw, b, auth = env
    auth.reset()
    before = upstream_requests(b)
    for i in range(5):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        try:
            s.sendall(b"GET /a/hold/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            wait_until(lambda: len(auth.calls_to("/slow")) > i, scaled(10),
                       what="the auth call of request %d" % i)
        finally:
            s.close()
        # the gateway cancels the call it no longer needs
        wait_until(lambda: len(auth.hung_up("/slow")) > i, scaled(10),
                   what="the auth call of request %d to be closed" % i)
    # the gateway keeps serving, on the same routes
    assert get(gw, "/a/ok").status_code == 200
    assert get(gw, "/open/x").status_code == 200
    assert upstream_requests(b) == before + 2, "a hung-up request reached the upstream"
    assert gw.proc.poll() is None


def test_concurrent_checks_do_not_block_other_routes(env):
    gw, b, auth = env
    auth.reset()
    out = {}

    def held():
        out["r"] = get(gw, "/a/hold/long", timeout=scaled(30))

    t = threading.Thread(target=held)
    t.start()
    try:
        wait_until(lambda: auth.calls_to("/slow"), scaled(10), what="the held auth call")
        # while that check is pending, other requests are served
        for _ in range(10):
            assert get(gw, "/a/ok").status_code == 200
            assert get(gw, "/open/y").status_code == 200
        assert "r" not in out
    finally:
        auth.release.set()
        t.join(scaled(30))
        auth.release.clear()
    assert out["r"].status_code == 200


def test_invalid_configs_are_rejected(tmp_path):
    """Load-time errors carry the field: on_error, header names, upstream."""
    cfg = make_config(free_port(), {"authz": upstream(free_port()), "app": upstream(free_port())}, [
        {"name": "r", "match": {"path_prefix": "/"}, "upstream": "app",
         "filters": {"ext_auth": {"upstream": "authz", "on_error": "maybe",
                                  "forward_headers": ["Bad Name"],
                                  "copy_headers": ["Content-Length"],
                                  "consumer_header": "X:Y", "path": "check"}}},
        {"name": "r2", "match": {"path_prefix": "/2"}, "upstream": "app",
         "filters": {"ext_auth": {"upstream": "authzz"}}}])
    rc, err = validate_errors(tmp_path, cfg)
    assert rc != 0, err
    for want in ("on_error: expected deny or allow", 'invalid header name "Bad Name"',
                 'header "Content-Length" cannot be changed', 'invalid header name "X:Y"',
                 "is not an origin-form path", "no upstream named `authzz` (did you mean `authz`?)"):
        assert want in err, (want, err)
    assert err.count("bad.yaml:") >= 6, err  # file:line:col, one line per problem
