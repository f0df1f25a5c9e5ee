"""jwt end to end: a real gateway in front of a demo backend, with tokens
minted by python3-jwt (PyJWT) and python3-jwcrypto for every algorithm,
and small Python JWKS servers on loopback that count their fetches, serve
Cache-Control, rotate keys, slow down and go down.

What it proves: every algorithm verifies from a JWKS, a file or a secret;
the algorithm is bound to the key (alg none, HS256 keyed with the RSA
public key's PEM, a key's own alg); exp/nbf with the skew, iss, aud,
required claims and scopes; what the upstream gets (claims as headers,
consumer and groups, the token hidden, spoofed claim headers gone); where
the token comes from; several providers; optional; the JWKS fetched once,
refetched once per burst of an unknown kid with the requests waiting for
it, the last good set kept while the endpoint is down; config errors."""

import base64
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
import uuid

import jwt as pyjwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jwt as jwc_jwt

from conftest import (Gateway, assert_error_response, backend, echo_headers, free_port,
                      make_config, raw, scaled, upstream, validate_errors, wait_until)

ISS = "https://idp.test"
AUD = "api"
SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-0123456789"  # 38 bytes
SECRET_B64_RAW = bytes(range(48))

ASYM = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
HMAC_ALGS = ["HS256", "HS384", "HS512"]


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Keys:
    """One private key per key type/curve, with kids."""

    def __init__(self, tag):
        self.rsa = jwc_jwk.JWK.generate(kty="RSA", size=2048, kid="rsa-" + tag)
        self.ec = {
            "ES256": jwc_jwk.JWK.generate(kty="EC", crv="P-256", kid="p256-" + tag),
            "ES384": jwc_jwk.JWK.generate(kty="EC", crv="P-384", kid="p384-" + tag),
            "ES512": jwc_jwk.JWK.generate(kty="EC", crv="P-521", kid="p521-" + tag),
        }
        self.ed = jwc_jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed-" + tag)

    def for_alg(self, alg):
        if alg.startswith(("RS", "PS")):
            return self.rsa
        if alg == "EdDSA":
            return self.ed
        return self.ec[alg]

    def public_jwks(self):
        keys = [self.rsa, self.ed] + list(self.ec.values())
        return [json.loads(k.export_public()) for k in keys]


def kid_of(key):
    return json.loads(key.export_public())["kid"]


def claims(**extra):
    now = int(time.time())
    c = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 300,
         "jti": uuid.uuid4().hex}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def mint(alg, key, payload=None, kid=True, lib="pyjwt", headers=None):
    """A token signed by `key` (a jwcrypto JWK, or bytes/str for HMAC)."""
    payload = claims() if payload is None else payload
    hdr = dict(headers or {})
    if kid and isinstance(key, jwc_jwk.JWK):
        hdr["kid"] = kid_of(key)
    if lib == "jwcrypto":
        k = key if isinstance(key, jwc_jwk.JWK) else jwc_jwk.JWK(
            kty="oct", k=b64u(key.encode() if isinstance(key, str) else key))
        t = jwc_jwt.JWT(header=dict(hdr, alg=alg), claims=payload)
        t.make_signed_token(k)
        return t.serialize()
    if isinstance(key, jwc_jwk.JWK):
        key = key.export_to_pem(private_key=True, password=None)
    return pyjwt.encode(payload, key, algorithm=alg, headers=hdr or None)


def hs_raw(header, payload, secret, digest=hashlib.sha256):
    """A compact JWS MAC'd by hand (for confusions libraries refuse to make)."""
    si = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(payload).encode())
    return si + "." + b64u(hmac.new(secret, si.encode(), digest).digest())


