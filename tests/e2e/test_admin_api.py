"""Admin API, live configuration and consumers (issue 17 item 3): the
token off loopback, GET /config, PUT /config (good: the new route serves
and the file keeps its comments and ${ENV} references; bad: 400 with
line/col and the old config keeps serving; under load: no failed request),
POST /config/validate, request bodies (413), consumers CRUD persisted to
consumers_file (a created key authenticates on the next request and after
a restart; the file holds only digests; delete → 401), /debug/match's
reasons, /healthz and /readyz (503 while draining)."""

import hashlib
import http.client
import json
import os
import signal
import socket
import threading
import time

import requests

from conftest import E2E_IO_BACKEND, Gateway, echo_headers, free_port, scaled, wait_until

TOKEN = "t0k-admin-s3cret"


def config_text(port, admin, bport, extra_route="", admin_block=None):
    """A hand-written config with comments and a ${ENV} reference."""
    admin_block = admin_block or "admin:\n  address: 127.0.0.1:%d\n" % admin
    return ("# the portico config: comments must survive PUT /config\n"
            "workers: 2\n" +
            ("io_backend: %s\n" % E2E_IO_BACKEND if E2E_IO_BACKEND else "") +
            "listeners:\n  - name: public\n    address: 127.0.0.1:%d\n" % port +
            admin_block +
            "access_log: { path: off }\n"
            "upstreams:\n  app:\n    targets: [\"127.0.0.1:%d\"]\n" % bport +
            "routes:\n"
            "  - name: users   # the users API\n"
            "    match: { path_prefix: /app }\n"
            "    upstream: app\n"
            "    filters:\n"
            "      request_transform:\n"
            "        add_headers: { X-Env: \"${ADMIN_TEST_ENV}\" }\n"
            "  - name: keyed\n"
            "    match: { path_prefix: /keyed }\n"
            "    upstream: app\n"
            "    filters: { key_auth: {} }\n" + extra_route)


ENV = {"ADMIN_TEST_ENV": "from-env"}


def start(tmp_path, bport, **kw):
    port, admin = free_port(), free_port()
    gw = Gateway(config_text(port, admin, bport, **kw), tmp_path, ENV)
    gw.admin_port = admin
    return gw


def adm(gw, path):
    return "http://127.0.0.1:%d%s" % (gw.admin_port, path)


def test_token_required_off_loopback(tmp_path, backends):
    be = backends("app")
    port, admin = free_port(), free_port()
    block = "admin:\n  address: 0.0.0.0:%d\n  token: \"${ADMIN_TOKEN}\"\n" % admin
    gw = Gateway(config_text(port, admin, be.port, admin_block=block), tmp_path,
                 dict(ENV, ADMIN_TOKEN=TOKEN))
    try:
        url = "http://127.0.0.1:%d/status" % admin
        assert requests.get(url).status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer " + TOKEN[:-1]}).status_code == 401
        r = requests.get(url, headers={"Authorization": "Bearer " + TOKEN})
        assert r.status_code == 200 and r.json()["generation"] == 1
        # every endpoint is behind it, writes included
        assert requests.put("http://127.0.0.1:%d/config" % admin, data="x").status_code == 401
        # the token never appears in what the API shows
        r = requests.get("http://127.0.0.1:%d/config" % admin,
                         headers={"Authorization": "Bearer " + TOKEN})
        assert TOKEN not in r.text and "${ADMIN_TOKEN}" in r.text
        assert TOKEN not in gw.stderr_text()
    finally:
        gw.stop()


def test_get_config_round_trip(tmp_path, backends):
    be = backends("app")
    gw = start(tmp_path, be.port)
    try:
        r = requests.get(adm(gw, "/config"))
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/yaml")
        with open(gw.config_path) as f:
            assert r.text == f.read()
        assert "${ADMIN_TEST_ENV}" in r.text and "# the users API" in r.text
    finally:
        gw.stop()


