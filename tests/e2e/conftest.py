"""Shared helpers for the end-to-end suite.

Everything here drives the REAL binaries: $PORTICO_BUILD/portico and
$PORTICO_BUILD/demo_backend (PORTICO_BUILD defaults to "build"; a name
containing "san" means ASan/UBSan builds, so every wait is stretched).

Rules the helpers follow so tests cannot interfere with each other:
- every process gets ports from free_port(), never a fixed port, and the
  same port is never handed out twice in one run;
- every process started here is killed in teardown (context managers and
  fixtures), even when the test fails;
- waits poll (port open, log line seen, counter reached) instead of sleeping.
"""

import contextlib
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socketserver
import socket
import subprocess
import threading
import time
import zlib

import pytest
import requests


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "heavy: long distributions, floods, browsers, testssl: run once, "
        "in the plain epoll pass (`make test` runs the other passes with -m \"not heavy\")")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The tests' own Python servers (auth services, IdPs, JWKS endpoints): the
# gateway opens connections to them from every worker at once, and the
# standard library's listen backlog of 5 overflows; a dropped SYN costs a
# 1 s retransmit, longer than the filters' call timeouts.
socketserver.TCPServer.request_queue_size = 128

BUILD = os.environ.get("PORTICO_BUILD", "build")
BUILD_DIR = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
PORTICO = os.path.join(BUILD_DIR, "portico")
DEMO = os.path.join(BUILD_DIR, "demo_backend")
SAN = "san" in os.path.basename(BUILD_DIR.rstrip("/"))
# Multiplier for startup waits and "generous" timeouts under sanitizers.
SLOW = 4.0 if SAN else 1.0

MiB = 1024 * 1024


def scaled(seconds):
    return seconds * SLOW


def require_binaries():
    missing = [p for p in (PORTICO, DEMO) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail("binaries not built (run `make`): " + ", ".join(missing), pytrace=False)


# ---------------------------------------------------------------- ports

_ports_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A loopback TCP port nothing listens on now, never handed out before
    in this run."""
    with _ports_lock:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def unaccepting_port():
    """A loopback port whose accept queue is full (backlog 0, one queued
    connection that is never accepted): a connect to it hangs until its
    timeout. Yields the port number."""
    hang = socket.socket()
    fill = socket.socket()
    try:
        hang.bind(("127.0.0.1", 0))
        hang.listen(0)
        fill.connect(hang.getsockname())  # the one queued connection
        yield hang.getsockname()[1]
    finally:
        fill.close()
        hang.close()


def port_open(port, host="127.0.0.1", timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value; returns that value.
    Raises AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------- process output capture

class _LineCapture:
    """Reads a pipe on a thread; keeps every line; lets callers wait for a
    line matching a predicate."""

    def __init__(self, pipe):
        self.lines = []
        self.cond = threading.Condition()
        self.closed = False
        self.t = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.t.start()

    def _run(self, pipe):
        for raw_line in iter(pipe.readline, b""):
            line = raw_line.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def text(self):
        with self.cond:
            return "\n".join(self.lines)

    def count(self, pred):
        with self.cond:
            return sum(1 for l in self.lines if pred(l))

    def wait_for(self, pred, timeout, start=0):
        """Waits for a line (index >= start) satisfying pred; returns it or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(left)

    def __len__(self):
        with self.cond:
            return len(self.lines)


def _kill(proc, grace=2.0):
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=grace + 5)
    except subprocess.TimeoutExpired:
        pass


# ---------------------------------------------------------------- demo backends

