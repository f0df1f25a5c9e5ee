"""Client certificates end to end: listeners with `tls.client_ca` in front of
a demo backend, certificates made with the openssl CLI for this session,
real clients (curl with --cert and --resolve for SNI, openssl s_client for
session resumption). The mtls_auth filter takes the consumer from the CN,
a DNS SAN or a URI SAN (SPIFFE), acl decides on its consumers entry's
groups, missing / foreign certificates are 401, a required listener
refuses the handshake, the subject and fingerprint reach the upstream
while client-sent copies do not, a Host that is not the SNI is 421, and a
session resumed under another name never skips the certificate check
(nginx CVE-2025-23419)."""

import json
import os
import re
import subprocess

import pytest

from conftest import (Gateway, backend, echo_headers, free_port, make_config, scaled, upstream,
                      wait_until)

NAME = "api.example.test"
OTHER = "other.example.test"


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Certs:
    """A server CA and certificate for NAME and OTHER; a client CA with its
    client certificates; a rogue CA whose certificate claims CN=alice.
    (tls-term's tests/e2e/tls_certs.py may take this over.)"""

    def __init__(self, d):
        self.dir = str(d)
        self._ca("server-ca")
        self._ca("client-ca")
        self._ca("rogue-ca")
        self._leaf("server", "server-ca", NAME,
                   "subjectAltName=DNS:%s,DNS:%s\nextendedKeyUsage=serverAuth" % (NAME, OTHER))
        self._leaf("alice", "client-ca", "alice", "extendedKeyUsage=clientAuth")
        self._leaf("carol", "client-ca", "carol", "extendedKeyUsage=clientAuth")
        self._leaf("web", "client-ca", "web-client",
                   "subjectAltName=DNS:x.example.org,DNS:web.example.org\n"
                   "extendedKeyUsage=clientAuth")
        self._leaf("spiffe", "client-ca", "svc",
                   "subjectAltName=URI:spiffe://evil.org/ns/prod/sa/api,"
                   "URI:spiffe://example.org/ns/prod/sa/api\nextendedKeyUsage=clientAuth")
        self._leaf("rogue", "rogue-ca", "alice", "extendedKeyUsage=clientAuth")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _ca(self, name):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
                 "-subj", "/CN=%s/O=portico tests" % name, cwd=self.dir)

    def _leaf(self, name, ca, cn, ext):
        with open(self.path(name + ".ext"), "w") as f:
            f.write(ext + "\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", name + ".key", "-out", name + ".csr",
                 "-subj", "/CN=%s/O=Example, Inc." % cn, cwd=self.dir)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                 "-CAcreateserial", "-days", "2", "-out", name + ".pem",
                 "-extfile", name + ".ext", cwd=self.dir)

    def fingerprint(self, name):
        out = subprocess.run(["openssl", "x509", "-in", self.path(name + ".pem"), "-noout",
                              "-fingerprint", "-sha256"], check=True, capture_output=True,
                             text=True).stdout
        return out.strip().split("=", 1)[1].replace(":", "").lower()

    def subject(self, name):
        out = subprocess.run(["openssl", "x509", "-in", self.path(name + ".pem"), "-noout",
                              "-subject", "-nameopt", "RFC2253"], check=True, capture_output=True,
                             text=True).stdout
        return out.strip().split("=", 1)[1].strip()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("mtls-certs"))


CONSUMERS = [
    {"name": "alice", "groups": ["ops", "beta"]},
    {"name": "web.example.org", "groups": ["web"]},
    {"name": "api", "groups": ["api"]},
]


def tls_listener(name, port, certs, client_auth=None):
    tls = {"certificates": [{"cert": certs.path("server.pem"), "key": certs.path("server.key")}]}
    if client_auth:
        tls["client_ca"] = certs.path("client-ca.pem")
        tls["client_auth"] = client_auth
    return {"name": name, "address": "127.0.0.1:%d" % port, "tls": tls}


def route(name, filters):
    return {"name": name, "match": {"path_prefix": "/" + name}, "upstream": "app",
            "filters": filters}


ROUTES = [
    route("cn", {"mtls_auth": {"subject_header": "X-Client-Subject",
                               "fingerprint_header": "X-Client-Fingerprint"}}),
    route("dns", {"mtls_auth": {"consumer_from": "san_dns"}}),
    route("uri", {"mtls_auth": {"consumer_from": "san_uri",
                                "uri_prefix": "spiffe://example.org/ns/prod/sa/"}}),
    route("ops", {"mtls_auth": {}, "acl": {"allow": ["ops"]}}),
    route("strict", {"mtls_auth": {"require_consumer": True}}),
    route("xfcc", {"mtls_auth": {"xfcc": True}}),
    {"name": "open", "match": {"path_prefix": "/open"}, "upstream": "app"},
]


