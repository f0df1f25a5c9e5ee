"""WebSocket over HTTP/2 (RFC 8441 extended CONNECT) through the gateway:
python `h2` sends `:method CONNECT` + `:protocol websocket` on an h2c
listener and speaks RFC 6455 frames (masked, h2_ws.py) on the stream to
the demo backend's /ws/echo, which gets an HTTP/1.1 upgrade.

Messages of several sizes up to 1 MiB arrive byte-exact both ways under
flow control while other streams of the connection carry on; close codes
propagate both ways; END_STREAM half-closes toward the backend; RST_STREAM
cuts the tunnel; a reload mid-session does not cut it; the upstream's
handshake is checked (Sec-WebSocket-Accept) and turned into a 200;
CONNECT without :protocol websocket, or on a route without `websocket:
true`, is refused."""

import base64
import hashlib
import json
import random
import struct

import pytest

from conftest import (Gateway, access_log_lines, backend, free_port, make_config, read_head,
                      scaled, upstream, wait_until)
from h2_ws import H2WebSocket

MiB = 1 << 20
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_routes(upstream_name="u", timeout=None):
    ws = {"name": "ws", "match": {"path_prefix": "/ws/"}, "upstream": upstream_name,
          "websocket": True}
    if timeout:
        ws["timeout"] = timeout
    return [ws, {"name": "plain", "match": {"path_prefix": "/"}, "upstream": upstream_name}]


def h2_ws_config(up_port, access_log=None, timeout=None):
    cfg = make_config(free_port(), {"u": upstream(up_port)}, ws_routes(timeout=timeout),
                      access_log=access_log)
    cfg["listeners"][0]["http2"] = True
    return cfg


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("wsh2", threads=2) as b:
        d = tmp_path_factory.mktemp("wsh2")
        cfg = h2_ws_config(b.port, access_log={"path": str(d / "access.log")})
        gw = Gateway(cfg, d)
        try:
            yield gw, b, cfg, d
        finally:
            gw.stop()


