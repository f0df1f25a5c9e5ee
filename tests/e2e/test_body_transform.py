"""JSON body transforms: request_transform / response_transform with
rename_body_fields, remove_body_fields and add_body_fields. Which bodies
are edited (JSON, not encoded, within max_transform_bytes), which pass
through byte for byte, how they are framed (a response's Content-Length
recomputed, a chunked response stays chunked; a request body the rules
take goes upstream with a Content-Length even when it came chunked),
invalid JSON counted, HTTP/2 clients, retries."""

import gzip
import http.client
import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import (Gateway, free_port, make_config, scaled, to_yaml, upstream,
                      validate_errors, wait_until, with_backend)

DOC = {"id": 7, "user_name": "ann", "secret": "s3", "secret2": "s4",
       "user": {"address": {"zip": "12345", "city": "Oslo"}, "tags": [1, 2]},
       "price": 19.99, "items": [{"user_name": "x"}]}


class Origin(BaseHTTPRequestHandler):
    """Answers by path:
      /json          DOC as application/json with Content-Length
      /chunked       DOC as application/vnd.api+json; charset=utf-8, chunked
      /text          DOC's bytes as text/plain
      /gzip          DOC gzipped, Content-Encoding: gzip
      /invalid       '{"user_name": "ann",' as application/json
      /big/N         a JSON object of about N bytes, with Content-Length
      /bigchunked/N  the same, chunked
      /echo          {"body": <request body>, "headers": {...}}
      /flaky/K       503 on the first request with key K, then /echo
    """
    protocol_version = "HTTP/1.1"
    seen = {}
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def _send(self, status, body, ctype="application/json", extra=(), chunked=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            third = max(1, len(body) // 3)
            for i in range(0, len(body), third):
                part = body[i:i + third]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    return out, "chunked"
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n), n

    def _echo(self):
        body, framing = self._read_body()
        doc = {"body": body.decode("latin-1"), "framing": framing,
               "headers": {k.lower(): v for k, v in self.headers.items()}}
        self._send(200, json.dumps(doc).encode())

    def do_GET(self):
        p = self.path
        raw = json.dumps(DOC).encode()
        if p == "/json":
            self._send(200, raw)
        elif p == "/chunked":
            self._send(200, raw, "application/vnd.api+json; charset=utf-8", chunked=True)
        elif p == "/text":
            self._send(200, raw, "text/plain")
        elif p == "/gzip":
            self._send(200, gzip.compress(raw), extra=[("Content-Encoding", "gzip")])
        elif p == "/invalid":
            self._send(200, b'{"user_name": "ann",')
        elif p.startswith("/big/") or p.startswith("/bigchunked/"):
            n = int(p.rsplit("/", 1)[1])
            doc = json.dumps({"user_name": "ann", "pad": "x" * n}).encode()
            self._send(200, doc, chunked=p.startswith("/bigchunked/"))
        else:
            self._echo()

    def do_POST(self):
        if self.path.startswith("/flaky/"):
            with Origin.lock:
                first = self.path not in Origin.seen
                Origin.seen[self.path] = Origin.seen.get(self.path, 0) + 1
            if first:
                self._read_body()
                self._send(503, b'{"error":"try again"}')
                return
        self._echo()

    do_PUT = do_POST

    def do_HEAD(self):
        # GET's head, no body (RFC 9110 9.3.2)
        raw = json.dumps(DOC).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(raw)))
        self.end_headers()


@pytest.fixture(scope="module")
def origin():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()


BODY_RULES = {
    "rename_body_fields": {"user_name": "username", "user.address.zip": "postcode",
                           "user.address.city": "user.town", "secret2": "moved.secret2",
                           "nope": "never.made"},
    "remove_body_fields": ["secret", "user.tags", "missing.deep.field", "items.user_name"],
    "add_body_fields": {"gw.request_id": "${request_id}", "gw.version": 2,
                        "user.address.country": "NO", "id.sub": "skipped",
                        "items.extra": "skipped", "served_by": "portico",
                        "version": 2, "ratio": 0.5, "flag": True, "nothing": None,
                        "quoted": "2", "method": "${method}"},
}