def test_put_config_good_and_bad(tmp_path, backends):
    be = backends("app")
    gw = start(tmp_path, be.port)
    try:
        assert requests.get(gw.u("/orders/1")).status_code == 404
        text = requests.get(adm(gw, "/config")).text
        text += ("  - name: orders   # added through the API\n"
                 "    match: { path_prefix: /orders }\n"
                 "    upstream: app\n")
        r = requests.put(adm(gw, "/config"), data=text)
        assert r.status_code == 200, r.text
        assert r.json() == {"applied": True, "generation": 2, "written": True}
        # the new route serves at once, the ${ENV} reference still expands
        r = requests.get(gw.u("/orders/1"))
        assert r.status_code == 200
        assert echo_headers(requests.get(gw.u("/app/1")).json(), "X-Env") == ["from-env"]
        with open(gw.config_path) as f:
            on_disk = f.read()
        assert on_disk == text and "# added through the API" in on_disk
        assert "${ADMIN_TEST_ENV}" in on_disk
        assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]

        # a bad config: 400 with positions, nothing changes
        bad = text.replace("upstream: app\n", "upstream: nope\n", 1) + "bogus_key: 1\n"
        r = requests.put(adm(gw, "/config"), data=bad)
        assert r.status_code == 400
        errs = r.json()["errors"]
        assert r.json()["valid"] is False and len(errs) == 2
        by_line = {e["line"]: e for e in errs}
        lines = bad.splitlines()
        for e in errs:
            assert e["file"] == gw.config_path and e["col"] >= 1
        assert any("nope" in lines[e["line"] - 1] and "nope" in e["message"] for e in errs)
        assert any(lines[e["line"] - 1].startswith("bogus_key") for e in errs), by_line
        assert requests.get(gw.u("/orders/1")).status_code == 200
        assert gw.status()["generation"] == 2
        with open(gw.config_path) as f:
            assert f.read() == text
        # not YAML at all
        r = requests.put(adm(gw, "/config"), data="routes: [\n")
        assert r.status_code == 400 and r.json()["errors"][0]["line"] >= 1
        # an empty body
        assert requests.put(adm(gw, "/config"), data="").status_code == 400
    finally:
        gw.stop()


def test_validate_only(tmp_path, backends):
    be = backends("app")
    gw = start(tmp_path, be.port)
    try:
        text = requests.get(adm(gw, "/config")).text
        r = requests.post(adm(gw, "/config/validate"), data=text)
        assert r.status_code == 200 and r.json()["valid"] is True and r.json()["routes"] == 2
        r = requests.post(adm(gw, "/config/validate"), data=text + "  - name: x\n")
        assert r.status_code == 400
        e = r.json()["errors"][0]
        assert e["line"] == len(text.splitlines()) + 1 and "upstream" in e["message"]
        assert gw.status()["generation"] == 1  # validate applies nothing
        assert requests.get(adm(gw, "/config/validate")).status_code == 405
    finally:
        gw.stop()


