"""The local rate-limit table's runtime side: `rate_limit_store.max_keys`
sizes it (default 1048576 keys), admin /status shows it, a reload that
keeps max_keys keeps the table and one that changes it starts a new one
(and says so in the log), and the table's memory is only touched as keys
arrive."""

import re

import requests

from conftest import free_port, make_config, scaled, to_yaml, upstream


def cfg(port, bport, max_keys=None):
    c = make_config(port, {"users": upstream(bport)},
                    [{"name": "users", "match": {"path_prefix": "/users"}, "upstream": "users",
                      "strip_prefix": "/users"}])
    if max_keys is not None:
        c["rate_limit_store"] = {"max_keys": max_keys}
    return c


def test_status_shows_default_table(gateway, backends):
    be = backends("users")
    gw = gateway(cfg(free_port(), be.port))
    assert requests.get(gw.u("/users/tiny")).status_code == 200
    rl = gw.status()["rate_limit"]
    assert rl == {"max_keys": 1048576, "slots": 1048576, "live": 0, "inserts": 0,
                  "evictions": 0, "fail_opens": 0}
    # 16 MiB of cells are reserved, not resident: a fresh gateway stays small.
    assert gw.rss_kb() < 16 * 1024 + 40 * 1024


def test_reload_keeps_or_replaces_table(gateway, backends):
    be = backends("users")
    port = free_port()
    gw = gateway(cfg(port, be.port, max_keys=5000))
    assert gw.status()["rate_limit"]["slots"] == 8192  # whole buckets, a power of two
    start = len(gw.err)
    c = cfg(port, be.port, max_keys=5000)
    c["admin"] = {"address": "127.0.0.1:%d" % gw.admin_port}
    gw.reload(c)
    assert "start over" not in "".join(gw.err.lines[start:])
    c["rate_limit_store"] = {"max_keys": 1024}
    gw.reload(c)
    assert any("rate_limit_store.max_keys: 5000 → 1024" in l and "start over" in l
               for l in gw.err.lines[start:])
    rl = gw.status()["rate_limit"]
    assert rl["max_keys"] == 1024 and rl["slots"] == 1024
    assert requests.get(gw.u("/users/tiny")).status_code == 200


def test_bad_max_keys_refused_with_position(gateway, backends):
    be = backends("users")
    port = free_port()
    gw = gateway(cfg(port, be.port))
    c = cfg(port, be.port, max_keys=10)
    c["admin"] = {"address": "127.0.0.1:%d" % gw.admin_port}
    with open(gw.config_path, "w") as f:
        f.write(to_yaml(c))
    r = requests.post("http://127.0.0.1:%d/reload" % gw.admin_port, timeout=scaled(10))
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert re.search(r"portico\.yaml:\d+:\d+: `rate_limit_store.max_keys` must be from 1024 to "
                     r"268435456, got 10", errors), errors
    assert gw.status()["rate_limit"]["max_keys"] == 1048576
