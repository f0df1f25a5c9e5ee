"""TLS termination on listeners (`listeners[].tls`): certificates chosen
by SNI (the first is the default; RSA and ECDSA for one name picked by the
client's signature algorithms), TLS 1.2 and 1.3 only, ALPN, session
tickets (resumed across instances that share `ticket_key_file`, not across
ones that don't), certificate reload without dropping connections, the
handshake timeout, X-Forwarded-Proto https, a PROXY header before the
ClientHello, large bodies byte-exact, and config errors with
file:line:col. Real clients: python ssl/http.client, curl, openssl
s_client."""

import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
import zlib

import pytest

from conftest import (Gateway, backend, echo_headers, free_port, make_config, scaled, upstream,
                      wait_until)
from tls_certs import tls_certs  # noqa: F401  (the session fixture)


def tls_config(port, b, certs, **tls_extra):
    cfg = make_config(port, {"echo": upstream(b.port)},
                      [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "echo"}])
    tls = {"certificates": [{"cert": c, "key": k} for c, k in certs]}
    tls.update(tls_extra)
    cfg["listeners"][0]["tls"] = tls
    return cfg


def client_ctx(ca, alpn=None, **kw):
    ctx = ssl.create_default_context(cafile=ca)
    for k, v in kw.items():
        setattr(ctx, k, v)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https(port, sni, ca, method="GET", path="/echo", body=None, headers=None, ctx=None):
    """One request over a fresh TLS connection; (status, body bytes, peer cert dict)."""
    ctx = ctx or client_ctx(ca)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=scaled(10))
    # SNI and certificate name are checked against `sni`.
    conn._tunnel_host = None
    conn.host = sni
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    conn.sock = ctx.wrap_socket(sock, server_hostname=sni)
    conn.request(method, path, body=body, headers=dict({"Host": sni}, **(headers or {})))
    r = conn.getresponse()
    data = r.read()
    cert = conn.sock.getpeercert()
    conn.close()
    return r.status, data, cert


