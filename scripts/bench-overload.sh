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
med = statistics.median
def at(r, policy, multiple):
    return next(s for s in r["steps"] if s["policy"] == policy and s["multiple"] == multiple)
print(f"\n== medians of {rounds} rounds")
for policy in ("fixed", "adaptive"):
    ten = [at(r, policy, 10.0) for r in reports]
    good = [s["goodput_share"] * 100 for s in ten]
    p99 = [s["admitted_p99_ms"] for s in ten]
    shed = [s["shed_share"] * 100 for s in ten]
    print(f"{policy} at 10x: goodput {med(good):.1f}% of capacity (rounds: "
          + ", ".join("%.1f%%" % g for g in good)
          + f"); admitted p99 {med(p99) / latency_ms:.2f}x the backends' latency (rounds: "
          + ", ".join("%.1f ms" % x for x in p99)
          + f"); shed {med(shed):.1f}%")
    rss = [[s["rss_mib"] for s in r["steps"] if s["policy"] == policy] for r in reports]
    print("  process RSS over its steps, per round: "
          + "; ".join("%.0f-%.0f MiB" % (min(x), max(x)) for x in rss))
    slow = [s for r in reports for s in r["slowdowns"] if s["policy"] == policy]
    if slow and policy == "adaptive":
        settled = [s["settled_after_s"] for s in slow]
        shown = ", ".join("never" if t is None else "%.2fs" % t for t in settled)
        known = [t for t in settled if t is not None]
        middle = "%.2fs" % med(known) if len(known) == len(settled) else "not in every round"
        print(f"  slowdown: limit {med([s['limit_before'] for s in slow]):.0f} -> "
              f"{med([s['limit_after'] for s in slow]):.0f}, settled after {middle} (rounds: {shown}); "
              f"admitted p99 {med([s['admitted_p99_before_ms'] for s in slow]):.0f} -> "
              f"{med([s['admitted_p99_after_ms'] for s in slow]):.0f} ms; good calls/s "
              f"{med([s['goodput_before_per_sec'] for s in slow]):.0f} -> "
              f"{med([s['goodput_after_per_sec'] for s in slow]):.0f}")
    elif slow:
        print(f"  slowdown: admitted p99 {med([s['admitted_p99_before_ms'] for s in slow]):.0f} -> "
              f"{med([s['admitted_p99_after_ms'] for s in slow]):.0f} ms; good calls/s "
              f"{med([s['goodput_before_per_sec'] for s in slow]):.0f} -> "
              f"{med([s['goodput_after_per_sec'] for s in slow]):.0f}")
PY
