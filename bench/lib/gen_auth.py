#!/usr/bin/python3
"""Key material, tokens and the portico config of issue 15's bench section
(bench/lib/auth.sh).

  gen_auth.py material DIR SLICES RS_PER_SLICE ES_PER_SLICE
      Into DIR (a cache kept between runs, beside the build): an RSA 2048
      and an EC P-256 key pair (kid "bench-rs" and "bench-es"), jwks.json
      with both public keys, their public PEMs (for HAProxy's jwt_verify),
      one token of each algorithm for the repeated-token rows (rs256.one,
      es256.one), one more with its signature's last character changed
      (rs256.bad, es256.bad, for the start-up check that a bad token is
      refused), and SLICES files of unique tokens per algorithm
      (rs256-<i>.tokens, es256-<i>.tokens, i = 0 … SLICES-1; one token a
      line, every token distinct). Tokens are minted with python3-jwt,
      expire in 2100 and carry iss, aud, sub, iat and a unique jti. The
      consumers' API keys (1,000, one each) go to api_keys.txt.

      Signing is the slow part (RSA: ~3,000 tokens/s here), so nothing is
      redone when DIR's stamp already records these parameters.

  gen_auth.py config TEMPLATE OUT FEATURES NAME=VALUE...
      Writes the portico config from TEMPLATE: blocks between
      "# @IF_<FEATURE>@" and "# @END_<FEATURE>@" lines are kept when
      FEATURE (lower case) is in the comma-separated FEATURES, dropped
      otherwise (blocks nest); "@CONSUMERS@" becomes the consumers list (from
      NAME=VALUE's DIR/api_keys.txt); other @NAME@ placeholders are
      filled in as by fill.py, and one left over is an error.
"""
import json
import os
import re
import sys
import time

N_CONSUMERS = 1000
ISSUER = "https://idp.bench"
AUDIENCE = "bench"
EXP = 4102444800  # 2100-01-01: the cached material stays valid
STAMP_VERSION = "1"


def _b64url_uint(n, size=None):
    """RFC 7518 §6: big-endian, minimal length (RSA) or the curve's fixed size (EC)."""
    import base64
    raw = n.to_bytes(size or (n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _pub_jwk(key, kid, alg):
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "kid": kid, "alg": alg, "use": "sig",
                "n": _b64url_uint(nums.n), "e": _b64url_uint(nums.e)}
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    nums = pub.public_numbers()
    return {"kty": "EC", "kid": kid, "alg": alg, "use": "sig", "crv": "P-256",
            "x": _b64url_uint(nums.x, 32), "y": _b64url_uint(nums.y, 32)}


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def material(d, slices, rs_n, es_n):
    import jwt
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    want = "v=%s slices=%d rs=%d es=%d consumers=%d" % (STAMP_VERSION, slices, rs_n, es_n, N_CONSUMERS)
    stamp = os.path.join(d, "stamp")
    if os.path.exists(stamp) and open(stamp).read().strip() == want:
        print("reused")
        return
    os.makedirs(d, exist_ok=True)
    if os.path.exists(stamp):
        os.unlink(stamp)
    t0 = time.time()
    keys = (("rs256", "RS256", "bench-rs", rsa.generate_private_key(public_exponent=65537, key_size=2048), rs_n),
            ("es256", "ES256", "bench-es", ec.generate_private_key(ec.SECP256R1()), es_n))
    jwks = {"keys": [_pub_jwk(k, kid, alg) for _, alg, kid, k, _ in keys]}
    _write(os.path.join(d, "jwks.json"), json.dumps(jwks, indent=2) + "\n")
    now = int(time.time())
    for name, alg, kid, key, per_slice in keys:
        _write(os.path.join(d, name + ".pub.pem"),
               key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))

        def mint(sub, jti):
            claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": EXP, "jti": jti}
            return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

        one = mint("user-repeat", "%s-repeat" % name)
        _write(os.path.join(d, name + ".one"), one + "\n")
        # A bad signature of the same length: a character in its middle
        # changed (the last one may hold only padding bits, which a lenient
        # base64url decoder ignores: the signature would still be good).
        k = len(one) - 10
        _write(os.path.join(d, name + ".bad"), one[:k] + ("A" if one[k] != "A" else "B") + one[k + 1:] + "\n")
        for s in range(slices):
            toks = [mint("user-%06d" % (i % 100000), "%s-%d-%d" % (name, s, i)) for i in range(per_slice)]
            _write(os.path.join(d, "%s-%d.tokens" % (name, s)), "\n".join(toks) + "\n")
    import secrets
    _write(os.path.join(d, "api_keys.txt"),
           "".join("bk-%04d-%s\n" % (i, secrets.token_hex(16)) for i in range(N_CONSUMERS)))
    _write(stamp, want + "\n")
    print("generated in %.0f s" % (time.time() - t0))


def config(template, out, features, pairs):
    feats = set(f for f in features.split(",") if f)
    text = open(template).read()

    def block(m):
        return m.group(2) if m.group(1).lower() in feats else ""
    pat = re.compile(r"^[ \t]*# @IF_([A-Z0-9_]+)@\n(.*?)^[ \t]*# @END_\1@\n", flags=re.S | re.M)
    while True:  # blocks nest: resolve the outer ones, then what they kept
        text, n = pat.subn(block, text)
        if not n:
            break
    vals = dict(p.split("=", 1) for p in pairs)
    if "@CONSUMERS@" in text:
        keys = open(os.path.join(vals["DIR"], "api_keys.txt")).read().split()
        text = text.replace("@CONSUMERS@", "\n".join(
            "  - {name: consumer-%04d, groups: [group-%d], api_keys: [\"%s\"]}" % (i, i % 10, k)
            for i, k in enumerate(keys)))
    for name, value in vals.items():
        text = text.replace("@%s@" % name, value)
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        sys.exit("gen_auth.py: %s: no value for %s" % (template, ", ".join(left)))
    _write(out, text)


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "material":
        material(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) >= 5 and sys.argv[1] == "config":
        config(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
