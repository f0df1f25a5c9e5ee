"""introspection (RFC 7662) end to end: a real gateway in front of a demo
backend, asking a small Python IdP about bearer tokens. The IdP records
every call (client authentication, form fields), answers from a table of
tokens, and can be told to fail: 500, a body that is not an answer, an
answer held past the gateway's timeout, or stopped altogether. Checks what
the IdP is sent, what the upstream and the client get, what the access log
says about the cache (hit / miss / coalesced / stale), and the outage
rules: 503 without a cached answer, the cached answer while there is one."""

import base64
import concurrent.futures
import http.server
import json
import socket
import threading
import time
import urllib.parse

import pytest
import requests

from conftest import (Gateway, backend, echo_headers, free_port, make_config, parse_response,
                      raw_ex, scaled, upstream, validate_errors, wait_until)

CLIENT_ID = "gw:edge"            # ':' must be form-encoded inside the Basic credential
CLIENT_SECRET = "s3cr&t+pa ss"   # so must '&', '+' and ' '
POST_ID = "gw-post"
POST_SECRET = "post-secret-42"
# clients the IdP accepts with client_secret_basic (routes with their own
# client keep their own cache namespace)
BASIC_CLIENTS = {CLIENT_ID: CLIENT_SECRET, "gw-short": "x", "gw-strict": "x"}


class IdP:
    """A threaded HTTP/1.1 introspection endpoint. Paths: /introspect
    answers from `tokens`; /slow the same after `slow_s`; /fail 500;
    /garbage a 200 that is not JSON; /hang holds the answer (until stop)."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.calls = []           # {"path", "auth", "form", "ctype"}
        self.tokens = {}          # token -> answer dict
        self.slow_s = 0.5
        self.stopping = threading.Event()
        self.stopped = False
        self.conns = []           # accepted sockets, for stop()
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with idp.lock:
                    idp.conns.append(self.connection)

            def do_POST(self):
                idp._handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        """Stops listening and hangs up on every open connection (an
        outage, not a drain: the gateway's pooled connections die too)."""
        if self.stopped:
            return
        self.stopped = True
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def calls_for(self, token):
        with self.lock:
            return [c for c in self.calls if c["form"].get("token") == [token]]

    def answer(self, token, **fields):
        with self.lock:
            self.tokens[token] = fields
        return token

    def _send(self, h, status, body):
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        if self.stopping.is_set():  # no pooled connection outlives stop()
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h):
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n).decode() if n else ""
        form = urllib.parse.parse_qs(raw, keep_blank_values=True)
        call = {"path": h.path, "auth": h.headers.get("Authorization"), "form": form,
                "ctype": h.headers.get("Content-Type"), "raw": raw}
        with self.lock:
            self.calls.append(call)
            answer = self.tokens.get((form.get("token") or [""])[0], {"active": False})
        if not self._client_ok(call):
            self._send(h, 401, b'{"error":"invalid_client"}')
        elif h.path == "/fail":
            self._send(h, 500, b'{"error":"server_error"}')
        elif h.path == "/garbage":
            self._send(h, 200, b"<html>maintenance</html>")
        elif h.path == "/hang":
            self.stopping.wait(30)
        else:
            if h.path == "/slow":
                time.sleep(self.slow_s)
            self._send(h, 200, json.dumps(answer).encode())

    @staticmethod
    def _client_ok(call):
        form = call["form"]
        if "client_id" in form:  # client_secret_post
            return (form["client_id"] == [POST_ID] and form["client_secret"] == [POST_SECRET]
                    and call["auth"] is None)
        auth = call["auth"] or ""
        if not auth.startswith("Basic "):
            return False
        ident, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        ident = urllib.parse.unquote_plus(ident)
        return ident in BASIC_CLIENTS and urllib.parse.unquote_plus(secret) == BASIC_CLIENTS[ident]


def intro(port, path="/introspect", **extra):
    conf = {"endpoint": "http://127.0.0.1:%d%s" % (port, path), "client_id": CLIENT_ID,
            "client_secret": "${IDP_SECRET}"}
    conf.update(extra)
    return {"introspection": conf}


def route(name, prefix, filters):
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": "app", "filters": filters}