class Backend:
    """One demo_backend process listening on one or more ports."""

    def __init__(self, name, ports, threads=None, delay=None, status=None):
        self.name = name
        self.ports = list(ports)
        self.port = self.ports[0]
        args = [DEMO]
        for p in self.ports:
            args += ["--listen", "127.0.0.1:%d" % p]
        args += ["--name", name, "--quiet"]
        if threads:
            args += ["--threads", str(threads)]
        if delay:
            args += ["--delay", str(delay)]
        if status:
            args += ["--status", str(status)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.err = _LineCapture(self.proc.stderr)
        try:
            ok = self.err.wait_for(lambda l: "listening" in l, scaled(10))
            if not ok and self.proc.poll() is not None:
                raise AssertionError("demo_backend %s exited rc=%s:\n%s"
                                     % (name, self.proc.returncode, self.err.text()))
            for p in self.ports:
                wait_until(lambda: port_open(p), scaled(10), what="backend port %d" % p)
        except BaseException:
            _kill(self.proc)
            raise

    def url(self, path="/", port=None):
        return "http://127.0.0.1:%d%s" % (port or self.port, path)

    def stats(self, port=None):
        r = requests.get(self.url("/__stats", port), timeout=scaled(5))
        r.raise_for_status()
        return r.json()

    def reset(self, port=None):
        requests.post(self.url("/__stats/reset", port), timeout=scaled(5)).raise_for_status()

    def control(self, delay=None, status=None):
        """Sets the process-wide delay (ms) and status (0 clears) of every
        request without its own X-Demo-* header."""
        q = "&".join("%s=%d" % (k, v) for k, v in (("delay", delay), ("status", status))
                     if v is not None)
        r = requests.post(self.url("/__control?" + q), timeout=scaled(5))
        r.raise_for_status()
        return r.json()

    def stop(self):
        _kill(self.proc)


@contextlib.contextmanager
def backend(name="demo", nports=1, threads=None, delay=None, status=None):
    """Starts a demo backend on `nports` fresh ports; kills it on exit."""
    require_binaries()
    b = Backend(name, [free_port() for _ in range(nports)], threads, delay, status)
    try:
        yield b
    finally:
        b.stop()


# ---------------------------------------------------------------- YAML emitter

_PLAIN = re.compile(r"^[A-Za-z0-9_./-][A-Za-z0-9_./:-]*$")
_YAML_SPECIAL = {"true", "false", "yes", "no", "null", "~", "y", "n"}


def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if s == "off":  # the keyword that switches a default filter off
        return "off"
    if _PLAIN.match(s) and s.lower() not in _YAML_SPECIAL and not s.endswith(":"):
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts/lists/scalars (enough for configs)."""
    pad = "  " * indent
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                out.append("%s%s:\n%s" % (pad, k, to_yaml(v, indent + 1)))
            elif isinstance(v, list) and v:
                out.append("%s%s:\n%s" % (pad, k, to_yaml(v, indent + 1)))
            elif isinstance(v, (dict, list)):
                out.append("%s%s: %s\n" % (pad, k, "{}" if isinstance(v, dict) else "[]"))
            else:
                out.append("%s%s: %s\n" % (pad, k, _scalar(v)))
        return "".join(out)
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 1)
                # put the first line after "- "
                first, _, rest = body.partition("\n")
                out.append("%s- %s\n%s" % (pad, first.lstrip(), rest))
            else:
                out.append("%s- %s\n" % (pad, _scalar(item)))
        return "".join(out)
    return pad + _scalar(obj) + "\n"


def upstream(*ports, weights=None, **extra):
    """An upstream block for targets on 127.0.0.1:ports."""
    targets = []
    for i, p in enumerate(ports):
        t = {"address": "127.0.0.1:%d" % p}
        if weights:
            t["weight"] = weights[i]
        targets.append(t)
    u = {"targets": targets}
    u.update(extra)
    return u


# PORTICO_E2E_IO_BACKEND=io_uring runs every test whose config is built as
# a dict on the io_uring backend (`make test` runs the suite both ways).
E2E_IO_BACKEND = os.environ.get("PORTICO_E2E_IO_BACKEND", "")


def with_backend(cfg):
    if E2E_IO_BACKEND and isinstance(cfg, dict) and "io_backend" not in cfg:
        cfg = dict(cfg)
        cfg["io_backend"] = E2E_IO_BACKEND
    return cfg


def make_config(port, upstreams, routes, admin_port=None, workers=2, limits=None,
                access_log=None, filters=None):
    """A whole config as a dict. `access_log` defaults to off so tests don't
    spam stdout; `admin` always gets its own free port so no default port
    (9901) is ever bound by a test."""
    cfg = {
        "workers": workers,
        "listeners": [{"name": "public", "address": "127.0.0.1:%d" % port}],
        "admin": {"address": "127.0.0.1:%d" % (admin_port or free_port())},
    }
    if limits:
        cfg["limits"] = limits
    cfg["access_log"] = access_log if access_log is not None else {"path": "off"}
    cfg["upstreams"] = upstreams
    if filters:
        cfg["filters"] = filters
    cfg["routes"] = routes
    return cfg


# ---------------------------------------------------------------- the gateway

_GATEWAYS = []  # every Gateway started in this run, for failure reports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failing test, say whether a gateway died under it (a crash
    otherwise shows up only as connection errors) and show its stderr."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for g in _GATEWAYS:
        rc = g.died_rc if g.died_rc is not None else (None if g.stopped else g.proc.poll())
        if rc is not None and not g.reported:
            how = ("killed by signal %d" % -rc) if rc < 0 else ("exit code %d" % rc)
            rep.sections.append(("portico pid %d died on its own (%s)" % (g.proc.pid, how),
                                 g.stderr_text()[-4000:]))
            g.reported = True


class Gateway:
    """A running `portico -c FILE`."""

    def __init__(self, cfg, workdir, env_extra=None, name="portico.yaml"):
        require_binaries()
        cfg = with_backend(cfg)
        self.stopped = False   # stop() was called
        self.died_rc = None    # exit status if it had exited before stop()
        self.reported = False
        self.workdir = str(workdir)
        self.config_path = os.path.join(self.workdir, name)
        self._cfg_text = cfg if isinstance(cfg, str) else to_yaml(cfg)
        self.port = self._listener_port(cfg)
        self.admin_port = self._admin_port(cfg)
        with open(self.config_path, "w") as f:
            f.write(self._cfg_text)
        self.stdout_path = os.path.join(self.workdir, "portico.stdout")
        env = dict(os.environ)
        if env_extra:
            env.update(env_extra)
        self._stdout_f = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([PORTICO, "-c", self.config_path], cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=self._stdout_f,
                                     stderr=subprocess.PIPE, env=env)
        self.err = _LineCapture(self.proc.stderr)
        _GATEWAYS.append(self)
        try:
            wait_until(lambda: self.proc.poll() is not None or port_open(self.port),
                       scaled(15), what="portico listening on %d" % self.port)
            if self.proc.poll() is not None:
                self.err.t.join(2)
                raise AssertionError("portico exited rc=%s at startup:\n%s"
                                     % (self.proc.returncode, self.err.text()))
        except BaseException:
            self.stop(kill=True)
            raise

    @staticmethod
    def _listener_port(cfg):
        if isinstance(cfg, dict):
            return int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
        m = re.search(r"address:\s*\"?127\.0\.0\.1:(\d+)", cfg)
        return int(m.group(1))

    @staticmethod
    def _admin_port(cfg):
        if isinstance(cfg, dict) and "admin" in cfg:
            return int(cfg["admin"]["address"].rsplit(":", 1)[1])
        return None

    def status(self):
        """The admin API's /status document."""
        r = requests.get("http://127.0.0.1:%d/status" % self.admin_port, timeout=scaled(5))
        r.raise_for_status()
        return r.json()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def u(self, path):
        return self.url + path

    @property
    def pid(self):
        return self.proc.pid

    def stderr_text(self):
        return self.err.text()

    def stdout_text(self):
        if not self._stdout_f.closed:
            self._stdout_f.flush()
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def reload(self, new_cfg, expect_ok=True, timeout=None):
        """Rewrites the config file, sends SIGHUP and waits for the
        "reloaded ... generation" (or "reload failed") log line. Returns it."""
        new_cfg = with_backend(new_cfg)
        text = new_cfg if isinstance(new_cfg, str) else to_yaml(new_cfg)
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)
        start = len(self.err)
        self.proc.send_signal(signal.SIGHUP)
        ok = lambda l: "reloaded" in l and "generation" in l
        bad = lambda l: "reload failed" in l
        line = self.err.wait_for(lambda l: ok(l) or bad(l), timeout or scaled(10), start)
        assert line is not None, "no reload log line after SIGHUP (rc=%s); stderr:\n%s" % (
            self.proc.poll(), self.stderr_text())
        if expect_ok:
            assert ok(line), "reload was rejected: %r\nstderr:\n%s" % (line, self.stderr_text())
            self._cfg_text = text
        else:
            assert bad(line), "bad config was accepted: %r" % line
        return line

    def rss_kb(self):
        return rss_kb(self.proc.pid)

    def send(self, sig):
        """Sends a signal; SIGTERM/SIGINT count as an intended stop."""
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopped = True
        self.proc.send_signal(sig)

    def sanitizer_report(self):
        """The sanitizer report portico printed, if any."""
        text = self.stderr_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            k = text.find(marker)
            if k >= 0:
                return text[max(0, text.rfind("\n", 0, max(0, k - 200))):][:6000]
        return None

    def stop(self, sig=signal.SIGTERM, timeout=None, kill=False, check_sanitizer=True):
        """Sends `sig` and waits; returns the exit code, or None if the
        process had to be killed (or kill=True). Raises if portico printed
        a sanitizer report (ASan/UBSan/LSan builds) during its life."""
        rc = None
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            if not self.stopped:
                self.died_rc = rc
        elif not kill:
            self.stopped = True
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout=timeout or scaled(10))
            except subprocess.TimeoutExpired:
                rc = None
        self.stopped = True
        if self.proc.poll() is None:
            _kill(self.proc)
        self.err.t.join(2)
        if not self._stdout_f.closed:
            self._stdout_f.close()
        if check_sanitizer and not kill and not self.reported:
            rep = self.sanitizer_report()
            if rep:
                self.reported = True
                raise AssertionError("portico printed a sanitizer report:\n" + rep)
        return rc