def test_body_limits(tmp_path, backends):
    be = backends("app")
    gw = start(tmp_path, be.port)
    try:
        s = socket.create_connection(("127.0.0.1", gw.admin_port))
        s.sendall(b"PUT /config HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                  % (5 << 20))
        data = s.recv(4096)
        s.close()
        assert data.startswith(b"HTTP/1.1 413"), data
        # a body that arrives in pieces is read to its end
        text = requests.get(adm(gw, "/config")).text.encode()
        s = socket.create_connection(("127.0.0.1", gw.admin_port))
        s.sendall(b"POST /config/validate HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                  % len(text))
        for i in range(0, len(text), 100):
            s.sendall(text[i:i + 100])
            time.sleep(0.005)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 200") and b'"valid":true' in data
    finally:
        gw.stop()


def test_put_config_under_load_fails_nothing(tmp_path, backends):
    be = backends("app")
    gw = start(tmp_path, be.port)
    stop = threading.Event()
    counts = {"ok": 0, "bad": []}

    def client():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.get(gw.u("/app/x"), timeout=scaled(10))
                    if r.status_code == 200:
                        counts["ok"] += 1
                    else:
                        counts["bad"].append(r.status_code)
                except requests.RequestException as e:
                    counts["bad"].append(repr(e))
    try:
        text = requests.get(adm(gw, "/config")).text
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: counts["ok"] > 50, scaled(10), what="traffic")
        for i in range(6):
            new = text + ("  - name: extra%d\n    match: { path: /extra%d }\n"
                          "    upstream: app\n" % (i, i))
            r = requests.put(adm(gw, "/config"), data=new)
            assert r.status_code == 200, r.text
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        assert counts["bad"] == [] and counts["ok"] > 100, counts
        assert gw.status()["generation"] == 7
    finally:
        stop.set()
        gw.stop()


def sha(key):
    return hashlib.sha256(key.encode()).hexdigest()


def test_consumers_crud_persist_and_restart(tmp_path, backends):
    be = backends("app")
    gw = start(tmp_path, be.port)
    cfile = os.path.join(str(tmp_path), "consumers.yaml")
    with open(gw.config_path) as f:
        config_before = f.read()
    try:
        assert not os.path.exists(cfile)
        assert requests.get(gw.u("/keyed/1"), headers={"X-API-Key": "raw-key-1"}).status_code == 401
        r = requests.post(adm(gw, "/consumers"),
                          json={"name": "app1", "groups": ["mobile"], "api_keys": ["raw-key-1"]})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["consumer"]["api_keys"] == ["sha256:" + sha("raw-key-1")]
        assert "raw-key-1" not in r.text
        # the very next request authenticates
        r = requests.get(gw.u("/keyed/1"), headers={"X-API-Key": "raw-key-1"})
        assert r.status_code == 200
        assert echo_headers(r.json(), "X-Consumer-Name") == ["app1"]
        # the file holds only digests; the config is untouched
        with open(cfile) as f:
            stored = f.read()
        assert "raw-key-1" not in stored and sha("raw-key-1") in stored
        with open(gw.config_path) as f:
            assert f.read() == config_before
        # create again: 409; GET shows it with its source
        assert requests.post(adm(gw, "/consumers"), json={"name": "app1"}).status_code == 409
        r = requests.get(adm(gw, "/consumers/app1"))
        assert r.status_code == 200 and r.json()["source"] == "consumers_file"
        assert r.json()["groups"] == ["mobile"]
        assert requests.get(adm(gw, "/consumers/none")).status_code == 404
        # PUT creates or replaces; a digest is kept as given
        r = requests.put(adm(gw, "/consumers/app2"),
                         json={"api_keys": ["sha256:" + sha("raw-key-2")]})
        assert r.status_code == 201, r.text
        r = requests.put(adm(gw, "/consumers/app2"),
                         json={"name": "app2", "api_keys": ["raw-key-2", "raw-key-3"]})
        assert r.status_code == 200, r.text
        names = [c["name"] for c in requests.get(adm(gw, "/consumers")).json()["consumers"]]
        assert names == ["app1", "app2"]
        # validation like the loader's: a key already someone else's, a bad name, bad JSON
        r = requests.put(adm(gw, "/consumers/app3"), json={"api_keys": ["raw-key-1"]})
        assert r.status_code == 400 and "app1" in r.text and "raw-key-1" not in r.text
        assert requests.put(adm(gw, "/consumers/bad%20name"), json={}).status_code == 400
        assert requests.post(adm(gw, "/consumers"), data="{nope").status_code == 400
        assert requests.post(adm(gw, "/consumers"),
                             json={"name": "x", "api_keys": [" spaced"]}).status_code == 400
        assert requests.post(adm(gw, "/consumers"),
                             json={"name": "x", "color": "red"}).status_code == 400
        # a restart loads the consumers file with the config
        gw.stop()
        gw = Gateway(config_before, tmp_path, ENV)
        gw.admin_port = int(config_before.split("admin:\n  address: 127.0.0.1:")[1].split("\n")[0])
        r = requests.get(gw.u("/keyed/1"), headers={"X-API-Key": "raw-key-1"})
        assert r.status_code == 200
        assert requests.get(gw.u("/keyed/1"), headers={"X-API-Key": "raw-key-3"}).status_code == 200
        # delete → 401 at once
        r = requests.delete(adm(gw, "/consumers/app1"))
        assert r.status_code == 200 and r.json()["deleted"] == "app1"
        assert requests.get(gw.u("/keyed/1"), headers={"X-API-Key": "raw-key-1"}).status_code == 401
        assert requests.delete(adm(gw, "/consumers/app1")).status_code == 404
        with open(cfile) as f:
            assert "app1" not in f.read()
    finally:
        gw.stop()


def test_consumers_file_conflicts_and_config_consumers(tmp_path, backends):
    """A name in the config's own consumers: is read-only through the API,
    and the same name in both files is an error at the consumers file's
    line:col."""
    be = backends("app")
    port, admin = free_port(), free_port()
    text = config_text(port, admin, be.port) + (
        "consumers:\n  - name: static\n    api_keys: [\"static-key\"]\n")
    gw = Gateway(text, tmp_path, ENV)
    gw.admin_port = admin
    try:
        r = requests.get(adm(gw, "/consumers")).json()
        assert r["consumers"][0]["source"] == "config"
        assert requests.delete(adm(gw, "/consumers/static")).status_code == 409
        assert requests.put(adm(gw, "/consumers/static"), json={}).status_code == 409
    finally:
        gw.stop()
    with open(os.path.join(str(tmp_path), "consumers.yaml"), "w") as f:
        f.write("consumers:\n  - name: other\n  - name: static\n")
    from conftest import PORTICO
    import subprocess
    p = subprocess.run([PORTICO, "validate", gw.config_path], capture_output=True, text=True,
                       env=dict(os.environ, **ENV))
    assert p.returncode != 0
    assert "consumers.yaml:3:11: consumer `static` is defined twice" in p.stderr, p.stderr


def raw_request(gw, method, path, body=None):
    """A request whose target goes out byte for byte (no client-side
    re-encoding of '%'): (status, text)."""
    c = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=scaled(5))
    try:
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def test_consumer_names_in_urls_are_percent_decoded(tmp_path, backends):
    be = backends("app")
    gw = start(tmp_path, be.port)
    try:
        st, text = raw_request(gw, "PUT", "/consumers/team%2Da",
                               json.dumps({"api_keys": ["k-team-a"]}))
        assert st == 201, text
        assert json.loads(text)["consumer"]["name"] == "team-a"
        # the same consumer, however the client escapes its name
        for spelled in ("/consumers/team-a", "/consumers/team%2da", "/consumers/%74eam-a"):
            st, text = raw_request(gw, "GET", spelled)
            assert st == 200 and json.loads(text)["name"] == "team-a", (spelled, text)
        # a body naming it must agree with the decoded URL name
        st, _ = raw_request(gw, "PUT", "/consumers/team%2Da", json.dumps({"name": "team-a"}))
        assert st == 200
        # bad escapes and an escaped NUL are refused, nothing is written
        for bad in ("/consumers/team%2", "/consumers/team%zza", "/consumers/te%00am"):
            st, text = raw_request(gw, "PUT", bad, "{}")
            assert st == 400 and "percent-escape" in text, (bad, text)
        # `${` would be expanded by the loader: refused in the body and the URL
        st, text = raw_request(gw, "POST", "/consumers", json.dumps({"name": "${HOME}"}))
        assert st == 400 and "${" in text, text
        st, text = raw_request(gw, "PUT", "/consumers/%24%7BHOME%7D", "{}")
        assert st == 400 and "${" in text, text
        st, text = raw_request(gw, "DELETE", "/consumers/team%2Da")
        assert st == 200 and json.loads(text)["deleted"] == "team-a"
        with open(os.path.join(str(tmp_path), "consumers.yaml")) as f:
            stored = f.read()
        assert "team" not in stored and "HOME" not in stored
    finally:
        gw.stop()