@pytest.fixture(scope="module")
def gw(certs, tmp_path_factory):
    """An optional client-auth listener (first), a required one and one
    without client certificates, all on one gateway."""
    with backend("app") as b:
        ports = {"optional": free_port(), "required": free_port(), "plain_tls": free_port()}
        cfg = make_config(ports["optional"], {"app": upstream(b.port)}, ROUTES)
        cfg["listeners"] = [tls_listener("optional", ports["optional"], certs, "optional"),
                            tls_listener("required", ports["required"], certs, "required"),
                            tls_listener("plain_tls", ports["plain_tls"], certs)]
        cfg["consumers"] = CONSUMERS
        cfg["access_log"] = {"path": "stdout", "format": "json"}
        g = Gateway(cfg, tmp_path_factory.mktemp("mtls-gw"))
        g.ports = ports
        try:
            yield g
        finally:
            g.stop()


def curl(certs, port, path, cert=None, sni=NAME, host=None, headers=()):
    """(status or None, body, curl's exit code) of one HTTPS GET."""
    args = ["curl", "-sS", "--http1.1", "--max-time", str(scaled(10)),
            "--resolve", "%s:%d:127.0.0.1" % (sni, port),
            "--cacert", certs.path("server-ca.pem"), "-o", "-", "-w", "\n%{http_code}"]
    if cert:
        args += ["--cert", certs.path(cert + ".pem"), "--key", certs.path(cert + ".key")]
    if host:
        args += ["-H", "Host: " + host]
    for h in headers:
        args += ["-H", h]
    args.append("https://%s:%d%s" % (sni, port, path))
    p = subprocess.run(args, capture_output=True, text=True)
    body, _, code = p.stdout.rpartition("\n")
    status = int(code) if code.isdigit() and code != "000" else None
    return status, body, p.returncode


def echoed(body):
    return json.loads(body)


def test_consumer_from_subject_cn_with_consumers_groups(gw, certs):
    st, body, _ = curl(certs, gw.ports["optional"], "/cn/consumer-log", cert="alice")
    assert st == 200, body
    doc = echoed(body)
    assert echo_headers(doc, "X-Consumer-Name") == ["alice"]
    assert echo_headers(doc, "X-Consumer-Groups") == ["ops,beta"]

    def logged():
        with open(gw.stdout_path) as f:
            return [json.loads(l) for l in f if "/cn/consumer-log" in l]
    wait_until(lambda: logged(), scaled(5), what="access log line")
    assert logged()[0]["consumer"] == "alice"


def test_consumer_without_entry_has_no_groups_and_require_consumer_refuses(gw, certs):
    st, body, _ = curl(certs, gw.ports["optional"], "/cn", cert="carol")
    assert st == 200, body
    assert echo_headers(echoed(body), "X-Consumer-Name") == ["carol"]
    assert echo_headers(echoed(body), "X-Consumer-Groups") == []
    st, body, _ = curl(certs, gw.ports["optional"], "/strict", cert="carol")
    assert st == 401, body
    st, _, _ = curl(certs, gw.ports["optional"], "/strict", cert="alice")
    assert st == 200


def test_consumer_from_dns_san(gw, certs):
    st, body, _ = curl(certs, gw.ports["optional"], "/dns", cert="web")
    assert st == 200, body
    doc = echoed(body)
    # the second SAN names a consumers entry, so it wins over the first
    assert echo_headers(doc, "X-Consumer-Name") == ["web.example.org"]
    assert echo_headers(doc, "X-Consumer-Groups") == ["web"]
    # a certificate without DNS SANs names nobody here
    st, body, _ = curl(certs, gw.ports["optional"], "/dns", cert="alice")
    assert st == 401, body


def test_consumer_from_spiffe_uri_san(gw, certs):
    st, body, _ = curl(certs, gw.ports["optional"], "/uri", cert="spiffe")
    assert st == 200, body
    doc = echoed(body)
    assert echo_headers(doc, "X-Consumer-Name") == ["api"]
    assert echo_headers(doc, "X-Consumer-Groups") == ["api"]


def test_acl_on_the_certificate_consumers_groups(gw, certs):
    assert curl(certs, gw.ports["optional"], "/ops", cert="alice")[0] == 200
    assert curl(certs, gw.ports["optional"], "/ops", cert="carol")[0] == 403   # no entry
    assert curl(certs, gw.ports["optional"], "/ops", cert="web")[0] == 403     # CN web-client
    assert curl(certs, gw.ports["optional"], "/ops")[0] == 401                 # nobody


def test_no_certificate_is_401(gw, certs):
    st, body, _ = curl(certs, gw.ports["optional"], "/cn")
    assert st == 401, body
    doc = json.loads(body)
    assert doc["status"] == 401 and doc["error"] == "client certificate required"
    # a TLS listener without client_ca: no certificate can come at all
    st, body, _ = curl(certs, gw.ports["plain_tls"], "/cn", cert="alice")
    assert st == 401, body
    # the route without the filter is open
    assert curl(certs, gw.ports["optional"], "/open")[0] == 200


