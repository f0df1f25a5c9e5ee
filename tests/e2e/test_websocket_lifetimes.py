"""WebSocket sessions (routes[].websocket) at their edges: how each one
ends and what it leaves behind. A client or an upstream that vanishes
mid-session; half-closes; SIGTERM with sessions open (bounded by
limits.drain_timeout); a reload mid-session whose old generation is freed
when the session ends; one access log line per session; a session over a
TLS listener (wss://) and one to a TLS upstream (a python `websockets`
server with TLS); and upstreams that answer 101 without really switching
(no `Upgrade: websocket`, a wrong Sec-WebSocket-Accept): refused with 502,
and no client byte reaches them."""

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import threading
import time

import pytest
import requests
import websockets

from conftest import (SAN, Gateway, backend, free_port, make_config, read_head, read_responses,
                      scaled, upstream, wait_until)
from tls_certs import tls_certs  # noqa: F401  (the session fixture)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_routes(timeout=None):
    ws = {"name": "ws", "match": {"path_prefix": "/ws/"}, "upstream": "u", "websocket": True}
    if timeout:
        ws["timeout"] = timeout
    return [ws, {"name": "plain", "match": {"path_prefix": "/"}, "upstream": "u"}]


def run(coro, limit=60):
    return asyncio.run(asyncio.wait_for(coro, scaled(limit)))


def connect(url, **kw):
    return websockets.connect(url, max_size=None, compression=None, ping_interval=None, **kw)


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def handshake(path="/ws/x", key=None):
    key = key or base64.b64encode(os.urandom(16)).decode()
    return key, ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % (path, key)).encode()


def masked(op, payload, mask=b"\x01\x02\x03\x04"):
    assert len(payload) < 126
    return bytes([0x80 | op, 0x80 | len(payload)]) + mask + bytes(
        x ^ mask[i % 4] for i, x in enumerate(payload))


def access_lines(path, rid):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if rid in l]


def metric(gw, name):
    text = requests.get("http://127.0.0.1:%d/metrics" % gw.admin_port, timeout=scaled(5)).text
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(m.group(1)) if m else None


def recv_until_eof(s, limit):
    s.settimeout(limit)
    buf = b""
    while True:
        k = s.recv(65536)
        if not k:
            return buf
        buf += k


# ------------------------------------------------------- a scripted upstream

class ScriptedUpstream:
    """A raw TCP upstream: each accepted connection is handed to
    `handler(sock, head)` on a thread after its request head was read;
    what the handler observed is kept in `seen` (a list)."""

    def __init__(self, handler):
        self.handler = handler
        self.seen = []
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            s.settimeout(scaled(20))
            head, rest = read_head(s)
            self.handler(self, s, head, rest)
        except OSError as e:
            self.seen.append(("error", repr(e)))
        finally:
            s.close()
            self.done.set()

    def close(self):
        self.ls.close()


@pytest.fixture
def scripted():
    made = []

    def start(handler):
        u = ScriptedUpstream(handler)
        made.append(u)
        return u
    yield start
    for u in made:
        u.close()


def key_of(head):
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


def switch(s, head, accept=None, upgrade=b"Upgrade: websocket\r\n"):
    acc = accept if accept is not None else accept_for(key_of(head))
    s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n" + upgrade +
              b"Sec-WebSocket-Accept: " + acc.encode() + b"\r\n\r\n")


def gw_for(tmp_path, port, timeout=None, limits=None, workers=1):
    cfg = make_config(free_port(), {"u": upstream(port)}, ws_routes(timeout), workers=workers,
                      admin_port=free_port(), limits=limits,
                      access_log={"path": str(tmp_path / "access.log")})
    return Gateway(cfg, tmp_path), cfg


# ----------------------------------------------------- broken protocol switch

@pytest.mark.parametrize("case", ["no-upgrade-field", "upgrade-h2c", "wrong-accept",
                                  "no-accept"])