def test_debug_match(tmp_path, backends):
    be = backends("app")
    extra = ("  - name: admin-only\n"
             "    match: { path_prefix: /app/admin, methods: [POST],\n"
             "             headers: { X-Role: admin } }\n"
             "    upstream: app\n"
             "  - name: other-host\n"
             "    match: { hosts: [api.example.com], path_prefix: /app }\n"
             "    upstream: app\n")
    gw = start(tmp_path, be.port, extra_route=extra)
    try:
        r = requests.get(adm(gw, "/debug/match"),
                         params={"method": "GET", "host": "x.test", "path": "/app/admin/1"})
        j = r.json()
        assert r.status_code == 200 and j["route"] == "users" and j["upstream"] == "app"
        assert j["filters"] == ["request_transform"]
        reasons = {n["route"]: n["reason"] for n in j["not_matched"]}
        # earlier in match order: the longer prefix /keyed (path), the more
        # specific /app/admin (method); the other host's route is listed last
        assert reasons == {"keyed": "path", "admin-only": "method", "other-host": "host"}, j
        assert j["not_matched"][-1]["route"] == "other-host"
        r = requests.get(adm(gw, "/debug/match"),
                         params=[("method", "POST"), ("path", "/app/admin/1"),
                                 ("header", "X-Role: user")]).json()
        assert r["route"] == "users"
        assert r["not_matched"][0] == {"route": "admin-only", "reason": "header",
                                       "header": "X-Role"}
        r = requests.get(adm(gw, "/debug/match"),
                         params=[("method", "POST"), ("path", "/app/admin/1"),
                                 ("header", "x-role:admin")]).json()
        assert r["route"] == "admin-only" and r["not_matched"] == [
            {"route": "other-host", "reason": "host"}], r
        r = requests.get(adm(gw, "/debug/match"), params={"path": "/keyed/a"}).json()
        assert r["route"] == "keyed" and r["filters"] == ["key_auth"]
        r = requests.get(adm(gw, "/debug/match"), params={"path": "/nothing"}).json()
        assert r["status"] == 404 and r["route"] is None and len(r["not_matched"]) == 4
        assert requests.get(adm(gw, "/debug/match")).status_code == 400
    finally:
        gw.stop()