def start_gateway(tmp, b, routes, secret=CLIENT_SECRET):
    cfg = make_config(free_port(), {"app": upstream(b.port)}, routes, workers=2,
                      access_log={"path": "stdout", "format": "json"})
    return Gateway(cfg, tmp, env_extra={"IDP_SECRET": secret})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    idp = IdP()
    try:
        with backend("app") as b:
            p = idp.port
            routes = [
                route("basic", "/basic", intro(p)),
                route("post", "/post", intro(p, client_id=POST_ID, client_secret=POST_SECRET,
                                             auth_method="client_secret_post")),
                route("optional", "/optional", intro(p, optional=True)),
                route("hide", "/hide", intro(p, hide_credentials=True)),
                route("fields", "/fields", intro(p, consumer_field="username",
                                                 groups_field="roles")),
                route("short", "/short", intro(p, cache_ttl="1s", negative_cache_ttl="1s",
                                               client_id="gw-short", client_secret="x")),
                route("slow", "/slow", intro(p, "/slow", timeout="3s")),
                route("fail", "/fail", intro(p, "/fail")),
                route("garbage", "/garbage", intro(p, "/garbage")),
                route("hang", "/hang", intro(p, "/hang", timeout="300ms")),
                route("wrong-secret", "/wrong-secret", intro(p, client_secret="not-it")),
                route("down", "/down", {"introspection": {
                    "endpoint": "http://127.0.0.1:%d/introspect" % free_port(),
                    "client_id": CLIENT_ID, "client_secret": "${IDP_SECRET}"}}),
            ]
            gw = start_gateway(tmp_path_factory.mktemp("introspection"), b, routes)
            try:
                yield gw, idp, routes
            finally:
                gw.stop()
    finally:
        idp.stop()


_n = [0]


def new_token(prefix="tok"):
    """A fresh token (a b64token with every allowed punctuation mark)."""
    _n[0] += 1
    return "%s-%d.%d_a~b+c/d==" % (prefix, _n[0], int(time.time() * 1000))


def get(gw, path, token=None, rid=None, **kw):
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    if rid:
        headers["X-Request-ID"] = rid
    kw.setdefault("timeout", scaled(10))
    return requests.get(gw.u(path), headers=headers, **kw)


def log_entry(gw, rid):
    """The access log line of request `rid` (waits for the logger)."""
    def find():
        for line in gw.stdout_text().splitlines():
            if '"%s"' % rid in line:
                return json.loads(line)
        return None
    return wait_until(find, scaled(5), what="access log line of %s" % rid)


def rid_of(name):
    _n[0] += 1
    return "intro-%s-%d-%d" % (name, _n[0], int(time.time() * 1000))


# ---------------------------------------------------------------- active / inactive


def test_active_token_reaches_upstream_with_consumer_and_groups(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="alice", scope="read write",
                     exp=int(time.time()) + 3600)
    rid = rid_of("active")
    r = get(gw, "/basic/x", tok, rid, headers={"X-Consumer-Name": "root",
                                               "X-Consumer-Groups": "admin"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert echo_headers(doc, "X-Consumer-Name") == ["alice"]
    assert echo_headers(doc, "X-Consumer-Groups") == ["read,write"]
    assert echo_headers(doc, "Authorization") == ["Bearer " + tok]  # not hidden by default
    calls = idp.calls_for(tok)
    assert len(calls) == 1
    c = calls[0]
    assert c["form"]["token_type_hint"] == ["access_token"]
    assert c["ctype"] == "application/x-www-form-urlencoded"
    sent = c["raw"].split("&")[0]  # '+', '/' and '=' of the token escaped in the form
    assert "%2B" in sent and "%2F" in sent and "%3D" in sent and "+" not in sent
    assert "client_id" not in c["form"]  # client_secret_basic: only in the header
    d = log_entry(gw, rid)
    assert d["consumer"] == "alice" and d["introspection"] == "miss" and d["status"] == 200


def test_repeated_token_is_answered_from_the_cache(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="bob", scope="a")
    assert get(gw, "/basic/1", tok).status_code == 200
    rids = [rid_of("hit") for _ in range(3)]
    for rid in rids:  # two workers: whichever takes it, one shared cache
        r = get(gw, "/basic/2", tok, rid)
        assert r.status_code == 200
        assert echo_headers(r.json(), "X-Consumer-Name") == ["bob"]
    assert len(idp.calls_for(tok)) == 1
    assert [log_entry(gw, rid)["introspection"] for rid in rids] == ["hit"] * 3


def test_inactive_token_is_refused_and_cached_negatively(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=False)
    for _ in range(2):
        r = get(gw, "/basic/x", tok)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="portico", error="invalid_token"'
        assert r.json()["error"] == "invalid_token"
    assert len(idp.calls_for(tok)) == 1  # the second came from the negative cache


def test_negative_answers_expire_after_negative_cache_ttl(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=False)
    assert get(gw, "/short/x", tok).status_code == 401
    assert get(gw, "/short/x", tok).status_code == 401
    assert len(idp.calls_for(tok)) == 1
    time.sleep(1.2)
    idp.answer(tok, active=True, sub="carol")  # became active meanwhile
    assert get(gw, "/short/x", tok).status_code == 200
    assert len(idp.calls_for(tok)) == 2


def test_missing_token_gets_a_bare_bearer_challenge(env):
    gw, idp, _ = env
    before = len(idp.calls)
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}):
        r = requests.get(gw.u("/basic/x"), headers=headers, timeout=scaled(10))
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="portico"'
        assert r.headers["Content-Type"].startswith("application/json")
    assert len(idp.calls) == before