def test_certificate_from_another_ca_is_401(gw, certs):
    # client_auth: optional lets it through the handshake; the filter refuses
    st, body, _ = curl(certs, gw.ports["optional"], "/cn", cert="rogue")
    assert st == 401, body
    assert json.loads(body)["error"] == "invalid client certificate"
    assert curl(certs, gw.ports["optional"], "/open", cert="rogue")[0] == 200


def test_required_listener_refuses_the_handshake_without_a_certificate(gw, certs):
    st, _, rc = curl(certs, gw.ports["required"], "/open")
    assert st is None and rc != 0
    st, _, rc = curl(certs, gw.ports["required"], "/open", cert="rogue")
    assert st is None and rc != 0
    st, body, _ = curl(certs, gw.ports["required"], "/cn", cert="alice")
    assert st == 200, body


def test_subject_and_fingerprint_forwarded_client_copies_removed(gw, certs):
    forged = ["X-Client-Subject: CN=admin", "X-Client-Fingerprint: 00ff",
              "X-Consumer-Name: admin"]
    st, body, _ = curl(certs, gw.ports["optional"], "/cn", cert="alice", headers=forged)
    assert st == 200, body
    doc = echoed(body)
    assert echo_headers(doc, "X-Client-Fingerprint") == [certs.fingerprint("alice")]
    assert echo_headers(doc, "X-Client-Subject") == [certs.subject("alice")]
    assert echo_headers(doc, "X-Consumer-Name") == ["alice"]


def test_xfcc(gw, certs):
    st, body, _ = curl(certs, gw.ports["optional"], "/xfcc", cert="spiffe",
                       headers=["X-Forwarded-Client-Cert: Hash=forged"])
    assert st == 200, body
    v = echo_headers(echoed(body), "X-Forwarded-Client-Cert")
    assert len(v) == 1
    assert v[0].startswith("Hash=%s;Subject=\"" % certs.fingerprint("spiffe"))
    assert ";URI=spiffe://example.org/ns/prod/sa/api" in v[0]


def test_host_other_than_sni_is_421(gw, certs):
    st, body, _ = curl(certs, gw.ports["optional"], "/cn", cert="alice", host=OTHER)
    assert st == 421, body
    doc = json.loads(body)
    assert doc["status"] == 421
    # port and case do not matter; the SNI's own name passes
    st, _, _ = curl(certs, gw.ports["optional"], "/cn", cert="alice",
                    host="API.Example.Test:%d" % gw.ports["optional"])
    assert st == 200
    st, _, _ = curl(certs, gw.ports["optional"], "/cn", cert="alice", sni=OTHER, host=OTHER)
    assert st == 200
    # before routing: even a route without filters
    assert curl(certs, gw.ports["optional"], "/open", host=OTHER)[0] == 421
    # only on client-auth listeners
    assert curl(certs, gw.ports["plain_tls"], "/open", host=OTHER)[0] == 200


def test_421_in_the_access_log(gw, certs):
    curl(certs, gw.ports["optional"], "/open/mark421", host=OTHER)

    def logged():
        with open(gw.stdout_path) as f:
            return [json.loads(l) for l in f if "/open/mark421" in l]
    wait_until(lambda: logged(), scaled(5), what="access log line")
    line = logged()[0]
    assert line["status"] == 421 and line["route"] == "" and line["listener"] == "optional"


# ---- resumption across names (nginx CVE-2025-23419) ----

def s_client(certs, port, sni, sess_out=None, sess_in=None, cert=None, host=None):
    """One TLS 1.3 connection with openssl s_client sending a GET for /cn
    (Connection: close); returns its whole output."""
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", sni,
            "-CAfile", certs.path("server-ca.pem"), "-ign_eof", "-tls1_3"]
    if sess_out:
        args += ["-sess_out", sess_out]
    if sess_in:
        args += ["-sess_in", sess_in]
    if cert:
        args += ["-cert", certs.path(cert + ".pem"), "-key", certs.path(cert + ".key")]
    req = "GET /cn HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (host or sni)
    p = subprocess.run(args, input=req, capture_output=True, text=True, timeout=scaled(15))
    return p.stdout + p.stderr


def status_of(out):
    m = re.search(r"^HTTP/1\.1 (\d{3})", out, re.M)
    return int(m.group(1)) if m else None


def test_resumed_session_reuses_under_the_same_name(gw, certs, tmp_path):
    """The control: resumption works, so the refusals below are the guard's."""
    sess = str(tmp_path / "a.sess")
    out = s_client(certs, gw.ports["optional"], NAME, sess_out=sess, cert="alice")
    assert status_of(out) == 200, out
    out = s_client(certs, gw.ports["optional"], NAME, sess_in=sess)
    assert "Reused, TLSv1.3" in out, out
    assert status_of(out) == 200, out   # the resumed session keeps alice's certificate


