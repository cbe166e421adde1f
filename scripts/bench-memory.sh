#!/usr/bin/env bash
# Memory: the loadgen's resident set size over a long run (CALLS unary Fetch calls against a
# zero-latency backend on loopback), sampled every half second. HDR histograms and per-worker
# stats mean memory should not grow with the number of calls. Prints the samples' summary.
#
# Usage: scripts/bench-memory.sh [CALLS]     (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-1000000}

cargo build -q --release -p backend -p loadgen
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/backend --listen "127.0.0.1:$port" --latency 0ms >/dev/null 2>&1 &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do target/release/loadgen health "127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done

out=$(mktemp)
target/release/loadgen run --rpc fetch --target "127.0.0.1:$port" --requests "$calls" --warmup 0s \
  -c 64 --connections 4 >"$out" 2>&1 &
lg=$!
samples=()
while kill -0 "$lg" 2>/dev/null; do
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$lg/status" 2>/dev/null || true)
  [ -n "$rss" ] && samples+=("$rss")
  sleep 0.5
done
wait "$lg"
grep -E '^(calls|latency)' "$out"
n=${#samples[@]}
printf 'loadgen RSS over %d samples (KiB): first %s, at 25%% %s, at 50%% %s, at 75%% %s, last %s, max %s\n' \
  "$n" "${samples[0]}" "${samples[$((n / 4))]}" "${samples[$((n / 2))]}" "${samples[$((3 * n / 4))]}" \
  "${samples[$((n - 1))]}" "$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)"
