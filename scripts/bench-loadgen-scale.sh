#!/usr/bin/env bash
# The loadgen at scale (BENCHMARKS.md §5): release builds, loopback only, every run
# bounded by its duration (and `timeout` as a backstop), servers stopped on exit.
#
#   1. Open loop: --rate 20000 for DURATION against a zero-latency backend, ROUNDS times: the
#      achieved rate against the offer, calls dropped and cut off, how far past warm-up +
#      duration the run went (its drain allows 5 s), the loadgen's CPU.
#   2. Memory: the loadgen's peak RSS (ru_maxrss) in a closed loop of -c 64, 2,000 and 20,000
#      callers (a 1 s backend, so the callers are the calls outstanding), at 100 calls/s with
#      -c 64 and -c 20000, and at 10,000 calls outstanding (10,000/s against the 1 s backend).
#   3. Merge: ROUNDS x (one run at RATE against a 20 ms backend, two runs at RATE/2 started
#      together with --start-at and merged, one run at RATE again): the merged percentiles
#      against the first single run's, in HDR buckets, beside the two single runs' own
#      difference (the noise floor of this machine); throughput as a ratio.
#
# Prints every run, then the medians. The machine's load is printed at the start and the end.
#
# Usage: scripts/bench-loadgen-scale.sh [ROUNDS]   (default 3; DURATION=10s RATE=2000 to change;
#        SECTIONS=13 runs sections 1 and 3 only)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
duration=${DURATION:-10s}
rate=${RATE:-2000}
sections=${SECTIONS:-123}
lg=target/release/loadgen

cargo build -q --release -p backend -p loadgen
work=$(mktemp -d)
servers=()
cleanup() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a backend with latency $1 on a free loopback port; prints its address.
backend() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  target/release/backend --listen "127.0.0.1:$port" --latency "$1" >/dev/null 2>&1 &
  servers+=($!)
  for _ in $(seq 1 100); do
    $lg health "127.0.0.1:$port" >/dev/null 2>&1 && { echo "127.0.0.1:$port"; return; }
    sleep 0.1
  done
  echo "backend at $1 did not start" >&2
  exit 1
}

# Runs a loadgen command (bounded by 120 s); appends "wall_s cpu_s maxrss_kib" to $work/$1.
measured() {
  local into=$1
  shift
  python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(["timeout", "120"] + sys.argv[2:], stdout=subprocess.DEVNULL, check=True)
wall = time.monotonic() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "a").write(f"{wall:.3f} {u.ru_utime + u.ru_stime:.3f} {u.ru_maxrss}\n")
' "$work/$into" "$@"
}

echo "== machine: $(nproc) cores; load at start:$(uptime | sed 's/.*load average://')"
zero=$(backend 0ms)
slow=$(backend 1s)
twenty=$(backend 20ms)

[[ $sections == *1* ]] && echo "== 1. open loop: 20,000 calls/s offered for $duration against a zero-latency backend"
for r in $(seq 1 "$rounds"); do
  [[ $sections == *1* ]] || break
  measured open.txt $lg run --rpc fetch --target "$zero" --rate 20000 -d "$duration" --warmup 1s \
    --json "$work/open-$r.json"
done

[[ $sections == *2* ]] && echo "== 2. memory: peak RSS"
rss() {
  [[ $sections == *2* ]] || return 0
  local name=$1
  shift
  for r in $(seq 1 "$rounds"); do
    measured "rss-$name.txt" $lg run --rpc fetch --warmup 0s --json "$work/rss-$name-$r.json" "$@"
  done
}
rss closed-64 --target "$slow" -c 64 -d 5s
rss closed-2000 --target "$slow" -c 2000 -d 5s
rss closed-20000 --target "$slow" -c 20000 -d 5s
rss rate100-c64 --target "$zero" --rate 100 -c 64 -d 5s
rss rate100-c20000 --target "$zero" --rate 100 -c 20000 -d 5s
rss outstanding-10000 --target "$slow" --rate 10000 --max-outstanding 20000 -d 5s

[[ $sections == *3* ]] && echo "== 3. merge: one run at $rate/s against two at $((rate / 2))/s started together, merged"
for r in $(seq 1 "$rounds"); do
  [[ $sections == *3* ]] || break
  measured single.txt $lg run --rpc fetch --target "$twenty" --rate "$rate" -d "$duration" \
    --warmup 1s --json "$work/single-$r.json"
  at=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
  for half in a b; do
    $lg run --rpc fetch --target "$twenty" --rate $((rate / 2)) -d "$duration" --warmup 1s \
      --start-at "$at" --json "$work/half-$r-$half.json" >/dev/null &
  done
  wait
  $lg merge "$work/half-$r-a.json" "$work/half-$r-b.json" --json "$work/merged-$r.json" >/dev/null
  measured single.txt $lg run --rpc fetch --target "$twenty" --rate "$rate" -d "$duration" \
    --warmup 1s --json "$work/again-$r.json"