def test_settings_advertise_extended_connect_and_messages_arrive_byte_exact(env):
    gw = env[0]
    ws = H2WebSocket(gw.port, "/ws/echo")
    try:
        assert ws.connect_protocol == 1
        assert ws.status == 200
        rnd = random.Random(8441)
        sizes = [1, 2, 125, 126, 127, 65535, 65536, 100000] + [rnd.randint(1, 64 * 1024)
                                                                for _ in range(60)]
        for i, n in enumerate(sizes):
            payload = bytes(rnd.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1)
            payload = payload[:n]
            ws.send_message(payload)
            assert ws.recv_message() == (2, payload), "message %d (%d bytes)" % (i, n)
            if i % 20 == 0:
                # Another stream on the same connection, while the tunnel is open.
                st, body = ws.get("/plain/x")
                assert st == 200 and json.loads(body)["path"] == "/plain/x"
        for k in range(3):
            big = bytes(range(256)) * (MiB // 256)
            big = big[k:] + big[:k]
            ws.send_message(big)
            assert ws.recv_message() == (2, big)
        ws.send_message("héllo".encode(), text=True)
        assert ws.recv_message() == (1, "héllo".encode())
    finally:
        ws.shutdown()


def test_client_close_code_reaches_backend_and_comes_back(env):
    gw = env[0]
    ws = H2WebSocket(gw.port, "/ws/echo")
    try:
        ws.send_message(b"hi", text=True)
        assert ws.recv_message() == (1, b"hi")
        ws.close(4001, b"client done")
        op, payload = ws.recv_message()
        assert op == 8 and struct.unpack("!H", payload[:2])[0] == 4001
        assert payload[2:] == b"client done"
        # The backend closed after its close frame: END_STREAM, no reset.
        st = ws.wait_end()
        assert st["ended"] and st["reset"] is None
    finally:
        ws.shutdown()


def test_backend_initiated_close_code_reaches_client(env):
    gw = env[0]
    ws = H2WebSocket(gw.port, "/ws/echo")
    try:
        ws.send_message(b"__close:4002", text=True)
        op, payload = ws.recv_message()
        assert op == 8 and struct.unpack("!H", payload[:2])[0] == 4002
        assert payload[2:] == b"backend closes"
        ws.close(4002, end_stream=True)
        st = ws.wait_end()
        assert st["ended"] and st["reset"] is None
    finally:
        ws.shutdown()


def test_upstream_gets_an_http11_upgrade_and_the_client_a_200_without_accept(env):
    gw = env[0]
    ws = H2WebSocket(gw.port, "/ws/echo", headers=[("sec-websocket-protocol", "chat"),
                                                   ("sec-websocket-extensions", "x-none")])
    try:
        assert ws.status == 200
        assert "sec-websocket-accept" not in ws.head and "upgrade" not in ws.head
        assert "connection" not in ws.head and "x-request-id" in ws.head
        ws.send_message(b"__headers", text=True)
        op, payload = ws.recv_message()
        seen = {k.lower(): v for k, v in json.loads(payload)}
        assert seen["upgrade"] == "websocket" and seen["connection"].lower() == "upgrade"
        assert seen["sec-websocket-version"] == "13"
        key = base64.b64decode(seen["sec-websocket-key"])
        assert len(key) == 16
        assert seen["sec-websocket-protocol"] == "chat"
        assert seen["sec-websocket-extensions"] == "x-none"
        assert "x-forwarded-for" in seen
    finally:
        ws.shutdown()


def test_client_end_stream_half_closes_toward_the_backend(env):
    """Frames and END_STREAM together: the backend still answers (the echo
    of the text and of the close), then its EOF ends the stream."""
    gw = env[0]
    ws = H2WebSocket(gw.port, "/ws/echo")
    try:
        ws.send_message(b"last words", text=True)
        ws.close(1000, end_stream=True)
        assert ws.recv_message() == (1, b"last words")
        op, payload = ws.recv_message()
        assert op == 8 and payload[:2] == b"\x03\xe8"
        st = ws.wait_end()
        assert st["ended"] and st["reset"] is None
    finally:
        ws.shutdown()


def test_rst_stream_cuts_the_tunnel_and_the_connection_carries_on(env):
    gw, _, _, d = env
    ws = H2WebSocket(gw.port, "/ws/echo", headers=[("x-request-id", "h2ws-rst-1")])
    try:
        ws.send_message(b"x", text=True)
        assert ws.recv_message() == (1, b"x")
        ws.reset(8)  # CANCEL

        def line():
            for l in access_log_lines(str(d / "access.log"), 1):
                if l.get("request_id") == "h2ws-rst-1":
                    return l
            return None
        l = wait_until(line, scaled(10), what="the cut session's log line")
        assert l["route"] == "ws" and l["error"]
        st, _ = ws.get("/plain/after")
        assert st == 200
    finally:
        ws.shutdown()


def test_reload_mid_session_does_not_cut_it(env):
    gw, b, cfg, d = env
    extra = dict(cfg)
    extra["routes"] = ws_routes() + [{"name": "extra", "match": {"path": "/extra"},
                                      "upstream": "u"}]
    ws = H2WebSocket(gw.port, "/ws/echo")
    try:
        ws.send_message(b"before", text=True)
        assert ws.recv_message() == (1, b"before")
        for i in range(6):
            gw.reload(extra if i % 2 == 0 else cfg)
            m = b"after %d" % i
            ws.send_message(m, text=True)
            assert ws.recv_message() == (1, m)
        gw.reload(extra)
        # New streams on the same connection see the new generation.
        st, _ = ws.get("/extra")
        assert st == 200
        big = b"\x00" * 300000
        ws.send_message(big)
        assert ws.recv_message() == (2, big)
    finally:
        ws.shutdown()
        gw.reload(cfg)


def test_refusals_plain_connect_other_protocol_and_route_without_websocket(env):
    gw = env[0]
    # (python h2 would refuse to send the plain CONNECT)
    ws = H2WebSocket(gw.port, None, connect=False, validate=False)
    try:
        assert ws.open("/plain/ws") == 403
        assert ws.open("/ws/echo", protocol="foo") == 501
        # Plain CONNECT (authority form, no :protocol): nghttp2 takes it
        # with :authority only; the gateway does not tunnel TCP.
        sid = ws.new_stream([(":method", "CONNECT"), (":authority", "example.com:443")])
        assert int(ws.wait_head(sid)[":status"]) == 405
        st, _ = ws.get("/plain/still")
        assert st == 200
    finally:
        ws.shutdown()


def test_upstream_accept_must_answer_our_key(tmp_path, raw_upstream):
    """A backend whose Sec-WebSocket-Accept does not answer the key the
    gateway made gets no tunnel (502); one that does gets the stream, with
    its Sec-WebSocket-Protocol passed to the client."""
    def handler(s):
        head, rest = read_head(s)
        fields = dict(l.split(": ", 1) for l in head.decode().split("\r\n")[1:] if ": " in l)
        fields = {k.lower(): v for k, v in fields.items()}
        if "/bad" in head.split(b"\r\n")[0].decode():
            accept = base64.b64encode(b"\x00" * 20).decode()
        else:
            accept = base64.b64encode(hashlib.sha1(
                fields["sec-websocket-key"].encode() + GUID).digest()).decode()
        s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                   "Sec-WebSocket-Protocol: chat\r\n\r\n" % accept).encode())
        # Raw echo of the tunnel's bytes until EOF.
        if rest:
            s.sendall(rest)
        while True:
            k = s.recv(65536)
            if not k:
                break
            s.sendall(k)
        s.shutdown(1)
    up = raw_upstream(handler)
    gw = Gateway(h2_ws_config(up.port), tmp_path)
    try:
        ws = H2WebSocket(gw.port, "/ws/bad")
        assert ws.status == 502
        ws.shutdown()
        ws = H2WebSocket(gw.port, "/ws/good", headers=[("sec-websocket-protocol", "chat")])
        assert ws.status == 200 and ws.head.get("sec-websocket-protocol") == "chat"
        ws.send_raw(b"raw tunnel bytes", end_stream=True)
        st = ws.wait_end()
        assert bytes(ws.buf + st["data"]) == b"raw tunnel bytes" and st["reset"] is None
        ws.shutdown()
    finally:
        gw.stop()


def test_idle_tunnel_is_cut_after_the_route_timeout(tmp_path):
    with backend("wsh2i") as b:
        gw = Gateway(h2_ws_config(b.port, timeout="1s"), tmp_path)
        try:
            ws = H2WebSocket(gw.port, "/ws/echo")
            ws.send_message(b"x", text=True)
            assert ws.recv_message() == (1, b"x")
            st = ws.wait_end()
            assert st["reset"] is not None
            st2, _ = ws.get("/plain/after-idle")
            assert st2 == 200
            ws.shutdown()
        finally:
            gw.stop()
