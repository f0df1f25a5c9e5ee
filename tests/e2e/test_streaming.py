"""Bodies stream through the gateway in both directions with backpressure:
50 MiB up and down while the gateway's RSS stays bounded; chunked bodies
stay intact and chunked responses stay chunked; a slow upload or a stalled
reader is not cut by the upstream read timeout (the gateway is not waiting
for the upstream then)."""

import json
import random
import socket
import time
import zlib

import pytest
import requests

from conftest import (Gateway, MiB, RssSampler, backend, crc32_hex, echo_headers, free_port,
                      http_conn, low_quarantine_env, make_config, one_route, parse_response,
                      raw_ex, read_responses, scaled, tcp_sockets, upstream, wait_until)

SIZE = 50 * MiB
RSS_BUDGET_KB = 40 * 1024  # growth allowed above idle RSS


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with backend("st", threads=4) as b:
        cfg = make_config(free_port(), {"s": upstream(b.port, read_timeout="60s")},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "s"}],
                          limits={"max_body_bytes": "200MiB"})
        gw = Gateway(cfg, tmp_path_factory.mktemp("stream"), env_extra=low_quarantine_env())
        try:
            # warm up: both directions once, small
            for _ in range(3):
                requests.post(gw.u("/up"), data=b"x" * 65536, timeout=scaled(5))
                requests.get(gw.u("/bytes/65536"), timeout=scaled(5))
            yield gw, b
        finally:
            gw.stop()


