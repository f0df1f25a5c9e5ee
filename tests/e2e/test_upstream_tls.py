"""TLS to upstreams (`upstreams.*.tls`): proxying to an HTTPS backend with
the certificate verified (chain against `ca`, name against `sni` or the
target's IP address), failures as 502 with the reason, `verify: false`,
a client certificate, pooled connections and session resumption, active
health checks over TLS, and the config errors for unreadable files.

The backends are Python's http.server in an ssl.SSLContext; certificates
are made with the openssl CLI per session (tls_certs below: a minimal
helper, easy to swap for tests/e2e/tls_certs.py once that lands)."""

import http.server
import json
import os
import socketserver
import ssl
import subprocess
import threading
import time

import jwt as pyjwt
import pytest
import requests
from jwcrypto import jwk as jwc_jwk

from conftest import (Gateway, RawUpstream, access_log_lines, backend, echo_headers, free_port,
                      logged_gateway, make_config, parse_response, raw_until_close, read_head,
                      scaled, upstream, validate_errors, wait_peer_read, wait_until)


# ---------------------------------------------------------------- certificates

def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-subj", "/CN=" + name,
             "-days", "2", cwd=d)
    return os.path.join(d, name + ".pem")


def make_cert(d, ca, name, cn, sans):
    """A leaf signed by `ca` with subjectAltName `sans` ("DNS:x,IP:y")."""
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n" % sans)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
             "-CAcreateserial", "-out", name + ".pem", "-days", "2",
             "-extfile", name + ".ext", cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("upstream-tls-certs"))
    c = {"dir": d, "ca": make_ca(d, "ca"), "other_ca": make_ca(d, "otherca")}
    c["server"] = make_cert(d, "ca", "server", "backend.test",
                            "DNS:backend.test,DNS:localhost,IP:127.0.0.1")
    c["client"] = make_cert(d, "ca", "client", "gateway-client", "DNS:gateway.test")
    c["only_a"] = make_cert(d, "ca", "only_a", "a.test", "DNS:a.test")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "self.key", "-out", "self.pem", "-subj", "/CN=self", "-days", "2", cwd=d)
    c["self"] = (os.path.join(d, "self.pem"), os.path.join(d, "self.key"))
    return c


# ---------------------------------------------------------------- the backend