def subject_cn(cert):
    for rdn in cert["subject"]:
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def s_client(port, *args, data=b"", timeout=15):
    """openssl s_client; returns its stdout+stderr text."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args)
    if data:
        cmd.append("-ign_eof")  # wait for the response (the request says Connection: close)
    r = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=scaled(timeout))
    return r.stdout.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def echo():
    with backend("tls") as b:
        yield b


@pytest.fixture(scope="module")
def multi(tls_certs, echo, tmp_path_factory):
    """A listener with three certificates: api.test (RSA, the default),
    *.shop.test (ECDSA) and ec.test in both RSA and ECDSA."""
    api = tls_certs.server("api", ["api.test"], kind="rsa")
    shop = tls_certs.server("shop", ["*.shop.test"], kind="ec")
    both_rsa = tls_certs.server("both-rsa", ["both.test"], kind="rsa", cn="both.test rsa")
    both_ec = tls_certs.server("both-ec", ["both.test"], kind="ec", cn="both.test ecdsa")
    port = free_port()
    gw = Gateway(tls_config(port, echo, [api, shop, both_rsa, both_ec]),
                 tmp_path_factory.mktemp("tls-multi"))
    try:
        yield gw
    finally:
        gw.stop()


def test_https_request_reaches_backend_with_forwarded_proto_https(multi, tls_certs):
    status, body, _ = https(multi.port, "api.test", tls_certs.ca,
                            headers={"X-Forwarded-Proto": "http"})
    assert status == 200
    doc = json.loads(body)
    assert echo_headers(doc, "X-Forwarded-Proto") == ["https"]


def test_sni_picks_certificate_by_name_and_wildcard(multi, tls_certs):
    _, _, cert = https(multi.port, "api.test", tls_certs.ca)
    assert subject_cn(cert) == "api.test"
    _, _, cert = https(multi.port, "a.shop.test", tls_certs.ca)
    assert subject_cn(cert) == "*.shop.test"
    # a wildcard covers one label only: x.y.shop.test gets the default
    out = s_client(multi.port, "-servername", "x.y.shop.test", data=b"")
    assert "CN = api.test" in out


def test_unknown_or_missing_sni_gets_default_certificate(multi):
    out = s_client(multi.port, "-servername", "unknown.test")
    assert "subject=CN = api.test" in out
    out = s_client(multi.port, "-noservername")
    assert "subject=CN = api.test" in out


def test_rsa_or_ecdsa_for_one_name_by_client_sigalgs(multi):
    out = s_client(multi.port, "-servername", "both.test", "-sigalgs", "ECDSA+SHA256")
    assert "subject=CN = both.test ecdsa" in out, out
    out = s_client(multi.port, "-servername", "both.test", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
    assert "subject=CN = both.test rsa" in out, out


@pytest.fixture(scope="module")
def single(tls_certs, echo, tmp_path_factory):
    """A TLS listener with one ECDSA certificate, http2: true (ALPN offers
    h2), and a second, plain-TLS listener without http2."""
    api = tls_certs.server("api-ec", ["api.test"], kind="ec")
    port, port2 = free_port(), free_port()
    cfg = tls_config(port, echo, [api], handshake_timeout="1s")
    cfg["limits"] = {"max_body_bytes": "64MiB"}
    cfg["listeners"][0]["http2"] = True
    cfg["listeners"].append({"name": "h1only", "address": "127.0.0.1:%d" % port2,
                             "tls": {"certificates": [{"cert": api[0], "key": api[1]}]}})
    gw = Gateway(cfg, tmp_path_factory.mktemp("tls-single"))
    gw.port2 = port2
    try:
        yield gw
    finally:
        gw.stop()


def alpn_of(out):
    for line in out.splitlines():
        if line.startswith("ALPN protocol:"):
            return line.split(":", 1)[1].strip()
        if "No ALPN negotiated" in line:
            return None
    return "?"


def test_alpn_h2_only_on_http2_listener(single):
    out = s_client(single.port, "-servername", "api.test", "-alpn", "h2,http/1.1")
    assert alpn_of(out) == "h2", out
    out = s_client(single.port2, "-servername", "api.test", "-alpn", "h2,http/1.1")
    assert alpn_of(out) == "http/1.1", out
    # a client that offers only h2 to a listener without http2: no ALPN, no failure
    out = s_client(single.port2, "-servername", "api.test", "-alpn", "h2")
    assert alpn_of(out) is None and "Cipher is" in out, out


def test_python_client_negotiates_http11_by_alpn(single, tls_certs):
    ctx = client_ctx(tls_certs.ca, alpn=["http/1.1"])
    with socket.create_connection(("127.0.0.1", single.port), timeout=scaled(5)) as s:
        with ctx.wrap_socket(s, server_hostname="api.test") as t:
            assert t.selected_alpn_protocol() == "http/1.1"
            t.sendall(b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                d = t.recv(65536)
                if not d:
                    break
                data += d
    assert data.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls10_and_tls11_refused_even_when_client_allows_them(single, flag):
    out = s_client(single.port, flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "api.test")
    assert "Cipher is (NONE)" in out, out
    assert "BEGIN CERTIFICATE" not in out and "Server certificate" not in out


@pytest.mark.parametrize("flag,proto", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls12_and_tls13_work(single, flag, proto, tls_certs):
    out = s_client(single.port, flag, "-servername", "api.test", "-CAfile", tls_certs.ca,
                   data=b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
    assert "Protocol  : " + proto in out or ("New, " + proto) in out, out
    assert "Verify return code: 0 (ok)" in out
    assert "HTTP/1.1 200" in out


def resume_pair(port, tmp, port2=None, proto="-tls1_3"):
    """Two s_client runs, the second offering the first's session ticket."""
    sess = os.path.join(str(tmp), "sess-%d-%s.pem" % (port, proto))
    req = b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
    first = s_client(port, proto, "-servername", "api.test", "-sess_out", sess, data=req)
    assert "HTTP/1.1 200" in first, first
    second = s_client(port2 or port, proto, "-servername", "api.test", "-sess_in", sess, data=req)
    assert "HTTP/1.1 200" in second, second
    return second


@pytest.mark.parametrize("proto", ["-tls1_2", "-tls1_3"])
def test_session_ticket_resumes(single, tmp_path, proto):
    out = resume_pair(single.port, tmp_path, proto=proto)
    assert "Reused, " in out, out


