#!/usr/bin/env bash
# What TLS costs, measured on loopback against real processes (release builds):
#  1. calls: with zero-latency backends, aggregate calls/s with TLS (mTLS) on every hop (loadgen
#     -> aggregator -> 3 backends) against the same stack in plaintext, 64 callers over 4
#     connections; the two stacks measured alternately ROUNDS times, medians and the ratio
#     printed. Beside calls/s, the CPU time each call cost the servers (aggregator + backends,
#     from /proc) and the loadgen (its rusage): on a machine shared with others, calls/s swings
#     with their load, CPU per call much less;
#  2. handshakes: a new connection's TLS handshake (TCP connect + TLS 1.3 with a client
#     certificate, ALPN h2), N of them one after another from a Python client (its ssl module):
#     the latency each took, and the server's CPU time per handshake (from /proc, the backend
#     process's user + system time over the N handshakes), beside a plain TCP connect.
# Everything listens on 127.0.0.1 and every run is bounded (SECONDS per run, N handshakes).
#
# Usage: scripts/bench-tls.sh [ROUNDS] [SECONDS] [N]     (defaults: 3, 5, 500)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
handshakes=${3:-500}

cargo build -q --release -p backend -p aggregator -p loadgen
bin=target/release
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
scripts/make-certs.sh "$tmp/certs" >/dev/null
c=$tmp/certs
client_tls=(--tls-ca "$c/ca.pem" --tls-client-cert "$c/client.pem" --tls-client-key "$c/client-key.pem")
server_tls=(--tls-cert "$c/server.pem" --tls-key "$c/server-key.pem" --tls-client-ca "$c/ca.pem")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { # URL [TLS ARGS...]
  local url=$1; shift
  for _ in $(seq 1 100); do "$bin/loadgen" health "$url" "$@" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "no server on $url" >&2; exit 1
}

# start_stack SCHEME: three zero-latency backends and an aggregator over them, plaintext (http)
# or with mTLS on every hop (https); sets URL (the aggregator's) and STACK (its processes' ids,
# comma-separated). Not in a subshell: the processes must be in `pids`, for the trap.
start_stack() {
  local scheme=$1 specs=() tls=() call=() stack=()
  [ "$scheme" = https ] && tls=("${server_tls[@]}") && call=("${client_tls[@]}")
  for i in 1 2 3; do
    local port; port=$(free_port)
    "$bin/backend" --name "b$i" --listen "127.0.0.1:$port" --latency 0ms "${tls[@]}" >/dev/null 2>&1 &
    pids+=($!); stack+=($!)
    wait_up "$scheme://127.0.0.1:$port" "${call[@]}"
    specs+=("--backend=b$i=$scheme://127.0.0.1:$port")
  done
  local port; port=$(free_port)
  "$bin/aggregator" --listen "127.0.0.1:$port" "${specs[@]}" --max-in-flight 100000 \
    --backend-concurrency 100000 "${tls[@]}" "${call[@]}" >/dev/null 2>&1 &
  pids+=($!); stack+=($!)
  URL="$scheme://127.0.0.1:$port"
  wait_up "$URL" "${call[@]}"
  STACK=$(IFS=,; echo "${stack[*]}")
}

# measure TARGET STACK [TLS ARGS...]: one run; prints calls/s, the servers' CPU microseconds per
# call and the loadgen's.
measure() {
  local target=$1 stack=$2; shift 2
  python3 - "$bin/loadgen" "$target" "$stack" "$secs" "$@" <<'EOF'
import json, os, resource, subprocess, sys
loadgen, target, stack, secs, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
pids = [int(p) for p in stack.split(",")]
tick = os.sysconf("SC_CLK_TCK")
def servers():  # user + system CPU seconds of the stack's processes
    total = 0
    for pid in pids:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += (int(f[11]) + int(f[12])) / tick
    return total
def children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
s0, c0 = servers(), children()
out = subprocess.run(
    [loadgen, "run", "--rpc", "aggregate", "--target", target, "-c", "64", "--connections", "4",
     "-d", f"{secs}s", "--warmup", "0s", *extra, "--json", "/dev/stdout"],
    capture_output=True, text=True, check=True).stdout
s1, c1 = servers(), children()
report = json.loads(out[out.index("{"):out.rindex("}") + 1])
calls = max(report["calls"], 1)
print(f'{report["calls_per_sec"]:.0f} {(s1 - s0) / calls * 1e6:.1f} {(c1 - c0) / calls * 1e6:.1f}')
EOF
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start_stack http
plain=$URL plain_stack=$STACK
start_stack https
tls=$URL tls_stack=$STACK
echo "== calls: aggregate over 3 zero-latency backends, 64 callers, 4 connections, ${secs}s per run"
ratios=() cpu_ratios=()
for i in $(seq 1 "$rounds"); do
  read -r p ps pl < <(measure "$plain" "$plain_stack")
  read -r t ts tl < <(measure "$tls" "$tls_stack" "${client_tls[@]}")
  r=$(python3 -c "print(f'{$t / $p:.3f}')")
  cr=$(python3 -c "print(f'{($ts + $tl) / ($ps + $pl):.3f}')")
  ratios+=("$r"); cpu_ratios+=("$cr")
  printf 'round %d: plaintext %.0f calls/s (CPU per call: servers %s us, loadgen %s us); TLS on every hop %.0f calls/s (servers %s us, loadgen %s us); calls/s ratio %s, CPU per call ratio %s\n' \
    "$i" "$p" "$ps" "$pl" "$t" "$ts" "$tl" "$r" "$cr"
done
echo "median TLS / plaintext calls/s: $(printf '%s\n' "${ratios[@]}" | median)"
echo "median TLS / plaintext CPU per call (servers + loadgen): $(printf '%s\n' "${cpu_ratios[@]}" | median)"

echo "== handshakes: $handshakes new connections one after another, to one backend"
port=$(free_port)
"$bin/backend" --name hs --listen "127.0.0.1:$port" --latency 0ms "${server_tls[@]}" >/dev/null 2>&1 &
server=$!
pids+=($server)
wait_up "https://127.0.0.1:$port" "${client_tls[@]}"
python3 - "$port" "$server" "$handshakes" "$c" <<'EOF'
import os, socket, ssl, statistics, sys, time
port, pid, n, certs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tick = os.sysconf("SC_CLK_TCK")
def cpu():  # the server's user + system CPU seconds
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
ctx.load_cert_chain(f"{certs}/client.pem", f"{certs}/client-key.pem")
ctx.set_alpn_protocols(["h2"])
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
def run(tls):
    took = []
    c0 = cpu()
    for _ in range(n):
        t0 = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port))
        if tls:
            s = ctx.wrap_socket(s, server_hostname="localhost")
            assert s.selected_alpn_protocol() == "h2"
        took.append(time.perf_counter() - t0)
        s.close()
    # In TLS 1.3 the server checks the client's certificate after the client's side is done:
    # give it time to finish with the last connections before reading its CPU time.
    time.sleep(0.5)
    return took, (cpu() - c0) / n
for name, tls in (("TCP connect only", False), ("TCP + TLS 1.3 handshake (mTLS, ALPN h2)", True)):
    took, server_cpu = run(tls)
    took.sort()
    print(f"{name}: p50 {statistics.median(took)*1e3:.2f} ms, p90 {took[int(len(took)*0.9)]*1e3:.2f} ms"
          f" per connection; server CPU {server_cpu*1e3:.3f} ms per connection")
EOF
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
