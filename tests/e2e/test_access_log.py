"""Access log: JSON lines with the documented keys and correct values;
`path: off` writes nothing; `path: stdout` writes to stdout; SIGHUP reopens
the file (rotation); a file that cannot be opened fails the start or the
reload, never logging silently into nothing."""

import json
import os
import subprocess

import requests

from conftest import (PORTICO, Gateway, backend, free_port, make_config, scaled, to_yaml,
                      upstream, wait_until, with_backend)

KEYS = {"time", "request_id", "remote_addr", "peer_addr", "route", "upstream", "upstream_target", "method", "path", "status",
        "bytes_in", "bytes_out", "duration_ms", "upstream_ms"}


def cfg(b, access_log, port=None):
    return make_config(port or free_port(), {"lu": upstream(b.port)},
                       [{"name": "logr", "match": {"path_prefix": "/log"}, "upstream": "lu"}],
                       access_log=access_log)


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l for l in f.read().splitlines() if l.strip()]


def test_file_log_lines(tmp_path):
    log = os.path.join(str(tmp_path), "access.log")
    with backend("al") as b:
        gw = Gateway(cfg(b, {"path": log, "format": "json"}), tmp_path)
        try:
            r1 = requests.get(gw.u("/log/abc?x=1"), headers={"X-Request-ID": "log-test-1"},
                              timeout=scaled(5))
            assert r1.status_code == 200
            r2 = requests.post(gw.u("/log/post"), data=b"0123456789",
                               headers={"X-Request-ID": "log-test-2"}, timeout=scaled(5))
            assert r2.status_code == 200
            r3 = requests.get(gw.u("/nope"), headers={"X-Request-ID": "log-test-3"},
                              timeout=scaled(5))
            assert r3.status_code == 404
            r4 = requests.get(gw.u("/log/s"), headers={"X-Request-ID": "log-test-4",
                                                       "X-Demo-Status": "503"},
                              timeout=scaled(5))
            assert r4.status_code == 503
            lines = wait_until(lambda: (lambda ls: ls if len(ls) >= 4 else None)(read_lines(log)),
                               scaled(10), what="4 access log lines")
        finally:
            gw.stop()
    docs = [json.loads(l) for l in lines]  # every line is one JSON object
    by_id = {d.get("request_id"): d for d in docs}
    for d in docs:
        missing = KEYS - set(d)
        assert not missing, (missing, d)
        assert isinstance(d["time"], str) and d["time"]
        assert isinstance(d["duration_ms"], (int, float)) and d["duration_ms"] >= 0

    a = by_id["log-test-1"]
    assert a["route"] == "logr"
    assert a["upstream"] == "lu"
    assert a["upstream_target"] == "127.0.0.1:%d" % b.port
    assert a["method"] == "GET"
    assert a["path"] in ("/log/abc", "/log/abc?x=1")
    assert a["status"] == 200
    assert a["bytes_out"] >= len(r1.content)
    assert isinstance(a["upstream_ms"], (int, float)) and 0 <= a["upstream_ms"] <= a["duration_ms"] + 1

    p = by_id["log-test-2"]
    assert p["method"] == "POST" and p["status"] == 200
    assert p["bytes_in"] >= 10

    n = by_id["log-test-3"]
    assert n["status"] == 404
    assert n["route"] in (None, "", "-")
    assert n["upstream"] in (None, "", "-")

    s = by_id["log-test-4"]
    assert s["status"] == 503 and s["route"] == "logr"


def test_log_request_ids_match_responses(tmp_path):
    log = os.path.join(str(tmp_path), "access.log")
    with backend("al") as b:
        gw = Gateway(cfg(b, {"path": log}), tmp_path)
        try:
            ids = []
            for i in range(20):
                r = requests.get(gw.u("/log/%d" % i), timeout=scaled(5))
                ids.append(r.headers["X-Request-ID"])
            lines = wait_until(lambda: (lambda ls: ls if len(ls) >= 20 else None)(read_lines(log)),
                               scaled(10), what="20 access log lines")
        finally:
            gw.stop()
    docs = [json.loads(l) for l in lines]
    assert sorted(d["request_id"] for d in docs) == sorted(ids)
    assert sorted(d["path"].split("?")[0] for d in docs) == sorted("/log/%d" % i for i in range(20))


