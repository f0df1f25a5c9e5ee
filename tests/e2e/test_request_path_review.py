"""Request-path defects found in review of the codec/exchange/client split,
kept as regressions."""

import socket
import time

from conftest import one_route, read_head, scaled


def test_malformed_chunk_after_the_response_started_cuts_cleanly(gateway, raw_upstream):
    """The upstream answers early (its head and part of its body reach the
    client) while the client's chunked body is still coming; then the
    client sends a malformed chunk. pump_client_read cut the connection
    (which released the transaction's arena) and pump_txn went on reading
    the freed transaction (ASan pass: use after free)."""
    done = []

    def handler(s):
        head, _ = read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        s.settimeout(scaled(5))
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
        done.append(True)

    up = raw_upstream(handler)
    gw = gateway(one_route(up.port))
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    c.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    got = b""
    while b"hello" not in got:
        chunk = c.recv(65536)
        assert chunk, got
        got += chunk
    time.sleep(0.1)
    c.sendall(b"zz\r\n")  # not a chunk size
    c.settimeout(scaled(5))
    try:
        while c.recv(65536):
            pass
    except ConnectionResetError:
        pass
    c.close()
    # The worker is still fine.
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
    s.sendall(b"GET /health-x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    s.recv(100)
    s.close()
    assert gw.proc.poll() is None
