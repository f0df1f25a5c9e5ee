"""Listeners: a port another process holds is refused (at start and on
reload), even though workers bind with SO_REUSEPORT; listeners added by a
reload start accepting."""

import socket
import subprocess

import requests

from conftest import PORTICO, free_port, make_config, scaled, to_yaml, upstream


def cfg(port, bport, extra_port=None):
    c = make_config(port, {"u": upstream(bport)},
                    [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}])
    if extra_port:
        c["listeners"].append({"name": "extra", "address": "127.0.0.1:%d" % extra_port})
    return c


def test_second_instance_on_same_port_refused(gateway, backends, tmp_path):
    b = backends("l")
    port = free_port()
    gw = gateway(cfg(port, b.port))
    other = tmp_path / "second.yaml"
    c2 = cfg(port, b.port)
    other.write_text(to_yaml(c2))
    p = subprocess.run([PORTICO, "-c", str(other)], capture_output=True, timeout=scaled(10))
    assert p.returncode != 0
    assert b"127.0.0.1:%d" % port in p.stderr and b"in use" in p.stderr
    # the first instance still has the port to itself
    assert requests.get(gw.u("/tiny")).status_code == 200


def test_reload_adds_listener_and_refuses_a_taken_one(gateway, backends):
    b = backends("l")
    port, extra = free_port(), free_port()
    gw = gateway(cfg(port, b.port))
    gw.reload(cfg(port, b.port, extra_port=extra))
    assert requests.get("http://127.0.0.1:%d/tiny" % extra).status_code == 200
    # a port somebody else listens on: the reload is refused as a whole
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    try:
        gw.reload(cfg(port, b.port, extra_port=taken), expect_ok=False)
        assert "in use" in gw.stderr_text()
        assert requests.get(gw.u("/tiny")).status_code == 200
        assert requests.get("http://127.0.0.1:%d/tiny" % extra).status_code == 200
    finally:
        squatter.close()


def test_listener_added_by_reload_accepts_as_soon_as_reload_is_logged(gateway, backends):
    """The "reloaded" line comes once every worker has taken the new
    generation, so a new port accepts the moment it is logged (before, a
    client acting on the line could find it refusing connections until the
    workers' next loop turn). Ten reloads, each adding a fresh port and
    connecting at once."""
    b = backends("l")
    port = free_port()
    gw = gateway(cfg(port, b.port))
    for _ in range(10):
        extra = free_port()
        gw.reload(cfg(port, b.port, extra_port=extra))
        s = socket.create_connection(("127.0.0.1", extra), timeout=scaled(5))
        s.close()
        assert requests.get("http://127.0.0.1:%d/tiny" % extra,
                            timeout=scaled(5)).status_code == 200