@pytest.mark.parametrize("names", [("public", "public"), ("edge-a", "edge-b")])
def test_resumption_across_instances_sharing_ticket_key_file(tls_certs, echo, tmp_path, names):
    """Instances sharing a ticket_key_file resume each other's sessions;
    the session id context holds what decides trust, not the listener's
    name, so instances that name their listeners differently do too."""
    api = tls_certs.server("api-ec", ["api.test"], kind="ec")
    keyfile = tmp_path / "tickets.key"
    keyfile.write_bytes(os.urandom(160))  # two keys: the first encrypts
    gws = []
    try:
        for i in range(2):
            d = tmp_path / ("gw%d" % i)
            d.mkdir()
            cfg = tls_config(free_port(), echo, [api], ticket_key_file=str(keyfile))
            cfg["listeners"][0]["name"] = names[i]
            gws.append(Gateway(cfg, d))
        for proto in ("-tls1_3", "-tls1_2"):
            out = resume_pair(gws[0].port, tmp_path, gws[1].port, proto)
            assert "Reused, " in out, out
    finally:
        for g in gws:
            g.stop()


def test_no_resumption_across_instances_without_shared_keys(tls_certs, echo, tmp_path):
    api = tls_certs.server("api-ec", ["api.test"], kind="ec")
    gws = []
    try:
        for i in range(2):
            d = tmp_path / ("gw%d" % i)
            d.mkdir()
            gws.append(Gateway(tls_config(free_port(), echo, [api]), d))
        out = resume_pair(gws[0].port, tmp_path, gws[1].port)
        assert "New, " in out and "Reused, " not in out, out
    finally:
        for g in gws:
            g.stop()


def test_handshake_timeout_closes_silent_connection(single):
    with socket.create_connection(("127.0.0.1", single.port), timeout=scaled(5)) as s:
        t0 = time.monotonic()
        s.settimeout(scaled(5))
        assert s.recv(100) == b""  # closed without a byte (no HTTP response)
        assert time.monotonic() - t0 >= 0.9