class JwksServer:
    """A JWKS endpoint: counts fetches, serves Cache-Control, can be slowed
    down or made to fail."""

    def __init__(self, keys, cache_control="max-age=600"):
        self.port = free_port()
        self.lock = threading.Lock()
        self.keys = list(keys)
        self.cache_control = cache_control
        self.fetches = 0
        self.delay = 0.0
        self.status = 200
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with srv.lock:
                    srv.fetches += 1
                    delay, status = srv.delay, srv.status
                    body = json.dumps({"keys": srv.keys}).encode()
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", srv.cache_control)
                if status != 200:
                    body = b'{"error":"unavailable"}'
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/jwks.json" % self.port

    def count(self):
        with self.lock:
            return self.fetches

    def set_keys(self, keys):
        with self.lock:
            self.keys = list(keys)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("jwt")
    keys = Keys("a")
    other = Keys("b")  # keys no provider knows
    idp = JwksServer(keys.public_jwks())
    down_keys = Keys("d")
    down_idp = JwksServer(down_keys.public_jwks())
    rot_keys = [Keys("r1"), Keys("r2")]
    rot_idp = JwksServer([json.loads(rot_keys[0].rsa.export_public())])
    kid_idp = JwksServer(keys.public_jwks())
    hand_keys = [Keys("h1"), Keys("h2")]
    hand_idp = JwksServer([json.loads(hand_keys[0].rsa.export_public())])
    nokid_key = jwc_jwk.JWK.generate(kty="EC", crv="P-256")  # a key without a kid
    nokid_file = work / "nokid.json"
    nokid_file.write_text(json.dumps({"keys": [json.loads(nokid_key.export_public())]}))
    file_keys = Keys("f")
    jwks_file = work / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": file_keys.public_jwks()}))
    servers = [idp, down_idp, rot_idp, kid_idp, hand_idp]
    try:
        with backend("app") as b:
            base = {"jwks_uri": idp.url, "issuer": ISS, "audiences": [AUD]}
            ident = {"claims_to_headers": {"sub": "X-User-ID", "email": "X-User-Email",
                                           "roles": "X-Roles", "admin": "X-Admin",
                                           "level": "X-Level"},
                     "groups_claim": "groups"}

            def route(name, prefix, conf):
                return {"name": name, "match": {"path_prefix": prefix}, "upstream": "app",
                        "filters": {"jwt": conf}}

            routes = [
                route("rs", "/rs", dict(base, **ident)),
                route("hs", "/hs", {"secret": SECRET, "issuer": ISS}),
                route("hs64", "/hs64", {"secret_base64": base64.b64encode(SECRET_B64_RAW).decode()}),
                route("noskew", "/noskew", {"secret": SECRET, "clock_skew": "0s"}),
                route("file", "/file", {"jwks_file": str(jwks_file)}),
                route("es-only", "/es-only", dict(base, algorithms=["ES256"])),
                route("scoped", "/scoped", dict(base, required_scopes=["read", "write"])),
                route("claims", "/claims", dict(base, required_claims=["email"])),
                route("consumer", "/consumer", dict(base, consumer_claim="client_id",
                                                    groups_claim="scope")),
                route("opt", "/opt", dict(base, optional=True, **ident)),
                route("cookie", "/cookie", dict(base, cookie="session", hide_credentials=True)),
                route("query", "/query", dict(base, query="access_token",
                                              hide_credentials=True)),
                route("hide", "/hide", dict(base, hide_credentials=True)),
                route("keep", "/keep", dict(base)),
                route("multi", "/multi", {"providers": [
                    {"secret": SECRET, "issuer": "https://a.test",
                     "claims_to_headers": {"sub": "X-A-Sub"}},
                    {"jwks_uri": idp.url, "issuer": ISS,
                     "claims_to_headers": {"sub": "X-B-Sub"}}]}),
                route("down", "/down", {"jwks_uri": down_idp.url}),
                route("kid", "/kid", {"jwks_uri": kid_idp.url}),
                route("rot", "/rot", {"jwks_uri": rot_idp.url}),
                route("hand", "/hand", {"jwks_uri": hand_idp.url}),
                route("nokid", "/nokid", {"jwks_file": str(nokid_file)}),
            ]
            cfg = make_config(free_port(), {"app": upstream(b.port)}, routes, workers=2)
            gw = Gateway(cfg, work)
            try:
                yield {"gw": gw, "b": b, "cfg": cfg, "keys": keys, "other": other, "idp": idp,
                       "down_keys": down_keys, "down_idp": down_idp, "rot_keys": rot_keys,
                       "rot_idp": rot_idp, "kid_idp": kid_idp, "file_keys": file_keys,
                       "hand_keys": hand_keys, "hand_idp": hand_idp, "nokid_key": nokid_key}
            finally:
                gw.stop()
    finally:
        for s in servers:
            s.stop()


def get(gw, path, token=None, **kw):
    kw.setdefault("timeout", scaled(10))
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    return requests.get(gw.u(path), headers=headers, **kw)


def assert_401(r, code="invalid_token"):
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert_error_response(r, 401)
    www = r.headers.get("WWW-Authenticate", "")
    if code:
        assert www == 'Bearer realm="portico", error="%s"' % code, www
        assert r.json()["error"] == code  # never which part failed
    else:
        assert www == 'Bearer realm="portico"', www


# ---------------------------------------------------------------- algorithms