def body_config(port, oport, admin_port):
    cfg = make_config(
        port, {"o": upstream(oport),
               "retry": upstream(oport, retries={"attempts": 2, "on": [503]})},
        admin_port=admin_port,
        routes=[
            {"name": "resp", "match": {"path_prefix": "/r/"}, "upstream": "o",
             "strip_prefix": "/r",
             "filters": {"response_transform": dict(BODY_RULES, max_transform_bytes="64KiB")}},
            {"name": "req", "match": {"path_prefix": "/q/"}, "upstream": "o",
             "strip_prefix": "/q",
             "filters": {"request_transform": dict(BODY_RULES, max_transform_bytes="64KiB")}},
            {"name": "retry", "match": {"path_prefix": "/flaky/"}, "upstream": "retry",
             "filters": {"request_transform": {"add_body_fields": {"added": "yes"},
                                               "remove_body_fields": ["drop"]}}},
            {"name": "plain", "match": {"path_prefix": "/p/"}, "upstream": "o",
             "strip_prefix": "/p"},
        ])
    cfg["listeners"].append({"name": "h2c", "address": "127.0.0.1:%d" % free_port(),
                             "http2": True})
    return cfg


@pytest.fixture(scope="module")
def gw(origin, tmp_path_factory):
    cfg = with_backend(body_config(free_port(), origin, free_port()))
    # `quoted: "2"`: a quoted YAML scalar (to_yaml writes 2 plain)
    text = to_yaml(cfg).replace("quoted: 2\n", 'quoted: "2"\n')
    g = Gateway(text, tmp_path_factory.mktemp("bt"))
    g.h2c_port = int(cfg["listeners"][1]["address"].rsplit(":", 1)[1])
    g.admin_port = int(cfg["admin"]["address"].rsplit(":", 1)[1])
    yield g
    g.stop()


def h2c_port(g):
    return g.h2c_port


def check_edited(d, rid, method):
    assert "user_name" not in d and d["username"] == "ann"
    assert "secret" not in d
    assert d["user"]["address"] == {"postcode": "12345", "country": "NO"}
    assert d["user"]["town"] == "Oslo"
    assert "tags" not in d["user"]
    assert d["items"] == [{"user_name": "x"}]  # arrays are not traversed
    # add and rename create missing parents as objects ...
    assert d["gw"]["version"] == 2 and d["gw"]["request_id"]
    if rid is not None:
        assert d["gw"]["request_id"] == rid
    assert "secret2" not in d and d["moved"] == {"secret2": "s4"}
    # ... but never replace a member that is not an object, and a rename
    # without a source creates nothing
    assert d["id"] == 7 and "never" not in d
    assert d["served_by"] == "portico" and d["method"] == method
    assert d["version"] == 2 and isinstance(d["version"], int)
    assert d["ratio"] == 0.5 and d["flag"] is True and d["nothing"] is None
    assert d["quoted"] == "2"  # a quoted YAML scalar stays a string
    assert d["price"] == 19.99


def test_response_nested_rules_and_length_recomputed(gw):
    r = requests.get(gw.u("/r/json"), timeout=scaled(5))
    assert r.status_code == 200
    check_edited(r.json(), r.headers["X-Request-ID"], "GET")
    assert r.headers["Content-Length"] == str(len(r.content))
    assert "Transfer-Encoding" not in r.headers
    # compact, in the upstream's member order
    assert r.content.startswith(b'{"id":7,"price":19.99') or r.content.startswith(b'{"id":7,')
    assert b" " not in r.content.replace(b"Oslo", b"")


def test_response_chunked_stays_chunked(gw):
    r = requests.get(gw.u("/r/chunked"), timeout=scaled(5))
    assert r.status_code == 200
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in r.headers
    check_edited(r.json(), r.headers["X-Request-ID"], "GET")


@pytest.mark.parametrize("path", ["/text", "/gzip"])
def test_response_not_json_or_encoded_untouched(gw, path):
    plain = requests.get(gw.u("/p" + path), timeout=scaled(5), stream=True)
    raw_plain = plain.raw.read(decode_content=False)
    r = requests.get(gw.u("/r" + path), timeout=scaled(5), stream=True)
    raw = r.raw.read(decode_content=False)
    assert r.status_code == 200
    assert raw == raw_plain and len(raw) > 0
    assert r.headers["Content-Length"] == plain.headers["Content-Length"]
    if path == "/gzip":
        assert json.loads(gzip.decompress(raw)) == DOC


