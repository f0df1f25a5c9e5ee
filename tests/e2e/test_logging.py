"""The error log and the access log's fields.

`log_level` filters the gateway's own lines (and `--log-level` overrides
it); `log_format: json` makes every line one JSON object; `error_log` sends
them to a file; SIGUSR1 reopens the error log and the access log at their
paths (logrotate: rename, signal, new lines in a new file); the access log
names the consumer, the target that answered and the retries.
"""

import json
import os
import re
import signal
import subprocess
import threading

import requests

from conftest import (DEMO, PORTICO, Gateway, backend, free_port, make_config, port_open,
                      scaled, to_yaml, upstream, wait_until)

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def cfg(b, **top):
    c = make_config(free_port(), {"u": upstream(b.port)},
                    [{"name": "r", "match": {"path_prefix": "/r"}, "upstream": "u"}])
    c.update(top)
    return c


def read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l for l in f.read().splitlines() if l.strip()]


def levels(lines):
    return {l.split(" ")[1] for l in lines if l.strip()}


def test_log_level_warn_hides_info_and_keeps_errors(tmp_path):
    with backend("lv") as b:
        gw = Gateway(cfg(b, log_level="warn"), tmp_path)
        try:
            assert requests.get(gw.u("/r/x"), timeout=scaled(5)).status_code == 200
            # A rejected reload is an error: it is still written.
            line = gw.reload("listeners: nope\n", expect_ok=False)
            assert " error " in line
            text = gw.stderr_text()
        finally:
            gw.stop()
    lines = [l for l in text.splitlines() if TS.match(l.split(" ")[0])]
    assert lines and levels(lines) <= {"warn", "error"}, text
    assert "portico ready" not in text


def test_reload_applies_log_level(tmp_path):
    with backend("lv") as b:
        c = cfg(b, log_level="warn")
        gw = Gateway(c, tmp_path)
        try:
            assert requests.get(gw.u("/r/x"), timeout=scaled(5)).status_code == 200
            assert "portico ready" not in gw.stderr_text()
            c["log_level"] = "debug"
            start = len(gw.err)
            gw.reload(c)  # its "reloaded" info line is written: the level is debug by then
            # The old generation is freed once no worker can see it: a debug line.
            assert gw.err.wait_for(lambda l: " debug generation 1 freed" in l, scaled(5), start)
        finally:
            gw.stop()


def test_command_line_level_overrides_the_file(tmp_path):
    with backend("lv") as b:
        c = cfg(b, log_level="error")
        path = os.path.join(str(tmp_path), "p.yaml")
        with open(path, "w") as f:
            f.write(to_yaml(c))
        port = int(c["listeners"][0]["address"].split(":")[1])
        p = subprocess.Popen([PORTICO, "-c", path, "--log-level", "debug"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: port_open(port) or p.poll() is not None, scaled(10),
                       what="listening")
        finally:
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=scaled(20))
    assert p.returncode == 0, err
    assert {"debug", "info"} <= levels(err.splitlines()), err
    bad = subprocess.run([PORTICO, "-c", path, "--log-level", "loud"], capture_output=True,
                         text=True, timeout=scaled(10))
    assert bad.returncode == 2 and "--log-level" in bad.stderr


def test_json_error_log_lines_parse(tmp_path):
    with backend("js") as b:
        gw = Gateway(cfg(b, log_format="json"), tmp_path)
        try:
            gw.reload("listeners: nope\n", expect_ok=False)
            text = gw.stderr_text()
        finally:
            gw.stop()
        text = gw.stderr_text()
    docs = [json.loads(l) for l in text.splitlines() if l.strip()]
    assert len(docs) >= 4
    for d in docs:
        assert set(d) == {"ts", "level", "msg"}, d
        assert TS.match(d["ts"]) and d["level"] in ("debug", "info", "warn", "error")
    msgs = [d["msg"] for d in docs]
    assert any(m.startswith("portico ready") for m in msgs)
    # A config error's own line, with its position and its quotes, escaped.
    assert any(d["level"] == "error" and "portico.yaml:1:" in d["msg"] for d in docs), msgs


def test_error_log_file_and_sigusr1_reopen(tmp_path):
    elog = os.path.join(str(tmp_path), "error.log")
    alog = os.path.join(str(tmp_path), "access.log")
    with backend("ro") as b:
        # error_log relative to the config's directory.
        gw = Gateway(cfg(b, error_log="error.log", access_log={"path": alog}), tmp_path)
        try:
            assert requests.get(gw.u("/r/1"), timeout=scaled(5)).status_code == 200
            wait_until(lambda: read(alog) and any("portico ready" in l for l in read(elog)),
                       scaled(5), what="first lines")
            assert "portico ready" not in gw.stderr_text()
            os.rename(elog, elog + ".1")
            os.rename(alog, alog + ".1")
            gw.send(signal.SIGUSR1)
            wait_until(lambda: any("log files reopened" in l for l in read(elog)), scaled(5),
                       what="reopened line in the new error log")
            assert requests.get(gw.u("/r/2"), headers={"X-Request-ID": "after-rotate"},
                                timeout=scaled(5)).status_code == 200
            new = wait_until(lambda: read(alog), scaled(5), what="a line in the new access log")
        finally:
            gw.stop()
    assert [json.loads(l)["request_id"] for l in new] == ["after-rotate"]
    old = [json.loads(l) for l in read(alog + ".1")]
    assert len(old) == 1 and old[0]["path"].startswith("/r/1")
    assert not any("log files reopened" in l for l in read(elog + ".1"))
    assert any("stopped" in l for l in read(elog))


