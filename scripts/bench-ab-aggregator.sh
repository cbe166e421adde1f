#!/usr/bin/env bash
# The aggregator's cost, this checkout against another revision, in one run: three zero-latency
# backends (this checkout's), then alternately each aggregator in front of them, each round
# measuring direct Fetch calls/s and aggregate calls/s x (1 + 3) with the same loadgen (64
# callers, closed loop). Prints each round and the median ratio of each side.
#
# Usage: scripts/bench-ab-aggregator.sh REV [ROUNDS] [SECONDS]   (defaults: 3 rounds of 4 s)
# REV is built in a temporary worktree (target dir target/ab, kept for the next run).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/bench-ab-aggregator.sh REV [ROUNDS] [SECONDS]}
rounds=${2:-3}
secs=${3:-4}
top=$(pwd)
cargo build -q --release -p backend -p aggregator -p loadgen
wt=$(mktemp -d)
git worktree add -q --detach "$wt" "$rev"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  git worktree remove --force "$wt" 2>/dev/null || true
}
trap cleanup EXIT
(cd "$wt" && CARGO_TARGET_DIR="$top/target/ab" cargo build -q --release -p aggregator)
old="$top/target/ab/release/aggregator" new="$top/target/release/aggregator"
bin=target/release
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 100); do $bin/loadgen health "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }
specs=()
for i in 1 2 3; do
  port=$(free_port)
  $bin/backend --name "b$i" --listen "127.0.0.1:$port" --latency 0ms >/dev/null 2>&1 &
  pids+=($!)
  wait_up "127.0.0.1:$port"
  specs+=("--backend=b$i=http://127.0.0.1:$port")
  [ "$i" = 1 ] && direct="127.0.0.1:$port"
done
field() {
  local key=$1; shift
  $bin/loadgen run "$@" --json /dev/stdout 2>/dev/null |
    python3 -c "import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index('{'):t.rindex('}')+1])['$key'])"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratios_old=() ratios_new=()
for r in $(seq 1 "$rounds"); do
  for side in old new; do
    agg=${!side}
    port=$(free_port)
    $agg --listen "127.0.0.1:$port" "${specs[@]}" --max-in-flight 100000 --backend-concurrency 100000 >/dev/null 2>&1 &
    apid=$!
    wait_up "127.0.0.1:$port"
    d=$(field calls_per_sec --rpc fetch --target "$direct" -c 64 -d "${secs}s" --warmup 1s)
    a=$(field calls_per_sec --rpc aggregate --target "127.0.0.1:$port" -c 64 -d "${secs}s" --warmup 1s)
    ratio=$(python3 -c "print(f'{$a * 4 / $d:.3f}')")
    printf 'round %d %-3s (%s): direct %.0f calls/s, aggregate %.0f calls/s, ratio %s\n' "$r" "$side" \
      "$([ $side = old ] && echo "$rev" || echo this)" "$d" "$a" "$ratio"
    if [ "$side" = old ]; then ratios_old+=("$ratio"); else ratios_new+=("$ratio"); fi
    kill "$apid"; wait "$apid" 2>/dev/null || true
  done
done
echo "median ratio: $rev $(printf '%s\n' "${ratios_old[@]}" | median), this checkout $(printf '%s\n' "${ratios_new[@]}" | median)"
