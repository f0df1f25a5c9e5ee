"""testssl.sh (Debian's `testssl`) against a TLS listener: nothing
reported VULNERABLE, no finding of severity HIGH or CRITICAL among the
vulnerability checks, and only TLS 1.2 and 1.3 offered. (Findings about
the test certificates themselves, such as no OCSP URI or a 30-day
validity, say nothing about the gateway; `cipher_order` is Mozilla
intermediate's deliberate choice: the client's order.) Heavy: a run takes
minutes."""

import json
import shutil
import subprocess

import pytest

from conftest import Gateway, backend, free_port, make_config, scaled, upstream
from tls_certs import tls_certs  # noqa: F401


# testssl's vulnerability section (`--vulnerable`), by finding id.
VULN_IDS = {"heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
            "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN",
            "DROWN_hint", "LOGJAM", "LOGJAM-common_primes", "BEAST", "BEAST_CBC_TLS1", "LUCKY13",
            "winshock", "RC4", "opossum"}


@pytest.mark.heavy
def test_testssl_finds_nothing_vulnerable(tls_certs, tmp_path):
    exe = shutil.which("testssl") or shutil.which("testssl.sh")
    if not exe:
        pytest.skip("testssl is not installed")
    ec = tls_certs.server("testssl-ec", ["api.test"], kind="ec")
    rsa = tls_certs.server("testssl-rsa", ["api.test"], kind="rsa")
    with backend("testssl") as b:
        port = free_port()
        cfg = make_config(port, {"u": upstream(b.port)},
                          [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "u"}])
        cfg["listeners"][0]["http2"] = True
        cfg["listeners"][0]["tls"] = {"certificates": [{"cert": ec[0], "key": ec[1]},
                                                       {"cert": rsa[0], "key": rsa[1]}]}
        gw = Gateway(cfg, tmp_path)
        try:
            out = tmp_path / "testssl.json"
            subprocess.run([exe, "--quiet", "--warnings", "off", "--color", "0", "--fast",
                            "--jsonfile", str(out), "--ip", "127.0.0.1",
                            "--add-ca", tls_certs.ca,
                            "api.test:%d" % port], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=scaled(900))
            findings = json.loads(out.read_text())
        finally:
            gw.stop()
    vulnerable = [f for f in findings if "VULNERABLE" in f.get("finding", "")
                  and "not vulnerable" not in f.get("finding", "").lower()]
    assert not vulnerable, json.dumps(vulnerable, indent=1)
    bad = [f for f in findings if f["id"].split(" ")[0] in VULN_IDS
           and f.get("severity") in ("HIGH", "CRITICAL")]
    assert not bad, json.dumps(bad, indent=1)
    offered = {f["id"]: f["finding"] for f in findings
               if f["id"] in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")}
    for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert offered.get(p, "not offered").startswith("not offered"), offered
    for p in ("TLS1_2", "TLS1_3"):
        assert offered.get(p, "").startswith("offered"), offered
    for x in findings:  # the summary, for docs/operations.md (pytest -s)
        print("testssl: %s %s %s" % (x.get("severity"), x.get("id"), x.get("finding")))
