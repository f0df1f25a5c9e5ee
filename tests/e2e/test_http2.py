"""HTTP/2 downstream (listeners[].http2): h2c with prior knowledge through
the exchange (routes, filters, upstream), flow control both ways, the
RFC 9113 §8.2 downgrade checks, limits, flood guards and GOAWAY.

Real clients only: python `h2` over a plain socket, curl
--http2-prior-knowledge, nghttp and h2load."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import zlib

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest

from conftest import (Gateway, access_log_lines, backend, free_port, make_config, scaled,
                      upstream, wait_until)

MiB = 1024 * 1024


def h2_config(up_port, routes=None, limits=None, access_log=None, workers=1, http2=True,
              consumers=None):
    cfg = make_config(free_port(), {"u": upstream(up_port)},
                      routes or [{"name": "all", "match": {"path_prefix": "/"},
                                  "upstream": "u"}],
                      workers=workers, limits=limits, access_log=access_log)
    cfg["listeners"][0]["http2"] = http2
    if consumers:
        cfg["consumers"] = consumers
    return cfg


class H2Client:
    """A python-h2 client connection (h2c, prior knowledge; or over TLS with
    ALPN h2 when ssl_ctx is given) driven by hand."""

    def __init__(self, port, validate=True, window=None, ssl_ctx=None, server_hostname=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
        self.scheme = "http"
        if ssl_ctx is not None:
            self.sock = ssl_ctx.wrap_socket(self.sock, server_hostname=server_hostname)
            assert self.sock.selected_alpn_protocol() == "h2"
            self.scheme = "https"
        cfg = h2.config.H2Configuration(client_side=True,
                                        header_encoding=None,
                                        validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate,
                                        validate_inbound_headers=True)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if window:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.conn.increment_flow_control_window(window)
        self.flush()
        self.streams = {}  # id -> {"headers": [...], "data": bytearray, "ended", "reset"}
        self.goaway = None
        self.closed = False
        self.pending = {}  # id -> remaining body bytes to send

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method, path, headers=(), body=None, authority="gw.test"):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":path", path), (":scheme", self.scheme),
              (":authority", authority)] + list(headers)
        self.conn.send_headers(sid, hs, end_stream=body is None)
        self.streams[sid] = {"headers": None, "data": bytearray(), "ended": False,
                             "reset": None}
        if body is not None:
            self.pending[sid] = memoryview(body)
            self._push_bodies()
        self.flush()
        return sid

    def _push_bodies(self):
        for sid in list(self.pending):
            mv = self.pending[sid]
            st = self.streams[sid]
            if st["reset"] is not None or st["ended"] and st["headers"] is None:
                del self.pending[sid]
                continue
            while len(mv):
                try:
                    win = min(self.conn.local_flow_control_window(sid),
                              self.conn.max_outbound_frame_size)
                except (h2.exceptions.StreamClosedError, KeyError):
                    del self.pending[sid]
                    break
                if win <= 0:
                    break
                n = min(win, len(mv))
                self.conn.send_data(sid, mv[:n].tobytes())
                mv = mv[n:]
            if sid in self.pending:
                if len(mv) == 0:
                    self.conn.end_stream(sid)
                    del self.pending[sid]
                else:
                    self.pending[sid] = mv

    def pump(self, timeout=None):
        """Reads once; handles events. False on EOF."""
        self.sock.settimeout(timeout or scaled(10))
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                self.streams[ev.stream_id]["headers"] = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id]["data"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.streams[ev.stream_id]["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                if ev.stream_id in self.streams:
                    self.streams[ev.stream_id]["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        self._push_bodies()
        self.flush()
        return True

    def wait(self, sids, timeout=None):
        deadline = time.monotonic() + (timeout or scaled(20))
        while not all(self.streams[s]["ended"] or self.streams[s]["reset"] is not None
                      for s in sids):
            assert time.monotonic() < deadline, "streams not done"
            if not self.pump():
                break
        return [self.streams[s] for s in sids]

    def get(self, path, headers=(), body=None, method=None, **kw):
        sid = self.request(method or ("POST" if body is not None else "GET"), path, headers,
                           body, **kw)
        return self.wait([sid])[0]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def status(st):
    return int(dict(st["headers"])[b":status"])


def hdr(st, name):
    return dict(st["headers"]).get(name.encode())


@pytest.fixture
def demo():
    with backend("demo") as b:
        yield b


@pytest.fixture
def gw(tmp_path, demo):
    g = Gateway(h2_config(demo.port), tmp_path)
    yield g
    g.stop()


# ---------------------------------------------------------------- basics

def test_h2c_prior_knowledge_request_reaches_the_upstream_through_the_route(gw):
    c = H2Client(gw.port)
    st = c.get("/hello/world?x=1", headers=[("x-test", "yes"), ("cookie", "a=1"),
                                            ("cookie", "b=2")])
    assert status(st) == 200
    echo = json.loads(st["data"])
    assert echo["method"] == "GET"
    assert echo["path"] == "/hello/world"
    assert echo["query"] == "x=1"
    hs = {k.lower(): v for k, v in echo["headers"]}
    assert hs["host"] == "gw.test"
    assert hs["x-test"] == "yes"
    assert hs["cookie"] == "a=1; b=2"  # crumbs joined (RFC 9113 §8.2.3)
    assert hs["x-forwarded-proto"] == "http"
    assert echo["version"] == "HTTP/1.1"
    # response fields came back lowercase, nothing connection-specific
    names = [k for k, _ in st["headers"]]
    assert all(n == n.lower() for n in names)
    assert b"connection" not in names and b"keep-alive" not in names
    assert b"transfer-encoding" not in names
    c.close()


def test_h1_still_works_on_an_http2_listener(gw):
    import requests
    r = requests.get(gw.u("/plain"), timeout=scaled(5))
    assert r.status_code == 200
    assert r.json()["path"] == "/plain"


def test_curl_http2_prior_knowledge(gw):
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w",
                          "\\n%{http_version} %{http_code}", gw.u("/curl?q=2")],
                         capture_output=True, timeout=scaled(20))
    assert out.returncode == 0, out.stderr
    body, _, tail = out.stdout.rpartition(b"\n")
    assert tail == b"2 200"
    assert json.loads(body)["query"] == "q=2"


def test_nghttp_concurrent_streams(gw):
    urls = [gw.u("/n/%d" % i) for i in range(20)]
    out = subprocess.run(["nghttp", "-n", "-s"] + urls, capture_output=True,
                         timeout=scaled(30))
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.count(b"/n/") == 20


def test_gateway_made_responses_render_over_h2(tmp_path, demo):
    routes = [{"name": "api", "match": {"path_prefix": "/api"}, "upstream": "u"}]
    g = Gateway(h2_config(demo.port, routes=routes), tmp_path)
    try:
        c = H2Client(g.port)
        st = c.get("/nowhere")
        assert status(st) == 404
        doc = json.loads(st["data"])
        assert doc["status"] == 404
        assert hdr(st, "content-type") == b"application/json"
        assert int(hdr(st, "content-length")) == len(st["data"])
        assert doc["request_id"] == hdr(st, "x-request-id").decode()
        # HEAD: headers only
        st = c.get("/nowhere", method="HEAD")
        assert status(st) == 404 and st["data"] == b""
    finally:
        g.stop()


# ---------------------------------------------------------------- bodies

def test_request_and_response_bodies_under_flow_control(gw):
    c = H2Client(gw.port)
    body = os.urandom(3 * MiB + 17)
    st = c.get("/upload", body=body, headers=[("content-type", "application/octet-stream")])
    assert status(st) == 200
    echo = json.loads(st["data"])
    assert echo["body_len"] == len(body)
    assert echo["body_crc32"] == "%08x" % (zlib.crc32(body) & 0xffffffff)
    # without content-length: goes upstream chunked
    st = c.get("/bytes/%d" % (5 * MiB))
    assert status(st) == 200
    expect = (b"0123456789abcdef" * (5 * MiB // 16))
    assert hashlib.sha256(bytes(st["data"])).digest() == hashlib.sha256(expect).digest()
    c.close()


def test_access_log_says_http2(tmp_path, demo):
    log = os.path.join(str(tmp_path), "access.log")
    g = Gateway(h2_config(demo.port, access_log={"path": log}), tmp_path)
    try:
        c = H2Client(g.port)
        assert status(c.get("/logged")) == 200
        import requests
        requests.get(g.u("/logged1"), timeout=scaled(5))
        lines = access_log_lines(log, 2)
        by = {l["path"]: l for l in lines}
        assert by["/logged"]["protocol"] == "HTTP/2.0"
        assert by["/logged1"]["protocol"] == "HTTP/1.1"
    finally:
        g.stop()


# ---------------------------------------------------------------- routes and filters

def test_routes_and_filters_apply_to_streams(tmp_path, demo):
    routes = [
        {"name": "keyed", "match": {"path_prefix": "/keyed"}, "upstream": "u",
         "filters": {"key_auth": {}}},
        {"name": "limited", "match": {"path_prefix": "/limited"}, "upstream": "u",
         "filters": {"rate_limit": {"limits": [{"key": "header:x-t", "rate": "2/m"}]}}},
    ]
    cfg = h2_config(demo.port, routes=routes,
                    consumers=[{"name": "alice", "api_keys": ["k-alice"]}])
    g = Gateway(cfg, tmp_path)
    try:
        c = H2Client(g.port)
        assert status(c.get("/nope")) == 404
        assert status(c.get("/keyed")) == 401
        st = c.get("/keyed", headers=[("x-api-key", "k-alice")])
        assert status(st) == 200
        assert json.loads(st["data"])["path"] == "/keyed"
        codes = [status(c.get("/limited", headers=[("x-t", "one")])) for _ in range(3)]
        assert codes == [200, 200, 429]
    finally:
        g.stop()


# ---------------------------------------------------------------- downgrade checks

def raw_stream(port, headers, body=None, end=True):
    """Sends one request with unvalidated headers; returns (client, stream)."""
    c = H2Client(port, validate=False)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, headers, end_stream=body is None and end)
    c.streams[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
    if body is not None:
        c.conn.send_data(sid, body, end_stream=end)
    c.flush()
    return c, c.wait([sid])[0]


BASE = [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "gw.test")]


@pytest.mark.parametrize("field", [
    ("connection", "keep-alive"), ("transfer-encoding", "chunked"), ("upgrade", "h2c"),
    ("keep-alive", "5"), ("proxy-connection", "x"), ("te", "gzip"),
    ("x-bad", "a\r\nb: c"), ("x-nul", "a\x00b"), ("X-Upper", "v"), ("x-sp", " lead"),
])
def test_forbidden_fields_never_reach_the_upstream(gw, demo, field):
    demo.reset()
    c, st = raw_stream(gw.port, BASE + [field], body=b"")
    assert st["reset"] is not None or status(st) == 400, st
    assert demo.stats()["requests"] == 0
    c.close()


def test_te_trailers_is_allowed_and_not_forwarded(gw):
    c = H2Client(gw.port)
    st = c.get("/te", headers=[("te", "trailers")])
    assert status(st) == 200
    assert "te" not in {k.lower() for k, _ in json.loads(st["data"])["headers"]}


def test_authority_and_host_must_agree(gw, demo):
    demo.reset()
    c, st = raw_stream(gw.port, BASE + [("host", "other.test")], body=b"")
    assert status(st) == 400
    c, st = raw_stream(gw.port, BASE + [("host", "gw.test")], body=b"")
    assert status(st) == 200


@pytest.mark.parametrize("declared,sent", [(10, 5), (5, 10)])
def test_content_length_must_match_the_data(gw, demo, declared, sent):
    demo.reset()
    c, st = raw_stream(gw.port, BASE + [("content-length", str(declared))], body=b"a" * sent)
    assert st["reset"] is not None, st
    # the upstream never saw a complete request
    time.sleep(0.2)
    assert demo.stats()["requests"] == 0
    # the connection is still usable
    assert status(c.get("/after")) == 200


# ---------------------------------------------------------------- many streams

def thousand_streams(c):
    """1000 streams, at most 100 at once, on client c: bodies up to 10 MiB
    both ways, each response checked byte-exact (test_http2_tls.py too)."""
    sizes = [0, 1, 100, 65535, 65536, 300000]
    results = {}
    sent = {}
    inflight = []
    i = 0
    while i < 1000 or inflight:
        while i < 1000 and len(inflight) < 100:
            if i % 250 == 7:  # a few big ones: 10 MiB up / down
                if i % 500 == 7:
                    body = os.urandom(10 * MiB)
                    sid = c.request("POST", "/echo/%d" % i, body=body)
                    sent[sid] = body
                else:
                    sid = c.request("GET", "/bytes/%d" % (10 * MiB))
                    sent[sid] = None
            else:
                body = os.urandom(sizes[i % len(sizes)])
                sid = c.request("POST", "/echo/%d" % i, body=body)
                sent[sid] = body
            inflight.append(sid)
            i += 1
        c.pump()
        for sid in [s for s in inflight if c.streams[s]["ended"] or
                    c.streams[s]["reset"] is not None]:
            inflight.remove(sid)
            results[sid] = c.streams[sid]
    assert len(results) == 1000
    for sid, st in results.items():
        assert st["reset"] is None and status(st) == 200, (sid, st["reset"])
        body = sent[sid]
        if body is None:
            expect = b"0123456789abcdef" * (10 * MiB // 16)
            assert hashlib.sha256(bytes(st["data"])).digest() == \
                hashlib.sha256(expect).digest()
        else:
            echo = json.loads(st["data"])
            assert echo["body_len"] == len(body)
            assert echo["body_crc32"] == "%08x" % (zlib.crc32(body) & 0xffffffff)


def test_thousand_streams_with_bodies_both_ways(tmp_path, demo):
    g = Gateway(h2_config(demo.port, limits={"max_body_bytes": "16MiB"}), tmp_path)
    try:
        c = H2Client(g.port, window=8 * MiB)
        thousand_streams(c)
        c.close()
    finally:
        g.stop()


def test_concurrent_streams_are_capped_at_100(gw):
    c = H2Client(gw.port)
    c.pump()  # the server's SETTINGS
    assert c.conn.remote_settings.max_concurrent_streams == 100
    assert c.conn.remote_settings.max_header_list_size == 16 * 1024
    c.close()


# ---------------------------------------------------------------- limits

def test_oversized_header_list_gets_431(gw, demo):
    demo.reset()
    c = H2Client(gw.port, validate=False)
    # 150 small fields: over the 100-field count cap (~7 KiB counted, far under the byte cap)
    st = c.get("/big", headers=[("x-f%d" % i, "v" * 8) for i in range(150)])
    assert status(st) == 431
    big = c.get("/big2", headers=[("x-big", "v" * 17000)])
    assert status(big) == 431
    assert demo.stats()["requests"] == 0
    assert status(c.get("/fine")) == 200


def _counted(path, fields):
    """The header list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it:
    name + value + 32 per field, pseudo-headers included."""
    pseudo = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "gw.test")]
    return sum(len(n) + len(v) + 32 for n, v in pseudo + fields)


def test_header_list_cap_counts_32_bytes_per_field(gw, demo):
    """90 fields of a 10-byte name and a 150-byte value are under 16 KiB
    raw and under the 100-field cap, but over 16 KiB with 32 bytes per
    field counted: 431. 84 such fields stay under the counted cap: 200."""
    demo.reset()
    c = H2Client(gw.port, validate=False)
    over = [("x-field-%02d" % i, "v" * 150) for i in range(90)]
    assert sum(len(n) + len(v) for n, v in over) + 40 < 16 * 1024 < _counted("/over", over)
    assert status(c.get("/over", headers=over)) == 431
    under = over[:84]
    assert 16 * 1024 - 200 < _counted("/under", under) <= 16 * 1024
    st = c.get("/under", headers=under)
    assert status(st) == 200
    echoed = {h[0].lower() for h in json.loads(st["data"])["headers"]}
    assert "x-field-83" in echoed
    assert demo.stats()["requests"] == 1
    c.close()


def _h1_status(port, nfields):
    """An HTTP/1.1 GET with `nfields` header lines (Host one of them)."""
    head = "GET /count HTTP/1.1\r\nHost: gw.test\r\n"
    head += "".join("x-c%d: 1\r\n" % i for i in range(nfields - 1))
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    s.sendall((head + "\r\n").encode())
    buf = b""
    while b"\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    s.close()
    return int(buf.split(b" ", 2)[1])


def test_field_count_cap_is_the_same_on_both_codecs(gw, demo):
    """limits.max_headers (100) counts regular fields on HTTP/1.1 and on
    HTTP/2 alike: the four pseudo-headers stand for the request line and
    are not counted, so 100 fields pass on both and 101 get a 431."""
    assert _h1_status(gw.port, 100) == 200
    assert _h1_status(gw.port, 101) == 431
    c = H2Client(gw.port, validate=False)
    st = c.get("/count", headers=[("x-c%d" % i, "1") for i in range(100)])
    assert status(st) == 200
    assert status(c.get("/count", headers=[("x-c%d" % i, "1") for i in range(101)])) == 431
    # Cookie crumbs (RFC 9113 §8.2.3) are the one Cookie line HTTP/1.1
    # would carry: 150 of them and 99 other fields are 100 fields.
    crumbs = [("cookie", "c%d=1" % i) for i in range(150)]
    st = c.get("/count", headers=crumbs + [("x-c%d" % i, "1") for i in range(99)])
    assert status(st) == 200
    c.close()


def test_trailers_count_against_the_header_caps(gw, demo):
    """Request trailers are a field section under the same caps as the
    head. The request was already forwarded, so a 431 cannot answer it:
    over the caps the stream is reset (ENHANCE_YOUR_CALM) and the
    connection carries on; far over (an HPACK bomb) it ends in GOAWAY."""
    c = H2Client(gw.port, validate=False)
    c.pump()

    def post(path, trailers):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"),
                                  (":authority", "gw.test")])
        c.streams[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": None}
        c.conn.send_data(sid, b"body")
        c.conn.send_headers(sid, trailers, end_stream=True)
        c.flush()
        return sid

    ok = c.wait([post("/small-trailers", [("x-t", "1")])])[0]
    assert status(ok) == 200
    for trailers in ([("x-t", "v" * 3000)] * 6,  # 18 KiB counted
                     [("x-t%d" % i, "1") for i in range(101)]):  # 101 fields
        st = c.wait([post("/big-trailers", trailers)])[0]
        assert st["reset"] == ENHANCE_YOUR_CALM, st
    assert c.goaway is None
    assert status(c.get("/still-up")) == 200
    sid = post("/bomb-trailers", [("x-bomb", "v" * 3000)] * 100)
    while c.goaway is None and not c.closed:
        c.pump()
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM
    assert c.streams[sid]["headers"] is None
    c.close()


def test_goaway_on_sigterm_lets_inflight_streams_finish(tmp_path):
    with backend("slow", delay=800) as slow:
        g = Gateway(h2_config(slow.port), tmp_path)
        p = subprocess.Popen(["nghttp", "-v", "-n", g.u("/slow")], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        time.sleep(0.3)
        g.send(signal.SIGTERM)
        out, _ = p.communicate(timeout=scaled(20))
        assert "recv GOAWAY frame" in out, out
        import re
        sid = re.search(r"send HEADERS frame <[^>]*stream_id=(\d+)>", out).group(1)
        assert "recv GOAWAY frame" in out and \
            "(last_stream_id=%s, error_code=NO_ERROR" % sid in out, out
        assert ":status: 200" in out, out  # the in-flight stream finished
        assert g.proc.wait(timeout=scaled(10)) == 0
        g.stop()


def test_h2load_smoke(gw):
    out = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "100", gw.u("/tiny")],
                         capture_output=True, timeout=scaled(60), text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2000 succeeded" in out.stdout, out.stdout
    assert "status codes: 2000 2xx" in out.stdout, out.stdout


# ---------------------------------------------------------------- floods

def _frame(ftype, flags, sid, payload):
    import struct
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"")


def _hpack(headers):
    import hpack
    return hpack.Encoder().encode(headers)


def _read_goaway(sock, timeout):
    """Reads until EOF or GOAWAY; returns the GOAWAY error code or None."""
    import struct
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not d:
            break
        buf += d
        while len(buf) >= 9:
            ln = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + ln:
                break
            if buf[3] == 7:
                return struct.unpack(">II", buf[9:17])[1]
            buf = buf[9 + ln:]
    return None


class Bystander:
    """Another client's requests, all the while: they must keep working."""

    def __init__(self, port):
        self.port = port
        self.ok = 0
        self.bad = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        c = H2Client(self.port)
        while not self.stop:
            try:
                st = c.get("/bystander")
                if status(st) == 200:
                    self.ok += 1
                else:
                    self.bad.append(status(st))
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.bad.append(repr(e))
                return
        c.close()

    def finish(self):
        # A flood can end (GOAWAY) before this client's first answer came:
        # let it show it is served before stopping it.
        deadline = time.monotonic() + scaled(10)
        while self.ok == 0 and not self.bad and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stop = True
        self.t.join(scaled(20))
        assert not self.bad, self.bad
        assert self.ok > 0


