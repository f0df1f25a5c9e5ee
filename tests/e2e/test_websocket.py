"""WebSocket through the gateway (routes[].websocket): python `websockets`
to the demo backend's /ws/echo. Messages of every size both ways arrive
byte-exact; close codes propagate in both directions; a reload during a
session neither cuts it nor waits for it; the upgrade is refused on other
routes; Upgrade: h2c never reaches a backend; an idle tunnel is closed
after the route's timeout; the access log has one line per session."""

import asyncio
import base64
import json
import os
import random
import socket
import time

import pytest
import websockets

from conftest import (Gateway, backend, free_port, make_config, raw, read_responses, request_heads,
                      parse_response, scaled, upstream, wait_until)

MiB = 1 << 20


def ws_routes(timeout=None):
    ws = {"name": "ws", "match": {"path_prefix": "/ws/"}, "upstream": "u", "websocket": True}
    if timeout:
        ws["timeout"] = timeout
    return [ws, {"name": "plain", "match": {"path_prefix": "/"}, "upstream": "u"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("ws", threads=2) as b:
        d = tmp_path_factory.mktemp("ws")
        port, admin = free_port(), free_port()
        cfg = make_config(port, {"u": upstream(b.port)}, ws_routes(), admin_port=admin,
                          access_log={"path": str(d / "access.log")})
        gw = Gateway(cfg, d)
        try:
            yield gw, b, cfg, d
        finally:
            gw.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, scaled(120)))


def connect(gw, path="/ws/echo", **kw):
    return websockets.connect("ws://127.0.0.1:%d%s" % (gw.port, path), max_size=None,
                              compression=None, ping_interval=None, **kw)


