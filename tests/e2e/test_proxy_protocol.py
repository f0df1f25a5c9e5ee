"""PROXY protocol v1/v2 on listeners (`proxy_protocol: true`): the headers
are built here from the spec (HAProxy's proxy-protocol.txt). The address a
header carries becomes the peer: the backend sees it appended to
X-Forwarded-For and the access log writes it as remote_addr. A v2 LOCAL
header (a balancer's health check) and v1 UNKNOWN keep the socket's peer.
A connection without a valid header is closed without a response, never
routed; a peer outside `proxy_protocol_from` is closed at once; a plain
listener reads a PROXY line as a bad request."""

import json
import os
import socket
import struct
import time

from conftest import (free_port, make_config, parse_responses, raw_ex, scaled, upstream,
                      wait_until)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst="192.0.2.99", sport=40000, dport=443, fam="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(cmd=0x21, fam=0x11, src="203.0.113.20", dst="192.0.2.99", sport=40000, dport=443,
       tlvs=b"", body=None):
    if body is None:
        af = socket.AF_INET if fam == 0x11 else socket.AF_INET6
        body = (socket.inet_pton(af, src) + socket.inet_pton(af, dst) +
                struct.pack("!HH", sport, dport))
    body += tlvs
    return SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def get(path):
    return ("GET %s HTTP/1.1\r\nHost: pp.test\r\n\r\n" % path).encode()


def cfg(port, b, log, plain=None, limited=None, proxied=True):
    c = make_config(port, {"u": upstream(b.port)},
                    [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}],
                    limits={"header_timeout": "1s"}, access_log={"path": log, "format": "json"})
    c["listeners"][0]["proxy_protocol"] = proxied
    if plain:
        c["listeners"].append({"name": "plain", "address": "127.0.0.1:%d" % plain})
    if limited:
        c["listeners"].append({"name": "limited", "address": "127.0.0.1:%d" % limited,
                               "proxy_protocol": True, "proxy_protocol_from": ["10.0.0.0/8"]})
    return c


def exchange(port, parts, pause=None, timeout=5.0, n=1):
    """Sends parts (bytes, or a list sent as separate writes `pause` s
    apart) and reads until n complete responses, a close or the timeout.
    Returns (responses, closed_by_peer)."""
    buf, closed = raw_ex(port, parts, timeout=scaled(timeout), pause_after=pause,
                         until_complete=n)
    rs, _ = parse_responses(buf, eof=closed)
    return rs, closed


def xff_of(resp):
    """The X-Forwarded-For the backend received."""
    assert resp.status == 200, resp
    for k, v in resp.json()["headers"]:
        if k.lower() == "x-forwarded-for":
            return v
    return None


def log_remotes(log, n):
    def lines():
        if not os.path.exists(log):
            return None
        with open(log) as f:
            docs = [json.loads(l) for l in f.read().splitlines() if l.strip()]
        return docs if len(docs) >= n else None
    return [d["remote_addr"] for d in wait_until(lines, scaled(10), what="%d log lines" % n)]


def start(gateway, backends, tmp_path, **kw):
    b = backends("pp")
    port = free_port()
    log = os.path.join(str(tmp_path), "access.log")
    gw = gateway(cfg(port, b, log, **kw))
    return gw, b, port, log


