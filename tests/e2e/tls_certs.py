"""Test certificates made with the openssl CLI, once per test session.

    from tls_certs import tls_certs          # the session-scoped fixture
    def test_x(tls_certs):
        cert, key = tls_certs.server("api", ["api.test", "*.api.test"], kind="ec")
        ccert, ckey = tls_certs.client("alice", cn="alice", dns=["alice.test"],
                                       uris=["spiffe://example.org/alice"])
        tls_certs.ca            # the CA's PEM (trust it on the client side)

A CA (ECDSA P-256) signs every certificate. Server certificates carry
the given DNS SANs (the first is also the subject CN, unless `cn` is
given; `sans=[]` makes a CN-only certificate) and serverAuth; client
certificates carry clientAuth and the given CN, DNS and URI SANs. `kind`
is "rsa" (2048 bits) or "ec" (P-256). Files land in one temporary
directory; the same name asked twice returns the same files. `other_ca()`
makes a second, unrelated CA (for "signed by someone else" cases).
"""

import os
import subprocess

import pytest


def _run(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed:\n%s" % (" ".join(args), r.stderr))


def _key(path, kind, cwd):
    if kind == "rsa":
        _run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path,
             cwd=cwd)
    elif kind == "ec":
        _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path,
             cwd=cwd)
    else:
        raise ValueError("kind must be rsa or ec, got %r" % kind)


class CertFactory:
    def __init__(self, workdir, ca_name="portico test CA"):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self._made = {}
        self._ca_name = ca_name
        tag = ca_name.replace(" ", "_")
        self.ca_key = os.path.join(self.dir, tag + ".key")
        self.ca = os.path.join(self.dir, tag + ".pem")
        _key(self.ca_key, "ec", self.dir)
        _run("req", "-x509", "-new", "-key", self.ca_key, "-out", self.ca, "-days", "30",
             "-subj", "/CN=" + ca_name, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        self._other = None

    def _leaf(self, name, cn, exts, kind, chain):
        key = os.path.join(self.dir, name + ".key")
        cert = os.path.join(self.dir, name + ".pem")
        csr = os.path.join(self.dir, name + ".csr")
        ext = os.path.join(self.dir, name + ".ext")
        _key(key, kind, self.dir)
        subj = "/CN=" + cn if cn else "/O=portico tests"
        _run("req", "-new", "-key", key, "-subj", subj, "-out", csr, cwd=self.dir)
        with open(ext, "w") as f:
            f.write("\n".join(exts) + "\n")
        _run("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
             "-CAcreateserial", "-days", "30", "-sha256", "-extfile", ext, "-out", cert,
             cwd=self.dir)
        if chain:
            with open(cert, "a") as out, open(self.ca) as ca:
                out.write(ca.read())
        return cert, key

    def server(self, name, sans, kind="rsa", cn=None, chain=False):
        """(cert, key) paths for a server certificate."""
        k = ("server", name)
        if k not in self._made:
            exts = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature" +
                    (",keyEncipherment" if kind == "rsa" else ""),
                    "extendedKeyUsage=serverAuth"]
            if sans:
                exts.append("subjectAltName=" + ",".join("DNS:" + s for s in sans))
            self._made[k] = self._leaf(name, cn or (sans[0] if sans else name), exts, kind, chain)
        return self._made[k]

    def client(self, name, cn=None, dns=(), uris=(), kind="ec"):
        """(cert, key) paths for a client certificate."""
        k = ("client", name)
        if k not in self._made:
            exts = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
                    "extendedKeyUsage=clientAuth"]
            alts = ["DNS:" + d for d in dns] + ["URI:" + u for u in uris]
            if alts:
                exts.append("subjectAltName=" + ",".join(alts))
            self._made[k] = self._leaf(name, cn, exts, kind, False)
        return self._made[k]

    def other_ca(self):
        """A second CA, unrelated to this one (its own directory)."""
        if self._other is None:
            self._other = CertFactory(os.path.join(self.dir, "other"), "portico other CA")
        return self._other


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    return CertFactory(tmp_path_factory.mktemp("tls-certs"))