@pytest.fixture
def gateway(tmp_path):
    """Factory: gateway(cfg_dict_or_text, env_extra=None) -> Gateway; every
    gateway started through it is stopped in teardown."""
    started = []

    def start(cfg, env_extra=None):
        g = Gateway(cfg, tmp_path, env_extra)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


@pytest.fixture
def backends():
    """Factory: backends(name, nports=1) -> Backend; all killed in teardown."""
    stack = contextlib.ExitStack()
    with stack:
        yield lambda name="demo", nports=1, threads=None: stack.enter_context(
            backend(name, nports, threads))


# ---------------------------------------------------------------- raw sockets

def raw_ex(port, data, timeout=5.0, host="127.0.0.1", pause_after=None, until_complete=False):
    """Sends `data` (bytes, or a list of bytes sent separately) on a fresh
    connection and reads until the peer closes or `timeout` seconds pass
    without the peer closing (or, with until_complete, until one complete
    final response has arrived; a number N: N of them). Returns
    (received_bytes, closed_by_peer)."""
    s = socket.create_connection((host, port), timeout=scaled(5))
    try:
        parts = data if isinstance(data, list) else [data]
        for i, part in enumerate(parts):
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            if pause_after and i < len(parts) - 1:
                time.sleep(pause_after)
        buf = b""
        closed = False
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            if until_complete:
                try:
                    rs, _ = parse_responses(buf, eof=False)
                except ValueError:
                    rs = []
                if sum(r.status >= 200 and r.complete for r in rs) >= int(until_complete):
                    break
        return buf, closed
    finally:
        s.close()


