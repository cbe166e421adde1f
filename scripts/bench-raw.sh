#!/usr/bin/env bash
# Raw capacity: the loadgen against h2load (a C HTTP/2 load generator), both sending unary
# fanout.v1.Backend/Fetch calls to the same zero-latency backend, alternately, ROUNDS times.
# For each: calls/s, and client CPU per call (the client process's user + system time over
# the calls it completed). Prints each round and the medians of the ratios loadgen/h2load.
# Loopback only; bounded by the call count.
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

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/backend --listen "127.0.0.1:$port" --latency 0ms >/dev/null 2>&1 &
backend=$!
trap 'kill $backend 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  target/release/loadgen health "127.0.0.1:$port" >/dev/null 2>&1 && break
  sleep 0.1
done

# One gRPC message: no compression flag, 4-byte length, then FetchRequest{query: "q"}.
printf '\x00\x00\x00\x00\x03\x0a\x01\x71' >"$work/body"

# Runs a command, passes its stdout on, and writes the CPU seconds (user + system) it used
# to $work/cpu.
timed() {
  python3 -c '
import resource, subprocess, sys
out = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, check=True).stdout
sys.stdout.buffer.write(out)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{u.ru_utime + u.ru_stime}\n")
' "$work/cpu" "$@"
}

# Each prints "calls/s completed-calls".
h2load_run() {
  timed h2load -n "$calls" -c "$conns" -m "$streams" -d "$work/body" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/fanout.v1.Backend/Fetch" |
    awk '/^finished in/ {gsub(",", "", $4); rate = $4}
         /^requests:/ {done = $8; if ($10 + 0 != 0 || $12 + 0 != 0) print "h2load errors: " $0 > "/dev/stderr"}
         END {print rate, done}'
}
loadgen_run() {
  timed target/release/loadgen run --rpc fetch --target "127.0.0.1:$port" --requests "$calls" \
    --warmup 0s -c "$concurrency" --connections "$conns" --threads "${THREADS:-1}" \
    --json "$work/run.json" >/dev/null
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["calls_per_sec"], r["calls"] - r["errors"])' "$work/run.json"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

rate_ratios=() cpu_ratios=() h2load_cpus=() loadgen_cpus=()
for i in $(seq 1 "$rounds"); do
  read -r h_rate h_done < <(h2load_run)
  h_cpu=$(python3 -c "print(f'{$(cat "$work/cpu") / $h_done * 1e6:.2f}')")
  read -r l_rate l_done < <(loadgen_run)
  l_cpu=$(python3 -c "print(f'{$(cat "$work/cpu") / $l_done * 1e6:.2f}')")
  r_rate=$(python3 -c "print(f'{$l_rate / $h_rate:.3f}')")
  r_cpu=$(python3 -c "print(f'{$l_cpu / $h_cpu:.3f}')")
  rate_ratios+=("$r_rate") cpu_ratios+=("$r_cpu") h2load_cpus+=("$h_cpu") loadgen_cpus+=("$l_cpu")
  printf 'round %d: h2load %.0f calls/s, %s us CPU/call; loadgen %.0f calls/s, %s us CPU/call; ratios: calls/s %s, CPU/call %s\n' \
    "$i" "$h_rate" "$h_cpu" "$l_rate" "$l_cpu" "$r_rate" "$r_cpu"
done
printf 'medians over %d rounds (%d calls each, %d connections x %d streams):\n' \
  "$rounds" "$calls" "$conns" "$streams"
printf '  loadgen/h2load calls/s:   %s (target >= 0.85)\n' "$(printf '%s\n' "${rate_ratios[@]}" | median)"
printf '  loadgen/h2load CPU/call:  %s (target <= 1.6)\n' "$(printf '%s\n' "${cpu_ratios[@]}" | median)"
printf '  CPU/call: h2load %s us, loadgen %s us\n' \
  "$(printf '%s\n' "${h2load_cpus[@]}" | median)" "$(printf '%s\n' "${loadgen_cpus[@]}" | median)"
