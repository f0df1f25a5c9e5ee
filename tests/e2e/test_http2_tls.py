"""HTTP/2 over TLS end to end (listeners[].tls + http2): ALPN h2 with
curl --http2 (--resolve for SNI, --cacert from the test CA), nghttp and
python h2 over ssl; a 1000-stream session with bodies up to 10 MiB both
ways, byte-exact; WebSocket over h2 (RFC 8441) over TLS; the 421 of a
client-auth listener when :authority names another server than the SNI;
an h2load smoke run over TLS."""

import json
import ssl
import subprocess

import pytest

from conftest import Gateway, backend, free_port, make_config, scaled, upstream
from h2_ws import H2WebSocket
from test_http2 import H2Client, status, thousand_streams
from tls_certs import tls_certs  # noqa: F401  (the session fixture)

MiB = 1 << 20
NAME = "api.test"
OTHER = "other.test"


def h2_tls_config(port, up_port, certs, client_auth=None, limits=None):
    cert, key = certs.server("h2api", [NAME, OTHER], kind="ec")
    cfg = make_config(port, {"u": upstream(up_port)},
                      [{"name": "ws", "match": {"path_prefix": "/ws/"}, "upstream": "u",
                        "websocket": True},
                       {"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}],
                      limits=limits)
    tls = {"certificates": [{"cert": cert, "key": key}]}
    if client_auth:
        tls["client_ca"] = certs.ca
        tls["client_auth"] = client_auth
    cfg["listeners"][0]["tls"] = tls
    cfg["listeners"][0]["http2"] = True
    return cfg


def h2_ctx(certs, client_cert=None):
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.set_alpn_protocols(["h2"])
    if client_cert:
        ctx.load_cert_chain(*client_cert)
    return ctx


@pytest.fixture(scope="module")
def env(tls_certs, tmp_path_factory):
    with backend("h2tls", threads=2) as b:
        port = free_port()
        gw = Gateway(h2_tls_config(port, b.port, tls_certs,
                                   limits={"max_body_bytes": "16MiB"}),
                     tmp_path_factory.mktemp("h2tls"))
        try:
            yield gw, b, tls_certs
        finally:
            gw.stop()


def test_curl_http2_over_https_negotiates_h2_by_alpn(env):
    gw, _, certs = env
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--max-time", str(scaled(10)),
         "--resolve", "%s:%d:127.0.0.1" % (NAME, gw.port), "--cacert", certs.ca,
         "-o", "-", "-w", "\n%{http_version} %{http_code}",
         "https://%s:%d/h2/curl?q=1" % (NAME, gw.port)],
        capture_output=True, text=True, timeout=scaled(20))
    assert out.returncode == 0, out.stderr
    body, _, tail = out.stdout.rpartition("\n")
    assert tail == "2 200", tail
    doc = json.loads(body)
    assert doc["path"] == "/h2/curl" and doc["query"] == "q=1"
    seen = {k.lower(): v for k, v in doc["headers"]}
    assert seen["x-forwarded-proto"] == "https" and seen["host"] == "%s:%d" % (NAME, gw.port)


def test_nghttp_over_tls_concurrent_streams(env):
    gw = env[0]
    url = "https://127.0.0.1:%d" % gw.port
    out = subprocess.run(["nghttp", "-nv", "-m", "20", url + "/n1", url + "/n2"],
                         capture_output=True, text=True, timeout=scaled(30))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "negotiated protocol: h2" in out.stdout, out.stdout
    assert out.stdout.count(":status: 200") == 40, out.stdout[-2000:]


def test_python_h2_over_ssl_thousand_streams_bodies_both_ways(env):
    gw, _, certs = env
    c = H2Client(gw.port, window=8 * MiB, ssl_ctx=h2_ctx(certs), server_hostname=NAME)
    try:
        assert status(c.get("/first")) == 200
        thousand_streams(c)
    finally:
        c.close()


def test_websocket_over_h2_over_tls(env):
    gw, _, certs = env
    ws = H2WebSocket(gw.port, "/ws/echo", authority=NAME, ssl_ctx=h2_ctx(certs))
    try:
        assert ws.connect_protocol == 1 and ws.status == 200
        for n in (5, 70000, MiB):
            payload = bytes(range(256)) * (n // 256) + b"z" * (n % 256)
            ws.send_message(payload)
            assert ws.recv_message() == (2, payload)
        ws.close(4003, b"bye", end_stream=True)
        op, payload = ws.recv_message()
        assert op == 8 and payload == b"\x0f\xa3bye"
        assert ws.wait_end()["reset"] is None
    finally:
        ws.shutdown()


def test_h2load_over_tls_smoke(env):
    gw = env[0]
    out = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "100",
                          "https://127.0.0.1:%d/tiny" % gw.port],
                         capture_output=True, timeout=scaled(60), text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Application protocol: h2" in out.stdout, out.stdout
    assert "2000 succeeded" in out.stdout, out.stdout
    assert "status codes: 2000 2xx" in out.stdout, out.stdout


def test_misdirected_authority_gets_421_over_h2_on_a_client_auth_listener(tls_certs, tmp_path):
    """One certificate for two names lets a browser reuse the connection for
    both (RFC 9113 §9.1.1 coalescing); on a client-auth listener the
    certificate check was made for the SNI's server, so a stream for the
    other name gets 421 — the client retries on a new connection — while
    the SNI's own streams on the same connection are served."""
    with backend("h2mtls") as b:
        gw = Gateway(h2_tls_config(free_port(), b.port, tls_certs, client_auth="optional"),
                     tmp_path)
        try:
            cc = tls_certs.client("h2alice", cn="alice")
            c = H2Client(gw.port, ssl_ctx=h2_ctx(tls_certs, cc), server_hostname=NAME)
            st = c.get("/mine", authority=NAME)
            assert status(st) == 200
            st = c.get("/theirs", authority=OTHER)
            assert status(st) == 421
            doc = json.loads(st["data"])
            assert doc["status"] == 421
            assert status(c.get("/mine-again", authority=NAME)) == 200
            assert b.stats()["requests"] == 2
            c.close()
        finally:
            gw.stop()