def metric_value(g, name, **labels):
    text = requests.get("http://127.0.0.1:%d/metrics" % g.admin_port, timeout=scaled(5)).text
    total = 0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_response_invalid_json_untouched_and_counted(gw):
    before = metric_value(gw, "portico_filter_notes_total", route="resp", filter="response_transform",
                          result="invalid_json")
    r = requests.get(gw.u("/r/invalid"), timeout=scaled(5))
    assert r.status_code == 200
    assert r.content == b'{"user_name": "ann",'
    assert r.headers["Content-Length"] == str(len(r.content))
    wait_until(lambda: metric_value(gw, "portico_filter_notes_total", route="resp",
                                    filter="response_transform", result="invalid_json")
               == before + 1, scaled(5), what="the invalid_json note counted")


@pytest.mark.parametrize("path", ["/big/100000", "/bigchunked/100000"])
def test_response_oversized_untouched(gw, path):
    plain = requests.get(gw.u("/p" + path), timeout=scaled(5))
    r = requests.get(gw.u("/r" + path), timeout=scaled(5))
    assert r.status_code == 200
    assert r.content == plain.content  # whole, unchanged, never cut
    assert r.json()["user_name"] == "ann"


def test_response_small_chunked_body_within_limit_is_edited(gw):
    r = requests.get(gw.u("/r/bigchunked/1000"), timeout=scaled(5))
    assert r.status_code == 200
    assert r.json()["username"] == "ann"


def test_request_transform_reaches_backend_with_new_length(gw):
    r = requests.post(gw.u("/q/echo"), json=DOC, timeout=scaled(5))
    assert r.status_code == 200
    seen = r.json()
    body = seen["body"].encode("latin-1")
    check_edited(json.loads(body), r.headers["X-Request-ID"], "POST")
    assert seen["framing"] == len(body)
    assert seen["headers"]["content-length"] == str(len(body))