@pytest.mark.parametrize("lib", ["pyjwt", "jwcrypto"])
@pytest.mark.parametrize("alg", ASYM)
def test_every_asymmetric_algorithm_verifies_from_jwks(env, alg, lib):
    gw, keys = env["gw"], env["keys"]
    r = get(gw, "/rs", mint(alg, keys.for_alg(alg), lib=lib))
    assert r.status_code == 200, (alg, lib, r.text[:300])
    assert echo_headers(r.json(), "X-Consumer-Name") == ["alice"]


@pytest.mark.parametrize("lib", ["pyjwt", "jwcrypto"])
@pytest.mark.parametrize("alg", HMAC_ALGS)
def test_every_hmac_algorithm_verifies_with_a_secret(env, alg, lib):
    gw = env["gw"]
    assert get(gw, "/hs", mint(alg, SECRET, lib=lib)).status_code == 200
    assert get(gw, "/hs64", mint(alg, SECRET_B64_RAW, lib=lib)).status_code == 200
    # the other route's secret is another key
    assert_401(get(gw, "/hs64", mint(alg, SECRET, lib=lib)))


@pytest.mark.parametrize("alg", ASYM)
def test_jwks_file_keys(env, alg):
    gw = env["gw"]
    assert get(gw, "/file", mint(alg, env["file_keys"].for_alg(alg))).status_code == 200
    # keys of the file only
    assert_401(get(gw, "/file", mint(alg, env["keys"].for_alg(alg))))


def test_algorithms_allow_list(env):
    gw, keys = env["gw"], env["keys"]
    assert get(gw, "/es-only", mint("ES256", keys.for_alg("ES256"))).status_code == 200
    assert_401(get(gw, "/es-only", mint("RS256", keys.rsa)))
    assert_401(get(gw, "/es-only", mint("ES384", keys.for_alg("ES384"))))
    # HMAC algorithms are never accepted from a JWKS provider
    assert_401(get(gw, "/rs", mint("HS256", SECRET)))


def test_secret_routes_refuse_asymmetric_tokens(env):
    assert_401(get(env["gw"], "/hs", mint("RS256", env["keys"].rsa)))


# ---------------------------------------------------------------- negative cases


def test_alg_none_refused(env):
    gw = env["gw"]
    c = claims()
    for alg in ("none", "None", "NONE"):
        t = b64u(json.dumps({"alg": alg}).encode()) + "." + b64u(json.dumps(c).encode()) + "."
        assert_401(get(gw, "/rs", t))
        assert_401(get(gw, "/hs", t))
    # alg none with a signature of a real token attached
    good = mint("RS256", env["keys"].rsa)
    t = b64u(b'{"alg":"none"}') + "." + good.split(".", 1)[1]
    assert_401(get(gw, "/rs", t))


def test_hs256_keyed_with_the_rsa_public_key_pem_refused(env):
    gw, keys = env["gw"], env["keys"]
    pem = keys.rsa.export_to_pem()  # the public key, as an IdP publishes it
    for kid in (kid_of(keys.rsa), None):
        hdr = {"alg": "HS256", "typ": "JWT"}
        if kid:
            hdr["kid"] = kid
        assert_401(get(gw, "/rs", hs_raw(hdr, claims(), pem)))
    # the JWK's JSON as the secret, and the DER, neither
    der = keys.rsa.get_op_key("verify").public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    assert_401(get(gw, "/rs", hs_raw({"alg": "HS256"}, claims(), der)))
    assert_401(get(gw, "/rs", hs_raw({"alg": "HS256"}, claims(),
                                     keys.rsa.export_public().encode())))


def test_embedded_jwk_jku_x5u_ignored(env):
    gw, other = env["gw"], env["other"]
    pub = json.loads(other.rsa.export_public())
    for h in ({"jwk": pub}, {"jku": env["idp"].url}, {"x5u": "http://127.0.0.1:1/x"}):
        assert_401(get(gw, "/rs", mint("RS256", other.rsa, headers=h)))


def test_expiry_and_not_before_with_skew(env):
    gw, keys = env["gw"], env["keys"]
    now = int(time.time())
    # skew 60s: 30 s past exp still passes, skew + 1 s does not
    assert get(gw, "/rs", mint("RS256", keys.rsa, claims(exp=now - 30))).status_code == 200
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(exp=now - 61))))
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(exp=None))))  # exp is required
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(exp="tomorrow"))))
    assert get(gw, "/rs", mint("RS256", keys.rsa, claims(nbf=now + 30))).status_code == 200
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(nbf=now + 120))))