def raw(port, data, timeout=5.0):
    """All bytes received until close or timeout."""
    return raw_ex(port, data, timeout)[0]


class Resp:
    def __init__(self, status, reason, headers, body, complete, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), names as received
        self.body = body
        self.complete = complete  # framing satisfied (CL met / last chunk seen / close-delimited)
        self.version = version

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Resp %s %r complete=%s body=%r>" % (self.status, self.headers, self.complete,
                                                    self.body[:200])


def parse_responses(buf, head_requests=(), eof=True):
    """Parses consecutive HTTP/1.x responses from bytes. Interim 1xx
    responses are returned too. `head_requests`: indexes of responses that
    answer HEAD (no body). A last response whose framing is not complete
    is returned with complete=False. Returns (responses, leftover_bytes)."""
    out = []
    i = 0
    while i < len(buf):
        end = buf.find(b"\r\n\r\n", i)
        if end < 0:
            break
        head = buf[i:end].decode("latin-1")
        lines = head.split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise ValueError("bad status line %r" % lines[0])
        version, status, reason = m.group(1), int(m.group(2)), m.group(3) or ""
        headers = []
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers.append((k, v.strip()))
        r = Resp(status, reason, headers, b"", False, version)
        j = end + 4
        if 100 <= status < 200 or status in (204, 304) or len(out) in head_requests:
            r.complete = True
            out.append(r)
            i = j
            continue
        te = (r.header("transfer-encoding") or "").lower()
        cl = r.header("content-length")
        if "chunked" in te:
            body = b""
            ok = False
            k = j
            while True:
                le = buf.find(b"\r\n", k)
                if le < 0:
                    break
                size_s = buf[k:le].split(b";")[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    break
                if size == 0:
                    # trailers until empty line
                    te_end = buf.find(b"\r\n\r\n", le)
                    if le + 2 <= len(buf) and buf[le + 2:le + 4] == b"\r\n":
                        k = le + 4
                        ok = True
                    elif te_end >= 0:
                        k = te_end + 4
                        ok = True
                    break
                if le + 2 + size + 2 > len(buf):
                    body += buf[le + 2:le + 2 + size]
                    k = len(buf)
                    break
                body += buf[le + 2:le + 2 + size]
                k = le + 2 + size + 2
            r.body, r.complete = body, ok
            out.append(r)
            if not ok:
                return out, b""
            i = k
        elif cl is not None:
            n = int(cl)
            r.body = buf[j:j + n]
            r.complete = len(r.body) == n
            out.append(r)
            if not r.complete:
                return out, b""
            i = j + n
        else:
            # close-delimited
            r.body = buf[j:]
            r.complete = eof
            out.append(r)
            return out, b""
    return out, buf[i:]


def parse_response(buf):
    rs, _ = parse_responses(buf)
    assert rs, "no HTTP response in %r" % buf[:300]
    return rs[0]


def read_responses(sock, n, timeout=None, head_requests=(), interim=False):
    """Reads from `sock` until `n` complete responses (1xx excluded, unless
    `interim`) are parsed, the peer closes, or the timeout (default
    scaled(5)) passes; returns those responses."""
    buf = b""
    deadline = time.monotonic() + (timeout or scaled(5))
    while True:
        rs, _ = parse_responses(buf, head_requests, eof=False)
        final = [r for r in rs if r.complete and (interim or r.status >= 200)]
        if len(final) >= n:
            return final
        left = deadline - time.monotonic()
        if left <= 0:
            return final
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return final
        if not chunk:
            return final
        buf += chunk


def recv_all(s):
    """Reads to EOF; returns (bytes, how) with how in eof/reset/timeout."""
    buf = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                return buf, "eof"
            buf += c
    except ConnectionResetError:
        return buf, "reset"
    except socket.timeout:
        return buf, "timeout"


def raw_until_close(port, data, timeout=None):
    """Sends `data` on a fresh connection and reads until the gateway ends
    it: (bytes, how) as recv_all() says, so a reset can be told from a FIN."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout or scaled(5))
    try:
        s.sendall(data)
        return recv_all(s)
    finally:
        s.close()


def raw_responses(port, data):
    """One exchange on a fresh connection: the responses (1xx included)
    read until the first final one is complete."""
    buf, _ = raw_ex(port, data, timeout=scaled(5), until_complete=True)
    return parse_responses(buf, eof=False)[0]


# ---------------------------------------------------------------- TCP state of loopback sockets

def tcp_sockets(local_port=None, remote_port=None, established=True):
    """IPv4 sockets from /proc/net/tcp (only ESTABLISHED ones unless told
    otherwise), as dicts with local, remote (ports), state (hex), tx and rx
    (bytes queued), filtered by port."""
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if established and cols[3] != "01":
                continue
            tx, rx = (int(x, 16) for x in cols[4].split(":"))
            d = {"local": int(cols[1].rsplit(":", 1)[1], 16),
                 "remote": int(cols[2].rsplit(":", 1)[1], 16), "state": cols[3],
                 "tx": tx, "rx": rx}
            if local_port is not None and d["local"] != local_port:
                continue
            if remote_port is not None and d["remote"] != remote_port:
                continue
            out.append(d)
    return out


def peer_has_read(sock):
    """Everything written on `sock` (a connection to or from a local
    process) has been read by the process at the other end: nothing left
    unacknowledged on our side, nothing unread on theirs; or the other end
    has closed, so it will read nothing more."""
    me, peer = sock.getsockname()[1], sock.getpeername()[1]
    ours = tcp_sockets(me, peer, established=False)
    theirs = tcp_sockets(peer, me, established=False)
    if not theirs or theirs[0]["state"] != "01" or not ours or ours[0]["state"] != "01":
        return True
    return ours[0]["tx"] == 0 and theirs[0]["rx"] == 0


def wait_peer_read(sock, what="the peer to read what was sent"):
    wait_until(lambda: peer_has_read(sock), scaled(5), what=what)


# ---------------------------------------------------------------- scripted upstreams

class RawUpstream:
    """A loopback TCP server whose every connection runs `handler(sock)` on
    its own thread: for upstream behaviour the demo backend cannot produce."""

    def __init__(self, handler):
        self.handler = handler
        self.port = free_port()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(1024)
        self.accepts = 0
        self.stopped = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stopped:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            self.accepts += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            self.handler(s)
        except OSError:
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.stopped = True
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()


@pytest.fixture
def raw_upstream():
    """Factory: raw_upstream(handler) -> RawUpstream; all closed in teardown."""
    started = []

    def start(handler):
        up = RawUpstream(handler)
        started.append(up)
        return up

    yield start
    for up in started:
        up.close()


def read_head(s, buf=b""):
    """Reads until the end of a request head; returns (head, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("eof before head")
        buf += chunk
    k = buf.index(b"\r\n\r\n") + 4
    return buf[:k], buf[k:]


def requests_on(s, bodies=True):
    """Each request that arrives on the upstream connection `s` until it
    ends, as (head, Content-Length body); with bodies=False the body is not
    read (b"") and the next head is looked for right behind this one."""
    buf = b""
    while True:
        try:
            head, buf = read_head(s, buf)
        except OSError:
            return
        body = b""
        if bodies:
            got = read_body(s, head, buf)
            if got is None:
                return
            body, buf = got
        yield head, body


def request_heads(s):
    """Each request head on `s` (for requests without a body)."""
    for head, _ in requests_on(s, bodies=False):
        yield head


def answer_every_request(response):
    """A RawUpstream handler answering each request head with the bytes
    `response`."""
    def handler(s):
        for _ in request_heads(s):
            s.sendall(response)
    return handler


def read_body(s, head, buf):
    """Reads the Content-Length body that follows `head` (buf holds what
    came with it); returns (body, rest), or None at EOF."""
    n = content_length(head)
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return buf[:n], buf[n:]


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v.strip())
    return 0


class Recorder:
    """An upstream that frames requests by their own headers, records each
    as (connection number, head, body) and answers 200 "ok"."""

    def __init__(self):
        self.seen = []
        self._conns = 0
        self._lock = threading.Lock()
        self.up = RawUpstream(self.handle)

    @property
    def port(self):
        return self.up.port

    def handle(self, s):
        with self._lock:
            self._conns += 1
            conn = self._conns
        for head, body in requests_on(s):
            self.seen.append((conn, head, body))
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def close(self):
        self.up.close()


def one_route(up_port, routes=None, workers=1, limits=None, access_log=None, **upstream_extra):
    """A config with one upstream "u" (127.0.0.1:up_port, `upstream_extra`
    its options) that every path goes to unless `routes` says otherwise."""
    return make_config(free_port(), {"u": upstream(up_port, **upstream_extra)},
                       routes or [{"name": "all", "match": {"path_prefix": "/"},
                                   "upstream": "u"}],
                       workers=workers, limits=limits, access_log=access_log)


def access_log_lines(path, n, timeout=None):
    """Waits (timeout default scaled(10)) for at least `n` lines in the JSON
    access log at `path`; returns them all, parsed."""
    def got():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            ls = [json.loads(x) for x in f.read().splitlines() if x.strip()]
        return ls if len(ls) >= n else None
    return wait_until(got, timeout or scaled(10), what="%d access log lines" % n)


@contextlib.contextmanager
def logged_gateway(tmp_path, up_port, **kw):
    """A one-route gateway writing its access log to a file: (gw, log path)."""
    log = os.path.join(str(tmp_path), "access.log")
    if os.path.exists(log):
        os.unlink(log)
    gw = Gateway(one_route(up_port, access_log={"path": log}, **kw), tmp_path)
    try:
        yield gw, log
    finally:
        gw.stop()


def _all_threads_stopped(pid):
    for st in glob.glob("/proc/%d/task/*/stat" % pid):
        with open(st) as f:
            state = f.read().rpartition(")")[2].split()[0]
        if state not in ("T", "t"):
            return False
    return True


@contextlib.contextmanager
def frozen(gw):
    """Holds every gateway thread stopped (SIGSTOP) for the with-block:
    whatever the test sends meanwhile arrives as one batch of events."""
    gw.send(signal.SIGSTOP)
    try:
        wait_until(lambda: _all_threads_stopped(gw.pid), scaled(5), what="gateway stopped")
        yield
    finally:
        gw.send(signal.SIGCONT)


# ---------------------------------------------------------------- assertions shared by suites

def assert_gateway_error(status, headers_get, body, expected_status, sent_request_id=None):
    """A gateway-made error: JSON {"error","status","request_id"} whose
    request_id equals the X-Request-ID response header."""
    assert status == expected_status, "status %s != %s; body=%r" % (status, expected_status, body[:300])
    ctype = headers_get("content-type") or ""
    assert ctype.split(";")[0].strip().lower() == "application/json", "content-type %r" % ctype
    rid = headers_get("x-request-id")
    assert rid, "no X-Request-ID on a gateway error"
    doc = json.loads(body)
    assert isinstance(doc.get("error"), str) and doc["error"], doc
    assert doc.get("status") == expected_status, doc
    assert doc.get("request_id") == rid, (doc, rid)
    if sent_request_id is not None:
        assert rid == sent_request_id, (rid, sent_request_id)
    return doc


def assert_error_response(r, expected_status, sent_request_id=None):
    """Same for a requests.Response."""
    return assert_gateway_error(r.status_code, r.headers.get, r.content, expected_status,
                                sent_request_id)


def assert_error_resp(r, expected_status):
    """Same for a parsed raw Resp."""
    return assert_gateway_error(r.status, r.header, r.body, expected_status)


def echo_headers(doc, name):
    """All values the backend saw for header `name` (case-insensitive)."""
    name = name.lower()
    return [v for k, v in doc["headers"] if k.lower() == name]


def backend_of(resp):
    """X-Backend of a requests.Response or Resp: (name, port)."""
    v = resp.headers.get("X-Backend") if hasattr(resp, "status_code") else resp.header("X-Backend")
    assert v, "no X-Backend header (response did not come from a demo backend)"
    name, _, port = v.rpartition(":")
    return name, int(port)


# ---------------------------------------------------------------- misc

def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


class RssSampler:
    """Samples a process's VmRSS on a thread; .peak_kb after stop()."""

    def __init__(self, pid, interval=0.02):
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self.t.join(5)
        return self.peak_kb


def low_quarantine_env():
    """Under ASan, freed blocks sit in a quarantine (256 MiB by default) and
    show up as RSS growth that isn't the gateway's: shrink it for tests that
    measure memory."""
    if not SAN:
        return None
    return {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") +
                             ":quarantine_size_mb=4").lstrip(":")}