def test_101_that_is_not_a_websocket_switch_is_refused_502(tmp_path, scripted, case):
    """An upstream that says 101 without switching to WebSocket (no
    `Upgrade: websocket`, or a Sec-WebSocket-Accept that is not the one for
    the key it was sent) may not have switched at all: tunnelling the
    client's bytes to it would hand it raw requests past the gateway's
    routes and filters (WebSocket request smuggling). 502, and nothing the
    client sends after the handshake reaches the upstream raw: a request
    pipelined behind the handshake is parsed and routed by the gateway as
    any request."""
    def handler(u, s, head, rest):
        if key_of(head) is None:  # the pipelined request, routed by the gateway
            u.seen.append(("routed", head.split(b" ")[1]))
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
            return
        if case == "no-upgrade-field":
            switch(s, head, upgrade=b"")
        elif case == "upgrade-h2c":
            switch(s, head, upgrade=b"Upgrade: h2c\r\n")
        elif case == "wrong-accept":
            switch(s, head, accept=accept_for("AAAAAAAAAAAAAAAAAAAAAA=="))
        else:
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                      b"Upgrade: websocket\r\n\r\n")
        s.settimeout(scaled(3))
        got = rest
        try:
            while True:
                k = s.recv(4096)
                if not k:
                    break
                got += k
        except OSError:
            pass
        u.seen.append(("raw", got))
    up = scripted(handler)
    gw, _ = gw_for(tmp_path, up.port)
    try:
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        _, req = handshake()
        c.sendall(req + b"GET /internal/admin HTTP/1.1\r\nHost: backend\r\n\r\n")
        rs = read_responses(c, 2, scaled(5))
        assert len(rs) == 2 and rs[0].status == 502, rs
        assert rs[0].json()["error"] == "invalid upstream protocol switch"
        assert rs[1].status == 200 and rs[1].body == b"plain"
        c.close()
        raw = wait_until(lambda: [g for k, g in up.seen if k == "raw"], scaled(10),
                         what="the upstream's connection to end")
        assert raw == [b""], "client bytes reached the upstream raw: %r" % raw
        assert ("routed", b"/internal/admin") in up.seen
        line = wait_until(lambda: access_lines(tmp_path / "access.log", "/ws/x"), scaled(5))
        assert len(line) == 1 and line[0]["status"] == 502
    finally:
        gw.stop()


# ----------------------------------------------------------- who ends it

def test_client_reset_mid_session_closes_the_upstream_and_logs_once(tmp_path, scripted):
    def handler(u, s, head, rest):
        switch(s, head)
        s.sendall(b"\x81\x02hi")
        got = rest
        while True:
            try:
                k = s.recv(4096)
            except OSError:
                u.seen.append(("reset", got))
                return
            if not k:
                u.seen.append(("eof", got))
                return
            got += k
    up = scripted(handler)
    gw, _ = gw_for(tmp_path, up.port)
    try:
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        _, req = handshake(path="/ws/reset")
        c.sendall(req)
        buf = b""
        while b"\x81\x02hi" not in buf:
            buf += c.recv(4096)
        c.sendall(masked(1, b"one"))
        time.sleep(0.2)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST
        wait_until(lambda: up.seen, scaled(10), what="the upstream connection to be closed")
        assert up.seen[0][1] == masked(1, b"one")
        lines = wait_until(lambda: access_lines(tmp_path / "access.log", "/ws/reset"),
                           scaled(5))
        time.sleep(0.3)
        lines = access_lines(tmp_path / "access.log", "/ws/reset")
        assert len(lines) == 1 and lines[0]["status"] == 101
        assert lines[0]["error"] in ("client connection reset", "client closed the connection")
    finally:
        gw.stop()


def test_upstream_closing_mid_session_reaches_the_client_as_eof(tmp_path, scripted):
    """The upstream sends a frame and closes its connection: the client
    gets the frame then our FIN; when it closes too, the session ends with
    one log line (status 101)."""
    def handler(u, s, head, rest):
        switch(s, head)
        s.sendall(b"\x81\x03bye")
        u.seen.append("closed")
    up = scripted(handler)
    gw, _ = gw_for(tmp_path, up.port)
    try:
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        _, req = handshake(path="/ws/upclose")
        c.sendall(req)
        buf = recv_until_eof(c, scaled(5))
        assert buf.endswith(b"\r\n\r\n\x81\x03bye"), buf
        c.close()
        lines = wait_until(lambda: access_lines(tmp_path / "access.log", "/ws/upclose"),
                           scaled(5))
        time.sleep(0.3)
        lines = access_lines(tmp_path / "access.log", "/ws/upclose")
        assert len(lines) == 1 and lines[0]["status"] == 101
    finally:
        gw.stop()


