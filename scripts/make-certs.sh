#!/usr/bin/env bash
# Makes a private CA and the certificates fanout's TLS needs, with the openssl command (Debian's
# `openssl` package; no OpenSSL library is linked into fanout, which speaks TLS with rustls):
#
#   ca.pem, ca-key.pem          a CA of your own (10 years): what --tls-ca and --tls-client-ca trust
#   server.pem, server-key.pem  the servers' certificate (1 year), for every name they are called
#                               by: the compose services, localhost, 127.0.0.1, and FANOUT_CERT_NAMES
#   client.pem, client-key.pem  a client certificate (1 year), for mTLS: the aggregator calling its
#                               backends, the loadgen, grpcurl (-cert/-key)
#
#   scripts/make-certs.sh [DIR]          # default ./certs; an existing DIR is left alone
#   FANOUT_CERT_NAMES="api.example.com,10.0.0.5" scripts/make-certs.sh   # more names for the servers
#   FORCE=1 scripts/make-certs.sh        # make them again
#
# Why openssl and not a Rust tool: the certificates are for operators, who know the command and
# can read (and redo with their own CA) every step below; it is on every Linux and macOS, and it
# needs no build. The tests make their own certificates at test time instead (rcgen).
#
# These are demonstration files: the keys are left readable by all (0644) so that the containers,
# which run as uid 10001, can read them from a bind mount. For a real deployment, issue the
# certificates from your own CA and give each service its own key, readable by that service only.
set -euo pipefail

dir=${1:-certs}
names=${FANOUT_CERT_NAMES:-}
command -v openssl >/dev/null || { echo "make-certs: openssl not found (apt-get install openssl)" >&2; exit 1; }

if [ -e "$dir/ca.pem" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "make-certs: $dir/ca.pem exists; leaving $dir alone (FORCE=1 makes new ones)"
  exit 0
fi
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Every name the servers answer to: the compose services (backend-* are the backends), the
# aggregator, and loopback for healthchecks and the host.
sans="DNS:localhost,DNS:aggregator,DNS:backend,DNS:backend-fast,DNS:backend-slow,DNS:backend-flaky,IP:127.0.0.1,IP:::1"
IFS=',' read -ra extra <<<"$names"
for n in "${extra[@]}"; do
  n=${n// /}
  [ -z "$n" ] && continue
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then sans="$sans,IP:$n"; else sans="$sans,DNS:$n"; fi
done

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA.
key "$work/ca-key.pem"
cat >"$work/ca.ext" <<'EOF'
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
openssl req -new -key "$work/ca-key.pem" -subj "/CN=fanout demo CA" -out "$work/ca.csr"
openssl x509 -req -in "$work/ca.csr" -signkey "$work/ca-key.pem" -days 3650 -sha256 \
  -extfile "$work/ca.ext" -out "$work/ca.pem" 2>/dev/null

# LEAF NAME CN SANS USAGE: a certificate signed by the CA.
leaf() {
  local name=$1 cn=$2 san=$3 usage=$4
  key "$work/$name-key.pem"
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature"
    echo "extendedKeyUsage = $usage"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid"
    [ -n "$san" ] && echo "subjectAltName = $san"
  } >"$work/$name.ext"
  openssl req -new -key "$work/$name-key.pem" -subj "/CN=$cn" -out "$work/$name.csr"
  openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -CAcreateserial -days 365 -sha256 -extfile "$work/$name.ext" -out "$work/$name.pem" 2>/dev/null
}
leaf server "fanout server" "$sans" "serverAuth"
leaf client "fanout client" "DNS:fanout-client" "clientAuth"

for f in ca ca-key server server-key client client-key; do
  install -m 0644 "$work/$f.pem" "$dir/$f.pem"
done
openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" "$dir/client.pem" >/dev/null
echo "make-certs: wrote $dir/{ca,server,client}.pem and their keys; the servers answer to: $sans"