class TLSBackend:
    """HTTPS/1.1 keep-alive backend: echoes the request as JSON and counts
    connections, resumed sessions, SNI names and client certificates."""

    def __init__(self, cert, client_ca=None):
        self.port = free_port()
        self.lock = threading.Lock()
        self.connections = 0
        self.resumed = 0
        self.requests = 0
        self.snis = []
        self.peer_cns = []
        self.healthy = True
        self.jwks = {"keys": []}
        self.posts = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)

        def on_sni(sock, name, _ctx):
            with self.lock:
                self.snis.append(name)
        ctx.sni_callback = on_sni
        be = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                peer = self.request.getpeercert()
                with be.lock:
                    be.connections += 1
                    be.resumed += 1 if self.request.session_reused else 0
                    if peer:
                        cn = dict(x[0] for x in peer["subject"]).get("commonName")
                        be.peer_cns.append(cn)

            def do_GET(self):
                with be.lock:
                    be.requests += 1
                if self.path == "/healthz":
                    code, body = (200, b"ok") if be.healthy else (503, b"down")
                elif self.path == "/jwks.json":
                    code, body = 200, json.dumps(be.jwks).encode()
                else:
                    code = 200
                    body = json.dumps({"path": self.path, "host": self.headers.get("Host"),
                                       "tls": self.request.version()}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with be.lock:
                    be.posts.append((self.path, data.decode()))
                body = json.dumps({"active": True, "sub": "alice",
                                   "exp": int(time.time()) + 3600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = S(("127.0.0.1", self.port), H)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.t = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.t.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_backend(certs):
    made = []

    def start(cert=None, client_ca=None):
        b = TLSBackend(cert or certs["server"], client_ca)
        made.append(b)
        return b
    yield start
    for b in made:
        b.stop()


def config(port, backend, tls, workers=1, **extra):
    up = {"targets": [{"address": backend.address}], "tls": tls}
    up.update(extra)
    return make_config(port, {"secure": up}, [{"name": "r", "match": {"path_prefix": "/"},
                                               "upstream": "secure"}], workers=workers)


def get(gw, path="/x", **kw):
    return requests.get(gw.u(path), timeout=scaled(5), **kw)


# ---------------------------------------------------------------- verification

def test_proxies_to_tls_backend_verifying_chain_and_sni_name(tmp_path, certs, tls_backend):
    be = tls_backend()
    gw = Gateway(config(free_port(), be, {"ca": certs["ca"], "sni": "backend.test"}), tmp_path)
    try:
        r = get(gw, "/hello?a=1")
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "/hello?a=1"
        assert r.json()["tls"] in ("TLSv1.3", "TLSv1.2")
        assert be.snis == ["backend.test"]
    finally:
        gw.stop()


def test_ip_target_verifies_the_ip_san_and_sends_no_sni(tmp_path, certs, tls_backend):
    be = tls_backend()
    gw = Gateway(config(free_port(), be, {"ca": certs["ca"]}), tmp_path)
    try:
        assert get(gw).status_code == 200
        assert be.snis == [None]  # no SNI for an IP literal (RFC 6066)
    finally:
        gw.stop()


def test_wrong_ca_is_502_with_the_reason(tmp_path, certs, tls_backend):
    be = tls_backend()
    gw = Gateway(config(free_port(), be, {"ca": certs["other_ca"], "sni": "backend.test"}),
                 tmp_path)
    try:
        r = get(gw)
        assert r.status_code == 502
        assert "upstream TLS handshake failed" in r.text
        assert "local issuer" in r.text or "self-signed" in r.text, r.text
        assert be.requests == 0
    finally:
        gw.stop()


def test_wrong_sni_name_is_502_hostname_mismatch(tmp_path, certs, tls_backend):
    be = tls_backend()
    gw = Gateway(config(free_port(), be, {"ca": certs["ca"], "sni": "other.test"}), tmp_path)
    try:
        r = get(gw)
        assert r.status_code == 502
        assert "upstream TLS handshake failed: hostname mismatch" in r.text, r.text
        assert be.requests == 0
    finally:
        gw.stop()


def test_system_store_default_rejects_a_private_ca(tmp_path, certs, tls_backend):
    be = tls_backend()
    gw = Gateway(config(free_port(), be, True), tmp_path)  # `tls: true`
    try:
        r = get(gw)
        assert r.status_code == 502 and "upstream TLS handshake failed" in r.text
    finally:
        gw.stop()


def test_verify_false_accepts_a_self_signed_backend(tmp_path, certs, tls_backend):
    be = tls_backend(cert=certs["self"])
    gw = Gateway(config(free_port(), be, {"verify": False}), tmp_path)
    try:
        assert get(gw).status_code == 200
    finally:
        gw.stop()


def test_client_certificate_reaches_a_backend_that_requires_one(tmp_path, certs, tls_backend):
    be = tls_backend(client_ca=certs["ca"])
    cert, key = certs["client"]
    gw = Gateway(config(free_port(), be, {"ca": certs["ca"], "cert": cert, "key": key}), tmp_path)
    try:
        r = get(gw)
        assert r.status_code == 200, r.text
        assert be.peer_cns == ["gateway-client"]
    finally:
        gw.stop()
    # Without one, the backend refuses it. (TLS 1.3: the refusal comes
    # after our side of the handshake, as an alert the request's read
    # reports, or as a reset its write meets first.)
    served = be.requests
    gw = Gateway(config(free_port(), be, {"ca": certs["ca"]}), tmp_path)
    try:
        r = get(gw)
        assert r.status_code == 502, r.text
        assert be.requests == served
    finally:
        gw.stop()


# ---------------------------------------------------------------- pooling

def test_pooled_tls_connections_are_reused(tmp_path, certs, tls_backend):
    be = tls_backend()
    gw = Gateway(config(free_port(), be, {"ca": certs["ca"]}), tmp_path)
    try:
        with requests.Session() as s:
            for i in range(20):
                r = s.get(gw.u("/n%d" % i), timeout=scaled(5))
                assert r.status_code == 200 and r.json()["path"] == "/n%d" % i
        assert be.requests == 20
        assert be.connections == 1  # one worker, sequential: one pooled connection
    finally:
        gw.stop()


def test_new_connections_resume_the_last_session(tmp_path, certs, tls_backend):
    be = tls_backend()
    # keepalive 0: every request takes a new connection.
    gw = Gateway(config(free_port(), be, {"ca": certs["ca"]}, keepalive=0), tmp_path)
    try:
        for i in range(5):
            assert get(gw, "/r%d" % i).status_code == 200
        assert be.connections == 5
        assert be.resumed == 4  # all but the first
    finally:
        gw.stop()


def two_names_config(port, dns, be_port, ca, **extra):
    """Upstreams `ua` (a.test) and `ub` (b.test): one TLS setting, two names
    that resolve to one address."""
    ups = {}
    for n in ("a", "b"):
        up = {"targets": ["%s.test:%d" % (n, be_port)], "tls": {"ca": ca},
              "resolve_every": "30s"}
        up.update(extra)
        ups["u" + n] = up
    cfg = make_config(port, ups, [{"name": n, "match": {"path_prefix": "/" + n},
                                   "upstream": "u" + n} for n in ("a", "b")], workers=1)
    cfg["resolver"] = [dns.address]
    return cfg


@pytest.mark.parametrize("keepalive", [16, 0], ids=["pooled-connection", "resumed-session"])
def test_another_name_at_the_same_address_is_verified_on_its_own(tmp_path, certs, tls_backend,
                                                                 keepalive):
    # The backend's certificate names a.test only. b.test resolves to the
    # same address under the same TLS setting: neither a pooled connection
    # verified for a.test (keepalive) nor a.test's session (resumed without
    # a certificate) may carry a request for b.test past the name check.
    from test_dns import DnsServer
    dns = DnsServer()
    be = tls_backend(cert=certs["only_a"])
    dns.set("a.test", "127.0.0.1")
    dns.set("b.test", "127.0.0.1")
    gw = Gateway(two_names_config(free_port(), dns, be.port, certs["ca"], keepalive=keepalive),
                 tmp_path)
    try:
        r = get(gw, "/a")
        assert r.status_code == 200, r.text
        r = get(gw, "/b")
        assert r.status_code == 502, r.text
        assert "hostname mismatch" in r.text, r.text
        assert be.requests == 1
        assert be.snis == ["a.test", "b.test"]
        r = get(gw, "/a")  # a.test keeps its own connection / session
        assert r.status_code == 200, r.text
    finally:
        gw.stop()
        dns.stop()


# ---------------------------------------------------------------- truncation

@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "bare-fin"])
def test_close_delimited_body_over_tls_is_complete_only_with_close_notify(tmp_path, certs,
                                                                          close_notify):
    # A response without a length ends at close. Over TLS the peer says
    # "the end" with close_notify; a FIN alone can be forged by anyone on
    # the path to cut the body short (a truncation attack), so it must
    # reach the client as a cut, never as a complete response.
    body = b"close-delimited-" * 200
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*certs["server"])

    def handler(s):
        ts = ctx.wrap_socket(s, server_side=True)
        ts.settimeout(scaled(5))
        read_head(ts)
        ts.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
        wait_peer_read(ts)
        if close_notify:
            try:
                ts.unwrap()  # close_notify, then the FIN
            except (OSError, ssl.SSLError):
                pass
        ts.close()  # Python sends no close_notify of its own on close

    up = RawUpstream(handler)
    try:
        with logged_gateway(tmp_path, up.port, tls={"ca": certs["ca"]}) as (gw, log):
            buf, how = raw_until_close(gw.port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            assert buf.startswith(b"HTTP/1.1 200 "), buf[:100]
            d = access_log_lines(log, 1)[0]
            if close_notify:
                r = parse_response(buf)
                assert r.complete and r.body == body, (how, len(buf))
                assert "error" not in d or not d["error"], d
            else:
                assert how == "reset", (how, len(buf))
                assert d["error"] == "upstream closed TLS without close_notify", d
    finally:
        up.close()


# ---------------------------------------------------------------- health checks

def test_active_health_checks_run_over_tls(tmp_path, certs, tls_backend):
    be = tls_backend()
    admin = free_port()
    hc = {"active": {"path": "/healthz", "interval": "100ms", "timeout": "500ms",
                     "healthy": 1, "unhealthy": 1}}
    cfg = config(free_port(), be, {"ca": certs["ca"]}, health_check=hc)
    cfg["admin"]["address"] = "127.0.0.1:%d" % admin

    def healthy():
        doc = requests.get("http://127.0.0.1:%d/upstreams" % admin, timeout=scaled(5)).json()
        return doc["upstreams"][0]["targets"][0]["healthy"]
    gw = Gateway(cfg, tmp_path)
    try:
        wait_until(lambda: be.requests >= 2, scaled(5), what="probes over TLS")
        assert healthy() is True
        be.healthy = False
        wait_until(lambda: healthy() is False, scaled(5), what="marked down")
        assert get(gw).status_code == 503
        be.healthy = True
        wait_until(lambda: healthy() is True, scaled(5), what="marked up")
        assert get(gw).status_code == 200
    finally:
        gw.stop()


def test_health_check_with_a_failing_handshake_marks_the_target_down(tmp_path, certs,
                                                                      tls_backend):
    be = tls_backend()
    hc = {"active": {"path": "/healthz", "interval": "100ms", "timeout": "500ms",
                     "healthy": 1, "unhealthy": 1}}
    gw = Gateway(config(free_port(), be, {"ca": certs["other_ca"]}, health_check=hc), tmp_path)
    try:
        wait_until(lambda: "upstream TLS handshake failed" in gw.stderr_text(), scaled(5),
                   what="the probe's failure logged")
        r = get(gw)
        assert r.status_code == 503
    finally:
        gw.stop()


# ---------------------------------------------------------------- config

def test_config_errors_for_tls_files(tmp_path, certs, tls_backend):
    missing = str(tmp_path / "nope.pem")
    _, text = validate_errors(tmp_path, config(free_port(), _Addr(), {"ca": missing}))
    assert any("`tls.ca`: cannot read" in e and "No such file" in e for e in [text]), text
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    _, text = validate_errors(tmp_path, config(free_port(), _Addr(), {"ca": str(bad)}))
    assert any("cannot load the CA file" in e for e in [text]), text
    cert, key = certs["client"]
    _, text = validate_errors(tmp_path, config(free_port(), _Addr(), {"cert": cert}))
    assert any("`tls.cert` and `tls.key` go together" in e for e in [text]), text
    _, text = validate_errors(tmp_path, config(free_port(), _Addr(),
                                            {"cert": cert, "key": certs["self"][1]}))
    assert any("cannot use the private key" in e for e in [text]), text
    assert "PRIVATE KEY" not in text
    _, text = validate_errors(tmp_path, config(free_port(), _Addr(), {"verfy": True}))
    assert any("unknown key `verfy` in tls" in e for e in [text]), text


class _Addr:
    address = "127.0.0.1:9"


# ---------------------------------------------------------------- https:// URLs

def url_config(port, app_port, filters, **top):
    cfg = make_config(port, {"app": upstream(app_port)},
                      [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "app",
                        "filters": filters}])
    cfg.update(top)
    return cfg