def test_log_off_writes_nothing(tmp_path):
    with backend("al") as b:
        gw = Gateway(cfg(b, {"path": "off"}), tmp_path)
        try:
            before = set(os.listdir(str(tmp_path)))
            for i in range(10):
                assert requests.get(gw.u("/log/%d" % i), timeout=scaled(5)).status_code == 200
            assert requests.get(gw.u("/nope"), timeout=scaled(5)).status_code == 404
        finally:
            gw.stop()
        after = set(os.listdir(str(tmp_path)))
    assert after == before, after - before
    out = gw.stdout_text()
    assert "request_id" not in out, out[:500]


def test_log_stdout(tmp_path):
    with backend("al") as b:
        gw = Gateway(cfg(b, {"path": "stdout", "format": "json"}), tmp_path)
        try:
            r = requests.get(gw.u("/log/out"), headers={"X-Request-ID": "to-stdout"},
                             timeout=scaled(5))
            assert r.status_code == 200
        finally:
            rc = gw.stop()  # stdout may be block-buffered while running: flushed at exit
    assert rc == 0
    lines = [l for l in gw.stdout_text().splitlines() if '"to-stdout"' in l]
    assert len(lines) == 1, gw.stdout_text()[:1000]
    d = json.loads(lines[0])
    assert d["request_id"] == "to-stdout"
    assert d["status"] == 200


def test_durations_measure_a_slow_upstream(tmp_path):
    # The timings come from the loop's per-wakeup clock, not a clock read
    # per request: a 300 ms upstream must still show as >= 300 ms in both.
    log = os.path.join(str(tmp_path), "access.log")
    with backend("al") as b:
        gw = Gateway(cfg(b, {"path": log, "format": "json"}), tmp_path)
        try:
            r = requests.get(gw.u("/log/slow"), headers={"X-Request-ID": "log-slow",
                                                          "X-Demo-Delay": "300"},
                             timeout=scaled(5))
            assert r.status_code == 200
            lines = wait_until(lambda: read_lines(log) or None, scaled(10),
                               what="the access log line")
        finally:
            gw.stop()
    d = json.loads(lines[0])
    assert d["request_id"] == "log-slow"
    assert d["upstream_ms"] >= 300, d
    assert d["duration_ms"] >= d["upstream_ms"], d


def test_sighup_reopens_a_rotated_file(tmp_path):
    """logrotate's way: mv the file, then SIGHUP. Lines after the reload go
    to a new file at the configured path, not on into the moved one."""
    log = os.path.join(str(tmp_path), "access.log")
    with backend("rot") as b:
        c = cfg(b, {"path": log})
        gw = Gateway(c, tmp_path)
        try:
            requests.get(gw.u("/log/before"), timeout=scaled(5))
            wait_until(lambda: len(read_lines(log)) == 1, scaled(10), what="first line")
            os.rename(log, log + ".1")
            gw.reload(c)
            requests.get(gw.u("/log/after"), timeout=scaled(5))
            wait_until(lambda: len(read_lines(log)) == 1, scaled(10), what="line in the new file")
        finally:
            gw.stop()
    assert [json.loads(l)["path"] for l in read_lines(log + ".1")] == ["/log/before"]
    assert [json.loads(l)["path"] for l in read_lines(log)] == ["/log/after"]


def test_unopenable_log_rejects_the_reload(tmp_path):
    """A reload naming a log file that cannot be opened is refused and the
    running generation keeps logging where it did."""
    log = os.path.join(str(tmp_path), "access.log")
    with backend("bad") as b:
        port = free_port()
        gw = Gateway(cfg(b, {"path": log}, port), tmp_path)
        try:
            gw.reload(cfg(b, {"path": "/nonexistent-dir/access.log"}, port), expect_ok=False)
            assert "cannot open /nonexistent-dir/access.log" in gw.stderr_text()
            requests.get(gw.u("/log/still"), timeout=scaled(5))
            wait_until(lambda: read_lines(log), scaled(10), what="a line in the old file")
        finally:
            gw.stop()
    assert json.loads(read_lines(log)[-1])["path"] == "/log/still"


def test_unopenable_log_fails_the_start(tmp_path):
    with backend("bad2") as b:
        path = os.path.join(str(tmp_path), "p.yaml")
        with open(path, "w") as f:
            f.write(to_yaml(with_backend(cfg(b, {"path": "/nonexistent-dir/access.log"}))))
        p = subprocess.run([PORTICO, "-c", path], capture_output=True, text=True,
                           timeout=scaled(20))
    assert p.returncode != 0
    assert "cannot open /nonexistent-dir/access.log" in p.stderr, p.stderr