def test_debug_match_sees_the_path_and_host_the_data_plane_sees(tmp_path, backends):
    be = backends("app")
    gw = start(tmp_path, be.port)
    try:
        def match(**params):
            r = requests.get(adm(gw, "/debug/match"), params=params)
            assert r.status_code == 200, r.text
            return r.json()
        # dot segments resolve before matching, as on the public port
        j = match(path="/app/../keyed/x")
        assert j["request"]["normalized_path"] == "/keyed/x" and j["route"] == "keyed", j
        assert requests.get(gw.u("/app/../keyed/x")).status_code == 401  # keyed: key_auth
        j = match(path="/app/%2e%2e/keyed/x")
        assert j["route"] == "keyed", j
        # what the data plane refuses with a 400 is said so, with the rule
        for bad in ("/../etc/passwd", "/app%2Fadmin", "/app/a%00b"):
            j = match(path=bad)
            assert j["status"] == 400 and j["route"] is None and j["refused"], (bad, j)
            assert j["request"]["normalized_path"] is None
        # an IPv6 literal keeps its brackets and loses its port; a name its port
        assert match(path="/app", host="[::1]:8080")["request"]["host"] == "[::1]"
        assert match(path="/app", host="[::1]")["request"]["host"] == "[::1]"
        assert match(path="/app", host="api.test:8443")["request"]["host"] == "api.test"
        # a bad escape in a parameter is a 400, not a guess
        assert raw_request(gw, "GET", "/debug/match?path=/app%zz")[0] == 400
    finally:
        gw.stop()


def test_healthz_readyz_and_drain(tmp_path, backends):
    be = backends("app")
    be.control(delay=3000)
    gw = start(tmp_path, be.port)
    try:
        assert requests.get(adm(gw, "/healthz")).status_code == 200
        assert requests.get(adm(gw, "/readyz")).status_code == 200
        assert requests.get(adm(gw, "/status")).json()["ready"] is True
        # a slow request keeps the drain going; meanwhile /readyz says 503
        t = threading.Thread(target=lambda: requests.get(gw.u("/app/slow"), timeout=scaled(10)))
        t.start()
        wait_until(lambda: gw.status()["connections_active"] >= 1, scaled(5), what="request")
        gw.send(signal.SIGTERM)
        wait_until(lambda: requests.get(adm(gw, "/readyz")).status_code == 503, scaled(3),
                   what="readyz 503 while draining")
        assert requests.get(adm(gw, "/healthz")).status_code == 200
        r = requests.put(adm(gw, "/config"), data=requests.get(adm(gw, "/config")).text)
        assert r.status_code == 503
        t.join()
    finally:
        gw.stop()
