#!/usr/bin/env bash
# Raw capacity: the loadgen against h2load (a C HTTP/2 load generator), both sending unary
# fanout.v1.Backend/Fetch calls to the same zero-latency backend, alternately, ROUNDS times.
# Prints each run and the median ratio loadgen/h2load. Loopback only; bounded by -n.
#
# The loadgen runs with --threads 1 (THREADS=N to change): h2load is one thread too.
#
# Usage: scripts/bench-raw.sh [CALLS_PER_RUN] [ROUNDS]     (defaults: 200000, 3)
set -euo pipefail
cd "$(dirname "$0")/.."

calls=${1:-200000}
rounds=${2:-3}
conns=${CONNECTIONS:-4}
streams=${STREAMS:-16}           # concurrent calls per connection
concurrency=$((conns * streams))

command -v h2load >/dev/null || { apt-get install -y nghttp2-client >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nghttp2-client >/dev/null; }; }
cargo build -q --release -p backend -p loadgen

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/backend --listen "127.0.0.1:$port" --latency 0ms >/dev/null 2>&1 &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  target/release/loadgen health "127.0.0.1:$port" >/dev/null 2>&1 && break
  sleep 0.1
done

# One gRPC message: no compression flag, 4-byte length, then FetchRequest{query: "q"}.
body=$(mktemp)
printf '\x00\x00\x00\x00\x03\x0a\x01\x71' >"$body"

h2load_rate() {
  h2load -n "$calls" -c "$conns" -m "$streams" -d "$body" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/fanout.v1.Backend/Fetch" |
    awk '/^finished in/ {gsub(",", "", $4); print $4} /^requests:/ {if ($10 + 0 != 0 || $12 + 0 != 0) print "h2load errors: " $0 > "/dev/stderr"}'
}
loadgen_rate() {
  target/release/loadgen run --rpc fetch --target "127.0.0.1:$port" --requests "$calls" \
    --warmup 0s -c "$concurrency" --connections "$conns" --threads "${THREADS:-1}" --json /dev/stdout |
    python3 -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("{"):t.rindex("}")+1])["calls_per_sec"])'
}

ratios=()
for i in $(seq 1 "$rounds"); do
  h=$(h2load_rate)
  l=$(loadgen_rate)
  r=$(python3 -c "print(f'{$l/$h:.3f}')")
  ratios+=("$r")
  printf 'round %d: h2load %.0f calls/s, loadgen %.0f calls/s, ratio %s\n' "$i" "$h" "$l" "$r"
done
printf 'median loadgen/h2load over %d rounds (%d calls each, %d connections x %d streams): %s\n' \
  "$rounds" "$calls" "$conns" "$streams" \
  "$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