def test_v1_and_v2_headers_give_the_client_address(gateway, backends, tmp_path):
    gw, b, port, log = start(gateway, backends, tmp_path)
    cases = [
        (v1("203.0.113.7"), "203.0.113.7"),
        (v1("2001:db8::7", "2001:db8::1", fam="TCP6"), "2001:db8::7"),
        (v2(src="198.51.100.9"), "198.51.100.9"),
        (v2(fam=0x21, src="2001:db8:0:1::9", dst="2001:db8::1"), "2001:db8:0:1::9"),
        # TLVs as AWS NLB sends them (a VPC endpoint id) and ALPN, plus a NOOP
        (v2(src="192.0.2.44", tlvs=tlv(0xEA, b"\x01vpce-08d2bf15fac5001c9") +
            tlv(0x01, b"h2") + tlv(0x04, b"")), "192.0.2.44"),
        # LOCAL (a balancer's own health check) and UNKNOWN: the socket's peer
        (v2(cmd=0x20, fam=0x00, body=b""), "127.0.0.1"),
        (v2(cmd=0x20, fam=0x11, src="10.9.9.9"), "127.0.0.1"),
        (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
        (v2(fam=0x00, body=b""), "127.0.0.1"),  # PROXY with UNSPEC
    ]
    for header, want in cases:
        rs, _ = exchange(port, header + get("/who"))
        assert len(rs) == 1, (header, rs)
        assert xff_of(rs[0]) == want, header
    # (two workers: lines come in any order)
    assert sorted(log_remotes(log, len(cases))) == sorted(want for _, want in cases)


def test_address_holds_for_every_request_on_the_connection(gateway, backends, tmp_path):
    gw, b, port, log = start(gateway, backends, tmp_path)
    rs, _ = exchange(port, [v1("203.0.113.8") + get("/one"), get("/two")], pause=0.2, n=2)
    assert [xff_of(r) for r in rs] == ["203.0.113.8", "203.0.113.8"]
    # the HTTP request arriving on its own, well after the header
    rs, _ = exchange(port, [v2(src="203.0.113.9"), get("/late")], pause=0.4)
    assert [xff_of(r) for r in rs] == ["203.0.113.9"]


def test_header_split_across_writes(gateway, backends, tmp_path):
    gw, b, port, log = start(gateway, backends, tmp_path)
    h = v1("203.0.113.10")
    rs, _ = exchange(port, [h[:3], h[3:11], h[11:-1], h[-1:], get("/split")], pause=0.05)
    assert [xff_of(r) for r in rs] == ["203.0.113.10"]
    h = v2(src="203.0.113.11", tlvs=tlv(0x04, b"x" * 20))
    parts = [h[:5], h[5:12], h[12:13], h[13:15], h[15:17], h[17:30], h[30:] + get("/split2")]
    rs, _ = exchange(port, parts, pause=0.05)
    assert [xff_of(r) for r in rs] == ["203.0.113.11"]


def test_missing_truncated_and_garbage_headers_are_closed_unanswered(gateway, backends,
                                                                     tmp_path):
    gw, b, port, log = start(gateway, backends, tmp_path)
    b.reset()
    at_once = [
        get("/no-header"),                                   # plain HTTP: not a header
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",     # a TLS ClientHello
        b"PROXY TCP4 203.0.113.1 192.0.2.1 1 2\n" + get("/"),  # LF without CR
        b"PROXY TCP4 999.0.113.1 192.0.2.1 1 2\r\n" + get("/"),
        b"PROXY TCP4 203.0.113.1 192.0.2.1 1 2" + b" " * 120,  # overlong v1
        b"PROXY UDP4 203.0.113.1 192.0.2.1 1 2\r\n" + get("/"),
        SIG + b"\x11\x11\x00\x0c" + b"\x00" * 12 + get("/"),   # v2 with version 1
        SIG + b"\x22\x11\x00\x0c" + b"\x00" * 12 + get("/"),   # command 2
        SIG + b"\x21\x12\x00\x0c" + b"\x00" * 12 + get("/"),   # UDP over IPv4
        SIG + b"\x21\x11\x00\x08" + b"\x00" * 8 + get("/"),    # too short for TCP4
        v2(tlvs=b"\x04\x00\x09abc") + get("/"),              # a TLV past the end
        SIG[:6] + b"GARBAGE" + get("/"),
    ]
    for data in at_once:
        t0 = time.monotonic()
        rs, closed = exchange(port, data, timeout=3.0)
        assert closed and rs == [], data
        assert time.monotonic() - t0 < scaled(0.8), data  # before the 1 s header timeout
    # Truncated, or nothing at all: closed at header_timeout, unanswered.
    for data in [v1("203.0.113.1")[:20], v2()[:14], v2()[:20], b""]:
        t0 = time.monotonic()
        rs, closed = exchange(port, data, timeout=5.0)
        took = time.monotonic() - t0
        assert closed and rs == [], data
        assert 0.8 < took < scaled(3.5), (data, took)
    assert b.stats()["requests"] == 0  # nothing reached the upstream
    # and the listener still serves a well-formed connection
    rs, _ = exchange(port, v1("203.0.113.2") + get("/after"))
    assert xff_of(rs[0]) == "203.0.113.2"


def test_peer_outside_proxy_protocol_from_is_refused(gateway, backends, tmp_path):
    limited = free_port()
    gw, b, port, log = start(gateway, backends, tmp_path, limited=limited)
    b.reset()
    t0 = time.monotonic()
    rs, closed = exchange(limited, v1("203.0.113.3") + get("/spoof"), timeout=3.0)
    assert closed and rs == []
    assert time.monotonic() - t0 < scaled(0.8)
    rs, closed = exchange(limited, get("/plain"), timeout=3.0)
    assert closed and rs == []
    assert b.stats()["requests"] == 0


def test_plain_listener_reads_a_proxy_line_as_a_bad_request(gateway, backends, tmp_path):
    plain = free_port()
    gw, b, port, log = start(gateway, backends, tmp_path, plain=plain)
    b.reset()
    rs, closed = exchange(plain, v1("203.0.113.4") + get("/x"), n=2)
    assert [r.status for r in rs] == [400]
    assert closed  # and nothing after the bad head is read as a request
    assert b.stats()["requests"] == 0


def test_reload_switches_proxy_protocol_for_new_connections(gateway, backends, tmp_path):
    gw, b, port, log = start(gateway, backends, tmp_path, proxied=False)
    rs, _ = exchange(port, get("/plain"))
    assert xff_of(rs[0]) == "127.0.0.1"
    # a connection opened before the reload keeps what it started with
    before = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    try:
        gw.reload(cfg(port, b, log, proxied=True))
        rs, _ = exchange(port, v1("203.0.113.5") + get("/pp"))
        assert xff_of(rs[0]) == "203.0.113.5"
        rs, closed = exchange(port, get("/plain-now-refused"), timeout=3.0)
        assert closed and rs == []
        before.sendall(get("/old"))
        buf = b""
        while b"\r\n\r\n" not in buf or not parse_responses(buf, eof=False)[0]:
            chunk = before.recv(65536)
            if not chunk:
                break
            buf += chunk
        assert xff_of(parse_responses(buf, eof=False)[0][0]) == "127.0.0.1"
    finally:
        before.close()
    gw.reload(cfg(port, b, log, proxied=False))
    rs, _ = exchange(port, get("/plain-again"))
    assert xff_of(rs[0]) == "127.0.0.1"
