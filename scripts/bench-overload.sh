#!/usr/bin/env bash
# Overload and adaptive limits (issue 17's benchmark), with `loadgen overload` on its own local
# deployments: 3 backends at 100 ms with --capacity 20 (200 calls/s), the offered load stepping
# 0.5x, 1x, 2x, 5x, 10x, fixed limits (100 per backend, 1000 admitted) beside the defaults
# (auto), then the backends 2x slower under 2x load. ROUNDS rounds; prints each round's table
# and the medians of what the benchmark asks for: at 10x with the defaults, goodput against
# capacity and admitted calls' p99 against the backends' latency; memory across the steps;
# how long the limit took to settle after the slowdown.
#
# Usage: scripts/bench-overload.sh [ROUNDS] [OUT]     (defaults: 3, out/bench-overload)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
out=${2:-out/bench-overload}
cargo build -q --release -p loadgen
mkdir -p "$(dirname "$out")"
for i in $(seq 1 "$rounds"); do
  echo "== round $i of $rounds"
  target/release/loadgen overload --json "$out-$i.json" --chart "$out-$i.svg"
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
reports = [json.load(open(f"{out}-{i}.json")) for i in range(1, rounds + 1)]
latency_ms = 100.0
def at(r, policy, multiple):
    return next(s for s in r["steps"] if s["policy"] == policy and s["multiple"] == multiple)
def med(xs):
    return statistics.median(xs)
for policy in ("fixed", "adaptive"):
    ten = [at(r, policy, 10.0) for r in reports]
    print(f"{policy} at 10x: goodput {med([s['goodput_share'] for s in ten]) * 100:.1f}% of capacity "
          f"(rounds: {', '.join(f'{s["goodput_share"] * 100:.1f}%' for s in ten)}); "
          f"admitted p99 {med([s['admitted_p99_ms'] for s in ten]) / latency_ms:.2f}x the backends' latency "
          f"(rounds: {', '.join(f'{s["admitted_p99_ms"]:.1f} ms' for s in ten)}); "
          f"shed {med([s['shed_share'] for s in ten]) * 100:.1f}%")
    rss = [[s["rss_mib"] for s in r["steps"] if s["policy"] == policy] for r in reports]
    print(f"  process RSS over its steps, per round: " + "; ".join(f"{min(x):.0f}-{max(x):.0f} MiB" for x in rss))
    slow = [s for r in reports for s in r["slowdowns"] if s["policy"] == policy]
    if slow:
        settled = [s["settled_after_s"] for s in slow]
        shown = ", ".join("never" if t is None else f"{t:.2f}s" for t in settled)
        known = [t for t in settled if t is not None]
        print(f"  slowdown: limit {med([s['limit_before'] for s in slow]):.0f} -> {med([s['limit_after'] for s in slow]):.0f}, "
              f"settled after {med(known) if len(known) == len(settled) else 'not always'} (rounds: {shown}); "
              f"admitted p99 {med([s['admitted_p99_before_ms'] for s in slow]):.0f} -> {med([s['admitted_p99_after_ms'] for s in slow]):.0f} ms; "
              f"good calls/s {med([s['goodput_before_per_sec'] for s in slow]):.0f} -> {med([s['goodput_after_per_sec'] for s in slow]):.0f}")
PY