def test_bearer_followed_by_a_tab(env):
    """RFC 7235: the scheme and the credentials are separated by SP or
    HTAB."""
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="tabby")
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
    s.sendall(("GET /basic/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\t%s\r\n"
               "Connection: close\r\n\r\n" % tok).encode())
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    assert len(idp.calls_for(tok)) == 1


def test_optional_lets_a_request_without_token_through(env):
    gw, idp, _ = env
    r = get(gw, "/optional/x")
    assert r.status_code == 200
    assert echo_headers(r.json(), "X-Consumer-Name") == []
    bad = idp.answer(new_token(), active=False)
    assert get(gw, "/optional/x", bad).status_code == 401  # present but invalid: still 401
    good = idp.answer(new_token(), active=True, username="dave")
    r = get(gw, "/optional/x", good)
    assert r.status_code == 200 and echo_headers(r.json(), "X-Consumer-Name") == ["dave"]


def test_client_secret_post_sends_the_client_in_the_body(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, client_id="svc-7")
    r = get(gw, "/post/x", tok)
    assert r.status_code == 200, r.text
    assert echo_headers(r.json(), "X-Consumer-Name") == ["svc-7"]
    (c,) = idp.calls_for(tok)
    assert c["auth"] is None
    assert c["form"]["client_id"] == [POST_ID] and c["form"]["client_secret"] == [POST_SECRET]
    assert c["form"]["token_type_hint"] == ["access_token"]


def test_hide_credentials_strips_the_token(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="erin")
    r = get(gw, "/hide/x", tok)
    assert r.status_code == 200
    assert echo_headers(r.json(), "Authorization") == []
    assert echo_headers(r.json(), "X-Consumer-Name") == ["erin"]


def test_configured_consumer_and_groups_fields(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="id-1", username="frank",
                     roles=["admin", "ops", "bad,group", 7], scope="ignored")
    r = get(gw, "/fields/x", tok)
    assert r.status_code == 200
    assert echo_headers(r.json(), "X-Consumer-Name") == ["frank"]
    assert echo_headers(r.json(), "X-Consumer-Groups") == ["admin,ops"]
    # an active answer naming no consumer in the configured field
    nobody = idp.answer(new_token(), active=True, sub="id-2")
    r = get(gw, "/fields/x", nobody)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


# ---------------------------------------------------------------- expiry


def test_cached_answer_ends_at_the_token_exp(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="gina", exp=int(time.time()) + 2)
    assert get(gw, "/basic/x", tok).status_code == 200
    assert get(gw, "/basic/x", tok).status_code == 200
    assert len(idp.calls_for(tok)) == 1
    wait_until(lambda: time.time() > tok_exp(idp, tok) + 0.1, 5, what="exp")
    # the IdP still says active (with the past exp): the gateway checks exp itself
    r = get(gw, "/basic/x", tok)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert len(idp.calls_for(tok)) == 2  # the cache (ttl 60s) ended at exp


def tok_exp(idp, tok):
    with idp.lock:
        return idp.tokens[tok]["exp"]


