"""An RFC 8441 WebSocket client over HTTP/2 for the tests: python `h2`
carries the extended CONNECT (`:protocol websocket`) and the stream's
DATA; a small RFC 6455 frame encoder/decoder (client frames masked) runs
on top. Plain h2c with prior knowledge, or TLS with ALPN h2 (`ssl_ctx`).

    ws = H2WebSocket(port, "/ws/echo")
    ws.send_message(b"x" * 1000)          # binary; text=True for text
    op, payload = ws.recv_message()
"""

import os
import socket
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings

from conftest import scaled


def mask_bytes(payload, key):
    n = len(payload)
    if n == 0:
        return b""
    rep = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big")


def ws_frame(opcode, payload, fin=True, masked=True):
    """One RFC 6455 frame (client frames are masked)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key)


def ws_parse(buf):
    """(fin, opcode, payload, rest) for the first whole frame in buf, or None."""
    if len(buf) < 2:
        return None
    fin, op = bool(buf[0] & 0x80), buf[0] & 0x0F
    masked, n = bool(buf[1] & 0x80), buf[1] & 0x7F
    k = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, k = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, k = struct.unpack("!Q", buf[2:10])[0], 10
    key = b""
    if masked:
        key, k = buf[k:k + 4], k + 4
    if len(buf) < k + n:
        return None
    payload = bytes(buf[k:k + n])
    if masked:
        payload = mask_bytes(payload, key)
    return fin, op, payload, buf[k + n:]


class H2WebSocket:
    def __init__(self, port, path, authority="gw.test", headers=(), ssl_ctx=None,
                 server_hostname=None, connect=True, scheme=None, validate=True):
        s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
        if ssl_ctx is not None:
            s = ssl_ctx.wrap_socket(s, server_hostname=server_hostname or authority)
            assert s.selected_alpn_protocol() == "h2"
        self.sock = s
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()
        self.scheme = scheme or ("https" if ssl_ctx is not None else "http")
        self.authority = authority
        self.connect_protocol = None  # the server's SETTINGS_ENABLE_CONNECT_PROTOCOL
        self.streams = {}  # sid -> {"headers", "data", "ended", "reset"}
        self.goaway = None
        self.closed = False
        while self.connect_protocol is None:
            if not self.pump():
                raise OSError("closed before the server's SETTINGS")
        self.sid = None
        self.buf = bytearray()
        if connect:
            self.status = self.open(path, headers)

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, timeout=None):
        """Reads once and handles the events; False on EOF."""
        self.sock.settimeout(timeout or scaled(10))
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                c = ev.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
                if self.connect_protocol is None:
                    self.connect_protocol = c.new_value if c else 0
            elif isinstance(ev, h2.events.ResponseReceived):
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
                self.goaway = ev.error_code
        self.flush()
        return True

    def new_stream(self, headers, end_stream=False):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = {"headers": None, "data": bytearray(), "ended": False,
                             "reset": None}
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        return sid

    def wait_head(self, sid):
        st = self.streams[sid]
        while st["headers"] is None and st["reset"] is None:
            if not self.pump():
                break
        return dict(st["headers"] or [])

    def open(self, path, headers=(), protocol="websocket", method="CONNECT"):
        """Sends the extended CONNECT; returns the response's :status (int)."""
        hs = [(":method", method)]
        if protocol is not None:
            hs.append((":protocol", protocol))
        hs += [(":scheme", self.scheme), (":path", path), (":authority", self.authority)]
        hs += list(headers)
        self.sid = self.new_stream(hs)
        self.head = self.wait_head(self.sid)
        return int(self.head.get(":status", 0))

    def get(self, path):
        """A plain GET on another stream of the same connection: (status, body)."""
        sid = self.new_stream([(":method", "GET"), (":scheme", self.scheme), (":path", path),
                               (":authority", self.authority)], end_stream=True)
        st = self.streams[sid]
        while not st["ended"] and st["reset"] is None:
            if not self.pump():
                break
        return int(dict(st["headers"] or [])[":status"]), bytes(st["data"])

    def send_raw(self, data, end_stream=False):
        """Sends bytes on the tunnel's stream under flow control."""
        mv = memoryview(data)
        while len(mv):
            win = min(self.conn.local_flow_control_window(self.sid),
                      self.conn.max_outbound_frame_size)
            if win <= 0:
                if not self.pump():
                    raise OSError("closed while sending")
                continue
            self.conn.send_data(self.sid, mv[:win].tobytes())
            mv = mv[win:]
            self.flush()
        if end_stream:
            self.conn.end_stream(self.sid)
            self.flush()

    def send_message(self, payload, text=False, end_stream=False):
        self.send_raw(ws_frame(1 if text else 2, payload), end_stream)

    def close(self, code, reason=b"", end_stream=False):
        self.send_raw(ws_frame(8, struct.pack("!H", code) + reason), end_stream)

    def recv_frame(self):
        """(fin, opcode, payload) of the next frame from the server, or None
        when the stream ended (or was reset) first."""
        st = self.streams[self.sid]
        while True:
            self.buf += st["data"]
            st["data"] = bytearray()
            f = ws_parse(self.buf)
            if f:
                fin, op, payload, rest = f
                self.buf = bytearray(rest)
                return fin, op, payload
            if st["ended"] or st["reset"] is not None:
                return None
            if not self.pump():
                return None

    def recv_message(self):
        """(opcode, payload) of the next whole message (fragments joined)."""
        f = self.recv_frame()
        if f is None:
            return None
        fin, op, payload = f
        parts = [payload]
        while not fin:
            f = self.recv_frame()
            assert f is not None, "stream ended inside a fragmented message"
            fin, _, p = f
            parts.append(p)
        return op, b"".join(parts)

    def wait_end(self):
        """Reads until the tunnel's stream ended or was reset; the state."""
        st = self.streams[self.sid]
        while not st["ended"] and st["reset"] is None:
            if not self.pump():
                break
        return st

    def reset(self, code=8):
        self.conn.reset_stream(self.sid, code)
        self.flush()

    def shutdown(self):
        try:
            self.sock.close()
        except OSError:
            pass
