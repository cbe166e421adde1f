#!/usr/bin/env bash
# The resilience matrix (issue 21, part 3), with `loadgen resilience` on its own local
# deployments: 12 scenarios (healthy at 50% and 80% of capacity, a cold start, a heavy tail, a
# replica 10x slower, a replica killed, a silent and a refusing backend, a latency doubling,
# 20% failures, 10x overload, blocking backends at 2x) under 4 configurations (defaults, fixed,
# off, defaults+hedge), DURATION per cell. Writes the JSON and the heatmap, prints the table and
# the rules; then, per scenario, the defaults' goodput against the best configuration's, and how
# long the whole run took.
#
# Usage: scripts/bench-resilience.sh [DURATION] [OUT]     (defaults: 3s, out/bench-resilience)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-3s}
out=${2:-out/bench-resilience}
cargo build -q --release -p loadgen
mkdir -p "$(dirname "$out")"
target/release/loadgen resilience -d "$duration" --json "$out.json" --chart "$out.svg"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
report = json.load(open(f"{out}.json"))
cells = report["cells"]
rows = list(dict.fromkeys(c["scenario"] for c in cells))
print(f"\n== the defaults against the best configuration of each scenario")
for row in rows:
    in_row = [c for c in cells if c["scenario"] == row]
    best = max(in_row, key=lambda c: c["goodput_per_s"])
    d = next((c for c in in_row if c["config"] == "defaults"), None)
    if d is None:
        continue
    share = d["goodput_per_s"] / best["goodput_per_s"] if best["goodput_per_s"] else 1.0
    lost = sum(d["errors"].values()) + d["unanswered"]
    print(f"  {row:<17} defaults {d['goodput_per_s']:8.1f}/s = {share * 100:5.1f}% of the best "
          f"({best['config']}, {best['goodput_per_s']:.1f}/s); lost {lost}, degraded {d['degraded']}, "
          f"p99 {d['p99_ms']:.1f} ms")
failed = [r for r in report["rules"] if r["violations"]]
print(f"\nrules: {len(report['rules']) - len(failed)} of {len(report['rules'])} hold"
      + (": failing " + ", ".join(r["rule"] for r in failed) if failed else ""))
print(f"whole run: {report['wall_s']:.0f} s")
PY
