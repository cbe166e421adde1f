#!/usr/bin/env bash
# The compare matrix RUNS times (each configuration on a fresh local deployment), then the
# median calls/s, efficiency and p50/p99 of every configuration across the runs.
#
# Usage: scripts/bench-compare.sh [RUNS] [-- extra loadgen compare flags]   (default 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
[ "${1:-}" = "--" ] && shift
cargo build -q --release -p loadgen
dir=out/bench-compare
mkdir -p "$dir"
for i in $(seq 1 "$runs"); do
  echo "== run $i of $runs"
  target/release/loadgen compare --json "$dir/run-$i.json" --chart "$dir/run-$i.svg" "$@"
done
python3 - "$dir" "$runs" <<'PY'
import json, statistics, sys
d, runs = sys.argv[1], int(sys.argv[2])
reports = [json.load(open(f"{d}/run-{i}.json")) for i in range(1, runs + 1)]
rows = {}
for rep in reports:
    for r in rep["scenarios"]:
        rows.setdefault((r["fanout"], r["backend_mode"]), []).append(r)
print(f"\nmedians over {runs} runs")
print(f"{'fanout':<11} {'backend mode':<15} {'calls/s':>9} {'theory':>9} {'eff.':>7} {'min-max eff.':>14} {'p50 ms':>9} {'p99 ms':>9}")
for (fanout, mode), rs in rows.items():
    med = lambda k: statistics.median(r[k] for r in rs)
    effs = [r["efficiency"] for r in rs]
    print(f"{fanout:<11} {mode:<15} {med('calls_per_sec'):>9.1f} {rs[0]['theory_calls_per_sec']:>9.1f} "
          f"{100*statistics.median(effs):>6.1f}% {100*min(effs):>6.1f}-{100*max(effs):<6.1f}% {med('p50_ms'):>9.1f} {med('p99_ms'):>9.1f}")
PY