def test_jwks_over_https_with_verification(tmp_path, certs, tls_backend):
    idp = tls_backend()
    key = jwc_jwk.JWK.generate(kty="EC", crv="P-256", kid="k1")
    idp.jwks = {"keys": [json.loads(key.export_public())]}
    now = int(time.time())
    tok = pyjwt.encode({"iss": "https://idp.test", "aud": "api", "sub": "alice", "iat": now,
                        "exp": now + 300}, key.export_to_pem(private_key=True, password=None),
                       algorithm="ES256", headers={"kid": "k1"})
    jwt_conf = {"jwks_uri": "https://127.0.0.1:%d/jwks.json" % idp.port, "tls_ca": certs["ca"],
                "issuer": "https://idp.test", "audiences": ["api"]}
    with backend() as b:
        gw = Gateway(url_config(free_port(), b.port, {"jwt": jwt_conf}), tmp_path)
        try:
            r = get(gw, headers={"Authorization": "Bearer " + tok})
            assert r.status_code == 200, r.text
            assert idp.connections >= 1 and idp.requests >= 1
        finally:
            gw.stop()
        # The system store does not know the test CA: the keys never come.
        del jwt_conf["tls_ca"]
        gw = Gateway(url_config(free_port(), b.port, {"jwt": jwt_conf}), tmp_path)
        try:
            r = get(gw, headers={"Authorization": "Bearer " + tok})
            assert r.status_code != 200
            wait_until(lambda: "upstream TLS handshake failed" in gw.stderr_text(), scaled(5),
                       what="the JWKS fetch's TLS failure logged")
        finally:
            gw.stop()