def block(i, n=MiB):
    # cheap, position-dependent content so reordering or loss changes the CRC
    rnd = random.Random(i)
    seed = rnd.randbytes(4096)
    return (seed * (n // 4096 + 1))[:n]


@pytest.mark.heavy
def test_upload_50mib_content_length(env):
    gw, _ = env
    idle = gw.rss_kb()
    sampler = RssSampler(gw.pid)
    crc = 0
    conn = http_conn(gw.port, timeout=scaled(60))
    try:
        conn.putrequest("POST", "/upload")
        conn.putheader("Content-Length", str(SIZE))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        for i in range(SIZE // MiB):
            chunk = block(i)
            crc = zlib.crc32(chunk, crc)
            conn.send(chunk)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
        peak = sampler.stop()
    assert resp.status == 200, body[:300]
    doc = json.loads(body)
    assert doc["body_len"] == SIZE
    assert doc["body_crc32"] == "%08x" % (crc & 0xFFFFFFFF)
    print("upload rss idle=%d peak=%d" % (idle, peak))
    assert peak - idle < RSS_BUDGET_KB, "RSS grew %d KiB (idle %d KiB, peak %d KiB)" % (
        peak - idle, idle, peak)


@pytest.mark.heavy
def test_download_50mib_with_slow_reader(env):
    """The client stops reading for a while: a gateway without backpressure
    would pull the whole 50 MiB from the backend into memory."""
    gw, b = env
    direct = requests.get(b.url("/bytes/%d" % SIZE), timeout=scaled(30))
    assert len(direct.content) == SIZE
    want_crc = crc32_hex(direct.content)
    del direct

    idle = gw.rss_kb()
    sampler = RssSampler(gw.pid)
    try:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(30))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: st\r\nConnection: close\r\n\r\n" % SIZE)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        # The stall is the point: for 1.5 s the gateway faces a full client
        # socket, and must not read on from the backend meanwhile.
        time.sleep(1.5)
        mid = sampler.peak_kb
        chunks = [first]
        while True:
            c = s.recv(1 << 20)
            if not c:
                break
            chunks.append(c)
        s.close()
    finally:
        peak = sampler.stop()
    data = b"".join(chunks)
    r = parse_response(data)
    assert r.status == 200
    assert r.complete, "download truncated: %d bytes" % len(r.body)
    assert len(r.body) == SIZE
    assert crc32_hex(r.body) == want_crc
    print("download rss idle=%d mid=%d peak=%d" % (idle, mid, peak))
    assert mid - idle < RSS_BUDGET_KB, "RSS grew %d KiB while the client stalled" % (mid - idle)
    assert peak - idle < RSS_BUDGET_KB, "RSS grew %d KiB (idle %d, peak %d)" % (
        peak - idle, idle, peak)


@pytest.mark.heavy
def test_download_50mib_requests(env):
    gw, _ = env
    r = requests.get(gw.u("/bytes/%d" % SIZE), stream=True, timeout=scaled(30))
    assert r.status_code == 200
    n = 0
    for c in r.iter_content(1 << 20):
        n += len(c)
    assert n == SIZE


def test_chunked_upload_intact(env):
    gw, _ = env
    rnd = random.Random(7)
    sizes = [1, 2, 100, 8191, 8192, 8193, 65535, 65536, 1 << 20, 3, 500000, 17]
    payload = [rnd.randbytes(n) for n in sizes]
    total = b"".join(payload)
    conn = http_conn(gw.port, timeout=scaled(30))
    try:
        conn.putrequest("POST", "/chunked-up")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for p in payload:
            conn.send(b"%x\r\n" % len(p) + p + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body[:300]
    doc = json.loads(body)
    assert doc["body_len"] == len(total)
    assert doc["body_crc32"] == crc32_hex(total)
    # chunked stays chunked: an unknown-length body can't be re-framed with
    # a Content-Length without buffering it whole
    te = ",".join(echo_headers(doc, "Transfer-Encoding")).lower()
    assert "chunked" in te, doc["headers"]
    assert echo_headers(doc, "Content-Length") == []


def test_chunked_upload_with_extensions_and_trailers(env):
    gw, _ = env
    req = (b"POST /chunked-ext HTTP/1.1\r\nHost: st\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n"
           b"4;name=value\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n")
    data, _ = raw_ex(gw.port, req, timeout=scaled(10))
    r = parse_response(data)
    assert r.status == 200, r
    doc = r.json()
    assert doc["body_len"] == 9
    assert doc["body_crc32"] == crc32_hex(b"wikipedia")


def test_chunked_response_passed_through(env):
    gw, _ = env
    req = (b"GET /echo-chunked HTTP/1.1\r\nHost: st\r\nX-Demo-Chunked: 1\r\n"
           b"Connection: close\r\n\r\n")
    data, closed = raw_ex(gw.port, req, timeout=scaled(10))
    r = parse_response(data)
    assert r.status == 200, r
    assert "chunked" in (r.header("Transfer-Encoding") or "").lower(), r.headers
    assert r.header("Content-Length") is None
    assert r.complete, "chunked response not terminated"
    doc = r.json()
    assert doc["path"] == "/echo-chunked"


def test_chunked_large_response(env):
    gw, b = env
    n = 5 * MiB
    direct = requests.get(b.url("/bytes/%d" % n), headers={"X-Demo-Chunked": "1"},
                          timeout=scaled(30))
    via = requests.get(gw.u("/bytes/%d" % n), headers={"X-Demo-Chunked": "1"},
                       timeout=scaled(30))
    assert via.status_code == 200
    assert len(via.content) == n
    assert crc32_hex(via.content) == crc32_hex(direct.content)


def test_post_body_over_keepalive_then_next_request(env):
    """After a streamed body the same client connection serves the next
    request correctly (body boundaries respected)."""
    gw, _ = env
    s = requests.Session()
    r1 = s.post(gw.u("/a"), data=b"a" * 300000, timeout=scaled(10))
    r2 = s.post(gw.u("/b"), data=b"bb", timeout=scaled(10))
    r3 = s.get(gw.u("/c"), timeout=scaled(10))
    assert [r1.status_code, r2.status_code, r3.status_code] == [200, 200, 200]
    assert r1.json()["body_len"] == 300000
    assert r2.json()["body_len"] == 2 and r2.json()["path"] == "/b"
    assert r3.json()["path"] == "/c" and r3.json()["body_len"] == 0


def test_stalled_downloads_do_not_block_other_clients(tmp_path):
    """40 clients start a large download on one worker and stop reading.
    Their upstream sockets fill up with bytes nobody takes; a plain GET from
    another client must still be served at once (on io_uring, unread bytes
    once held the worker's shared receive buffers and froze it)."""
    with backend("sd", threads=4) as b:
        cfg = make_config(free_port(), {"s": upstream(b.port, read_timeout="30s")},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "s"}],
                          workers=1)
        gw = Gateway(cfg, tmp_path)
        socks = []
        try:
            assert requests.get(gw.u("/tiny"), timeout=scaled(5)).status_code == 200
            for _ in range(40):
                s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(b"GET /bytes/500000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                socks.append(s)
            # The downloads fill every buffer on the way: each client's
            # socket backs up into the gateway's send queue, and the
            # backend's sends back up behind the gateway.
            clients = {s.getsockname()[1] for s in socks}
            wait_until(lambda: clients <= {t["remote"] for t in tcp_sockets(gw.port) if t["tx"]},
                       scaled(10), what="every download stalled at the client")
            wait_until(lambda: sum(1 for t in tcp_sockets(b.port) if t["tx"]) >= len(socks),
                       scaled(10), what="every download stalled at the backend")
            r = requests.get(gw.u("/tiny"), timeout=scaled(5))
            assert r.status_code == 200
        finally:
            for s in socks:
                s.close()
            gw.stop()


# ---------------------------------------------------------------- slow streams and the read timeout

def test_upload_slower_than_read_timeout_is_not_cut(tmp_path):
    """The upstream read timer was armed when the request started and never
    re-armed while the body went out: an upload taking longer than
    read_timeout got a 504 although the upstream was taking every byte."""
    with backend("up") as b:
        gw = Gateway(one_route(b.port, read_timeout="1s"), tmp_path)
        try:
            pieces = 12
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(10))
            try:
                s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                          % (pieces * 1000))
                try:
                    for _ in range(pieces):  # 3 s in all, 250 ms between pieces
                        time.sleep(0.25)  # the slow upload is the point
                        s.sendall(b"u" * 1000)
                except OSError:
                    pass  # the gateway gave up on the request: its answer says why
                rs = read_responses(s, 1, scaled(10))
            finally:
                s.close()
            assert rs, "no complete response"
            r = rs[0]
            assert r.status == 200, r
            assert r.json()["body_len"] == pieces * 1000
        finally:
            gw.stop()


@pytest.mark.heavy
def test_slow_reader_not_cut_by_upstream_read_timeout(tmp_path):
    """While the client does not take the bytes already read, the gateway is
    not waiting for the upstream: its read timeout must not fire then (the
    client has its own send timeout)."""
    size = 32 * 1024 * 1024
    with backend("sr") as b:
        gw = Gateway(one_route(b.port, read_timeout="1s"), tmp_path)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            s.settimeout(scaled(10))
            s.connect(("127.0.0.1", gw.port))
            try:
                s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
                got = b""
                while len(got) < 1024 * 1024:
                    chunk = s.recv(65536)
                    assert chunk, "closed early"
                    got += chunk
                time.sleep(2.5)  # the stalled reader, longer than read_timeout, is the point
                k = got.index(b"\r\n\r\n") + 4
                head, n = got[:k], len(got) - k
                while n < size:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    n += len(chunk)
            finally:
                s.close()
            assert head.startswith(b"HTTP/1.1 200"), head
            assert n == size, "body cut at %d of %d bytes" % (n, size)
        finally:
            gw.stop()