def _flood(port, frames_fn, seconds=3.0):
    """Writes frames_fn(i) as fast as the gateway takes them; returns the
    GOAWAY error code the gateway sent (None: none)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    s.sendall(PREFACE)
    code = None
    deadline = time.monotonic() + seconds
    i = 0
    try:
        while time.monotonic() < deadline:
            s.sendall(frames_fn(i))
            i += 1
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    code = _read_goaway(s, scaled(5))
    s.close()
    return code, i


ENHANCE_YOUR_CALM = 0xb


def _flood_case(gw, demo, frames_fn):
    rss0 = gw.rss_kb()
    by = Bystander(gw.port)
    code, n = _flood(gw.port, frames_fn)
    by.finish()
    assert code is not None, "no GOAWAY after %d writes" % n
    assert gw.rss_kb() < rss0 + 64 * 1024, (rss0, gw.rss_kb())
    assert gw.proc.poll() is None
    return code


@pytest.mark.heavy
def test_rapid_reset_ends_in_goaway(gw, demo):
    hb = _hpack([(":method", "GET"), (":path", "/rr"), (":scheme", "http"),
                 (":authority", "gw.test")])

    def frames(i):
        out = b""
        for k in range(50):
            sid = 1 + 2 * (i * 50 + k)
            out += _frame(1, 0x4 | 0x1, sid, hb) + _frame(3, 0, sid, (8).to_bytes(4, "big"))
        return out
    code = _flood_case(gw, demo, frames)
    print("rapid reset GOAWAY", code)
    assert code == ENHANCE_YOUR_CALM


@pytest.mark.heavy
def test_continuation_flood_ends_in_goaway(gw, demo):
    hb = _hpack([(":method", "GET"), (":path", "/cf"), (":scheme", "http"),
                 (":authority", "gw.test")])

    def frames(i):
        if i == 0:
            return _frame(1, 0x1, 1, hb)  # HEADERS without END_HEADERS
        return _frame(9, 0, 1, _hpack([("x-c%d" % i, "v" * 100)]))
    code = _flood_case(gw, demo, frames)
    print("continuation GOAWAY", code)
    assert code in (ENHANCE_YOUR_CALM, 1)  # ours, or nghttp2's max_continuations


@pytest.mark.heavy
def test_ping_and_settings_floods_end_in_goaway(gw, demo):
    code = _flood_case(gw, demo, lambda i: _frame(6, 0, 0, b"12345678") * 100)
    assert code == ENHANCE_YOUR_CALM
    code = _flood_case(gw, demo, lambda i: _frame(4, 0, 0, b"") * 100)
    assert code == ENHANCE_YOUR_CALM


def test_hpack_bomb_gets_431_then_goaway(gw, demo):
    """A 3000-byte field indexed once, then referenced many times: a few
    hundred bytes on the wire decode to far more. Over the header-list cap
    (32 bytes per field counted) it is a 431 and the connection stays
    usable; far over it (8x) it is an attack: GOAWAY ENHANCE_YOUR_CALM."""
    demo.reset()
    c = H2Client(gw.port, validate=False)
    c.pump()
    st = c.get("/bomb", headers=[("x-bomb", "v" * 3000)] * 30)
    assert status(st) == 431
    assert status(c.get("/still-up")) == 200
    sid = c.request("GET", "/bomb2", headers=[("x-bomb", "v" * 3000)] * 100)
    while c.goaway is None and not c.closed:
        c.pump()
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM
    assert c.streams[sid]["headers"] is None
    assert demo.stats()["requests"] == 1  # /still-up only
    c.close()
    c = H2Client(gw.port)
    assert status(c.get("/next-connection")) == 200


def test_http2_key_must_be_a_bool(tmp_path):
    from conftest import PORTICO
    cfg = h2_config(free_port())
    cfg["listeners"][0]["http2"] = "maybe"
    from conftest import to_yaml
    path = os.path.join(str(tmp_path), "bad.yaml")
    with open(path, "w") as f:
        f.write(to_yaml(cfg))
    p = subprocess.run([PORTICO, "validate", path], capture_output=True, text=True,
                       timeout=scaled(10))
    assert p.returncode != 0
    line = [i for i, l in enumerate(to_yaml(cfg).splitlines(), 1) if "http2" in l][0]
    assert "bad.yaml:%d:" % line in p.stderr + p.stdout, p.stderr
    assert "http2" in p.stderr + p.stdout