def test_introspection_over_https_with_verification(tmp_path, certs, tls_backend):
    idp = tls_backend()
    conf = {"endpoint": "https://localhost:%d/introspect" % idp.port, "tls_ca": certs["ca"],
            "client_id": "gw", "client_secret": "s3cret"}
    with backend() as b:
        gw = Gateway(url_config(free_port(), b.port, {"introspection": conf}), tmp_path)
        try:
            r = get(gw, headers={"Authorization": "Bearer tok-1"})
            assert r.status_code == 200, r.text
            assert echo_headers(r.json(), "X-Consumer-Name") == ["alice"]
            assert idp.posts and idp.posts[0][0] == "/introspect"
            assert idp.snis[-1] == "localhost"  # SNI and the name checked: the URL's host
        finally:
            gw.stop()


def test_otlp_export_over_https(tmp_path, certs, tls_backend):
    col = tls_backend()
    tracing = {"otlp_endpoint": "https://127.0.0.1:%d/v1/traces" % col.port,
               "tls_ca": certs["ca"], "sample": 1.0, "flush_every": "100ms"}
    with backend() as b:
        gw = Gateway(url_config(free_port(), b.port, {}, tracing=tracing), tmp_path)
        try:
            assert get(gw).status_code == 200
            wait_until(lambda: any(p == "/v1/traces" for p, _ in col.posts), scaled(5),
                       what="spans exported over https")
        finally:
            gw.stop()


def test_url_tls_config_errors(tmp_path, certs):
    conf = {"endpoint": "http://127.0.0.1:9/introspect", "tls_ca": certs["ca"],
            "client_id": "gw", "client_secret": "x"}
    _, text = validate_errors(tmp_path, url_config(free_port(), 9, {"introspection": conf}))
    assert "`tls_ca` is for an https:// URL" in text, text
    conf["endpoint"] = "https://127.0.0.1:9/introspect"
    conf["tls_ca"] = str(tmp_path / "missing.pem")
    _, text = validate_errors(tmp_path, url_config(free_port(), 9, {"introspection": conf}))
    assert "`tls_ca`: cannot read" in text, text
