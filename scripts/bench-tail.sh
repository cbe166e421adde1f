#!/usr/bin/env bash
# Tails and hedging (issue 14's benchmark), with `loadgen tail` on its own local deployments:
# backends at tail:10ms,p=0.02,500ms, 3 of them a call, an open loop of 200 calls/s for
# DURATION per strategy: no protection, retry on a 20 ms attempt timeout, hedging after each
# of several fixed delays, and hedging after the backends' p95; then the hedges again with
# --max-hedges 2. Prints the tables, then each hedge's p99 and p99.9 against no protection's,
# the extra backend calls it cost, and the adaptive hedge's p99 against the best fixed one's.
#
# Usage: scripts/bench-tail.sh [DURATION] [OUT]     (defaults: 30s, out/bench-tail)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-30s}
out=${2:-out/bench-tail}
cargo build -q --release -p loadgen
mkdir -p "$(dirname "$out")"
target/release/loadgen tail --backends 3 --rate 200 -d "$duration" \
  --hedge-after 15ms,20ms,30ms,50ms --json "$out-1.json" --chart "$out-1.svg"
target/release/loadgen tail --backends 3 --rate 200 -d "$duration" --max-hedges 2 \
  --strategies hedge,hedge-adaptive --hedge-after 15ms,20ms --json "$out-2.json" --chart "$out-2.svg"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = json.load(open(f"{out}-1.json"))["rows"] + json.load(open(f"{out}-2.json"))["rows"]
none = next(x for x in rows if x["strategy"] == "none")
print(f"\nno protection: p99 {none['p99_ms']:.1f} ms, p99.9 {none['p999_ms']:.1f} ms")
print("targets: p99 >= 10x lower, p99.9 >= 5x lower, extra backend calls <= 5%")
for x in rows:
    if x is none:
        continue
    p99, p999 = none["p99_ms"] / x["p99_ms"], none["p999_ms"] / x["p999_ms"]
    met = p99 >= 10 and p999 >= 5 and x["extra_backend_calls"] <= 0.05
    print(f"  {x['strategy']:<15} {x['flags']:<38} p99 {x['p99_ms']:6.1f} ms ({p99:5.1f}x)  "
          f"p99.9 {x['p999_ms']:6.1f} ms ({p999:5.1f}x)  extra {x['extra_backend_calls'] * 100:4.1f}%  "
          f"theory {x['tail_odds'] * 100:.4f}%  {'all met' if met else ''}")
for hedges in ("--max-hedges", ""):
    group = [x for x in rows if x["strategy"].startswith("hedge") and ("--max-hedges" in x["flags"]) == (hedges != "")]
    fixed = [x for x in group if x["strategy"] == "hedge"]
    adaptive = [x for x in group if x["strategy"] == "hedge-adaptive"]
    if fixed and adaptive:
        best = min(fixed, key=lambda x: x["p99_ms"])
        a = adaptive[0]
        print(f"adaptive ({a['flags']}): p99 {a['p99_ms']:.1f} ms = {a['p99_ms'] / best['p99_ms']:.2f}x "
              f"the best fixed ({best['flags']}: {best['p99_ms']:.1f} ms); target <= 1.2x")
PY