def test_cached_token_still_expires(env):
    """A repeated token skips the signature check, never the clock."""
    gw = env["gw"]
    t = mint("HS256", SECRET, claims(exp=int(time.time()) + 2))
    for _ in range(3):
        assert get(gw, "/noskew", t).status_code == 200
    time.sleep(3.1)
    assert_401(get(gw, "/noskew", t))


def test_issuer_and_audience(env):
    gw, keys = env["gw"], env["keys"]
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(iss="https://evil.test"))))
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(iss=None))))
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(aud="other"))))
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(aud=None))))
    assert get(gw, "/rs", mint("RS256", keys.rsa, claims(aud=["x", AUD]))).status_code == 200
    assert_401(get(gw, "/rs", mint("RS256", keys.rsa, claims(aud=["x", "y"]))))


def test_bad_signature_truncated_and_garbage(env):
    gw, keys = env["gw"], env["keys"]
    good = mint("ES256", keys.for_alg("ES256"))
    h, p, s = good.split(".")
    flipped = s[:5] + ("A" if s[5] != "A" else "B") + s[6:]
    assert_401(get(gw, "/rs", ".".join([h, p, flipped])))
    assert_401(get(gw, "/rs", good[:-10]))
    assert_401(get(gw, "/rs", h + "." + p))
    assert_401(get(gw, "/rs", h + "." + p + "." + s + ".x"))
    # another payload under the same signature
    p2 = b64u(json.dumps(claims(sub="mallory")).encode())
    assert_401(get(gw, "/rs", ".".join([h, p2, s])))
    for junk in ("x", "a.b.c", "e30.e30.e30", "!!!.???.###", "\u00e9t\u00e9".encode().decode()):
        assert_401(get(gw, "/rs", junk))
    # two Bearer credentials: ambiguous, even when both are good
    req = ("GET /rs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           "Authorization: Bearer %s\r\nConnection: close\r\n\r\n" % (good, good)).encode()
    assert raw(gw.port, req).startswith(b"HTTP/1.1 401 ")


def test_missing_token_and_other_schemes(env):
    gw = env["gw"]
    assert_401(get(gw, "/rs"), code=None)
    assert_401(get(gw, "/rs", headers={"Authorization": "Basic dXNlcjpwYXNz"}), code=None)
    assert_401(get(gw, "/rs", headers={"Authorization": "Bearer"}))


def test_unknown_kid_refused_after_one_refetch(env):
    gw, idp, other = env["gw"], env["kid_idp"], env["other"]
    assert get(gw, "/kid", mint("RS256", env["keys"].rsa)).status_code == 200  # the set is loaded
    before = idp.count()
    assert before == 1
    t = mint("RS256", other.rsa)
    assert_401(get(gw, "/kid", t))
    assert idp.count() == before + 1  # it looked once
    for _ in range(5):
        assert_401(get(gw, "/kid", mint("RS256", other.rsa)))
    assert idp.count() == before + 1  # and not again within 30 s
    # a token without a kid tries the keys that can do its alg: no fetch
    assert get(gw, "/kid", mint("ES256", env["keys"].for_alg("ES256"), kid=False)).status_code == 200
    assert_401(get(gw, "/kid", mint("ES256", other.for_alg("ES256"), kid=False)))
    assert idp.count() == before + 1


def test_token_kid_with_keys_without_kid(env):
    """A secret has no kid, nor has a JWKS key that names none: a token
    naming a kid verifies with them (never with a key naming another)."""
    gw = env["gw"]
    r = get(gw, "/hs", mint("HS256", SECRET, headers={"kid": "k1"}))
    assert r.status_code == 200, r.text[:200]
    r = get(gw, "/hs64", mint("HS512", SECRET_B64_RAW, headers={"kid": "k1"}))
    assert r.status_code == 200, r.text[:200]
    r = get(gw, "/nokid", mint("ES256", env["nokid_key"], kid=False, headers={"kid": "any"}))
    assert r.status_code == 200, r.text[:200]
    assert get(gw, "/nokid", mint("ES256", env["nokid_key"], kid=False)).status_code == 200
    # a key with a kid never stands in for another kid
    assert_401(get(gw, "/file", mint("ES256", env["file_keys"].for_alg("ES256"), kid=False,
                                     headers={"kid": "p256-other"})))


def test_kid_with_nul_refused(env):
    """It would match a key's kid by its prefix."""
    gw, keys = env["gw"], env["keys"]
    t = mint("RS256", keys.rsa, kid=False, headers={"kid": kid_of(keys.rsa) + "\u0000x"})
    assert_401(get(gw, "/rs", t))
    t = mint("HS256", SECRET, headers={"kid": "k1\u0000x"})
    assert_401(get(gw, "/hs", t))


def test_huge_token(env):
    gw = env["gw"]
    huge = "a" * (64 * 1024 - 100) + ".b.c"
    r = get(gw, "/rs", huge)
    assert r.status_code in (401, 431), r.status_code
    big_claims = mint("RS256", env["keys"].rsa, claims(pad="x" * 20000))
    r = get(gw, "/rs", big_claims)
    assert r.status_code in (401, 431), r.status_code
    assert get(gw, "/rs", mint("RS256", env["keys"].rsa)).status_code == 200  # still serving


# ---------------------------------------------------------------- upstream


def test_claims_to_headers_and_identity(env):
    gw, keys = env["gw"], env["keys"]
    t = mint("RS256", keys.rsa, claims(email="a@example.com", roles=["r1", "r2"], admin=True,
                                       level=42, groups=["dev", "ops"]))
    r = get(gw, "/rs", t, headers={"X-User-ID": "mallory", "X-Admin": "true",
                                   "X-Consumer-Name": "root"})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert echo_headers(doc, "X-User-ID") == ["alice"]
    assert echo_headers(doc, "X-User-Email") == ["a@example.com"]
    assert echo_headers(doc, "X-Roles") == ["r1,r2"]
    assert echo_headers(doc, "X-Admin") == ["true"]
    assert echo_headers(doc, "X-Level") == ["42"]
    assert echo_headers(doc, "X-Consumer-Name") == ["alice"]
    assert echo_headers(doc, "X-Consumer-Groups") == ["dev,ops"]
    # the token goes upstream unless hidden
    assert echo_headers(doc, "Authorization") == ["Bearer " + t]


def test_repeated_token_gives_the_same_upstream_view(env):
    """The second and later requests come from the verified-token cache:
    they must carry exactly what the first one did."""
    gw, keys = env["gw"], env["keys"]
    t = mint("ES512", keys.for_alg("ES512"),
             claims(sub="carol", email="c@example.com", roles=["a", "b", "c"], level=7,
                    groups=["g1", "g2", "g3"]))
    names = ["X-User-ID", "X-User-Email", "X-Roles", "X-Level", "X-Admin", "X-Consumer-Name",
             "X-Consumer-Groups"]
    views = []
    for _ in range(4):
        r = get(gw, "/rs", t, headers={"X-Admin": "spoof"})
        assert r.status_code == 200
        doc = r.json()
        views.append([echo_headers(doc, n) for n in names])
    assert views[0] == [["carol"], ["c@example.com"], ["a,b,c"], ["7"], [], ["carol"],
                        ["g1,g2,g3"]]
    assert all(v == views[0] for v in views), views


def test_empty_claim_forwarded_on_cold_verify_and_cache_hit(env):
    gw, keys = env["gw"], env["keys"]
    t = mint("RS256", keys.rsa, claims(email="", roles=[]))
    views = []
    for _ in range(3):
        r = get(gw, "/rs", t)
        assert r.status_code == 200
        views.append([echo_headers(r.json(), n) for n in ("X-User-Email", "X-Roles", "X-Admin")])
    assert views[0] == [[""], [""], []], views
    assert all(v == views[0] for v in views), views


def test_bearer_followed_by_a_tab(env):
    """RFC 7235: the scheme and the credentials are separated by SP or
    HTAB."""
    gw = env["gw"]
    t = mint("HS256", SECRET)
    req = ("GET /hs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\t%s\r\n"
           "Connection: close\r\n\r\n" % t).encode()
    out = raw(gw.port, req)
    assert out.startswith(b"HTTP/1.1 200"), out[:300]


def test_duplicate_token_carriers_refused(env):
    """The gateway would verify one while the upstream may read the other."""
    gw, keys = env["gw"], env["keys"]
    t, other = mint("RS256", keys.rsa), mint("RS256", keys.rsa, claims(sub="mallory"))
    r = requests.get(gw.u("/query/x?access_token=%s&access_token=%s" % (t, other)),
                     timeout=scaled(10))
    assert_401(r, code="invalid_request")
    r = requests.get(gw.u("/cookie"), headers={"Cookie": "session=%s; session=%s" % (t, other)},
                     timeout=scaled(10))
    assert_401(r, code="invalid_request")
    req = ("GET /cookie HTTP/1.1\r\nHost: x\r\nCookie: session=%s\r\n"
           "Cookie: a=1; session=%s\r\nConnection: close\r\n\r\n" % (t, other)).encode()
    out = raw(gw.port, req)
    assert out.startswith(b"HTTP/1.1 401") and b"invalid_request" in out, out[:300]
    # one of each is fine
    assert requests.get(gw.u("/query/x?access_token=%s" % t), timeout=scaled(10)).status_code == 200


def test_spoofed_claim_headers_stripped(env):
    gw, keys = env["gw"], env["keys"]
    spoof = {"X-User-ID": "mallory", "X-Admin": "true", "X-Roles": "root"}
    # a token without those claims: the client's values never pass
    r = get(gw, "/rs", mint("RS256", keys.rsa, claims(sub="bob")), headers=spoof)
    doc = r.json()
    assert echo_headers(doc, "X-User-ID") == ["bob"]
    assert echo_headers(doc, "X-Admin") == [] and echo_headers(doc, "X-Roles") == []
    # optional, no token: stripped too
    r = get(gw, "/opt", headers=spoof)
    assert r.status_code == 200
    doc = r.json()
    assert echo_headers(doc, "X-User-ID") == [] and echo_headers(doc, "X-Admin") == []
    assert echo_headers(doc, "X-Consumer-Name") == []


def test_consumer_claim_and_space_separated_groups(env):
    gw, keys = env["gw"], env["keys"]
    r = get(gw, "/consumer", mint("ES256", keys.for_alg("ES256"),
                                  claims(client_id="mobile-app", scope="read  write")))
    doc = r.json()
    assert echo_headers(doc, "X-Consumer-Name") == ["mobile-app"]
    assert echo_headers(doc, "X-Consumer-Groups") == ["read,write"]


def test_hide_credentials_header_cookie_query(env):
    gw, keys = env["gw"], env["keys"]
    t = mint("RS256", keys.rsa)
    doc = get(gw, "/hide", t).json()
    assert echo_headers(doc, "Authorization") == []
    assert echo_headers(get(gw, "/keep", t).json(), "Authorization") == ["Bearer " + t]

    r = requests.get(gw.u("/cookie"), headers={"Cookie": "theme=dark; session=%s; lang=fr" % t},
                     timeout=scaled(10))
    assert r.status_code == 200, r.text[:200]
    assert echo_headers(r.json(), "Cookie") == ["theme=dark; lang=fr"]
    r = requests.get(gw.u("/cookie"), headers={"Cookie": "session=%s" % t}, timeout=scaled(10))
    assert r.status_code == 200 and echo_headers(r.json(), "Cookie") == []
    assert_401(requests.get(gw.u("/cookie"), headers={"Cookie": "session=garbage"},
                            timeout=scaled(10)))
    assert_401(requests.get(gw.u("/cookie"), timeout=scaled(10)), code=None)

    r = requests.get(gw.u("/query/x?a=1&access_token=%s&b=2" % t), timeout=scaled(10))
    assert r.status_code == 200, r.text[:200]
    assert r.json()["query"] == "a=1&b=2"
    r = requests.get(gw.u("/query/x?access_token=%s" % t), timeout=scaled(10))
    assert r.status_code == 200 and r.json()["query"] in ("", None)
    assert_401(requests.get(gw.u("/query/x?access_token=bad"), timeout=scaled(10)))
    # the Authorization header works on these routes too
    assert get(gw, "/query/x", t).status_code == 200


def test_required_scopes_and_claims(env):
    gw, keys = env["gw"], env["keys"]
    r = get(gw, "/scoped", mint("RS256", keys.rsa, claims(scope="read")))
    assert r.status_code == 403
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="portico", error="insufficient_scope"'
    assert r.json()["error"] == "insufficient_scope"
    assert get(gw, "/scoped", mint("RS256", keys.rsa, claims(scope="write read"))).status_code == 200
    assert get(gw, "/scoped", mint("RS256", keys.rsa, claims(scp=["read", "write"]))).status_code == 200
    # a bad token is 401 even where scopes are asked
    assert_401(get(gw, "/scoped", mint("RS256", env["other"].rsa, claims(scope="read write"))))
    assert_401(get(gw, "/claims", mint("RS256", keys.rsa)))
    assert_401(get(gw, "/claims", mint("RS256", keys.rsa, claims(email=None))))
    assert get(gw, "/claims", mint("RS256", keys.rsa, claims(email="x@y"))).status_code == 200


def test_optional(env):
    gw, keys = env["gw"], env["keys"]
    r = get(gw, "/opt")
    assert r.status_code == 200
    assert echo_headers(r.json(), "X-Consumer-Name") == []
    assert get(gw, "/opt", mint("RS256", keys.rsa)).status_code == 200
    # present but invalid is always 401
    assert_401(get(gw, "/opt", mint("RS256", env["other"].rsa)))
    assert_401(get(gw, "/opt", "garbage"))


def test_providers_first_that_verifies_wins(env):
    gw, keys = env["gw"], env["keys"]
    r = get(gw, "/multi", mint("HS256", SECRET, claims(iss="https://a.test")))
    assert r.status_code == 200
    assert echo_headers(r.json(), "X-A-Sub") == ["alice"]
    assert echo_headers(r.json(), "X-B-Sub") == []
    r = get(gw, "/multi", mint("ES384", keys.for_alg("ES384")))
    assert r.status_code == 200
    assert echo_headers(r.json(), "X-B-Sub") == ["alice"]
    assert echo_headers(r.json(), "X-A-Sub") == []
    # each provider's own issuer and keys
    assert_401(get(gw, "/multi", mint("HS256", SECRET)))  # iss of the JWKS provider
    assert_401(get(gw, "/multi", mint("RS256", keys.rsa, claims(iss="https://a.test"))))


# ---------------------------------------------------------------- JWKS


def test_jwks_fetched_once_and_cached(env):
    gw, idp, keys = env["gw"], env["idp"], env["keys"]
    get(gw, "/rs", mint("RS256", keys.rsa))
    n = idp.count()
    assert n >= 1
    for alg in ASYM * 3:
        assert get(gw, "/rs", mint(alg, keys.for_alg(alg))).status_code == 200
    assert idp.count() == n  # max-age=600: no fetch per request


def test_endpoint_down_keeps_last_good_set(env):
    gw, srv, keys = env["gw"], env["down_idp"], env["down_keys"]
    assert get(gw, "/down", mint("ES256", keys.for_alg("ES256"))).status_code == 200
    with srv.lock:
        srv.status = 503
    n = srv.count()
    # an unknown kid makes it look; the look fails; the known keys still work
    assert_401(get(gw, "/down", mint("ES256", env["other"].for_alg("ES256"))))
    assert srv.count() == n + 1
    for alg in ASYM:
        assert get(gw, "/down", mint(alg, keys.for_alg(alg))).status_code == 200
    assert "keeping the last good set" in gw.stderr_text()
    with srv.lock:
        srv.status = 200


@pytest.mark.heavy
def test_jwks_rotation_under_load(env):
    """The IdP adds a new key (old and new overlap). Client threads keep
    sending tokens of both; the first new-kid requests wait for one single
    refetch (made slow here, so that many pile up behind it): no false
    401, and exactly one fetch for the burst."""
    gw, srv, (k1, k2) = env["gw"], env["rot_idp"], env["rot_keys"]
    assert get(gw, "/rot", mint("RS256", k1.rsa)).status_code == 200
    base = srv.count()
    srv.set_keys([json.loads(k1.rsa.export_public()), json.loads(k2.rsa.export_public())])
    with srv.lock:
        srv.delay = 0.5
    results, lock = [], threading.Lock()
    start = threading.Event()

    def client(i):
        s = requests.Session()
        start.wait()
        for n in range(25):
            key = k2.rsa if (n + i) % 2 else k1.rsa
            r = s.get(gw.u("/rot"), timeout=scaled(10),
                      headers={"Authorization": "Bearer " + mint("RS256", key)})
            with lock:
                results.append((kid_of(key), r.status_code))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join()
    with srv.lock:
        srv.delay = 0.0
    bad = [r for r in results if r[1] != 200]
    assert not bad, bad[:10]
    assert len(results) == 200
    assert srv.count() == base + 1, (base, srv.count())


def test_fetch_leader_hanging_up_hands_the_fetch_over(env):
    """The request that leads an unknown-kid fetch hangs up mid-fetch: a
    request waiting for the same fetch takes it over (200 with the new
    kid, not a false 401), and later requests verify the new kid."""
    gw, srv, (k1, k2) = env["gw"], env["hand_idp"], env["hand_keys"]
    assert get(gw, "/hand", mint("RS256", k1.rsa)).status_code == 200
    base = srv.count()
    srv.set_keys([json.loads(k1.rsa.export_public()), json.loads(k2.rsa.export_public())])
    with srv.lock:
        srv.delay = 1.0
    try:
        leader = socket.create_connection(("127.0.0.1", gw.port), timeout=scaled(5))
        leader.sendall(("GET /hand HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                        % mint("RS256", k2.rsa)).encode())
        wait_until(lambda: srv.count() > base, scaled(5), what="the leader's JWKS fetch")
        result = {}

        def waiter():
            result["r"] = get(gw, "/hand", mint("RS256", k2.rsa))

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)  # the waiter is polling the flight
        leader.close()   # the leader hangs up mid-fetch
        t.join(scaled(15))
        r = result["r"]
        assert r.status_code == 200, (r.status_code, r.text[:200])
        assert srv.count() == base + 2  # the lost fetch, and the waiter's take-over
    finally:
        with srv.lock:
            srv.delay = 0.0
    assert get(gw, "/hand", mint("RS256", k2.rsa)).status_code == 200
    assert srv.count() == base + 2


def test_reload_keeps_the_jwks(env):
    """The same jwks_uri in a new generation reuses the fetched keys."""
    gw, idp, keys = env["gw"], env["idp"], env["keys"]
    assert get(gw, "/rs", mint("RS256", keys.rsa)).status_code == 200
    n = idp.count()
    gw.reload(env["cfg"])
    assert get(gw, "/rs", mint("PS512", keys.rsa)).status_code == 200
    assert idp.count() == n


# ---------------------------------------------------------------- config errors


def bad_config(tmp_path, conf):
    cfg = make_config(free_port(), {"app": upstream(free_port())},
                      [{"name": "r", "match": {"path_prefix": "/"}, "upstream": "app",
                        "filters": {"jwt": conf}}])
    rc, out = validate_errors(tmp_path, cfg)
    assert rc != 0, out
    return out


@pytest.mark.parametrize("conf,expect", [
    ({}, "a key source is required"),
    ({"jwks_uri": "http://127.0.0.1:1/j", "secret": SECRET}, "give one key source"),
    ({"jwks_uri": "http://127.0.0.1:1/j", "algorithms": ["HS256"]}, "HMAC algorithm"),
    ({"secret": SECRET, "algorithms": ["RS256"]}, "needs a public key"),
    ({"secret": "short"}, "at least 32 bytes"),
    ({"secret_base64": "!!!"}, "not valid base64"),
    ({"jwks_uri": "http://127.0.0.1:1/j", "algorithms": ["none"]}, "unknown algorithm \"none\""),
    ({"jwks_uri": "http://127.0.0.1:1/j", "algorithms": []}, "the list is empty"),
    ({"jwks_uri": "http://127.0.0.1:1/j", "clock_skew": "soon"}, "not a duration"),
    ({"jwks_uri": "ftp://x/j"}, "not an http:// or https:// URL"),
    ({"jwks_file": "/nonexistent/jwks.json"}, "cannot read"),
    ({"jwks_uri": "http://127.0.0.1:1/j", "cache_bytes": "lots"}, "not a size"),
    ({"jwks_uri": "http://127.0.0.1:1/j", "claims_to_headers": {"sub": "Bad Header"}}, "Bad Header"),
    ({"jwks_uri": "http://127.0.0.1:1/j", "providers": [{"secret": SECRET}]}, "inside its entries"),
    ({"providers": [{"secret": SECRET}, {"jwks_uri": "http://127.0.0.1:1/j",
                                         "algorithms": ["HS512"]}]}, "HMAC algorithm"),
    ({"providers": [{"jwks_uri": "http://127.0.0.1:1/j", "issuerr": "x"}]}, "issuerr"),
    ({"jwks_uri": "http://127.0.0.1:1/j", "audience": ["x"]}, "audience"),
] + [({"secret": SECRET, "claims_to_headers": {"sub": name}}, name) for name in (
    "Authorization", "cookie", "X-Consumer-Name", "x-consumer-groups", "Host", "Connection",
    "Content-Length", "Transfer-Encoding", "TE", "Upgrade", "Proxy-Authorization")])
def test_config_errors(tmp_path, conf, expect):
    out = bad_config(tmp_path, conf)
    assert expect in out, out
    assert "bad.yaml:" in out and out.split("bad.yaml:")[1].split(":")[0].isdigit(), out


def test_jwks_file_errors(tmp_path):
    p = tmp_path / "jwks.json"
    p.write_text('{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}')
    assert "no usable key" in bad_config(tmp_path, {"jwks_file": str(p)})
    p.write_text("not json")
    assert "not valid JSON" in bad_config(tmp_path, {"jwks_file": str(p)})