def test_messages_of_every_size_both_ways_arrive_byte_exact(env):
    gw = env[0]
    rnd = random.Random(18)
    sizes = [rnd.choice([1, 2, 125, 126, 127, 65535, 65536]) if i % 10 == 0
             else rnd.randint(1, 64 * 1024) for i in range(2000)]

    async def go():
        async with connect(gw) as ws:
            # Pipelined: a writer and a reader at once, as a real client.
            msgs = []
            for i, n in enumerate(sizes):
                if i % 2:
                    msgs.append(rnd.randbytes(n))
                else:
                    msgs.append("".join(rnd.choice("abcdé€𝄞xyz") for _ in range(n // 3 + 1)))

            async def writer():
                for m in msgs:
                    await ws.send(m)

            w = asyncio.ensure_future(writer())
            for i, m in enumerate(msgs):
                got = await ws.recv()
                assert type(got) is type(m), "message %d changed type" % i
                assert got == m, "message %d (%d bytes) differs" % (i, len(m))
            await w
            big = [rnd.randbytes(MiB) for _ in range(20)]
            for i, m in enumerate(big):
                if i % 2:
                    m = m.hex()[:MiB]  # a 1 MiB text message
                await ws.send(m)
                assert await ws.recv() == m, "1 MiB message %d differs" % i
    run(go())


def test_fragmented_message_and_ping_pass_through(env):
    gw = env[0]

    async def go():
        async with connect(gw) as ws:
            parts = [os.urandom(1000) for _ in range(5)]
            await ws.send(iter(parts))  # one message in five frames
            assert await ws.recv() == b"".join(parts)
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, scaled(5))  # the backend's pong came back through
    run(go())


def test_client_close_code_reaches_backend_and_comes_back(env):
    gw = env[0]

    async def go():
        ws = await connect(gw)
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.close(code=4001, reason="client done")
        return ws.close_code, ws.close_reason
    code, reason = run(go())
    # The demo echo answers a close with the code and reason it received.
    assert (code, reason) == (4001, "client done")


def test_backend_initiated_close_code_reaches_client(env):
    gw = env[0]

    async def go():
        async with connect(gw) as ws:
            await ws.send("__close:4002")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            await ws.wait_closed()
            return ws.close_code, ws.close_reason
    assert run(go()) == (4002, "backend closes")


def test_handshake_forwarded_with_upgrade_and_accept_checked_by_client(env):
    gw = env[0]

    async def go():
        async with connect(gw) as ws:
            await ws.send("__headers")
            return json.loads(await ws.recv()), ws.response_headers
    hdrs, resp = run(go())
    seen = {k.lower(): v for k, v in hdrs}
    assert seen["upgrade"] == "websocket"
    assert seen["connection"].lower() == "upgrade"
    assert seen["sec-websocket-version"] == "13"
    assert "sec-websocket-key" in seen and "x-forwarded-for" in seen
    assert resp["Upgrade"].lower() == "websocket" and "X-Request-ID" in resp


def test_reload_during_session_neither_cuts_it_nor_waits_for_it(env):
    """20 reloads while a session is open: each completes (the session's
    pin never holds one up, nor fills the generations still in use), the
    session goes on, and new requests and sessions see the new config."""
    gw, b, cfg, d = env
    extra = dict(cfg)
    extra["routes"] = ws_routes() + [{"name": "extra", "match": {"path": "/extra"},
                                      "upstream": "u"}]

    async def go():
        async with connect(gw) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            loop = asyncio.get_running_loop()
            for i in range(20):
                # Gateway.reload waits for the "reloaded ... generation" line.
                await loop.run_in_executor(None, gw.reload, extra if i % 2 == 0 else cfg)
                await ws.send("after %d" % i)
                assert await ws.recv() == "after %d" % i
            await loop.run_in_executor(None, gw.reload, extra)
            # New connections get the new generation while this one lives.
            r = raw(gw.port, b"GET /extra HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert parse_response(r).status == 200
            async with connect(gw) as ws2:
                await ws2.send("second")
                assert await ws2.recv() == "second"
            await ws.send(b"\x00" * 100000)
            assert await ws.recv() == b"\x00" * 100000
    run(go())
    gw.reload(cfg)


def test_upgrade_refused_on_a_route_without_websocket(env):
    gw = env[0]

    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with connect(gw, "/plain/ws/echo"):
                pass
        return e.value.status_code
    assert run(go()) == 403


def test_bad_handshakes_answered_400_and_426(env):
    gw = env[0]
    head = ("GET /ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: %s\r\nSec-WebSocket-Key: %s\r\n\r\n")
    good = base64.b64encode(os.urandom(16)).decode()
    r = parse_response(raw(gw.port, (head % ("13", "short")).encode()))
    assert r.status == 400
    r = parse_response(raw(gw.port, (head % ("8", good)).encode()))
    assert r.status == 426 and r.header("Sec-WebSocket-Version") == "13"


def test_h2c_upgrade_never_reaches_the_backend(env):
    gw = env[0]
    req = (b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
           b"Connection: close\r\n\r\n")
    for path in (b"/plain", b"/ws/echo2"):  # also on a websocket route
        r = parse_response(raw(gw.port, req.replace(b"/plain", path, 1)))
        assert r.status == 200
        names = [k.lower() for k, _ in r.json()["headers"]]
        assert "upgrade" not in names and "http2-settings" not in names
        assert all(v.lower() != "upgrade" for k, v in r.json()["headers"] if k.lower() == "connection")


def test_access_log_line_written_when_the_session_ends(env):
    gw, _, _, d = env
    log = d / "access.log"
    rid = "wslog-%d" % random.randint(0, 1 << 30)

    def line():
        if not log.exists():
            return None
        for l in log.read_text().splitlines():
            if rid in l:
                return json.loads(l)
        return None

    async def go():
        async with connect(gw, extra_headers={"X-Request-ID": rid}) as ws:
            await ws.send(b"x" * 10000)
            await ws.recv()
            await asyncio.sleep(0.5)  # held open: the line comes at the end, not at the 101
            assert line() is None
    run(go())
    l = wait_until(line, scaled(10), what="the session's access log line")
    assert l["status"] == 101 and l["route"] == "ws"
    assert l["bytes_in"] > 10000 and l["bytes_out"] > 10000 and l["duration_ms"] >= 500


def test_idle_tunnel_closed_after_route_timeout(tmp_path):
    with backend("wsi") as b:
        cfg = make_config(free_port(), {"u": upstream(b.port)}, ws_routes(timeout="1s"))
        gw = Gateway(cfg, tmp_path)
        try:
            async def go():
                async with connect(gw) as ws:
                    await ws.send("x")
                    assert await ws.recv() == "x"
                    t0 = time.monotonic()
                    with pytest.raises(websockets.ConnectionClosed):
                        await ws.recv()
                    return time.monotonic() - t0
            took = run(go())
            assert 0.8 <= took < scaled(5)
            # Traffic resets it: a session that keeps talking lives on.
            async def busy():
                async with connect(gw) as ws:
                    for i in range(8):
                        await ws.send("m%d" % i)
                        assert await ws.recv() == "m%d" % i
                        await asyncio.sleep(0.4)
            run(busy())
        finally:
            gw.stop()


def test_half_close_from_client_is_relayed(env):
    """A client that shuts its write side still gets what the backend
    sends after it (here: the echo of its close frame). The frames go in
    the same packet as the handshake, before the 101: they wait in the
    gateway and are the tunnel's first bytes."""
    gw = env[0]
    key = base64.b64encode(os.urandom(16)).decode()
    mask = b"\x01\x02\x03\x04"

    def frame(op, payload):
        return bytes([0x80 | op, 0x80 | len(payload)]) + mask + bytes(
            x ^ mask[i % 4] for i, x in enumerate(payload))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    s.sendall(("GET /ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % key).encode()
              + frame(1, b"early") + frame(8, b"\x03\xe8"))
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        k = s.recv(4096)
        if not k:
            break
        buf += k
    s.close()
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert rest == b"\x81\x05early" + b"\x88\x02\x03\xe8"


def test_upstream_200_to_an_upgrade_is_no_switch(tmp_path, raw_upstream):
    """Only a 101 switches (Envoy CVE-2024-23326 treated a 200 as one):
    a 200 to the upgrade is an ordinary response, and the next request on
    the connection is parsed as HTTP again, not relayed as tunnel bytes."""
    def handler(s):
        for head in request_heads(s):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
    up = raw_upstream(handler)
    cfg = make_config(free_port(), {"u": upstream(up.port)}, ws_routes())
    gw = Gateway(cfg, tmp_path)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        s.sendall(("GET /ws/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % key).encode())
        rs = read_responses(s, 1, scaled(5))
        assert rs[0].status == 200 and rs[0].body == b"no"
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        rs = read_responses(s, 1, scaled(5))
        assert rs[0].status == 200 and rs[0].body == b"no"
        s.close()
    finally:
        gw.stop()
