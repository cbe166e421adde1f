#!/usr/bin/env bash
# What recording metrics costs the aggregator (issue: "within 3% of off"), measured side by side:
# three zero-latency backends, two aggregators over them (one with --metrics-listen, scraped
# every second while it runs, one without), both driven AT THE SAME TIME by a loadgen each (32
# callers, closed loop), so that the machine's noise falls on both alike; the ratio of calls/s
# (on / off) and of the aggregators' CPU time per call is taken in each round, and the medians
# printed. (Taking turns instead gave rounds 20% apart on this shared machine.)
#
# Usage: scripts/bench-metrics.sh [ROUNDS] [SECONDS]     (defaults: 5, 5)
#        CONTROL=1 scripts/bench-metrics.sh ...   an A/A run: metrics off on both sides, to see
#                                                what the method reads when there is no difference
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}

cargo build -q --release -p backend -p aggregator -p loadgen
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 100); do target/release/loadgen health "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }

specs=()
for i in 1 2 3; do
  port=$(free_port)
  target/release/backend --name "b$i" --listen "127.0.0.1:$port" --latency 0ms >/dev/null 2>&1 &
  pids+=($!)
  wait_up "127.0.0.1:$port"
  specs+=("--backend=b$i=http://127.0.0.1:$port")
done
start_aggregator() { # ADDR [FLAGS...]: sets AGG_PID
  local addr=$1; shift
  target/release/aggregator --listen "$addr" "${specs[@]}" --max-in-flight 100000 \
    --backend-concurrency 100000 "$@" >/dev/null 2>&1 &
  AGG_PID=$!
  pids+=("$AGG_PID")
  wait_up "$addr"
}
OFF="127.0.0.1:$(free_port)"; start_aggregator "$OFF"; OFF_PID=$AGG_PID
ON="127.0.0.1:$(free_port)"; METRICS="127.0.0.1:$(free_port)"
if [ -n "${CONTROL:-}" ]; then
  echo "(CONTROL: metrics off on both sides)"
  start_aggregator "$ON"; ON_PID=$AGG_PID
else
  start_aggregator "$ON" --metrics-listen "$METRICS"; ON_PID=$AGG_PID
  curl -sf "http://$METRICS/metrics" >/dev/null || { echo "no metrics at $METRICS" >&2; exit 1; }
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run TARGET PID: calls/s and the aggregator's CPU microseconds per call, as "calls cpu_us".
run() {
  local before after calls
  before=$(cpu_ticks "$2")
  calls=$(target/release/loadgen run --rpc aggregate --target "$1" -c 32 --threads 1 -d "${secs}s" --warmup 1s --json /dev/stdout |
    python3 -c "import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index('{'):t.rindex('}')+1])['calls_per_sec'])")
  after=$(cpu_ticks "$2")
  python3 -c "import os; hz=os.sysconf('SC_CLK_TCK'); print($calls, ($after-$before)/hz*1e6/($calls*$secs))"
}
scrape_loop() { while true; do curl -sf "http://$METRICS/metrics" >/dev/null || true; sleep 1; done; }
scrape_loop & SCRAPER=$!; pids+=("$SCRAPER")

tmp=$(mktemp -d); trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratios=(); cpu_ratios=()
echo "== metrics on vs off, driven at the same time: zero-latency backends, 32 callers each, ${secs}s per round, scraped every 1s when on"
for i in $(seq 1 "$rounds"); do
  run "$OFF" "$OFF_PID" >"$tmp/off" & a=$!
  run "$ON" "$ON_PID" >"$tmp/on" & b=$!
  wait "$a" "$b"
  read -r off_calls off_cpu <"$tmp/off"; read -r on_calls on_cpu <"$tmp/on"
  r=$(python3 -c "print(f'{$on_calls / $off_calls:.3f}')")
  c=$(python3 -c "print(f'{$on_cpu / $off_cpu:.3f}')")
  ratios+=("$r"); cpu_ratios+=("$c")
  printf 'round %d: off %.0f calls/s (%.1f us CPU/call), on %.0f calls/s (%.1f us CPU/call): calls/s on/off %s, CPU/call on/off %s\n' \
    "$i" "$off_calls" "$off_cpu" "$on_calls" "$on_cpu" "$r" "$c"
done
echo "median calls/s on/off: $(printf '%s\n' "${ratios[@]}" | median)"
echo "median CPU per call on/off: $(printf '%s\n' "${cpu_ratios[@]}" | median)"
