#!/usr/bin/python3
"""A sink OTLP/HTTP receiver for bench/lib/tracing.sh: answers every POST
200 `{}` and counts the spans it got (occurrences of the `"spanId"` key;
`parentSpanId` does not match it) without parsing them, so it costs the
load CPU as little as it can. GET /count → {"spans": N, "posts": N}; any
other GET → {"ok":true} (the script's readiness probe).

Usage: otlp_sink.py PORT
"""
import http.server
import json
import sys
import threading

lock = threading.Lock()
counts = {"spans": 0, "posts": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body are two writes: without TCP_NODELAY the body
    # waits for the ACK of the head (Nagle against the gateway's delayed
    # ACK, ~40 ms), and the gateway's one post in flight per worker would
    # make the sink the bottleneck.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with lock:
            counts["spans"] += body.count(b'"spanId"')
            counts["posts"] += 1
        self._answer(b"{}")

    def do_GET(self):
        if self.path != "/count":
            self._answer(b'{"ok":true}')  # bench/run.sh's wait_ready probe
            return
        with lock:
            out = json.dumps(counts).encode()
        self._answer(out)


def main():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.daemon_threads = True
    print("listening", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
