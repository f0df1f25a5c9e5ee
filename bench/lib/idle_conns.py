#!/usr/bin/python3
"""Open N idle HTTP/1.1 keep-alive connections and hold them.

Usage: idle_conns.py PORT N

Each connection sends one `GET /tiny` and reads the whole response, so the
proxy has seen a complete request on it (and its upstream side has been
used), then stays open and silent. Connections are opened 32 at a time
(the benchmark's concurrency) to stay well inside every listen backlog.

Prints "ready N" on stdout once all N are open and answered, then holds
them until it is killed (SIGTERM closes them all as the process exits). Exits non-zero
(after printing the reason) if any connection fails: a partial result
would understate memory per connection.
"""
import socket
import sys
import time

BATCH = 32
REQUEST = b"GET /tiny HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def read_response(s):
    """Read one response with a Content-Length body; return its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed in the response body")
        body += chunk
    return status


def main():
    port, total = int(sys.argv[1]), int(sys.argv[2])
    held = []
    try:
        while len(held) < total:
            batch = []
            for _ in range(min(BATCH, total - len(held))):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                batch.append(s)
            for s in batch:
                s.sendall(REQUEST)
            for s in batch:
                status = read_response(s)
                if status != 200:
                    raise ConnectionError("status %d" % status)
            held.extend(batch)
    except (OSError, ValueError, IndexError) as e:
        print("failed after %d connections: %s" % (len(held), e), flush=True)
        sys.exit(1)
    print("ready %d" % len(held), flush=True)
    while True:  # hold until the driver kills us
        time.sleep(3600)


if __name__ == "__main__":
    main()
