#!/usr/bin/env bash
# What recording metrics costs the aggregator (issue: "within 3% of off"), measured side by side:
# three zero-latency backends, two aggregators over them (one with --metrics-listen, scraped
# every second while it runs, one without), each driven in turn by the loadgen (64 callers,
# closed loop); the ratio of calls/s (on / off) is taken in each round, alternating which side
# goes first, and the median printed. Also the aggregator's CPU time per call on each side.
#
# Usage: scripts/bench-metrics.sh [ROUNDS] [SECONDS]     (defaults: 5, 5)
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
start_aggregator "$ON" --metrics-listen "$METRICS"; ON_PID=$AGG_PID
curl -sf "http://$METRICS/metrics" >/dev/null || { echo "no metrics at $METRICS" >&2; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run TARGET PID: calls/s and the aggregator's CPU microseconds per call, as "calls cpu_us".
run() {
  local before after calls
  before=$(cpu_ticks "$2")
  calls=$(target/release/loadgen run --rpc aggregate --target "$1" -c 64 -d "${secs}s" --warmup 1s --json /dev/stdout |
    python3 -c "import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index('{'):t.rindex('}')+1])['calls_per_sec'])")
  after=$(cpu_ticks "$2")
  python3 -c "import os; hz=os.sysconf('SC_CLK_TCK'); print($calls, ($after-$before)/hz*1e6/($calls*$secs))"
}
scrape_loop() { while true; do curl -sf "http://$METRICS/metrics" >/dev/null || true; sleep 1; done; }
scrape_loop & SCRAPER=$!; pids+=("$SCRAPER")

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratios=(); cpu_ratios=()
echo "== metrics on vs off: zero-latency backends, 64 callers, ${secs}s per run, scraped every 1s when on"
for i in $(seq 1 "$rounds"); do
  if (( i % 2 )); then off=$(run "$OFF" "$OFF_PID"); on=$(run "$ON" "$ON_PID");
  else on=$(run "$ON" "$ON_PID"); off=$(run "$OFF" "$OFF_PID"); fi
  read -r off_calls off_cpu <<<"$off"; read -r on_calls on_cpu <<<"$on"
  r=$(python3 -c "print(f'{$on_calls / $off_calls:.3f}')")
  c=$(python3 -c "print(f'{$on_cpu / $off_cpu:.3f}')")
  ratios+=("$r"); cpu_ratios+=("$c")
  printf 'round %d: off %.0f calls/s (%.1f us CPU/call), on %.0f calls/s (%.1f us CPU/call): calls/s on/off %s, CPU/call on/off %s\n' \
    "$i" "$off_calls" "$off_cpu" "$on_calls" "$on_cpu" "$r" "$c"
done
echo "median calls/s on/off: $(printf '%s\n' "${ratios[@]}" | median)"
echo "median CPU per call on/off: $(printf '%s\n' "${cpu_ratios[@]}" | median)"