def validate_errors(tmp_path, cfg, name="bad.yaml"):
    """Runs `portico validate` on `cfg` (dict or text) written to tmp_path;
    returns (exit code, everything it printed)."""
    require_binaries()
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(cfg if isinstance(cfg, str) else to_yaml(cfg))
    p = subprocess.run([PORTICO, "validate", path], capture_output=True, text=True,
                       timeout=scaled(20))
    return p.returncode, p.stdout + p.stderr


def crc32_hex(data):
    return "%08x" % (zlib.crc32(data) & 0xFFFFFFFF)


def http_conn(port, timeout=None):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout or scaled(10))


# ---------------------------------------------------------------- transforms
# One gateway with routes exercising request_transform, response_transform,
# a top-level default and `off`; shared by the two transform test files.

def transform_config(port, bport):
    return make_config(
        port, {"echo": upstream(bport)},
        filters={"response_transform": {"add_headers": {"X-Default": "yes"}}},
        routes=[
            {"name": "t-req", "match": {"path_template": "/t/{id}"}, "upstream": "echo",
             "filters": {"request_transform": {
                 "add_headers": {"X-Added": "v1", "X-Rid": "${request_id}",
                                 "X-Remote": "${remote_addr}", "X-Param": "item-${path.id}",
                                 "X-Meth": "${method}", "X-Path": "${path}"},
                 "set_headers": {"X-Set": "new"},
                 "remove_headers": ["X-Remove-Me"],
                 "rename_headers": {"X-Old": "X-New"}}}},
            {"name": "t-resp", "match": {"path_prefix": "/resp"}, "upstream": "echo",
             "filters": {"response_transform": {
                 "add_headers": {"X-Resp-Added": "r-${request_id}"},
                 "set_headers": {"X-Set-Resp": "s"},
                 "remove_headers": ["X-Backend"],
                 "rename_headers": {"X-Demo-Renamed": "X-Renamed"}}}},
            {"name": "t-off", "match": {"path_prefix": "/off"}, "upstream": "echo",
             "filters": {"response_transform": "off"}},
            {"name": "t-inherit", "match": {"path_prefix": "/inherit"}, "upstream": "echo"},
        ])