def test_resumption_never_crosses_names_on_a_client_auth_listener(gw, certs, tmp_path):
    sess = str(tmp_path / "other.sess")
    out = s_client(certs, gw.ports["optional"], OTHER, sess_out=sess)  # no certificate
    assert status_of(out) == 401, out
    out = s_client(certs, gw.ports["optional"], NAME, sess_in=sess)
    assert "Reused" not in out and "New, TLSv1.3" in out, out
    assert status_of(out) == 401, out


def test_session_from_a_listener_without_client_auth_never_resumes_on_a_required_one(
        gw, certs, tmp_path):
    """Both listeners share the process's ticket keys: the ticket decrypts,
    and must still not skip the required listener's certificate check."""
    sess = str(tmp_path / "plain.sess")
    out = s_client(certs, gw.ports["plain_tls"], NAME, sess_out=sess)
    assert status_of(out) == 401, out   # the filter: no certificate on that listener
    out = s_client(certs, gw.ports["plain_tls"], NAME, sess_in=sess)
    assert "Reused, TLSv1.3" in out, out   # the ticket is good where it was issued
    for sni in (NAME, OTHER):
        out = s_client(certs, gw.ports["required"], sni, sess_in=sess)
        assert "Reused" not in out, out
        assert status_of(out) is None, out   # no certificate: the handshake fails


def test_reload_that_changes_the_client_ca_file_never_resumes_its_old_sessions(certs, tmp_path):
    """The same client_ca path with other CAs in it after a reload: a ticket
    from before (the ticket keys outlive reloads) must not carry the old
    verdict on the certificate into the new configuration."""
    ca = tmp_path / "clients.pem"
    ca.write_bytes(open(certs.path("client-ca.pem"), "rb").read())
    with backend("app") as b:
        port = free_port()
        cfg = make_config(port, {"app": upstream(b.port)}, ROUTES)
        lst = tls_listener("optional", port, certs, "optional")
        lst["tls"]["client_ca"] = str(ca)
        cfg["listeners"] = [lst]
        g = Gateway(cfg, tmp_path)
        try:
            sess = str(tmp_path / "alice.sess")
            out = s_client(certs, port, NAME, sess_out=sess, cert="alice")
            assert status_of(out) == 200, out
            out = s_client(certs, port, NAME, sess_in=sess)
            assert "Reused, TLSv1.3" in out and status_of(out) == 200, out  # the control
            ca.write_bytes(open(certs.path("rogue-ca.pem"), "rb").read())
            g.reload(cfg)
            out = s_client(certs, port, NAME, sess_in=sess)
            assert "Reused" not in out, out
            assert status_of(out) == 401, out   # no certificate sent on the new handshake
            out = s_client(certs, port, NAME, cert="alice")
            assert status_of(out) == 401, out   # alice's CA is no longer trusted
        finally:
            g.stop()


def test_client_auth_sessions_resume_across_instances_with_the_same_ca_bytes(certs, tmp_path):
    """Two instances sharing ticket_key_file, each with its own copy of the
    client CA file (other directories, the same bytes) and another listener
    name: a session verified by one resumes on the other and keeps its
    certificate; a third instance whose CA file holds other CAs does not
    resume it."""
    keyfile = tmp_path / "tickets.key"
    keyfile.write_bytes(os.urandom(80))
    gws = []
    with backend("app") as b:
        try:
            for i, ca_name in enumerate(("client-ca.pem", "client-ca.pem", "rogue-ca.pem")):
                d = tmp_path / ("gw%d" % i)
                d.mkdir()
                ca = d / "clients.pem"
                ca.write_bytes(open(certs.path(ca_name), "rb").read())
                port = free_port()
                cfg = make_config(port, {"app": upstream(b.port)}, ROUTES)
                lst = tls_listener("edge-%d" % i, port, certs, "optional")
                lst["tls"]["client_ca"] = str(ca)
                lst["tls"]["ticket_key_file"] = str(keyfile)
                cfg["listeners"] = [lst]
                gws.append(Gateway(cfg, d))
            sess = str(tmp_path / "alice.sess")
            out = s_client(certs, gws[0].port, NAME, sess_out=sess, cert="alice")
            assert status_of(out) == 200, out
            out = s_client(certs, gws[1].port, NAME, sess_in=sess)
            assert "Reused, TLSv1.3" in out, out
            assert status_of(out) == 200, out  # alice's certificate came with the session
            out = s_client(certs, gws[2].port, NAME, sess_in=sess)
            assert "Reused" not in out, out
            assert status_of(out) == 401, out
        finally:
            for g in gws:
                g.stop()
