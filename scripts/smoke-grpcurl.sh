#!/usr/bin/env bash
# Runs the grpcurl examples of README.md and docs/*.md against real servers started from this
# checkout's binaries and checks what they print. Every `grpcurl` line of those files must appear
# below verbatim, so the documentation cannot drift from what CI runs.
#
# Usage: scripts/smoke-grpcurl.sh [BIN_DIR]   (default: target/debug, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/debug}
[ -x "$bin/backend" ] && [ -x "$bin/aggregator" ] || cargo build -q -p backend -p aggregator
command -v grpcurl >/dev/null || { echo "grpcurl not found: run scripts/install-grpcurl.sh" >&2; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
logs=$(mktemp -d)

fail() { echo "SMOKE FAIL: $*" >&2; echo "--- server logs:" >&2; tail -n 20 "$logs"/* >&2 || true; exit 1; }

# expect PATTERN -- COMMAND...: runs COMMAND, which must succeed and print PATTERN.
expect() {
  local pattern=$1; shift 2
  local out
  out=$("$@" 2>&1) || fail "'$*' exited non-zero:
$out"
  grep -qE -- "$pattern" <<<"$out" || fail "'$*' did not print /$pattern/:
$out"
  echo "ok: $*"
}
# expect_error CODE -- COMMAND...: runs COMMAND, which must fail with gRPC code CODE.
expect_error() {
  local code=$1; shift 2
  local out
  if out=$("$@" 2>&1); then fail "'$*' succeeded, expected $code:
$out"; fi
  grep -q "Code: $code" <<<"$out" || fail "'$*' did not fail with $code:
$out"
  echo "ok (fails with $code): $*"
}

serving() { # ADDR: the server at ADDR answers health with SERVING (plaintext)
  grpcurl -plaintext "$1" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING
}
tls_serving() { # ADDR: the same over mTLS with the certificates of ./certs
  grpcurl -cacert certs/ca.pem -cert certs/client.pem -key certs/client-key.pem "$1" \
    grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING
}

# start LOG PROBE ADDR -- COMMAND...: starts a server in the background and waits (10 s) until
# `PROBE ADDR` succeeds; its PID is left in $started. The README's fixed ports (50051, 50061...)
# lie in Linux's ephemeral range (32768-60999): a client's outgoing connection elsewhere on the
# machine can hold one for a moment, and the server then exits with "Address already in use".
# Such a start is tried again every 0.5 s for 20 s; any other early exit fails at once.
started=
start() {
  local log=$1 probe=$2 addr=$3; shift 4
  local deadline=$((SECONDS + 20))
  while :; do
    "$@" >"$log" 2>&1 &
    started=$!
    pids+=("$started")
    for _ in $(seq 1 100); do
      "$probe" "$addr" && return 0
      kill -0 "$started" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$started" 2>/dev/null && fail "'$*' runs but did not answer health on $addr in 10 s"
    grep -q "Address already in use" "$log" || fail "'$*' exited at start: $(tail -n 5 "$log")"
    if ((SECONDS >= deadline)); then
      fail "'$*': $addr stayed in use for 20 s; its holders: $(ss -Htanp 2>/dev/null | grep -F ":${addr##*:} " | head -n 5)"
    fi
    echo "note: $addr is in use for now ($(grep -m1 "Address already in use" "$log")); starting again in 0.5 s" >&2
    sleep 0.5
  done
}

# --- the backend, as the README starts it -------------------------------------------------
start "$logs/backend.log" serving localhost:50061 -- \
  "$bin/backend" --name alpha --latency 'lognormal:p50=20ms,p99=200ms' --allow-overrides

expect 'fanout.v1.Backend' -- grpcurl -plaintext localhost:50061 list
expect 'rpc Fetch' -- grpcurl -plaintext localhost:50061 describe fanout.v1.Backend
expect '"backend": "alpha"' -- grpcurl -plaintext -d '{"query": "weather in Oslo"}' localhost:50061 fanout.v1.Backend/Fetch
expect '"mode": "MODE_BLOCKING"' -- grpcurl -plaintext -d '{"query": "slow one", "delay_ms": 300, "mode": "MODE_BLOCKING"}' localhost:50061 fanout.v1.Backend/Fetch
expect 'x-process-time' -- grpcurl -plaintext -v -d '{"query": "timed"}' localhost:50061 fanout.v1.Backend/Fetch
expect '"status": "SERVING"' -- grpcurl -plaintext -d '{"service": "fanout.v1.Backend"}' localhost:50061 grpc.health.v1.Health/Check
expect '"served"' -- grpcurl -plaintext localhost:50061 fanout.v1.Backend/Stats
expect_error InvalidArgument -- grpcurl -plaintext -d '{"delay_ms": 36000000}' localhost:50061 fanout.v1.Backend/Fetch

# --- the aggregator, as the README starts it (alpha from above still running) --------------
start "$logs/slow.log" serving localhost:50062 -- \
  "$bin/backend" --name slow --listen 127.0.0.1:50062 --latency 'tail:100ms,p=0.1,3s'
start "$logs/flaky.log" serving localhost:50063 -- \
  "$bin/backend" --name flaky --listen 127.0.0.1:50063 --latency 30ms --fail-rate 0.5
start "$logs/aggregator.log" serving localhost:50051 -- \
  "$bin/aggregator" --backend alpha=http://127.0.0.1:50061 --backend slow=http://127.0.0.1:50062 \
  --backend flaky=http://127.0.0.1:50063 --backend down=http://127.0.0.1:50069 \
  --allow-overrides --cache-ttl 30s
plain_aggregator=$started

expect 'fanout.v1.Aggregator' -- grpcurl -plaintext localhost:50051 list
expect 'rpc AggregateStream' -- grpcurl -plaintext localhost:50051 describe fanout.v1.Aggregator
expect '"codeName": "UNAVAILABLE"' -- grpcurl -plaintext -d '{"query": "weather in Oslo"}' localhost:50051 fanout.v1.Aggregator/Aggregate
expect '"fromCache": true' -- grpcurl -plaintext -d '{"query": "weather in Oslo"}' localhost:50051 fanout.v1.Aggregator/Aggregate
expect '"summary"' -- grpcurl -plaintext -d '{"query": "weather in Oslo", "no_cache": true}' localhost:50051 fanout.v1.Aggregator/AggregateStream
expect '"timedOut": [1-9]' -- grpcurl -plaintext -d '{"query": "news", "deadline_ms": 50}' localhost:50051 fanout.v1.Aggregator/Aggregate
expect '"elapsedMs"' -- grpcurl -plaintext -d '{"query": "news", "fanout": "FANOUT_SEQUENTIAL", "no_cache": true}' localhost:50051 fanout.v1.Aggregator/Aggregate
expect_error InvalidArgument -- grpcurl -plaintext -d '{"query": "x", "backends": ["nope"]}' localhost:50051 fanout.v1.Aggregator/Aggregate
expect '"cleared"' -- grpcurl -plaintext localhost:50051 fanout.v1.Aggregator/ClearCache
expect '"backendAttempts"' -- grpcurl -plaintext localhost:50051 fanout.v1.Aggregator/Stats
# One endpoint per backend here, the dead one among them.
expect '"address": "127.0.0.1:50069"' -- grpcurl -plaintext localhost:50051 fanout.v1.Aggregator/Stats
expect '"status": "SERVING"' -- grpcurl -plaintext -d '{"service": "fanout.v1.Aggregator"}' localhost:50051 grpc.health.v1.Health/Check

# The stream lists results in completion order: each result's latency is at least the last's.
out=$(grpcurl -plaintext -d '{"query": "order", "no_cache": true}' localhost:50051 fanout.v1.Aggregator/AggregateStream)
latencies=$(grep -oE '"latencyMs": [0-9.e+-]+' <<<"$out" | awk '{print $2}')
[ "$(wc -l <<<"$latencies")" = 4 ] || fail "expected 4 results in the stream: $out"
sort -g -c <<<"$latencies" || fail "stream results not in completion order: $latencies"
echo "ok: AggregateStream yields results in completion order"

# --- TLS on every hop, as docs/security.md ("TLS") starts it ---------------------------------
# Certificates from scripts/make-certs.sh (openssl) in ./certs; mTLS on both servers. The
# plaintext aggregator makes way: the TLS one takes the default port, as in the README.
kill "$plain_aggregator"; wait "$plain_aggregator" 2>/dev/null || true
scripts/make-certs.sh certs >/dev/null
start "$logs/secure.log" tls_serving 127.0.0.1:50071 -- \
  "$bin/backend" --name secure --listen 127.0.0.1:50071 --tls-cert certs/server.pem --tls-key certs/server-key.pem \
  --tls-client-ca certs/ca.pem
start "$logs/aggregator-tls.log" tls_serving localhost:50051 -- \
  "$bin/aggregator" --backend secure=https://127.0.0.1:50071 \
  --tls-ca certs/ca.pem --tls-client-cert certs/client.pem --tls-client-key certs/client-key.pem \
  --tls-cert certs/server.pem --tls-key certs/server-key.pem --tls-client-ca certs/ca.pem

expect '"backend": "secure"' -- grpcurl -cacert certs/ca.pem -cert certs/client.pem -key certs/client-key.pem -d '{"query": "weather in Oslo"}' localhost:50051 fanout.v1.Aggregator/Aggregate
expect 'fanout.v1.Backend' -- grpcurl -cacert certs/ca.pem -cert certs/client.pem -key certs/client-key.pem 127.0.0.1:50071 list
# Without a client certificate the mTLS server refuses the handshake: no call at all.
if out=$(grpcurl -connect-timeout 2 -cacert certs/ca.pem -d '{"query": "no client certificate"}' localhost:50051 fanout.v1.Aggregator/Aggregate 2>&1); then
  fail "a client without a certificate was served by the mTLS aggregator: $out"
fi
grep -q "peer sent no certificates" "$logs/aggregator-tls.log" || fail "the aggregator did not log the refused handshake"
echo "ok (refused): grpcurl without a client certificate"
# Plaintext to a TLS server: refused too.
if out=$(grpcurl -plaintext -connect-timeout 2 localhost:50051 list 2>&1); then
  fail "plaintext was served by the TLS aggregator: $out"
fi
echo "ok (refused): plaintext to the TLS aggregator"

# --- the documentation shows nothing this script does not run ------------------------------
missing=0
while IFS=: read -r file line; do
  grep -qF -- "$line" "$0" || { echo "$file: example not smoke-checked: $line" >&2; missing=1; }
done < <(grep -E '^grpcurl ' README.md docs/*.md | sed -E 's/ +#.*$//')
[ "$missing" = 0 ] || fail "the documentation has grpcurl examples this script does not run"

echo "grpcurl smoke: all documented examples passed"