def test_cached_answer_ends_after_cache_ttl(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="hank", exp=int(time.time()) + 3600)
    assert get(gw, "/short/x", tok).status_code == 200
    assert get(gw, "/short/x", tok).status_code == 200
    assert len(idp.calls_for(tok)) == 1
    time.sleep(1.2)
    rid = rid_of("ttl")
    assert get(gw, "/short/x", tok, rid).status_code == 200
    assert len(idp.calls_for(tok)) == 2
    assert log_entry(gw, rid)["introspection"] == "miss"


# ---------------------------------------------------------------- single flight


def test_concurrent_requests_for_one_new_token_make_one_call(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="ivy", scope="s1")
    rids = [rid_of("sf") for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(len(rids)) as ex:
        rs = list(ex.map(lambda rid: get(gw, "/slow/x", tok, rid), rids))
    assert [r.status_code for r in rs] == [200] * len(rids)
    assert all(echo_headers(r.json(), "X-Consumer-Name") == ["ivy"] for r in rs)
    assert len(idp.calls_for(tok)) == 1
    kinds = sorted(log_entry(gw, rid)["introspection"] for rid in rids)
    # the IdP takes 0.5 s: every request but the first arrived during the call
    assert kinds.count("miss") == 1
    assert set(kinds) <= {"miss", "coalesced", "hit"} and kinds.count("coalesced") >= 1


def test_a_waiter_takes_over_when_the_leader_goes_away(env):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="jack")

    def leader():
        with pytest.raises(requests.exceptions.ReadTimeout):
            get(gw, "/slow/x", tok, timeout=0.3)  # hangs up during the IdP's 0.5 s

    t = threading.Thread(target=leader)
    t.start()
    wait_until(lambda: idp.calls_for(tok), scaled(5), what="the leader's IdP call")
    t0 = time.monotonic()
    rid = rid_of("takeover")
    r = get(gw, "/slow/x", tok, rid)  # waits for the leader's flight
    took = time.monotonic() - t0
    t.join()
    assert r.status_code == 200 and echo_headers(r.json(), "X-Consumer-Name") == ["jack"]
    assert len(idp.calls_for(tok)) == 2
    assert log_entry(gw, rid)["introspection"] == "miss"  # it made the second call itself
    # on the leader's hang-up, not after the lost flight's timeout (3 s + 1 s)
    assert took < 3.0, took


# ---------------------------------------------------------------- IdP failures


@pytest.mark.parametrize("path", ["/fail", "/garbage", "/hang", "/wrong-secret", "/down"])
def test_idp_failure_without_cached_answer_is_503(env, path):
    gw, idp, _ = env
    tok = idp.answer(new_token(), active=True, sub="kim")
    t0 = time.monotonic()
    r = get(gw, path + "/x", tok)
    assert r.status_code == 503, (path, r.text)
    assert "WWW-Authenticate" not in r.headers  # the caller did nothing wrong
    assert r.json()["status"] == 503
    assert r.json()["error"] == "introspection endpoint unavailable"
    assert time.monotonic() - t0 < scaled(3)   # /hang: the 300ms timeout, not the IdP's 30 s


def test_secrets_and_tokens_stay_out_of_the_logs(env):
    gw, idp, _ = env
    tok = idp.answer(new_token("secret-token"), active=True, sub="leo")
    assert get(gw, "/wrong-secret/x", tok).status_code == 503
    assert get(gw, "/basic/x", tok).status_code == 200
    time.sleep(0.2)
    text = gw.stderr_text() + gw.stdout_text()
    assert "introspection" in gw.stderr_text()  # the failure was logged...
    assert CLIENT_SECRET not in text and "not-it" not in text and tok not in text


def test_malformed_and_huge_tokens_are_refused_without_a_call(env):
    gw, idp, _ = env
    before = len(idp.calls)
    for bad in ("has space", "a\"b", "=abc", "x" * 9000):
        r = requests.get(gw.u("/basic/x"), headers={"Authorization": "Bearer " + bad},
                         timeout=scaled(10))
        assert r.status_code == 401, bad[:20]
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="portico", error="invalid_token"'
    # past limits.max_header_bytes (16 KiB): 431 before any filter runs
    big = b"GET /basic/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + b"y" * 20000 + b"\r\n\r\n"
    buf, _ = raw_ex(gw.port, big, timeout=scaled(3), until_complete=True)
    assert parse_response(buf).status == 431, buf[:200]
    # two Authorization fields
    two = (b"GET /basic/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\r\n"
           b"Authorization: Bearer b\r\n\r\n")
    buf, _ = raw_ex(gw.port, two, timeout=scaled(3), until_complete=True)
    resp = parse_response(buf)
    assert resp.status == 401 and "invalid_token" in resp.header("WWW-Authenticate"), buf[:300]
    assert len(idp.calls) == before
    assert get(gw, "/optional/x").status_code == 200  # still serving


