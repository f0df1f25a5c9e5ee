"""Passive health (upstreams.*.health_check.passive) end to end: a target
that fails real traffic is ejected after `consecutive_failures` in a row
and gets no traffic; it comes back when `eject_for` has passed, and a
repeat ejection lasts twice as long; `max_ejected_percent` (and the last
usable target) keep part of the upstream serving; it works beside active
checks (both must allow a target); and an ejection survives a reload that
keeps the target. Active probes are not traffic: a passing probe does not
end a streak of failed requests, and a failing one is not counted as a
failed call. Each target is its own demo backend process, so one can
be made to fail (Backend.control) while the others serve."""

import contextlib
import time

import requests

from conftest import backend, backend_of, free_port, make_config, scaled, upstream, wait_until


@contextlib.contextmanager
def fleet(n, status=None):
    """n demo backends of one port each, named t0..t(n-1)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(backend("t%d" % i, status=status)) for i in range(n)]


def config(bs, passive, active=None, route_name="all", admin=None):
    hc = {"passive": passive}
    if active:
        hc["active"] = active
    ups = {"app": upstream(*[b.port for b in bs], health_check=hc)}
    routes = [{"name": route_name, "match": {"path_prefix": "/"}, "upstream": "app"}]
    return make_config(free_port(), ups, routes, admin_port=admin)


def admin_targets(gw):
    doc = requests.get("http://127.0.0.1:%d/upstreams" % gw.admin_port, timeout=scaled(5)).json()
    return {t["address"]: t for t in doc["upstreams"][0]["targets"]}


def addr(b):
    return "127.0.0.1:%d" % b.port


def get(gw, n):
    """n requests in a row on one keep-alive session: [(status, backend name)]."""
    out = []
    with requests.Session() as s:
        for _ in range(n):
            r = s.get(gw.u("/"), timeout=scaled(5))
            out.append((r.status_code, backend_of(r)[0] if r.headers.get("X-Backend") else None))
    return out


def until_ejected(gw, b):
    """Sends traffic until the admin view shows `b` ejected."""
    def ejected():
        if admin_targets(gw)[addr(b)]["ejected"]:
            return True
        get(gw, 2)
        return False
    wait_until(ejected, scaled(10), what="%s ejected" % b.name)


def requests_seen(b):
    return b.stats()["requests"]


def test_failing_target_is_ejected_and_gets_no_traffic(gateway):
    with fleet(3) as bs:
        bs[0].control(status=503)
        gw = gateway(config(bs, {"consecutive_failures": 3, "eject_for": "60s"}))
        got = get(gw, 30)
        # Exactly the streak that ejected it reached the client as 503s
        # (requests in a row: no call of t0 was in flight meanwhile).
        assert [s for s, _ in got].count(503) == 3, got
        t0 = admin_targets(gw)[addr(bs[0])]
        assert t0["ejected"] is True and t0["usable"] is False, t0
        assert t0["healthy"] is True  # active health is another verdict
        assert 0 < t0["ejected_remaining_ms"] <= 60000
        assert t0["ejections"] == 1 and t0["ejections_total"] == 1, t0
        # While ejected, not one request reaches it.
        bs[0].reset()
        got = get(gw, 40)
        assert all(s == 200 for s, _ in got), got
        assert {name for _, name in got} == {"t1", "t2"}
        assert requests_seen(bs[0]) == 0
        assert ("upstream app target %s ejected for 60s after 3 consecutive failures"
                % addr(bs[0])) in gw.stderr_text()


def test_ejected_target_returns_after_eject_for_and_a_repeat_lasts_twice_as_long(gateway):
    with fleet(2) as bs:
        bs[0].control(status=503)
        gw = gateway(config(bs, {"consecutive_failures": 2, "eject_for": "1s",
                                 "max_ejected_percent": 50}))
        get(gw, 8)
        t0 = admin_targets(gw)[addr(bs[0])]
        assert t0["ejected"] and t0["ejected_remaining_ms"] <= 1000, t0
        bs[0].control(status=0)
        bs[0].reset()
        # Back after eject_for: traffic reaches it again, and the return is logged.
        wait_until(lambda: "t0" in {n for _, n in get(gw, 4)}, scaled(10),
                   what="t0 serving again")
        assert requests_seen(bs[0]) > 0
        wait_until(lambda: "target %s returned to rotation" % addr(bs[0]) in gw.stderr_text(),
                   scaled(5), what="the return logged")
        assert admin_targets(gw)[addr(bs[0])]["ejected"] is False
        # Failing again at once: the second ejection in a row lasts 2 × eject_for.
        bs[0].control(status=503)
        until_ejected(gw, bs[0])
        t0 = admin_targets(gw)[addr(bs[0])]
        assert t0["ejections"] == 2 and t0["ejections_total"] == 2, t0
        assert 1000 < t0["ejected_remaining_ms"] <= 2000, t0
        assert "ejected for 2s after 2 consecutive failures" in gw.stderr_text()


def test_max_ejected_percent_keeps_half_the_targets_serving(gateway):
    with fleet(4) as bs:
        for b in bs[:3]:
            b.control(status=503)
        gw = gateway(config(bs, {"consecutive_failures": 2, "eject_for": "60s",
                                 "max_ejected_percent": 50}))
        get(gw, 40)
        ts = admin_targets(gw)
        ejected = [a for a, t in ts.items() if t["ejected"]]
        assert len(ejected) == 2, ts  # 2 of 4 = 50%; a third would be 75%
        assert addr(bs[3]) not in ejected
        # The failing target left in rotation and the good one both serve.
        got = get(gw, 20)
        assert {n for _, n in got} == {"t3", next(b.name for b in bs[:3] if addr(b) not in ejected)}
        assert "would pass max_ejected_percent 50" in gw.stderr_text()


def test_the_last_usable_target_is_never_ejected(gateway):
    with fleet(2, status=503) as bs:
        gw = gateway(config(bs, {"consecutive_failures": 2, "eject_for": "60s",
                                 "max_ejected_percent": 100}))
        got = get(gw, 20)
        ts = admin_targets(gw)
        assert sum(t["ejected"] for t in ts.values()) == 1, ts
        # The upstream still answers (its own 503s), never "no healthy target".
        assert all(s == 503 and n for s, n in got[-10:]), got


def test_passive_and_active_checks_both_must_allow_a_target(gateway):
    with fleet(2) as bs:
        active = {"path": "/healthz", "interval": "100ms", "timeout": "1s", "healthy": 1,
                  "unhealthy": 2}
        gw = gateway(config(bs, {"consecutive_failures": 3, "eject_for": "60s"}, active=active))
        wait_until(lambda: all(t["healthy"] for t in admin_targets(gw).values()), scaled(5),
                   what="both healthy")
        bs[0].control(status=503)  # real traffic and probes both fail now
        until_ejected(gw, bs[0])
        # Recovered: the active checks say healthy, the ejection still holds.
        bs[0].control(status=0)
        wait_until(lambda: admin_targets(gw)[addr(bs[0])]["healthy"], scaled(5),
                   what="t0 healthy by its checks")
        t0 = admin_targets(gw)[addr(bs[0])]
        assert t0["ejected"] and not t0["usable"], t0
        # Probes still reach it (they are not traffic); requests do not.
        got = get(gw, 20)
        assert all(s == 200 for s, _ in got), got
        assert {n for _, n in got} == {"t1"}


def test_passing_probes_do_not_end_a_streak_of_failed_requests(gateway):
    with fleet(2) as bs:
        # /__stats answers 200 under a process-wide status: t0's probes
        # pass while every request routed to it gets 503.
        active = {"path": "/__stats", "interval": "50ms", "timeout": "1s", "healthy": 1,
                  "unhealthy": 2}
        gw = gateway(config(bs, {"consecutive_failures": 3, "eject_for": "60s"}, active=active))
        bs[0].control(status=503)
        got = []
        with requests.Session() as s:
            for _ in range(30):
                r = s.get(gw.u("/"), timeout=scaled(5))
                got.append((r.status_code, backend_of(r)[0]))
                if admin_targets(gw)[addr(bs[0])]["ejected"]:
                    break
                time.sleep(0.15)  # probes of t0 pass between its failed requests
        t0 = admin_targets(gw)[addr(bs[0])]
        assert t0["ejected"] and t0["healthy"], (t0, got)
        assert got.count((503, "t0")) == 3, got
        assert t0["call_failures"] == 3, t0


def test_failing_probes_are_not_counted_as_failed_calls(gateway):
    with fleet(2) as bs:
        bs[0].control(status=503)  # /healthz too: t0's probes fail
        active = {"path": "/healthz", "interval": "50ms", "timeout": "1s", "healthy": 1,
                  "unhealthy": 2}
        gw = gateway(config(bs, {"consecutive_failures": 3, "eject_for": "60s"}, active=active))
        wait_until(lambda: not admin_targets(gw)[addr(bs[0])]["healthy"], scaled(5),
                   what="t0 unhealthy by its checks")
        time.sleep(0.3)  # a few more failed probes
        t0 = admin_targets(gw)[addr(bs[0])]
        assert t0["call_failures"] == 0 and t0["consecutive_failures"] == 0, t0
        assert not t0["ejected"] and t0["ejections_total"] == 0, t0


def test_an_ejection_survives_a_reload_that_keeps_the_target(gateway):
    with fleet(3) as bs:
        bs[0].control(status=503)
        cfg = config(bs, {"consecutive_failures": 3, "eject_for": "60s"})
        gw = gateway(cfg)
        get(gw, 20)
        before = admin_targets(gw)[addr(bs[0])]
        assert before["ejected"], before
        bs[0].control(status=0)
        # Another route and another timeout: the upstream's targets are kept.
        cfg["routes"].insert(0, {"name": "other", "match": {"path_prefix": "/other"},
                                 "upstream": "app"})
        cfg["upstreams"]["app"]["read_timeout"] = "20s"
        gw.reload(cfg)
        after = admin_targets(gw)[addr(bs[0])]
        assert after["ejected"] and after["ejections_total"] == 1, after
        assert after["ejected_remaining_ms"] <= before["ejected_remaining_ms"]
        bs[0].reset()
        got = get(gw, 30)
        assert requests_seen(bs[0]) == 0
        assert all(s == 200 for s, _ in got), got
