"""Targets by host name (`address: users.test:PORT`), resolved with c-ares on
the control thread against a small DNS server run by the test (UDP on a
loopback port named in `resolver`). The server answers A queries from a
dict the test changes, AAAA with no records, and can be told to answer
SERVFAIL or to stop answering. Demo backends listen on 127.0.0.2,
127.0.0.3, ... (all loopback on Linux), on one port, so that each address
a name resolves to is a different backend."""

import socket
import struct
import subprocess
import threading
import time

import pytest
import requests

from conftest import (DEMO, _kill, _LineCapture, assert_error_response, free_port, make_config,
                      port_open, require_binaries, scaled, validate_errors, wait_until)
from test_ext_auth import AuthService


class DnsServer:
    """A tiny authoritative DNS server over UDP on 127.0.0.1."""

    def __init__(self):
        self.records = {}      # name (lower case, no final dot) -> [IPv4 text]
        self.mode = "answer"   # answer | servfail | drop
        self.queries = []      # (name, qtype)
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def set(self, name, *ips):
        with self.lock:
            self.records[name] = list(ips)

    def count(self, name):
        with self.lock:
            return sum(1 for n, t in self.queries if n == name and t == 1)

    def stop(self):
        self.stopped = True
        self.sock.close()

    def _run(self):
        while not self.stopped:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            reply = self._answer(data)
            if reply:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    return

    def _answer(self, q):
        if len(q) < 12:
            return None
        qid, flags, qd = struct.unpack(">HHH", q[:6])
        labels, i = [], 12
        while i < len(q) and q[i]:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        i += 1
        if i + 4 > len(q):
            return None
        qtype, qclass = struct.unpack(">HH", q[i:i + 4])
        question = q[12:i + 4]
        name = ".".join(labels).lower()
        with self.lock:
            self.queries.append((name, qtype))
            mode = self.mode
            ips = list(self.records.get(name, []))
            known = name in self.records
        if mode == "drop":
            return None
        rd = flags & 0x0100
        if mode == "servfail":
            return struct.pack(">HHHHHH", qid, 0x8080 | rd | 2, 1, 0, 0, 0) + question
        rcode = 0 if known else 3  # NXDOMAIN for names we do not hold
        answers = b""
        n = 0
        if qtype == 1:
            for ip in ips:
                answers += struct.pack(">HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(ip)
                n += 1
        return struct.pack(">HHHHHH", qid, 0x8480 | rd | rcode, 1, n, 0, 0) + question + answers


@pytest.fixture
def dns():
    d = DnsServer()
    yield d
    d.stop()


class Demo:
    """A demo backend on ip:port (any loopback address)."""

    def __init__(self, name, ip, port, delay=None):
        require_binaries()
        args = [DEMO, "--listen", "%s:%d" % (ip, port), "--name", name, "--quiet"]
        if delay:
            args += ["--delay", str(delay)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.err = _LineCapture(self.proc.stderr)
        wait_until(lambda: port_open(port, host=ip), scaled(10), what="backend %s:%d" % (ip, port))

    def stop(self):
        _kill(self.proc)


@pytest.fixture
def demos():
    started = []

    def start(name, ip, port, delay=None):
        d = Demo(name, ip, port, delay)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def dns_config(port, dns, targets, workers=2, resolve_every="1s", extra_up=None, routes=None,
               resolver=None):
    up = {"targets": targets, "resolve_every": resolve_every}
    up.update(extra_up or {})
    cfg = make_config(port, {"users": up},
                      routes or [{"name": "all", "match": {"path_prefix": "/"},
                                  "upstream": "users"}],
                      workers=workers)
    cfg["resolver"] = resolver or [dns.address]
    return cfg


def who(gw, path="/", timeout=None):
    r = requests.get(gw.u(path), timeout=timeout or scaled(10))
    return r.status_code, r.headers.get("X-Backend", "").split(":")[0]


def upstream_targets(gw):
    r = requests.get("http://127.0.0.1:%d/upstreams" % gw.admin_port, timeout=scaled(5))
    r.raise_for_status()
    return r.json()["upstreams"][0]["targets"]


def test_host_name_target_takes_traffic(gateway, dns, demos):
    port = free_port()
    demos("a", "127.0.0.2", port)
    dns.set("users.test", "127.0.0.2")
    gw = gateway(dns_config(free_port(), dns, ["users.test:%d" % port], resolve_every="30s"))
    # Resolved before the workers serve: the first request already goes there.
    assert who(gw) == (200, "a")
    assert gw.err.wait_for(lambda l: "upstream users target users.test:%d resolves to 127.0.0.2"
                           % port in l, scaled(5))
    t = upstream_targets(gw)
    assert [(x["address"], x["name"]) for x in t] == [("127.0.0.2:%d" % port,
                                                      "users.test:%d" % port)]


def test_changed_record_takes_traffic_and_old_address_drains(gateway, dns, demos):
    port = free_port()
    demos("old", "127.0.0.2", port, delay=2000)
    demos("new", "127.0.0.3", port)
    dns.set("users.test", "127.0.0.2")
    gw = gateway(dns_config(free_port(), dns, ["users.test:%d" % port], resolve_every="1s"))
    # A slow request in flight on the old address...
    result = {}

    def slow():
        result["r"] = who(gw, timeout=scaled(20))

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    start = len(gw.err)
    dns.set("users.test", "127.0.0.3")
    # ...the new address takes traffic within resolve_every (plus slack)...
    line = gw.err.wait_for(lambda l: "now resolves to 127.0.0.3 (was 127.0.0.2)" in l,
                           scaled(5), start)
    assert line and "upstream users target users.test:%d" % port in line
    wait_until(lambda: who(gw, timeout=scaled(10)) == (200, "new"), scaled(5),
               what="traffic on the new address")
    for _ in range(10):
        assert who(gw) == (200, "new")
    # ...and the request on the old one finishes there.
    t.join(scaled(20))
    assert result["r"] == (200, "old")
    assert [x["address"] for x in upstream_targets(gw)] == ["127.0.0.3:%d" % port]


def test_failing_server_keeps_last_good_set(gateway, dns, demos):
    port = free_port()
    demos("a", "127.0.0.2", port)
    demos("b", "127.0.0.3", port)
    dns.set("users.test", "127.0.0.2", "127.0.0.3")
    gw = gateway(dns_config(free_port(), dns, ["users.test:%d" % port], resolve_every="1s"))
    assert {who(gw)[1] for _ in range(6)} == {"a", "b"}
    # c-ares reports a SERVFAIL from the only server as "Could not contact
    # DNS servers", silence as "Timeout while contacting DNS servers".
    for mode, needle in (("servfail", "DNS servers"), ("drop", "Timeout")):
        start = len(gw.err)
        asked = dns.count("users.test")
        dns.mode = mode
        line = gw.err.wait_for(lambda l: "could not be resolved" in l, scaled(10), start)
        assert line and needle in line and "keeping the last good answer, 127.0.0.2, 127.0.0.3" \
            in line, line
        assert "WARN" in line.upper()
        # Asked again since, still failing: traffic keeps flowing to both.
        wait_until(lambda: dns.count("users.test") >= asked + 2, scaled(10), what="re-queries")
        assert {who(gw)[1] for _ in range(6)} == {"a", "b"}
        assert len(upstream_targets(gw)) == 2
        start = len(gw.err)
        dns.mode = "answer"
        assert gw.err.wait_for(lambda l: "users.test:%d resolves again" % port in l, scaled(10),
                               start)
    # NXDOMAIN keeps the last good set too.
    start = len(gw.err)
    with dns.lock:
        del dns.records["users.test"]
    assert gw.err.wait_for(lambda l: "could not be resolved" in l, scaled(10), start)
    assert {who(gw)[1] for _ in range(6)} == {"a", "b"}


def test_several_records_are_several_balanced_targets(gateway, dns, demos):
    port = free_port()
    for name, ip in (("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")):
        demos(name, ip, port)
    dns.set("users.test", "127.0.0.4", "127.0.0.2", "127.0.0.3")
    gw = gateway(dns_config(free_port(), dns, [{"address": "users.test:%d" % port, "weight": 2}],
                            workers=1))
    counts = {}
    s = requests.Session()
    for _ in range(60):
        r = s.get(gw.u("/"), timeout=scaled(10))
        assert r.status_code == 200
        k = r.headers["X-Backend"].split(":")[0]
        counts[k] = counts.get(k, 0) + 1
    assert counts == {"a": 20, "b": 20, "c": 20}
    t = upstream_targets(gw)
    assert sorted(x["address"] for x in t) == ["127.0.0.%d:%d" % (i, port) for i in (2, 3, 4)]
    assert {x["weight"] for x in t} == {2}


def test_unresolved_name_answers_503_until_it_resolves(gateway, dns, demos):
    port = free_port()
    demos("a", "127.0.0.2", port)
    dns.mode = "drop"
    t0 = time.monotonic()
    gw = gateway(dns_config(free_port(), dns, ["users.test:%d" % port], resolve_every="1s"))
    # The start-up wait is bounded (3 s in the gateway).
    assert time.monotonic() - t0 < scaled(10)
    assert gw.err.wait_for(lambda l: "could not be resolved" in l and "no address yet" in l,
                           scaled(5))
    r = requests.get(gw.u("/"), timeout=scaled(10))
    assert_error_response(r, 503)
    dns.set("users.test", "127.0.0.2")
    dns.mode = "answer"
    wait_until(lambda: who(gw) == (200, "a"), scaled(8), what="first answer applied")


def test_reload_waits_again_only_for_names_that_have_not_failed(gateway, dns, demos):
    # The first-answer wait holds the control thread: a name that already
    # failed is asked again on a reload but not waited for (every reload
    # would stall for the full wait otherwise); with new `resolver`
    # servers it is worth the wait again.
    port = free_port()
    demos("a", "127.0.0.2", port)
    dns.mode = "drop"
    cfg = dns_config(free_port(), dns, ["users.test:%d" % port], resolve_every="30s")
    gw = gateway(cfg)
    assert gw.err.wait_for(lambda l: "could not be resolved" in l and "no address yet" in l,
                           scaled(10))
    waits = lambda start: [l for l in gw.err.lines[start:] if "dns: resolving" in l]
    start = len(gw.err)
    cfg["upstreams"]["users"]["resolve_every"] = "20s"
    gw.reload(cfg)
    assert waits(start) == []
    assert_error_response(requests.get(gw.u("/"), timeout=scaled(10)), 503)
    # New servers that answer: the reload waits and is published with it.
    other = DnsServer()
    try:
        other.set("users.test", "127.0.0.2")
        start = len(gw.err)
        cfg["resolver"] = [other.address]
        gw.reload(cfg)
        assert len(waits(start)) == 1
        assert who(gw) == (200, "a")
    finally:
        other.stop()


def test_reload_keeps_answers_and_adds_names(gateway, dns, demos):
    port = free_port()
    demos("a", "127.0.0.2", port)
    demos("b", "127.0.0.3", port)
    dns.set("users.test", "127.0.0.2")
    dns.set("more.test", "127.0.0.3")
    lport = free_port()
    cfg = dns_config(lport, dns, ["users.test:%d" % port], resolve_every="30s")
    gw = gateway(cfg)
    assert who(gw) == (200, "a")
    asked = dns.count("users.test")
    cfg["upstreams"]["users"]["targets"] = ["users.test:%d" % port, "more.test:%d" % port]
    gw.reload(cfg)
    # The new name was resolved before the reload was published; the known
    # one was not asked again.
    assert {who(gw)[1] for _ in range(6)} == {"a", "b"}
    assert dns.count("users.test") == asked


def hosts_file_name():
    """A host name /etc/hosts maps to an IPv4 loopback address (not
    `localhost`, which is taken as an address), or None."""
    try:
        lines = open("/etc/hosts").read().splitlines()
    except OSError:
        return None
    for line in lines:
        f = line.split("#")[0].split()
        if len(f) < 2 or not f[0].startswith("127."):
            continue
        for name in f[1:]:
            if name.lower() != "localhost" and all(c.isalnum() or c in "-." for c in name) \
                    and not name.replace(".", "").isdigit():
                return name, f[0]
    return None


def test_host_name_from_hosts_file_serves_at_once(gateway, dns, demos):
    # c-ares answers a name in /etc/hosts inside the query call, before the
    # gateway waits for anything: the generation must still be built with
    # that answer, at start-up and on a reload adding the name (not left
    # without targets, answering 503, until some later rebuild).
    found = hosts_file_name()
    if not found:
        pytest.skip("no name for a loopback address in /etc/hosts")
    name, ip = found
    port = free_port()
    demos("h", ip, port)
    gw = gateway(dns_config(free_port(), dns, ["%s:%d" % (name, port)], resolve_every="30s"))
    assert who(gw) == (200, "h")
    assert [x["address"] for x in upstream_targets(gw)] == ["%s:%d" % (ip, port)]
    # The test's DNS server was not needed for it.
    assert dns.count(name.lower()) == 0

    # A reload drops the name, the next one adds it back: the resolver
    # forgot it (and its answer) in between, so it is answered anew, at
    # once again, and the reload is published with its address.
    port2 = free_port()
    demos("b", "127.0.0.2", port2)
    dns.set("users.test", "127.0.0.2")
    cfg = dns_config(gw.port, dns, ["users.test:%d" % port2], resolve_every="30s")
    cfg["admin"] = {"address": "127.0.0.1:%d" % gw.admin_port}
    gw.reload(cfg)
    assert who(gw) == (200, "b")
    start = len(gw.err)
    cfg["upstreams"]["users"]["targets"] = ["users.test:%d" % port2, "%s:%d" % (name, port)]
    gw.reload(cfg)
    assert {who(gw)[1] for _ in range(6)} == {"h", "b"}
    assert gw.err.count(lambda l: "%s:%d resolves to %s" % (name, port, ip) in l) == 2
    assert dns.count(name.lower()) == 0


def test_ext_auth_url_by_host_name(gateway, dns, demos):
    port = free_port()
    demos("a", "127.0.0.2", port)
    auth = AuthService()
    try:
        dns.set("users.test", "127.0.0.2")
        dns.set("authz.test", "127.0.0.1")
        url = "http://authz.test:%d/ok" % auth.port
        routes = [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "users",
                   "filters": {"ext_auth": {"url": url, "copy_headers": ["X-User-ID"]}}}]
        cfg = dns_config(free_port(), dns, ["users.test:%d" % port], routes=routes)
        # URLs are re-resolved every 30 s, or as often as an upstream naming
        # the same host asks (the smallest interval wins for a shared name).
        cfg["upstreams"]["authz"] = {"targets": ["authz.test:%d" % auth.port],
                                     "resolve_every": "1s"}
        gw = gateway(cfg)
        r = requests.get(gw.u("/x"), timeout=scaled(10))
        assert r.status_code == 200, r.text
        assert r.headers["X-Backend"].startswith("a:")
        with auth.lock:
            calls = list(auth.calls)
        assert calls and calls[-1]["target"] == "/ok"
        assert dict(calls[-1]["headers"]).get("Host") == "authz.test:%d" % auth.port
        # The URL's name moves like a target's.
        dns.set("authz.test", "127.0.0.9")  # nothing listens there
        assert gw.err.wait_for(lambda l: "url target authz.test:%d now resolves to 127.0.0.9"
                               % auth.port in l, scaled(5))
        wait_until(lambda: requests.get(gw.u("/x"), timeout=scaled(10)).status_code == 503,
                   scaled(5), what="ext_auth failing on the new address")
    finally:
        auth.stop()


@pytest.mark.parametrize("patch, needles", [
    ({"resolver": ["dns.example:53"]}, ["resolver", "must be an IP address"]),
    ({"resolver": ["127.0.0.1:99999"]}, ["resolver", "port must be a number"]),
    ({"resolver": ["::1"]}, ["resolver", "brackets"]),
    ({"resolver": []}, ["`resolver` is empty"]),
    ({"resolve_every": "10ms"}, ["`resolve_every` must be at least 100ms"]),
    ({"resolve_every": "soon"}, ["invalid duration `soon`"]),
    ({"target": "bad_name-.test:80"}, ["neither an IP address nor a valid host name"]),
    ({"target": "users.test:0"}, ["port"]),
    ({"target2": "USERS.test:9000"}, ["listed twice"]),
    ({"auth_url": "http://authz..test:81/x"}, ["neither an IP address nor a valid host name"]),
    ({"auth_url": "gopher://authz.test/x"}, ["not an http:// or https:// URL"]),
])
def test_dns_config_errors(tmp_path, patch, needles):
    targets = [patch.get("target", "users.test:9000")]
    if "target2" in patch:
        targets.append(patch["target2"])
    up = {"targets": targets}
    if "resolve_every" in patch:
        up["resolve_every"] = patch["resolve_every"]
    route = {"name": "r", "match": {"path_prefix": "/"}, "upstream": "u"}
    if "auth_url" in patch:
        route["filters"] = {"ext_auth": {"url": patch["auth_url"]}}
    cfg = make_config(free_port(), {"u": up}, [route])
    if "resolver" in patch:
        cfg["resolver"] = patch["resolver"]
    rc, out = validate_errors(tmp_path, cfg)
    assert rc != 0, out
    assert "bad.yaml:" in out
    for n in needles:
        assert n in out, out


def test_validate_needs_no_dns(tmp_path):
    # A resolver nobody answers on: validate never asks it.
    cfg = make_config(free_port(), {"u": {"targets": ["users.test:9000", "127.0.0.1:9001"],
                                          "resolve_every": "5s"}},
                      [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "u",
                        "filters": {"ext_auth": {"url": "http://authz.test:81/check"}}}])
    cfg["resolver"] = ["127.0.0.1:9", "[::1]:53"]
    t0 = time.monotonic()
    rc, out = validate_errors(tmp_path, cfg, name="ok.yaml")
    assert rc == 0, out
    assert time.monotonic() - t0 < scaled(5)
