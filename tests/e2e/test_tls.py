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
import socket
import ssl
import subprocess
import time

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
