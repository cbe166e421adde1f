#!/usr/bin/env bash
# Replicas, measured with the loadgen against real processes on loopback: one backend name `b`
# with three replicas behind an aggregator, an open loop of RATE calls/s (latency counted from
# each call's scheduled start), ROUNDS rounds of each scenario:
#  1. equal: three 10 ms replicas; each one's share of the calls (from the aggregator's Stats);
#  2. slow: one of the three at 100 ms (10x); its share, and the aggregate p99 against the
#     all-healthy p99 of the same round;
#  3. kill: three 10 ms replicas, one killed (SIGKILL) 5 s into a 20 s run and restarted at the
#     same address 5 s later: whole-call failures, calls in which the backend failed, and how
#     long after its restart the replica served a call again (its own Stats).
#
# Usage: scripts/bench-replicas.sh [ROUNDS] [RATE]     (defaults: 3, 600)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
rate=${2:-600}
command -v grpcurl >/dev/null || scripts/install-grpcurl.sh >/dev/null
cargo build -q --release -p backend -p aggregator -p loadgen
bin=target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 100); do $bin/loadgen health "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }
work=$(mktemp -d)

# start LATENCY...: one backend process per latency, an aggregator over them as `b`.
# Sets PORTS (the replicas'), RPIDS and AGG.
start() {
  cleanup; pids=(); PORTS=(); RPIDS=()
  local specs=()
  for lat in "$@"; do
    local port; port=$(free_port)
    $bin/backend --name b --listen "127.0.0.1:$port" --latency "$lat" >/dev/null 2>&1 &
    pids+=($!); RPIDS+=($!); PORTS+=("$port")
    specs+=("--backend=b=http://127.0.0.1:$port")
  done
  for p in "${PORTS[@]}"; do wait_up "127.0.0.1:$p"; done
  local port; port=$(free_port)
  $bin/aggregator --listen "127.0.0.1:$port" "${specs[@]}" --max-in-flight 100000 \
    --backend-concurrency 100000 >"$work/agg.log" 2>&1 &
  pids+=($!)
  AGG="127.0.0.1:$port"
  wait_up "$AGG"
}
# served: each endpoint's served count, space-separated, in configuration order.
served() {
  grpcurl -plaintext "$AGG" fanout.v1.Aggregator/Stats |
    python3 -c 'import json,sys; print(" ".join(str(e.get("served", 0)) for e in json.load(sys.stdin)["endpoints"]))'
}
# load SECONDS OUT.json: an open loop at the rate.
load() {
  $bin/loadgen run --rpc aggregate --target "$AGG" --rate "$rate" -c 1000 -d "$1s" --warmup 1s --json "$2" >/dev/null
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
shares() { # BEFORE AFTER -> percentages
  python3 -c '
import sys
b = [int(x) for x in sys.argv[1].split()]; a = [int(x) for x in sys.argv[2].split()]
d = [y - x for x, y in zip(b, a)]; t = sum(d) or 1
print(" ".join(f"{100*x/t:.1f}" for x in d))' "$1" "$2"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

deviations=() slow_shares=() p99_ratios=() failures=() degraded=() backs=()
for r in $(seq 1 "$rounds"); do
  echo "== round $r"
  start 10ms 10ms 10ms
  before=$(served); load 10 "$work/equal.json"; after=$(served)
  s=$(shares "$before" "$after")
  dev=$(python3 -c "import sys; print(f'{max(abs(float(x)-100/3) for x in sys.argv[1:]):.1f}')" $s)
  healthy_p99=$(field "$work/equal.json" p99_ms)
  echo "equal:  shares ${s// /% }% (furthest from a third: $dev points); p99 ${healthy_p99} ms"
  deviations+=("$dev")

  start 10ms 10ms 100ms
  before=$(served); load 10 "$work/slow.json"; after=$(served)
  s=$(shares "$before" "$after"); slow=${s##* }
  p99=$(field "$work/slow.json" p99_ms)
  ratio=$(python3 -c "print(f'{$p99 / $healthy_p99:.2f}')")
  echo "slow:   shares ${s// /% }% (the 100 ms replica ${slow}%); p99 ${p99} ms = ${ratio}x the healthy p99"
  slow_shares+=("$slow"); p99_ratios+=("$ratio")

  start 10ms 10ms 10ms
  load 20 "$work/kill.json" &
  lpid=$!
  sleep 6 # 1 s of warm-up, then 5 s
  victim=${RPIDS[2]}; vport=${PORTS[2]}
  kill -9 "$victim"
  sleep 5
  $bin/backend --name b --listen "127.0.0.1:$vport" --latency 10ms >/dev/null 2>&1 &
  pids+=($!)
  restarted=$(date +%s.%N)
  back=""
  for _ in $(seq 1 100); do
    n=$(grpcurl -plaintext "127.0.0.1:$vport" fanout.v1.Backend/Stats 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("served", 0))' 2>/dev/null || echo 0)
    if [ "${n:-0}" -gt 0 ]; then back=$(python3 -c "import time; print(f'{time.time() - $restarted:.2f}')"); break; fi
    sleep 0.1
  done
  wait "$lpid"
  calls=$(field "$work/kill.json" calls); errors=$(field "$work/kill.json" errors)
  deg=$(field "$work/kill.json" degraded)
  pct=$(python3 -c "print(f'{100 * $deg / max($calls, 1):.2f}')")
  echo "kill:   $calls calls, $errors failed as a whole, $deg ($pct%) with the backend failed; the restarted replica served again after ${back:-never} s"
  failures+=("$errors"); degraded+=("$pct"); backs+=("${back:-999}")
done
echo "== medians over $rounds rounds at $rate calls/s"
echo "equal replicas: furthest share from a third: $(printf '%s\n' "${deviations[@]}" | median) points (target <= 3)"
echo "one replica 10x slower: its share $(printf '%s\n' "${slow_shares[@]}" | median)% (target <= 10); p99 $(printf '%s\n' "${p99_ratios[@]}" | median)x healthy (target <= 1.5)"
echo "one replica killed: whole-call failures $(printf '%s\n' "${failures[@]}" | median) (target 0), backend failed in $(printf '%s\n' "${degraded[@]}" | median)% of calls (target <= 0.5), serving again after $(printf '%s\n' "${backs[@]}" | median) s (target <= 2)"
