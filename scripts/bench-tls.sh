#!/usr/bin/env bash
# What TLS costs, measured on loopback against real processes (release builds):
#  1. calls: with zero-latency backends, aggregate calls/s with TLS (mTLS) on every hop (loadgen
#     -> aggregator -> 3 backends) against the same stack in plaintext, 64 callers over 4
#     connections; the two stacks measured alternately ROUNDS times, medians and the ratio printed;
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
# or with mTLS on every hop (https); prints the aggregator's URL.
start_stack() {
  local scheme=$1 specs=() tls=() call=()
  [ "$scheme" = https ] && tls=("${server_tls[@]}") && call=("${client_tls[@]}")
  for i in 1 2 3; do
    local port; port=$(free_port)
    "$bin/backend" --name "b$i" --listen "127.0.0.1:$port" --latency 0ms "${tls[@]}" >/dev/null 2>&1 &
    pids+=($!)
    wait_up "$scheme://127.0.0.1:$port" "${call[@]}"
    specs+=("--backend=b$i=$scheme://127.0.0.1:$port")
  done
  local port; port=$(free_port)
  "$bin/aggregator" --listen "127.0.0.1:$port" "${specs[@]}" --max-in-flight 100000 \
    --backend-concurrency 100000 "${tls[@]}" "${call[@]}" >/dev/null 2>&1 &
  pids+=($!)
  wait_up "$scheme://127.0.0.1:$port" "${call[@]}"
  echo "$scheme://127.0.0.1:$port"
}

calls_per_sec() { # TARGET [TLS ARGS...]
  local target=$1; shift
  "$bin/loadgen" run --rpc aggregate --target "$target" -c 64 --connections 4 -d "${secs}s" \
    --warmup 1s "$@" --json /dev/stdout |
    python3 -c "import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index('{'):t.rindex('}')+1])['calls_per_sec'])"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
plain=$(start_stack http)
tls=$(start_stack https)
echo "== calls: aggregate over 3 zero-latency backends, 64 callers, 4 connections, ${secs}s per run"
ratios=()
for i in $(seq 1 "$rounds"); do
  p=$(calls_per_sec "$plain")
  t=$(calls_per_sec "$tls" "${client_tls[@]}")
  r=$(python3 -c "print(f'{$t / $p:.3f}')")
  ratios+=("$r")
  printf 'round %d: plaintext %.0f calls/s, TLS on every hop %.0f calls/s, ratio %s\n' "$i" "$p" "$t" "$r"
done
echo "median TLS / plaintext: $(printf '%s\n' "${ratios[@]}" | median)"

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