done

echo "== machine load at the end:$(uptime | sed 's/.*load average://')"
python3 - "$work" "$rounds" "$sections" <<'EOF'
import json, math, statistics, sys
work, rounds, sections = sys.argv[1], int(sys.argv[2]), sys.argv[3]
med = statistics.median
def runs(name):
    return [list(map(float, l.split())) for l in open(f"{work}/{name}.txt")]
def report(name):
    return json.load(open(f"{work}/{name}.json"))

def open_loop():
    print("\n-- 1. open loop at 20,000 calls/s")
    ratios, overs, cpus = [], [], []
    for r, (wall, cpu, _) in enumerate(runs("open"), 1):
        j = report(f"open-{r}")
        o = j["open_loop"]
        ratio = j["calls_per_sec"] / o["offered_rate"]
        over = wall - j["warmup_s"] - j["duration_s"]
        ratios.append(ratio)
        overs.append(over)
        cpus.append(cpu / max(o["sent"], 1) * 1e6)
        print(f"round {r}: achieved {j['calls_per_sec']:.1f}/s = {ratio*100:.2f}% of the offer; "
              f"due {o['due']}, dropped {o['dropped']}, cut off {o['cut_off']}, peak outstanding "
              f"{o['peak_outstanding']}; p50 {j['p50_ms']} ms p99 {j['p99_ms']} ms; the process "
              f"ran {over:.2f} s past warm-up + duration (drain {o['drain_s']} s); loadgen CPU "
              f"{cpu:.1f} s")
    print(f"median: achieved/offered {med(ratios)*100:.2f}%, past the window {med(overs):.2f} s, "
          f"loadgen CPU per call sent {med(cpus):.1f} us")

def memory():
    print("\n-- 2. peak RSS of the loadgen (MiB)")
    rss = {}
    for name, label in [("closed-64", "closed loop, -c 64"),
                        ("closed-2000", "closed loop, -c 2000"),
                        ("closed-20000", "closed loop, -c 20000"),
                        ("rate100-c64", "100 calls/s, -c 64"),
                        ("rate100-c20000", "100 calls/s, -c 20000"),
                        ("outstanding-10000", "10,000 calls/s at 1 s (~10,000 outstanding)")]:
        values = [m[2] / 1024 for m in runs(f"rss-{name}")]
        rss[name] = med(values)
        loops = [report(f"rss-{name}-{r}").get("open_loop") for r in range(1, rounds + 1)]
        extra = ""
        if loops[0]:
            extra = (f"; peak outstanding {med([o['peak_outstanding'] for o in loops]):.0f}, "
                     f"dropped {max(o['dropped'] for o in loops)}")
        print(f"{label:45} median {rss[name]:6.1f}  (runs: "
              f"{', '.join(f'{x:.1f}' for x in values)}){extra}")
    print(f"-c 20000 against -c 64 at 100 calls/s: {rss['rate100-c20000'] / rss['rate100-c64']:.2f}x")
    per = (rss["closed-20000"] - rss["closed-64"]) * 1024 / (20000 - 64)
    print(f"per call outstanding (closed loop, -c 20000 against -c 64): {per:.1f} KiB")

def merge():
    print("\n-- 3. merge of two half-rate runs against one full-rate run")
    def width(us):
        # HDR at 3 significant digits: 1 us below 2048 us, then doubling with each power of two.
        return 1 if us < 2048 else 2 ** (int(math.log2(us)) - 10)
    def buckets(a_ms, b_ms):
        a, b = a_ms * 1000, b_ms * 1000
        return abs(a - b) / width(max(a, b))
    keys = ["p50_ms", "p90_ms", "p99_ms", "p999_ms"]
    merged_off = {k: [] for k in keys}
    noise = {k: [] for k in keys}
    tputs = []
    for r in range(1, rounds + 1):
        s, m, again = report(f"single-{r}"), report(f"merged-{r}"), report(f"again-{r}")
        parts = []
        for k in keys:
            merged_off[k].append(buckets(s[k], m[k]))
            noise[k].append(buckets(s[k], again[k]))
            parts.append(f"{k[:-3]} {s[k]:.3f} / {m[k]:.3f} / {again[k]:.3f} ms")
        t = m["calls_per_sec"] / s["calls_per_sec"]
        tputs.append(t)
        print(f"round {r}: single / merged / single again: " + ", ".join(parts)
              + f"; throughput merged/single {t:.4f}")
    print("median difference in HDR buckets, merged vs single: "
          + ", ".join(f"{k[:-3]} {med(v):.1f}" for k, v in merged_off.items()))
    print("median difference in HDR buckets, single vs single again (noise): "
          + ", ".join(f"{k[:-3]} {med(v):.1f}" for k, v in noise.items()))
    print(f"throughput merged/single: median {med(tputs):.4f}")

if "1" in sections: open_loop()
if "2" in sections: memory()
if "3" in sections: merge()
EOF
