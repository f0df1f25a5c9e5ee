#!/usr/bin/env bash
# Makes the demo certificates examples/edge.yaml uses, with the openssl CLI:
# a demo CA, a server certificate for localhost / 127.0.0.1 (ECDSA P-256),
# and a client certificate for the consumer "alice" (CN alice, URI SAN
# spiffe://demo.portico/alice). For trying portico on one machine only:
# the keys are made here, never shipped. Idempotent: existing files stay.
#
# Usage: scripts/demo-certs.sh [DIR]   (default examples/certs)
set -eu
dir=${1:-"$(dirname "$0")/../examples/certs"}
mkdir -p "$dir"
cd "$dir"
[ -s server.pem ] && [ -s alice.pem ] && [ -s ca.pem ] && exit 0
umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days 825 -subj "/CN=portico demo CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
leaf() { # name subject extensions
    key "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
leaf server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf alice "/CN=alice" "subjectAltName=URI:spiffe://demo.portico/alice
extendedKeyUsage=clientAuth"
chmod 644 ca.pem server.pem alice.pem
echo "demo certificates in $(pwd): ca.pem, server.pem/.key, alice.pem/.key"