def test_half_closes_both_ways_carry_the_remaining_bytes(tmp_path, scripted):
    """Upstream half-closes first: the client still sends, the upstream
    still receives; then the client's FIN reaches the upstream as EOF."""
    def handler(u, s, head, rest):
        switch(s, head)
        s.sendall(b"\x81\x04last")
        s.shutdown(socket.SHUT_WR)
        got = rest
        while True:
            k = s.recv(4096)
            if not k:
                break
            got += k
        u.seen.append(got)
    up = scripted(handler)
    gw, _ = gw_for(tmp_path, up.port)
    try:
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        _, req = handshake(path="/ws/half")
        c.sendall(req)
        buf = recv_until_eof(c, scaled(5))  # the upstream's FIN came through
        assert buf.endswith(b"\x81\x04last")
        for i in range(5):
            c.sendall(masked(2, b"after %d" % i))
        c.shutdown(socket.SHUT_WR)
        wait_until(lambda: up.seen, scaled(10), what="the upstream to see the client's FIN")
        assert up.seen[0] == b"".join(masked(2, b"after %d" % i) for i in range(5))
        c.close()
        lines = wait_until(lambda: access_lines(tmp_path / "access.log", "/ws/half"), scaled(5))
        assert len(lines) == 1 and lines[0]["status"] == 101 and "error" not in lines[0]
    finally:
        gw.stop()


# ------------------------------------------------- shutdown and reloads

def test_sigterm_with_open_sessions_ends_within_drain_timeout(tmp_path):
    """Open sessions do not hold a shutdown: limits.drain_timeout bounds
    it, then the sessions are closed and the process exits 0."""
    with backend("wsterm") as b:
        cfg = make_config(free_port(), {"u": upstream(b.port)}, ws_routes(), workers=2,
                          limits={"drain_timeout": "2s"},
                          access_log={"path": str(tmp_path / "access.log")})
        gw = Gateway(cfg, tmp_path)

        async def go():
            url = "ws://127.0.0.1:%d/ws/echo" % gw.port
            socks = [await connect(url) for _ in range(4)]
            for i, ws in enumerate(socks):
                await ws.send("m%d" % i)
                assert await ws.recv() == "m%d" % i
            t0 = time.monotonic()
            gw.send(signal.SIGTERM)
            # The sessions go on during the drain...
            await socks[0].send("during")
            assert await socks[0].recv() == "during"
            rc = await asyncio.get_running_loop().run_in_executor(
                None, lambda: gw.proc.wait(timeout=scaled(15)))
            took = time.monotonic() - t0
            for ws in socks:
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), scaled(5))
            return rc, took
        try:
            rc, took = run(go())
            assert rc == 0
            assert 1.8 <= took < scaled(6), took
            lines = access_lines(tmp_path / "access.log", "/ws/echo")
            assert len(lines) == 4, lines
            assert all(l["status"] == 101 and l["error"] == "drain timeout" for l in lines)
        finally:
            gw.stop()


def test_old_generation_freed_when_the_session_that_pins_it_ends(tmp_path):
    """A reload mid-session: the session keeps the old generation (so two
    are live), new requests see the new one; when the session ends the old
    generation is freed (portico_config_generations_live back to 1)."""
    with backend("wsgen") as b:
        cfg = make_config(free_port(), {"u": upstream(b.port)}, ws_routes(), workers=2,
                          admin_port=free_port(),
                          access_log={"path": str(tmp_path / "access.log")})
        gw = Gateway(cfg, tmp_path)
        new = dict(cfg)
        new["routes"] = ws_routes() + [{"name": "extra", "match": {"path": "/extra"},
                                        "upstream": "u"}]
        try:
            async def go():
                url = "ws://127.0.0.1:%d/ws/echo" % gw.port
                async with connect(url, extra_headers={"X-Request-ID": "gen-pin"}) as ws:
                    await ws.send("a")
                    assert await ws.recv() == "a"
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(None, gw.reload, new)
                    assert requests.get(gw.u("/extra"), timeout=scaled(5)).status_code == 200
                    await ws.send("b")
                    assert await ws.recv() == "b"
                    await asyncio.sleep(0.3)  # the reclaimer looks every 50 ms
                    assert metric(gw, "portico_config_generations_live") == 2
            run(go())
            wait_until(lambda: metric(gw, "portico_config_generations_live") == 1, scaled(5),
                       what="the old generation to be freed")
            # the access log is written off the request path: wait for it
            wait_until(lambda: access_lines(tmp_path / "access.log", "gen-pin"), scaled(5),
                       what="the session's log line")
            lines = access_lines(tmp_path / "access.log", "gen-pin")
            assert len(lines) == 1 and lines[0]["status"] == 101
        finally:
            gw.stop()