def test_sigusr1_rotation_loses_no_access_log_line_under_traffic(tmp_path):
    """logrotate's rename + SIGUSR1, three times, while clients keep
    sending: every answered request is in exactly one of the files."""
    alog = os.path.join(str(tmp_path), "access.log")
    answered, errors = [], []
    stop = threading.Event()

    def client(n):
        with requests.Session() as s:
            i = 0
            while not stop.is_set():
                rid = "c%d-%d" % (n, i)
                i += 1
                try:
                    r = s.get(gw.u("/r/%s" % rid), headers={"X-Request-ID": rid},
                              timeout=scaled(5))
                except requests.RequestException as e:
                    errors.append(repr(e))
                    continue
                if r.status_code == 200:
                    answered.append(rid)

    with backend("rot") as b:
        gw = Gateway(cfg(b, workers=2, access_log={"path": alog}), tmp_path)
        try:
            threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
            for t in threads:
                t.start()
            for k in range(1, 4):
                wait_until(lambda: len(answered) >= 50 * k, scaled(10), what="traffic")
                os.rename(alog, "%s.%d" % (alog, k))
                gw.send(signal.SIGUSR1)
                wait_until(lambda: os.path.exists(alog), scaled(5), what="the reopened log")
            wait_until(lambda: len(answered) >= 200, scaled(10), what="traffic after")
            stop.set()
            for t in threads:
                t.join()
        finally:
            stop.set()
            gw.stop()  # the access log is flushed before exit
    assert not errors, errors[:3]
    logged, per_file = [], []
    for f in [alog + ".1", alog + ".2", alog + ".3", alog]:
        ids = [json.loads(l)["request_id"] for l in read(f)]
        per_file.append(len(ids))
        logged += ids
    assert all(per_file), per_file  # each file took some of the traffic
    assert len(logged) == len(set(logged))  # none twice
    assert sorted(logged) == sorted(answered), (len(logged), len(answered))


def test_access_log_consumer_target_and_retries(tmp_path):
    alog = os.path.join(str(tmp_path), "access.log")
    with backend("bad", status=503) as bad, backend("good") as good:
        ups = {"u": upstream(bad.port, good.port,
                             retries={"attempts": 2, "on": [503]}),
               "g": upstream(good.port)}
        routes = [{"name": "keyed", "match": {"path_prefix": "/k"}, "upstream": "g",
                   "filters": {"key_auth": {}}},
                  {"name": "retried", "match": {"path_prefix": "/t"}, "upstream": "u"}]
        c = make_config(free_port(), ups, routes, access_log={"path": alog})
        c["consumers"] = [{"name": "app-one", "api_keys": ["k-one-123"]}]
        gw = Gateway(c, tmp_path)
        try:
            r = requests.get(gw.u("/k/x"), headers={"X-API-Key": "k-one-123",
                                                    "X-Request-ID": "keyed-1"},
                             timeout=scaled(5))
            assert r.status_code == 200
            r = requests.get(gw.u("/k/x"), headers={"X-Request-ID": "anon-1"}, timeout=scaled(5))
            assert r.status_code == 401
            for i in range(10):
                r = requests.get(gw.u("/t/%d" % i), headers={"X-Request-ID": "t-%d" % i},
                                 timeout=scaled(5))
                assert r.status_code == 200
            lines = wait_until(lambda: (lambda ls: ls if len(ls) >= 12 else None)(read(alog)),
                               scaled(10), what="12 access log lines")
            bad_requests = bad.stats()["requests"]
        finally:
            gw.stop()
    by = {d["request_id"]: d for d in map(json.loads, lines)}
    good_addr = "127.0.0.1:%d" % good.port
    assert by["keyed-1"]["consumer"] == "app-one"
    assert by["keyed-1"]["upstream_target"] == good_addr and by["keyed-1"]["retries"] == 0
    # Refused before any upstream call: no consumer, no target, no retries.
    assert "consumer" not in by["anon-1"] and by["anon-1"]["upstream_target"] == ""
    assert "retries" not in by["anon-1"]
    tried = [by["t-%d" % i] for i in range(10)]
    # Round robin: the ones that went to the 503 target first were retried
    # once on the good one, and every answer came from the good one.
    assert all(d["upstream_target"] == good_addr for d in tried)
    assert {d["retries"] for d in tried} == {0, 1}
    assert sum(d["retries"] for d in tried) == bad_requests