@pytest.fixture(scope="module")
def tenv(tmp_path_factory):
    with backend("tf") as b:
        gw = Gateway(transform_config(free_port(), b.port), tmp_path_factory.mktemp("tf"))
        try:
            yield gw
        finally:
            gw.stop()




# ---------------------------------------------------------------- redis

class RedisServer:
    """A real `redis-server` on a loopback port, no persistence. stop() and
    start() keep the port, so a gateway configured for it sees the store
    go away and come back (empty: no cached scripts, no keys)."""

    def __init__(self, workdir, password=None):
        if not shutil.which("redis-server"):
            raise AssertionError("redis-server is missing: it is a declared dependency "
                                 "(scripts/deps.sh installs the Debian package redis-server)")
        self.port = free_port()
        self.password = password
        self.workdir = str(workdir)
        self.proc = None
        self.start()

    @property
    def url(self):
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

    def start(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--loglevel", "warning",
                "--dir", self.workdir]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is not None or self._pings(), scaled(10),
                   what="redis-server on %d" % self.port)
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited rc=%s" % self.proc.returncode)

    def _pings(self):
        try:
            return self.cmd("PING") == "PONG"
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            _kill(self.proc)
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def cmd(self, *args):
        """One command (AUTH first when there is a password): the decoded
        reply (str, int, list, None); an error reply raises RuntimeError."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=scaled(5)) as s:
            f = s.makefile("rb")
            if self.password:
                s.sendall(_resp_encode(["AUTH", self.password]))
                _resp_read(f)
            s.sendall(_resp_encode(args))
            return _resp_read(f)


def _resp_encode(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


def _resp_read(f):
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise OSError("bad RESP line %r" % line)


@pytest.fixture
def redis_server(tmp_path):
    """Factory: redis_server(password=None) -> RedisServer; all stopped in
    teardown."""
    started = []

    def start(password=None):
        d = tmp_path / ("redis%d" % len(started))
        d.mkdir()
        r = RedisServer(d, password)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