# ------------------------------------------------------------- over TLS

def test_session_over_a_tls_listener(tmp_path, tls_certs):
    cert, key = tls_certs.server("wss", ["wss.test", "localhost"], kind="ec")
    with backend("wss") as b:
        cfg = make_config(free_port(), {"u": upstream(b.port)}, ws_routes(), workers=1,
                          access_log={"path": str(tmp_path / "access.log")})
        cfg["listeners"][0]["tls"] = {"certificates": [{"cert": cert, "key": key}]}
        gw = Gateway(cfg, tmp_path)
        ctx = ssl.create_default_context(cafile=tls_certs.ca)
        try:
            async def go():
                url = "wss://localhost:%d/ws/echo" % gw.port
                async with connect(url, ssl=ctx, extra_headers={"X-Request-ID": "wss-1"}) as ws:
                    for n in (1, 125, 126, 65536, 1 << 20):
                        m = os.urandom(n)
                        await ws.send(m)
                        assert await ws.recv() == m
                    await ws.send("__close:4003")
                    with pytest.raises(websockets.ConnectionClosed):
                        await ws.recv()
                    await ws.wait_closed()
                    return ws.close_code
            assert run(go()) == 4003
            lines = wait_until(lambda: access_lines(tmp_path / "access.log", "wss-1"), scaled(5))
            assert lines[0]["status"] == 101 and lines[0]["tls_version"].startswith("TLS")
        finally:
            gw.stop()


