"""CORS in a real browser (heavy tier): headless Chromium, driven through
the DevTools protocol over a websocket, loads a page from one origin
(a small HTTP server on 127.0.0.1:A) whose script fetches, with
credentials, through portico on another origin (127.0.0.1:B). The fetch
is a PUT with a custom header, so the browser must send a preflight
first. From an allowed origin it succeeds (the page reads the echoed JSON,
and the cookie the page set went along); from a refused origin the
browser blocks it (the fetch rejects with a TypeError); the demo backend's
counter shows the preflights never reached it (the gateway answered them)
and that a refused simple GET still did (CORS is not access control)."""

import asyncio
import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading

import pytest

from conftest import Gateway, backend, free_port, make_config, scaled, upstream, wait_until

pytestmark = pytest.mark.heavy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = b"""<!doctype html><html><head><title>cors page</title></head>
<body><script>document.cookie = "sid=s3cret; path=/";</script>cors test page</body></html>"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def page_server():
    """Serves PAGE on a fresh 127.0.0.1 port: one origin."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Page)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield "http://127.0.0.1:%d" % srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def chromium(tmp):
    """A headless Chromium with DevTools on a port it picks; yields that
    port. Killed with its whole process group on exit."""
    if not CHROMIUM:
        pytest.fail("chromium is not installed (scripts/deps.sh installs it)")
    prof = os.path.join(str(tmp), "profile")
    os.makedirs(prof)
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            "--user-data-dir=" + prof, "about:blank"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        active = os.path.join(prof, "DevToolsActivePort")
        wait_until(lambda: os.path.exists(active) and open(active).read().strip()
                   or proc.poll() is not None, scaled(30), what="chromium's DevTools port")
        assert proc.poll() is None, "chromium exited: %s" % proc.stderr.read()[-2000:]
        yield int(open(active).read().split()[0])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=scaled(10))


class DevTools:
    """The DevTools protocol over one page target's websocket."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method, **params):
        self.next_id += 1
        my = self.next_id
        await self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), scaled(30)))
            if msg.get("id") == my:
                if "error" in msg:
                    raise AssertionError("%s: %s" % (method, msg["error"]))
                return msg["result"]

    async def evaluate(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True,
                            returnByValue=True, timeout=int(scaled(20) * 1000))
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    async def open(self, url):
        await self.call("Page.navigate", url=url)
        for _ in range(int(scaled(20) / 0.05)):
            if await self.evaluate("document.readyState + '|' + location.href") == \
                    "complete|" + url + "/":
                return
            await asyncio.sleep(0.05)
        raise AssertionError("page %s did not load" % url)


async def page_target(port):
    """The websocket URL of a new page target."""
    loop = asyncio.get_running_loop()

    def new_tab():
        import urllib.request
        req = urllib.request.Request("http://127.0.0.1:%d/json/new?about:blank" % port,
                                     method="PUT")
        with urllib.request.urlopen(req, timeout=scaled(10)) as r:
            return json.loads(r.read())["webSocketDebuggerUrl"]

    return await loop.run_in_executor(None, new_tab)


# A PUT with a custom header and credentials: not a simple request, so the
# browser sends a preflight first. The result is a string either way.
FETCH_PUT = """fetch("%s", {method: "PUT", credentials: "include",
                    headers: {"X-Custom": "1", "Content-Type": "application/json"},
                    body: JSON.stringify({hello: "gateway"})})
  .then(r => r.text().then(t => "OK " + r.status + " " + t))
  .catch(e => "ERR " + e.name)"""

# A simple GET (no preflight): it reaches the upstream whatever the origin.
FETCH_GET = """fetch("%s", {credentials: "include"})
  .then(r => r.text().then(t => "OK " + r.status + " " + t))
  .catch(e => "ERR " + e.name)"""


def run_page(devtools_port, origin, script):
    import websockets

    async def go():
        url = await page_target(devtools_port)
        async with websockets.connect(url, max_size=None, open_timeout=scaled(10)) as ws:
            dt = DevTools(ws)
            await dt.open(origin)
            return await dt.evaluate(script)

    return asyncio.run(asyncio.wait_for(go(), scaled(60)))


def test_browser_fetch_across_origins(tmp_path):
    with backend("cors-browser") as b, page_server() as allowed, page_server() as refused, \
            chromium(tmp_path) as dport:
        gport = free_port()
        routes = [{"name": "api", "match": {"path_prefix": "/api", "methods": ["GET", "PUT"]},
                   "upstream": "echo",
                   "filters": {"cors": {"origins": [allowed], "credentials": True,
                                        "methods": ["GET", "PUT"],
                                        "allow_headers": ["X-Custom", "Content-Type"],
                                        "expose_headers": ["X-Backend"]}}}]
        g = Gateway(make_config(gport, {"echo": upstream(b.port)}, routes), tmp_path)
        try:
            api = "http://127.0.0.1:%d/api" % gport

            # allowed origin: preflight answered by the gateway, then the PUT
            b.reset()
            out = run_page(dport, allowed, FETCH_PUT % (api + "/one"))
            assert out.startswith("OK 200 "), out
            echo = json.loads(out[len("OK 200 "):])
            assert echo["method"] == "PUT"
            sent = {k.lower(): v for k, v in echo["headers"]}
            assert sent["origin"] == allowed and sent["x-custom"] == "1"
            assert "sid=s3cret" in sent.get("cookie", ""), "credentials were not included"
            assert b.stats()["requests"] == 1, "the upstream saw the preflight"

            # refused origin: the gateway refuses the preflight, the browser
            # never sends the PUT
            b.reset()
            out = run_page(dport, refused, FETCH_PUT % (api + "/two"))
            assert out == "ERR TypeError", out
            assert b.stats()["requests"] == 0

            # refused origin, simple GET: proxied, but the page can't read it
            out = run_page(dport, refused, FETCH_GET % (api + "/three"))
            assert out == "ERR TypeError", out
            assert b.stats()["requests"] == 1

            # and the same GET from the allowed origin is readable
            out = run_page(dport, allowed, FETCH_GET % (api + "/four"))
            assert out.startswith("OK 200 ") and '"method":"GET"' in out.replace(" ", ""), out
        finally:
            g.stop()
