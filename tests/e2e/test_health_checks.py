"""Active health checks end to end: probes from the control thread through
the outbound client, the verdict in each target's shared cell, traffic
kept off unhealthy targets, 503 when none is healthy, health kept across a
reload for unchanged targets, and admin /upstreams showing it."""

import http.server
import threading

import requests

from conftest import (Gateway, assert_error_response, free_port, make_config, scaled,
                      wait_until)


class Target:
    """An HTTP/1.1 upstream whose /healthz answer can be switched."""

    def __init__(self, name):
        self.name = name
        self.port = free_port()
        self.healthy = True
        self.probes = 0
        self.hosts = set()
        t = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/healthz"):
                    t.probes += 1
                    t.hosts.add(self.headers.get("Host"))
                    code, body = (200, b"ok") if t.healthy else (503, b"down")
                else:
                    code, body = 200, t.name.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def config(port, admin, a, b, **hc):
    active = {"path": "/healthz", "interval": "100ms", "timeout": "500ms", "healthy": 2,
              "unhealthy": 2}
    active.update(hc)
    ups = {"app": {"targets": [{"address": "127.0.0.1:%d" % a.port},
                               {"address": "127.0.0.1:%d" % b.port}],
                   "health_check": {"active": active}}}
    routes = [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"}]
    return make_config(port, ups, routes, admin_port=admin)


def target_health(admin):
    doc = requests.get("http://127.0.0.1:%d/upstreams" % admin, timeout=scaled(5)).json()
    return {t["address"]: t["healthy"] for t in doc["upstreams"][0]["targets"]}


def served_by(gw, n=20):
    return {requests.get(gw.u("/x"), timeout=scaled(5)).text for _ in range(n)}


def test_unhealthy_target_gets_no_traffic_and_comes_back(tmp_path):
    a, b = Target("a"), Target("b")
    admin = free_port()
    gw = Gateway(config(free_port(), admin, a, b), tmp_path)
    try:
        wait_until(lambda: a.probes >= 1 and b.probes >= 1, scaled(5), what="first probes")
        assert served_by(gw) == {"a", "b"}
        b.healthy = False
        addr_b = "127.0.0.1:%d" % b.port
        wait_until(lambda: target_health(admin)[addr_b] is False, scaled(5),
                   what="b marked unhealthy")
        assert served_by(gw) == {"a"}
        assert "unhealthy" in gw.stderr_text()  # the change is logged
        b.healthy = True
        wait_until(lambda: target_health(admin)[addr_b] is True, scaled(5),
                   what="b healthy again")
        wait_until(lambda: served_by(gw) == {"a", "b"}, scaled(5), what="b serving again")
        # The probe's Host is the target's address unless `host` is set.
        assert addr_b in b.hosts
    finally:
        gw.stop()
        a.stop()
        b.stop()


def test_every_target_unhealthy_is_503(tmp_path):
    a, b = Target("a"), Target("b")
    admin = free_port()
    gw = Gateway(config(free_port(), admin, a, b, host="probe.internal"), tmp_path)
    try:
        a.healthy = b.healthy = False
        wait_until(lambda: not any(target_health(admin).values()), scaled(5),
                   what="both unhealthy")
        r = requests.get(gw.u("/x"), timeout=scaled(5))
        assert_error_response(r, 503)
        assert "healthy" in r.json()["error"]
        assert a.hosts == {"probe.internal"}
    finally:
        gw.stop()
        a.stop()
        b.stop()


def test_health_survives_a_reload_for_unchanged_targets(tmp_path):
    a, b = Target("a"), Target("b")
    admin = free_port()
    port = free_port()
    # Slow probes after the first verdict, so the reload is judged on the
    # cell it keeps, not on a fresh probe.
    gw = Gateway(config(port, admin, a, b, interval="300ms", healthy=1, unhealthy=1), tmp_path)
    try:
        b.healthy = False
        addr_b = "127.0.0.1:%d" % b.port
        wait_until(lambda: target_health(admin)[addr_b] is False, scaled(5),
                   what="b unhealthy")
        gw.reload(config(port, admin, a, b, interval="1h", healthy=1, unhealthy=1))
        # An unchanged target is not probed at once after the reload, and
        # keeps its verdict: b stays out of rotation.
        assert target_health(admin)[addr_b] is False
        assert served_by(gw) == {"a"}
    finally:
        gw.stop()
        a.stop()
        b.stop()


def test_target_added_by_a_reload_is_checked_at_once(tmp_path):
    a, b, c = Target("a"), Target("b"), Target("c")
    admin = free_port()
    port = free_port()
    gw = Gateway(config(port, admin, a, b, interval="1h", healthy=1, unhealthy=1), tmp_path)
    try:
        wait_until(lambda: a.probes >= 1 and b.probes >= 1, scaled(5), what="first probes")
        c.healthy = False
        gw.reload(config(port, admin, a, c, interval="1h", healthy=1, unhealthy=1))
        addr_c = "127.0.0.1:%d" % c.port
        wait_until(lambda: c.probes >= 1, scaled(5), what="the new target probed")
        wait_until(lambda: target_health(admin)[addr_c] is False, scaled(5),
                   what="c unhealthy")
        assert served_by(gw) == {"a"}
    finally:
        gw.stop()
        a.stop()
        b.stop()
        c.stop()