def test_request_chunked_sent_with_length(gw):
    data = json.dumps(DOC).encode()

    def gen():
        yield data[:10]
        yield data[10:]
    r = requests.post(gw.u("/q/echo"), data=gen(), timeout=scaled(5),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    seen = r.json()
    assert seen["framing"] != "chunked"
    assert "transfer-encoding" not in seen["headers"]
    check_edited(json.loads(seen["body"]), None, "POST")


def chunked_post(g, path, data, ctype):
    def gen():
        yield data[:10]
        yield data[10:]
    r = requests.post(g.u(path), data=gen(), timeout=scaled(5), headers={"Content-Type": ctype})
    assert r.status_code == 200
    return r.json()


def test_request_chunked_framing_upstream(gw):
    # A chunked request body the rules take (JSON within the limit) is
    # gathered and goes upstream with a Content-Length, edited or not;
    # one they do not take streams on chunked, as it came.
    data = json.dumps([{"secret": 1}, 2]).encode()  # valid JSON no rule changes
    seen = chunked_post(gw, "/q/echo", data, "application/json")
    assert seen["body"] == data.decode() and seen["framing"] == len(data)
    assert seen["headers"]["content-length"] == str(len(data))
    seen = chunked_post(gw, "/q/echo", data, "text/plain")
    assert seen["body"] == data.decode() and seen["framing"] == "chunked"
    big = json.dumps({"user_name": "ann", "pad": "z" * 70000}).encode()
    seen = chunked_post(gw, "/q/echo", big, "application/json")
    assert seen["body"] == big.decode() and seen["framing"] == "chunked"


def test_request_non_json_and_invalid_untouched(gw):
    data = json.dumps(DOC)
    r = requests.post(gw.u("/q/echo"), data=data, timeout=scaled(5),
                      headers={"Content-Type": "text/plain"})
    assert r.json()["body"] == data
    before = metric_value(gw, "portico_filter_notes_total", route="req", filter="request_transform",
                          result="invalid_json")
    r = requests.post(gw.u("/q/echo"), data='{"a":', timeout=scaled(5),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["body"] == '{"a":'
    wait_until(lambda: metric_value(gw, "portico_filter_notes_total", route="req",
                                    filter="request_transform", result="invalid_json")
               == before + 1, scaled(5), what="the invalid_json note counted")


def test_request_oversized_untouched(gw):
    doc = {"user_name": "ann", "pad": "y" * 70000}
    data = json.dumps(doc)
    r = requests.post(gw.u("/q/echo"), data=data, timeout=scaled(5),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    # the origin keeps what it got; the gateway sent it unchanged
    assert r.json()["body"] == data


@pytest.mark.parametrize("chunked", [False, True])
def test_request_oversized_is_counted_too_large(gw, chunked):
    """Judged by its Content-Length, or found too long while a chunked
    body was being gathered: either way passed on unchanged and counted."""
    big = json.dumps({"user_name": "ann", "pad": "x" * 70000}).encode()

    def too_large():
        return metric_value(gw, "portico_filter_notes_total", route="req",
                            filter="request_transform", result="too_large")
    before = too_large()
    if chunked:
        seen = chunked_post(gw, "/q/echo", big, "application/json")
    else:
        seen = requests.post(gw.u("/q/echo"), data=big, timeout=scaled(5),
                             headers={"Content-Type": "application/json"}).json()
    assert seen["body"] == big.decode()
    wait_until(lambda: too_large() == before + 1, scaled(5), what="the too_large note counted")


def test_retry_replays_transformed_body(gw):
    key = "/flaky/%d" % free_port()
    # PUT: idempotent, so a 503 after the body went out is retried
    r = requests.put(gw.u(key), json={"keep": 1, "drop": 2}, timeout=scaled(5))
    assert r.status_code == 200
    assert json.loads(r.json()["body"]) == {"keep": 1, "added": "yes"}
    assert Origin.seen[key] == 2


def test_http2_client_both_directions(gw):
    port = h2c_port(gw)
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-H",
         "Content-Type: application/json", "--data-binary", json.dumps(DOC),
         "http://127.0.0.1:%d/q/echo" % port], capture_output=True, timeout=scaled(10))
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200")
    check_edited(json.loads(json.loads(body)["body"]), None, "POST")
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-D", "-",
         "http://127.0.0.1:%d/r/json" % port], capture_output=True, timeout=scaled(10))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200")
    m = re.search(rb"content-length: (\d+)", head)
    assert m and int(m.group(1)) == len(body)
    check_edited(json.loads(body), None, "GET")


@pytest.mark.parametrize("path", ["/r/json", "/r/chunked"])
def test_head_on_a_route_with_response_body_rules(gw, path):
    # HEAD has no body to edit: the head comes at once, the upstream's
    # length stands, and the connection carries the next request.
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=scaled(5))
    c.request("HEAD", path)
    r = c.getresponse()
    assert r.status == 200
    assert r.read() == b""
    if path == "/r/json":
        assert r.getheader("Content-Length") == str(len(json.dumps(DOC).encode()))
    c.request("GET", "/r/json")
    r = c.getresponse()
    assert r.status == 200
    body = r.read()
    check_edited(json.loads(body), None, "GET")
    assert r.getheader("Content-Length") == str(len(body))
    c.close()
    out = subprocess.run(["curl", "-sS", "-I", "--http2-prior-knowledge",
                          "http://127.0.0.1:%d%s" % (h2c_port(gw), path)],
                         capture_output=True, timeout=scaled(10))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"HTTP/2 200")


@pytest.mark.parametrize("rule", ["{ user: user.address.inner }", "{ user.address: user.address.zip }"])
def test_rename_into_its_own_subtree_is_refused(tmp_path, rule):
    # Moving a member inside itself would make the document hold itself:
    # a reference cycle that leaked every request's tree. Refused at load.
    text = ("listeners: [{name: public, address: \"127.0.0.1:%d\"}]\n"
            "upstreams:\n"
            "  o: {targets: [{address: \"127.0.0.1:9\"}]}\n"
            "routes:\n"
            "  - name: r\n"
            "    match: {path_prefix: /}\n"
            "    upstream: o\n"
            "    filters:\n"
            "      response_transform:\n"
            "        rename_body_fields: %s\n" % (free_port(), rule))
    rc, out = validate_errors(tmp_path, text, "rt.yaml")
    assert rc != 0
    assert "rt.yaml:10:" in out and "inside itself" in out, out