def test_garbage_instead_of_clienthello_closes_without_http_response(single):
    with socket.create_connection(("127.0.0.1", single.port), timeout=scaled(5)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(scaled(5))
        data = b""
        try:
            while True:
                d = s.recv(1000)
                if not d:
                    break
                data += d
        except ConnectionResetError:
            pass
        assert b"HTTP/1.1" not in data


def test_proxy_v1_header_then_tls(tls_certs, echo, tmp_path):
    api = tls_certs.server("api-ec", ["api.test"], kind="ec")
    port = free_port()
    cfg = tls_config(port, echo, [api])
    cfg["listeners"][0]["proxy_protocol"] = True
    gw = Gateway(cfg, tmp_path)
    try:
        ctx = client_ctx(tls_certs.ca)
        for split in (True, False):
            s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
            hdr = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n"
            if split:
                s.sendall(hdr)
                t = ctx.wrap_socket(s, server_hostname="api.test")
            else:
                # the header and the ClientHello in one segment
                inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
                obj = ctx.wrap_bio(inc, out, server_hostname="api.test")
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                s.sendall(hdr + out.read())
                while True:
                    try:
                        obj.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        if out.pending:
                            s.sendall(out.read())
                        d = s.recv(65536)
                        assert d, "closed during the handshake"
                        inc.write(d)
                s.sendall(out.read())
                obj.write(b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
                s.sendall(out.read())
                data = b""
                while True:
                    try:
                        d = obj.read(65536)
                        if not d:
                            break  # close_notify
                        data += d
                        continue
                    except ssl.SSLWantReadError:
                        pass
                    except ssl.SSLZeroReturnError:
                        break
                    d = s.recv(65536)
                    if not d:
                        break
                    inc.write(d)
                s.close()
                assert b" 200 " in data.split(b"\r\n")[0]
                body = data.split(b"\r\n\r\n", 1)[1]
                assert echo_headers(json.loads(body), "X-Forwarded-For") == ["203.0.113.7"]
                continue
            t.sendall(b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                d = t.recv(65536)
                if not d:
                    break
                data += d
            t.close()
            assert data.startswith(b"HTTP/1.1 200")
            body = data.split(b"\r\n\r\n", 1)[1]
            assert echo_headers(json.loads(body), "X-Forwarded-For") == ["203.0.113.7"]
    finally:
        gw.stop()


def test_large_bodies_byte_exact_both_ways(single, tls_certs):
    """10 MiB up and down: records larger than the socket takes at once go
    through the TLS layer's side buffer."""
    body = os.urandom(10 * 1024 * 1024)
    status, data, _ = https(single.port, "api.test", tls_certs.ca, method="POST",
                            path="/upload", body=body,
                            headers={"Content-Type": "application/octet-stream"})
    assert status == 200
    doc = json.loads(data)
    assert doc["body_len"] == len(body)
    assert doc["body_crc32"] == "%08x" % (zlib.crc32(body) & 0xFFFFFFFF)
    n = 10 * 1024 * 1024
    status, data, _ = https(single.port, "api.test", tls_certs.ca, path="/bytes/%d" % n)
    assert status == 200 and len(data) == n
    assert data == (b"0123456789abcdef" * (n // 16))


def test_reload_serves_new_certificate_while_old_connection_keeps_working(tls_certs, echo,
                                                                          tmp_path):
    old = tls_certs.server("reload-old", ["api.test"], kind="ec", cn="api.test old")
    new = tls_certs.server("reload-new", ["api.test"], kind="rsa", cn="api.test new")
    port = free_port()
    cfg = tls_config(port, echo, [old])
    gw = Gateway(cfg, tmp_path)
    try:
        ctx = client_ctx(tls_certs.ca)
        kept = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=scaled(10))
        kept.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                    server_hostname="api.test")
        assert subject_cn(kept.sock.getpeercert()) == "api.test old"
        kept.request("GET", "/echo", headers={"Host": "api.test"})
        r = kept.getresponse()
        assert r.status == 200 and r.read()
        cfg2 = tls_config(port, echo, [new])
        cfg2["admin"] = cfg["admin"]
        gw.reload(cfg2)
        _, _, cert = https(port, "api.test", tls_certs.ca)
        assert subject_cn(cert) == "api.test new"
        for _ in range(3):  # the old connection, on the old certificate's session
            kept.request("GET", "/echo", headers={"Host": "api.test"})
            r = kept.getresponse()
            assert r.status == 200 and json.loads(r.read())["method"] == "GET"
        kept.close()
    finally:
        gw.stop()


def test_bad_certificate_in_reload_is_rejected_and_old_keeps_serving(tls_certs, echo, tmp_path):
    api = tls_certs.server("api-ec", ["api.test"], kind="ec")
    other = tls_certs.server("api", ["api.test"], kind="rsa")
    port = free_port()
    cfg = tls_config(port, echo, [api])
    gw = Gateway(cfg, tmp_path)
    try:
        bad = tls_config(port, echo, [(api[0], other[1])])  # a key from another certificate
        bad["admin"] = cfg["admin"]
        gw.reload(bad, expect_ok=False)
        status, _, cert = https(port, "api.test", tls_certs.ca)
        assert status == 200 and subject_cn(cert) == "api.test"
    finally:
        gw.stop()


def validate(tmp_path, tls_block):
    text = ("listeners:\n  - address: 127.0.0.1:%d\n    tls:\n" % free_port() + tls_block +
            "upstreams: { u: { targets: [127.0.0.1:9] } }\n"
            "routes: [{ name: r, match: { path_prefix: / }, upstream: u }]\n")
    path = tmp_path / "v.yaml"
    path.write_text(text)
    import conftest
    r = subprocess.run([conftest.PORTICO, "validate", str(path)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    return r.returncode, r.stdout


def test_config_errors_point_at_the_file_and_say_why(tls_certs, tmp_path):
    api = tls_certs.server("api-ec", ["api.test"], kind="ec")
    other = tls_certs.server("api", ["api.test"], kind="rsa")
    rc, out = validate(tmp_path, "      certificates:\n"
                                 "        - { cert: missing.pem, key: %s }\n" % api[1])
    assert rc != 0 and re.search(r"v\.yaml:5:19: cannot read `.*missing\.pem`: No such file", out), out
    rc, out = validate(tmp_path, "      certificates:\n"
                                 "        - { cert: %s, key: %s }\n" % (api[0], other[1]))
    assert rc != 0 and re.search(r"v\.yaml:5:\d+: the key does not match the certificate", out), out
    assert "PRIVATE KEY" not in out
    rc, out = validate(tmp_path, "      certificates:\n"
                                 "        - { cert: %s, key: %s }\n" % (api[1], api[1]))
    assert rc != 0 and "holds no PEM certificate" in out, out
    rc, out = validate(tmp_path, "      certificates: [{ cert: %s, key: %s }]\n"
                                 "      ticket_key_file: %s\n" % (api[0], api[1], api[0]))
    assert rc != 0 and re.search(r"v\.yaml:5:24: .* must hold 1 to 16 keys of 80 bytes", out), out
    rc, out = validate(tmp_path, "      certificates: [{ cert: %s, key: %s }]\n"
                                 "      client_auth: required\n" % (api[0], api[1]))
    assert rc != 0 and "v.yaml:5:20: `client_auth` needs `client_ca`" in out, out
    rc, out = validate(tmp_path, "      certificates: [{ cert: %s, key: %s }]\n"
                                 "      client_ca: nope.pem\n" % (api[0], api[1]))
    assert rc != 0 and re.search(r"v\.yaml:5:18: cannot read `.*nope\.pem`", out), out
    rc, out = validate(tmp_path, "      certificates: [{ cert: %s, key: %s }]\n"
                                 "      handshake_timout: 5s\n" % (api[0], api[1]))
    assert rc != 0 and "did you mean `handshake_timeout`" in out, out


def test_handshake_metrics_and_access_log_fields(tls_certs, echo, tmp_path):
    api = tls_certs.server("api-ec", ["api.test"], kind="ec")
    port = free_port()
    log = str(tmp_path / "access.log")
    cfg = tls_config(port, echo, [api])
    cfg["access_log"] = {"path": log, "format": "json"}
    gw = Gateway(cfg, tmp_path)
    try:
        resume_pair(port, tmp_path, proto="-tls1_3")  # one full, one resumed
        with socket.create_connection(("127.0.0.1", port)) as s:  # one failed
            s.sendall(b"\x16\x03\x01\x00\x05hello")
            s.settimeout(scaled(5))
            try:
                s.recv(100)
            except ConnectionResetError:
                pass

        def counts():
            import requests
            text = requests.get("http://127.0.0.1:%d/metrics" % gw.admin_port,
                                timeout=scaled(5)).text
            got = {}
            for r in ("full", "resumed", "failed"):
                m = re.search(r'portico_tls_handshakes_total\{listener="public",result="%s"\} (\d+)'
                              % r, text)
                got[r] = int(m.group(1)) if m else 0
            return got
        wait_until(lambda: counts() == {"full": 1, "resumed": 1, "failed": 1}, scaled(5),
                   what="handshake counters, got %r" % (counts(),))
        wait_until(lambda: os.path.exists(log) and len(open(log).read().splitlines()) >= 2,
                   scaled(5), what="access log lines")
        for line in open(log).read().splitlines():
            doc = json.loads(line)
            assert doc["tls_version"] == "TLSv1.3"
            assert doc["tls_cipher"].startswith("TLS_")
    finally:
        gw.stop()


@pytest.mark.parametrize("proto", ["-tls1_2", "-tls1_3"])
def test_client_ca_listener_never_resumes_a_ticket_under_another_name(tls_certs, echo, tmp_path,
                                                                      proto):
    """nginx CVE-2025-23419: a session from one SNI name is not resumed
    under another on a listener that checks client certificates."""
    a = tls_certs.server("cve-a", ["a.test"], kind="ec")
    b = tls_certs.server("cve-b", ["b.test"], kind="ec")
    port = free_port()
    gw = Gateway(tls_config(port, echo, [a, b], client_ca=tls_certs.ca), tmp_path)
    try:
        sess = str(tmp_path / "s.pem")
        req = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
        first = s_client(port, proto, "-servername", "a.test", "-sess_out", sess, data=req)
        assert "HTTP/1.1 200" in first, first
        same = s_client(port, proto, "-servername", "a.test", "-sess_in", sess, data=req)
        assert "Reused, " in same, same
        other = s_client(port, proto, "-servername", "b.test", "-sess_in", sess,
                         data=req.replace(b"a.test", b"b.test"))
        assert "Reused, " not in other and "New, " in other, other
        assert "CN = b.test" in other
    finally:
        gw.stop()


def test_connection_close_answers_arrive_whole_and_end_with_close_notify(tls_certs, echo,
                                                                         tmp_path):
    """A response the gateway answers itself (no route: 404) goes out in
    the turn its request came in, on TLS 1.3 right behind the session
    tickets; with Connection: close the gateway then ends the connection.
    Every answer must arrive, followed by close_notify (a bare FIN is a
    truncation to a TLS client: openssl reports "unexpected eof")."""
    port = free_port()
    cfg = tls_config(port, echo, [tls_certs.server("close", ["api.test"], kind="ec")])
    cfg["routes"][0]["match"]["path_prefix"] = "/echo"
    gw = Gateway(cfg, tmp_path)
    try:
        for path, status in [("/nowhere", 404)] * 30 + [("/echo", 200)] * 5:
            req = b"GET %s HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n" % \
                path.encode()
            out = s_client(port, "-tls1_3", "-servername", "api.test", data=req)
            assert "HTTP/1.1 %d" % status in out, out
            assert "unexpected eof" not in out, out
    finally:
        gw.stop()