def test_reload_keeps_the_cache(env):
    gw, idp, routes = env
    tok = idp.answer(new_token(), active=True, sub="mia")
    assert get(gw, "/basic/x", tok).status_code == 200
    gw.reload(gw._cfg_text)
    rid = rid_of("reload")
    assert get(gw, "/basic/x", tok, rid).status_code == 200
    assert len(idp.calls_for(tok)) == 1
    assert log_entry(gw, rid)["introspection"] == "hit"


# ---------------------------------------------------------------- outage with a cache


def test_idp_outage_serves_cached_answers_and_503_for_new_tokens(tmp_path):
    idp = IdP()
    try:
        with backend("app") as b:
            p = idp.port
            gw = start_gateway(tmp_path, b, [
                route("stale", "/stale", intro(p, cache_ttl="1s", stale_if_error="1m")),
                route("strict", "/strict", intro(p, cache_ttl="1s", stale_if_error="off",
                                                 client_id="gw-strict", client_secret="x")),
            ])
            try:
                known = idp.answer(new_token(), active=True, sub="nora")
                revoked = idp.answer(new_token(), active=False)
                assert get(gw, "/stale/x", known).status_code == 200
                assert get(gw, "/stale/x", revoked).status_code == 401
                assert get(gw, "/strict/x", known).status_code == 200
                idp.stop()
                # within cache_ttl: a plain hit, IdP or not
                assert get(gw, "/stale/x", known).status_code == 200
                time.sleep(1.2)
                rid = rid_of("stale")
                r = get(gw, "/stale/x", known, rid)
                assert r.status_code == 200
                assert echo_headers(r.json(), "X-Consumer-Name") == ["nora"]
                assert log_entry(gw, rid)["introspection"] == "stale"
                assert get(gw, "/stale/x", revoked).status_code == 401  # stale negative too
                assert get(gw, "/stale/x", new_token()).status_code == 503
                assert get(gw, "/strict/x", known).status_code == 503  # stale_if_error: off
            finally:
                gw.stop()
    finally:
        idp.stop()


# ---------------------------------------------------------------- config


def bad_config(**conf):
    base = {"endpoint": "http://127.0.0.1:9/introspect", "client_id": "gw",
            "client_secret": "s"}
    base.update(conf)
    base = {k: v for k, v in base.items() if v is not None}
    return make_config(free_port(), {"app": upstream(free_port())},
                       [route("r", "/", {"introspection": base})])


@pytest.mark.parametrize("conf,needle", [
    ({"endpoint": None}, "`endpoint` is required"),
    ({"client_id": None}, "`client_id` is required"),
    ({"client_secret": None}, "`client_secret` is required"),
    ({"auth_method": "private_key_jwt"}, "auth_method: expected client_secret_basic"),
    ({"stale_if_error": "soon"}, "stale_if_error: expected a duration"),
    ({"endpoint": "ftp://idp/x"}, "is not an http:// or https:// URL"),
    ({"cache_ttl": "forever"}, "invalid duration `forever`"),
    ({"client_secrets": "x"}, "client_secret"),  # unknown key, with a hint
])
def test_config_errors(tmp_path, conf, needle):
    rc, out = validate_errors(tmp_path, bad_config(**conf))
    assert rc != 0
    assert needle in out, out
    assert "bad.yaml:" in out and any(c.isdigit() for c in out.split("bad.yaml:")[1][:6]), out


def test_secret_from_an_unset_variable_is_a_config_error(tmp_path):
    rc, out = validate_errors(tmp_path, bad_config(client_secret="${PORTICO_TEST_UNSET_SECRET}"))
    assert rc != 0 and "PORTICO_TEST_UNSET_SECRET" in out
