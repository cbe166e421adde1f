#!/usr/bin/env bash
# What the aggregator costs, measured with the loadgen against real processes on loopback:
#  1. overhead: p50 of an aggregate call over 3 backends at 20 ms minus the p50 of a direct
#     Fetch to one of them, both at a moderate constant rate (open loop);
#  2. cost: with zero-latency backends, aggregate calls/s x (1 + 3) against the calls/s the same
#     loadgen gets calling one backend's Fetch directly (closed loop, 64 callers).
# Each pair is measured alternately ROUNDS times; medians are printed.
#
# Usage: scripts/bench-aggregator.sh [ROUNDS] [SECONDS]     (defaults: 3, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
rate=${RATE:-200}

cargo build -q --release -p backend -p aggregator -p loadgen
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 100); do target/release/loadgen health "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }

# start_stack LATENCY: three backends and an aggregator; sets B1 and AGG.
start_stack() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
  local specs=()
  for i in 1 2 3; do
    local port; port=$(free_port)
    target/release/backend --name "b$i" --listen "127.0.0.1:$port" --latency "$1" >/dev/null 2>&1 &
    pids+=($!)
    wait_up "127.0.0.1:$port"
    specs+=("--backend=b$i=http://127.0.0.1:$port")
    [ "$i" = 1 ] && B1="127.0.0.1:$port"
  done
  local port; port=$(free_port)
  target/release/aggregator --listen "127.0.0.1:$port" "${specs[@]}" --max-in-flight 100000 \
    --backend-concurrency 100000 >/dev/null 2>&1 &
  pids+=($!)
  AGG="127.0.0.1:$port"
  wait_up "$AGG"
}

# field JSON_KEY ARGS...: one loadgen run, printing one number from its JSON report.
field() {
  local key=$1; shift
  target/release/loadgen run "$@" --json /dev/stdout |
    python3 -c "import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index('{'):t.rindex('}')+1])['$key'])"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== overhead: p50 at $rate calls/s, 20 ms backends, ${secs}s per run"
start_stack 20ms
overheads=()
for i in $(seq 1 "$rounds"); do
  direct=$(field p50_ms --rpc fetch --target "$B1" --rate "$rate" -d "${secs}s" --warmup 1s)
  agg=$(field p50_ms --rpc aggregate --target "$AGG" --rate "$rate" -d "${secs}s" --warmup 1s)
  o=$(python3 -c "print(f'{$agg - $direct:.3f}')")
  overheads+=("$o")
  echo "round $i: aggregate p50 ${agg} ms, direct fetch p50 ${direct} ms, overhead ${o} ms"
done
echo "median overhead: $(printf '%s\n' "${overheads[@]}" | median) ms"

echo "== cost: zero-latency backends, 64 callers, ${secs}s per run"
start_stack 0ms
ratios=()
for i in $(seq 1 "$rounds"); do
  direct=$(field calls_per_sec --rpc fetch --target "$B1" -c 64 -d "${secs}s" --warmup 1s)
  agg=$(field calls_per_sec --rpc aggregate --target "$AGG" -c 64 -d "${secs}s" --warmup 1s)
  r=$(python3 -c "print(f'{$agg * 4 / $direct:.3f}')")
  ratios+=("$r")
  printf 'round %d: aggregate %.0f calls/s (x4 = %.0f RPCs/s), direct fetch %.0f calls/s, ratio %s\n' \
    "$i" "$agg" "$(python3 -c "print($agg*4)")" "$direct" "$r"
done
echo "median aggregate x (1 + 3) / direct: $(printf '%s\n' "${ratios[@]}" | median)"