class TLSEchoServer:
    """A WebSocket echo over TLS: python `websockets` with an SSLContext,
    on a thread of its own. Echoes messages; "__close:CODE" closes with
    CODE; counts the sessions and the SNI names it saw."""

    def __init__(self, cert, key):
        self.port = free_port()
        self.sessions = 0
        self.snis = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.sni_callback = lambda sock, name, c: self.snis.append(name) and None
        self.ctx = ctx
        self.ready = threading.Event()
        self.loop = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        assert self.ready.wait(scaled(10))

    async def _echo(self, ws, path):
        self.sessions += 1
        async for m in ws:
            if isinstance(m, str) and m.startswith("__close:"):
                await ws.close(code=int(m[8:]), reason="backend closes")
                return
            await ws.send(m)

    def _run(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        srv = websockets.serve(self._echo, "127.0.0.1", self.port, ssl=self.ctx, max_size=None,
                               compression=None, ping_interval=None)
        self.server = self.loop.run_until_complete(srv)
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        async def shut():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(scaled(5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.t.join(5)


def test_session_to_a_tls_upstream(tmp_path, tls_certs):
    """upstreams.*.tls with verification on: the session goes over TLS to a
    `websockets` server; messages both ways and the backend's close code
    come through; a wss:// client on a TLS listener works the same way."""
    cert, key = tls_certs.server("wsup", ["wsup.test"], kind="ec")
    lcert, lkey = tls_certs.server("wss", ["wss.test", "localhost"], kind="ec")
    srv = TLSEchoServer(cert, key)
    try:
        up = {"targets": [{"address": "127.0.0.1:%d" % srv.port}],
              "tls": {"ca": tls_certs.ca, "sni": "wsup.test"}}
        cfg = make_config(free_port(), {"u": up}, ws_routes(), workers=1)
        cfg["listeners"][0]["tls"] = {"certificates": [{"cert": lcert, "key": lkey}]}
        gw = Gateway(cfg, tmp_path)
        ctx = ssl.create_default_context(cafile=tls_certs.ca)
        try:
            async def go():
                url = "wss://localhost:%d/ws/echo" % gw.port
                async with connect(url, ssl=ctx) as ws:
                    for n in (1, 126, 70000, 1 << 20):
                        m = os.urandom(n)
                        await ws.send(m)
                        assert await ws.recv() == m
                    await ws.send("text é")
                    assert await ws.recv() == "text é"
                    await ws.send("__close:4005")
                    with pytest.raises(websockets.ConnectionClosed):
                        await ws.recv()
                    await ws.wait_closed()
                    return ws.close_code
            assert run(go()) == 4005
            assert srv.sessions == 1 and "wsup.test" in srv.snis
        finally:
            gw.stop()
    finally:
        srv.stop()


def test_http10_upgrade_is_ignored_and_served_plain(tmp_path):
    """RFC 9110 §7.8: an Upgrade in an HTTP/1.0 request is ignored; the
    request is served as a plain one and the backend sees no Upgrade."""
    with backend("ws10") as b:
        cfg = make_config(free_port(), {"u": upstream(b.port)}, ws_routes(), workers=1)
        gw = Gateway(cfg, tmp_path)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
            c.sendall(("GET /ws/plain HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\n"
                       "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                       "Sec-WebSocket-Key: %s\r\n\r\n" % key).encode())
            rs = read_responses(c, 1, scaled(5))
            c.close()
            assert rs and rs[0].status == 200, rs
            names = [k.lower() for k, _ in rs[0].json()["headers"]]
            assert "upgrade" not in names
        finally:
            gw.stop()


def test_upstream_half_close_reaches_a_tls_client_which_still_sends(tmp_path, scripted, tls_certs):
    """Over a TLS listener the upstream's FIN becomes close_notify to the
    client; the client may still send (TLS 1.3 half-close), and its bytes
    reach the upstream."""
    cert, key = tls_certs.server("wss-half", ["localhost"], kind="ec")

    def handler(u, s, head, rest):
        switch(s, head)
        s.sendall(b"\x81\x04last")
        s.shutdown(socket.SHUT_WR)
        got = rest
        while True:
            try:
                k = s.recv(4096)
            except OSError:
                break
            if not k:
                break
            got += k
        u.seen.append(got)
    up = scripted(handler)
    cfg = make_config(free_port(), {"u": upstream(up.port)}, ws_routes(), workers=1,
                      access_log={"path": str(tmp_path / "access.log")})
    cfg["listeners"][0]["tls"] = {"certificates": [{"cert": cert, "key": key}]}
    gw = Gateway(cfg, tmp_path)
    try:
        ctx = ssl.create_default_context(cafile=tls_certs.ca)
        c = ctx.wrap_socket(socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5)),
                            server_hostname="localhost")
        _, req = handshake(path="/ws/tlshalf")
        c.sendall(req)
        buf = recv_until_eof(c, scaled(5))  # close_notify
        assert buf.endswith(b"\x81\x04last"), buf
        frames = b"".join(masked(2, b"after %d" % i) for i in range(5))
        c.sendall(frames)
        time.sleep(0.5)  # taken by the gateway before the close
        c.close()
        wait_until(lambda: up.seen, scaled(10), what="the upstream connection to end")
        assert up.seen[0] == frames
    finally:
        gw.stop()


@pytest.mark.heavy
def test_memory_per_open_session(tmp_path, capsys):
    """200 open sessions (one 64 KiB message each way, then quiet): the
    gateway's RSS growth per session, printed for docs/operations.md and
    bounded by what internals.md says a session holds (two 16 KiB buffers,
    the arena, the connection objects)."""
    with backend("wsmem", threads=2) as b:
        cfg = make_config(free_port(), {"u": upstream(b.port)}, ws_routes(), workers=2)
        gw = Gateway(cfg, tmp_path)
        try:
            async def go():
                url = "ws://127.0.0.1:%d/ws/echo" % gw.port
                async with connect(url) as ws:  # warm: pools, buffers, arenas
                    await ws.send(os.urandom(65536))
                    await ws.recv()
                await asyncio.sleep(0.3)
                base = gw.rss_kb()
                socks = []
                for _ in range(200):
                    ws = await connect(url)
                    m = os.urandom(65536)
                    await ws.send(m)
                    assert await ws.recv() == m
                    socks.append(ws)
                await asyncio.sleep(0.3)
                grown = gw.rss_kb() - base
                for ws in socks:
                    await ws.close()
                return grown
            kb = run(go(), limit=120)
            with capsys.disabled():
                print("\n[memory] 200 open WebSocket sessions: %d KiB (%.1f KiB each)"
                      % (kb, kb / 200))
            assert kb < 200 * 64 * (8 if SAN else 1)  # ASan: redzones, quarantine
        finally:
            gw.stop()
