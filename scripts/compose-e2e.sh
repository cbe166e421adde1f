#!/usr/bin/env bash
# End-to-end check of docker-compose.yml on a real Docker engine: builds fanout:latest
# (scripts/build-images.sh, no registry needed), brings the stack up under a project name of its
# own with docker-compose.e2e.yml (the Jaeger service replaced by fanout's otlp-sink), and checks:
#   - every service becomes healthy (bounded wait)
#   - Aggregate from the host (grpcurl, plaintext, reflection) has results for fast, slow, flaky
#   - `up --scale backend-fast=3`: the aggregator resolves backend-fast to three addresses and
#     spreads its calls over them (each replica's own Stats, asked at its container address)
#   - `loadgen watch` in its container reads the aggregator's /metrics (port 9464);
#   - the loadgen container (`run --rm loadgen ...`) reports calls/s, the README's loads (32
#     callers, and the service's own 200 calls/s) get no call refused, and its compare writes
#     the report into the mounted out directory
#   - with backend-slow stopped, Aggregate still succeeds: slow is a failure (UNAVAILABLE or
#     DEADLINE_EXCEEDED) and fast still answers; a few calls later slow is known down, its part
#     fails at once and a call takes under a second
#   - when the image has otlp-sink: the sink received spans from the aggregator and a backend
#   - the TLS variant (docker-compose.tls.yml, certificates from scripts/make-certs.sh): every
#     service healthy over TLS, Aggregate from the host with a client certificate has results
#     for fast, slow and flaky (the aggregator called them over mTLS), a caller without a client
#     certificate and a plaintext one are refused, the loadgen container runs over TLS
# The stack is always torn down (down -v --remove-orphans), also on failure or Ctrl-C. Published
# ports are free loopback ports chosen by Docker, so nothing clashes with what runs on the host.
# The checks stay under 9 minutes; the image build before them has a cap of its own (20 minutes:
# a clean release build of the workspace took over 7 minutes on a slow CI host).
#
# Prints "compose e2e: SKIPPED ..." and exits 0 when no Docker engine answers.
# Environment: COMPOSE_E2E_SKIP_BUILD=1 uses the existing fanout:latest image as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"

if ! timeout 30 docker info >/dev/null 2>&1; then
  echo "compose e2e: SKIPPED (no Docker engine answers)"
  exit 0
fi

start=$SECONDS
budget=510 # seconds for the checks, after the image build (and for neither the build nor the
# teardown: at most 20 s of logs and 45 s of down)
build_cap=1200
project="fanout-e2e-$$"
tmp=$(mktemp -d)
started=0

say() { echo "compose e2e: $*"; }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; exit 1; }

# bounded SECONDS CMD...: runs CMD for at most SECONDS, and never past the script's budget. It
# runs in the background and is waited for, so that Ctrl-C or a TERM reaches the trap (and the
# teardown) at once; the teardown stops it first.
bounded_pid=
bounded() {
  local cap=$1; shift
  local left=$((start + budget - SECONDS))
  ((left > 0)) || fail "out of time (budget ${budget}s) before: $*"
  ((cap < left)) || cap=$left
  timeout --kill-after=5 "$cap" "$@" </dev/null &
  bounded_pid=$!
  local rc=0
  wait "$bounded_pid" || rc=$?
  bounded_pid=
  ((rc != 124)) || echo "TIMEOUT after ${cap}s: $*" >&2
  return "$rc"
}

if timeout 30 docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
files=(-f docker-compose.yml -f docker-compose.e2e.yml)
# C ARGS...: compose on this script's project. (`timeout` needs a command: bounded uses CC.)
CC=()
C() { "${CC[@]}" "$@"; }

# The script's own stdout and stderr, for the teardown: a signal can arrive while a redirected
# command runs, and the trap would then write into that command's log.
exec 3>&1 4>&2
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  exec 1>&3 2>&4
  if [ -n "$bounded_pid" ]; then
    kill -TERM "$bounded_pid" 2>/dev/null || true
    wait "$bounded_pid" 2>/dev/null || true
  fi
  if [ "$started" = 1 ]; then
    if [ "$rc" != 0 ]; then
      echo "--- last log lines of each service (project $project):"
      timeout 20 "${compose[@]}" -p "$project" "${files[@]}" logs --no-color --tail 15 2>&1 || true
    fi
    say "tearing down project $project"
    timeout --kill-after=5 40 "${compose[@]}" -p "$project" "${files[@]}" down -v --remove-orphans -t 5 \
      >"$tmp/down.log" 2>&1 || { echo "WARN: down failed:"; cat "$tmp/down.log"; }
  fi
  rm -rf "$tmp"
  if [ "$rc" = 0 ]; then
    echo "compose e2e: PASS ($((SECONDS - start)) s)"
  else
    echo "compose e2e: FAIL ($((SECONDS - start)) s)"
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "using ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || echo '?')), project $project"

# ---- images ---------------------------------------------------------------------------------
if [ "${COMPOSE_E2E_SKIP_BUILD:-0}" = 1 ]; then
  say "COMPOSE_E2E_SKIP_BUILD=1: using the existing fanout:latest"
  docker image inspect fanout:latest >/dev/null 2>&1 || fail "no image fanout:latest"
else
  say "building images with scripts/build-images.sh (cargo build, then docker build)"
  budget=$((budget + build_cap)) # the build's own time does not come out of the checks' budget
  built=$SECONDS
  if bounded "$build_cap" scripts/build-images.sh >"$tmp/build.log" 2>&1; then
    grep '^build-images:' "$tmp/build.log" || true
    pass "images built ($((SECONDS - built)) s)"
    budget=$((budget - build_cap + SECONDS - built))
  else
    tail -n 40 "$tmp/build.log"
    fail "scripts/build-images.sh failed"
  fi
fi

# Without otlp-sink in the image, the `jaeger` service only idles (nothing receives traces).
has_sink=0
if timeout 60 docker run --rm --entrypoint test fanout:latest -x /usr/local/bin/otlp-sink; then
  has_sink=1
else
  say "the image has no otlp-sink: the jaeger service will idle and traces are not checked"
  cat >"$tmp/no-sink.yml" <<'EOF'
services:
  jaeger:
    entrypoint: ["sleep"]
    command: ["infinity"]
EOF
  files+=(-f "$tmp/no-sink.yml")
fi

CC=("${compose[@]}" -p "$project" "${files[@]}")

command -v grpcurl >/dev/null 2>&1 || bounded 120 scripts/install-grpcurl.sh >/dev/null
command -v grpcurl >/dev/null 2>&1 || fail "grpcurl not found (scripts/install-grpcurl.sh)"

# ---- up -------------------------------------------------------------------------------------
# Every published port on loopback, picked free by Docker.
export FANOUT_AGGREGATOR_PORT=127.0.0.1: FANOUT_JAEGER_UI_PORT=127.0.0.1: FANOUT_OTLP_PORT=127.0.0.1:
# loadgen writes its reports into a directory of ours, as us.
mkdir -p "$tmp/out"
FANOUT_OUT_DIR="$tmp/out" FANOUT_UID=$(id -u) FANOUT_GID=$(id -g)
export FANOUT_OUT_DIR FANOUT_UID FANOUT_GID

started=1
say "up -d"
bounded 120 "${CC[@]}" up -d >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; fail "up -d failed"; }

services=(jaeger backend-fast backend-slow backend-flaky aggregator)
wait_healthy() { # at most 90 s
  local until=$((SECONDS + 90)) s ids id state unhealthy
  while :; do
    unhealthy=()
    for s in "${services[@]}"; do
      ids=$(C ps -q "$s" 2>/dev/null || true)
      [ -n "$ids" ] || fail "service $s is missing"
      # A scaled service has several containers: each must be up.
      for id in $ids; do
        state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id" 2>/dev/null || echo missing)
        case $state in
          running/healthy | running/none) ;;
          exited/* | dead/* | missing) fail "service $s is $state" ;;
          *) unhealthy+=("$s=$state") ;;
        esac
      done
    done
    [ ${#unhealthy[@]} = 0 ] && return 0
    ((SECONDS < until)) || fail "not healthy within 90 s: ${unhealthy[*]}"
    sleep 1
  done
}
wait_healthy
pass "all ${#services[@]} services up and healthy (${services[*]})"

addr=$(C port aggregator 50051 | tail -n 1)
[[ "$addr" == 127.0.0.1:* ]] || fail "aggregator not published on loopback: '$addr'"
say "aggregator published on $addr"

# aggregate OUT_FILE: one Aggregate call from the host.
aggregate() {
  bounded 15 grpcurl -plaintext -max-time 10 -d '{"query": "compose e2e", "no_cache": true}' \
    "$addr" fanout.v1.Aggregator/Aggregate >"$1" 2>&1
}
# check_results FILE EXPECT: prints one line per backend; EXPECT is "all" (fast, slow and flaky
# each have a result, fast a reply) or "slow-down" (fast a reply, slow a failure with UNAVAILABLE
# or DEADLINE_EXCEEDED).
check_results() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
path, expect = sys.argv[1], sys.argv[2]
reply = json.load(open(path))
results = {r["backend"]: r for r in reply.get("results", [])}
for name, r in sorted(results.items()):
    if "reply" in r:
        outcome = "reply"
    else:
        f = r.get("failure", {})
        outcome = "failure %s (%s)" % (f.get("codeName"), f.get("message", "")[:90])
    print("  %-6s %s, %s attempt(s), %.1f ms" % (name, outcome, r.get("attempts", 0), r.get("latencyMs", 0)))
problems = []
for name in ("fast", "slow", "flaky"):
    if name not in results:
        problems.append("no result for " + name)
if "reply" not in results.get("fast", {}):
    problems.append("fast did not answer")
if expect == "slow-down":
    code = results.get("slow", {}).get("failure", {}).get("codeName")
    if code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        problems.append("slow is not a failure with UNAVAILABLE or DEADLINE_EXCEEDED (got %r)" % code)
if problems:
    print("  " + "; ".join(problems))
    sys.exit(1)
EOF
}

# ---- the aggregator from the host -------------------------------------------------------------
aggregate "$tmp/agg1.json" || { cat "$tmp/agg1.json"; fail "Aggregate from the host failed"; }
if check_results "$tmp/agg1.json" all; then
  pass "Aggregate from the host (grpcurl $addr): results for fast, slow and flaky"
else
  cat "$tmp/agg1.json"; fail "Aggregate from the host: missing results"
fi

# ---- replicas: scale a backend out ---------------------------------------------------------------
say "up -d --scale backend-fast=3"
bounded 90 "${CC[@]}" up -d --no-recreate --scale backend-fast=3 backend-fast >"$tmp/scale.log" 2>&1 ||
  { cat "$tmp/scale.log"; fail "up --scale backend-fast=3"; }
wait_healthy
fast_ids=$(C ps -q backend-fast)
[ "$(echo "$fast_ids" | wc -w)" = 3 ] || fail "expected 3 backend-fast containers, got: $fast_ids"
# fast_endpoints: how many endpoints of `fast` the aggregator's Stats lists.
fast_endpoints() {
  grpcurl -plaintext -max-time 5 "$addr" fanout.v1.Aggregator/Stats 2>/dev/null |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for e in s.get("endpoints", []) if e["backend"] == "fast"))' 2>/dev/null || echo 0
}
until_t=$((SECONDS + 30))
while [ "$(fast_endpoints)" != 3 ]; do
  ((SECONDS < until_t)) || fail "the aggregator did not find three endpoints for fast within 30 s (re-resolves every 5 s)"
  sleep 1
done
pass "the aggregator resolved backend-fast to three endpoints"
for i in $(seq 1 30); do aggregate "$tmp/scaled.json" || { cat "$tmp/scaled.json"; fail "Aggregate with fast scaled out"; }; done
served=()
for id in $fast_ids; do
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$id" | awk '{print $1}')
  n=$(bounded 10 grpcurl -plaintext -max-time 5 "$ip:50061" fanout.v1.Backend/Stats |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("served", 0))') ||
    fail "Stats of replica $id at $ip:50061 (is the container network reachable from the host?)"
  served+=("$n")
done
say "calls served by each of the three replicas of fast (their own Stats): ${served[*]}"
for n in "${served[@]}"; do
  [ "$n" -gt 0 ] || fail "a replica of fast served no call: ${served[*]}"
done
pass "up --scale backend-fast=3: the aggregator spread its calls over the three replicas (${served[*]})"

# ---- the loadgen container ----------------------------------------------------------------------
# The README's load commands, shortened: a closed loop of 32 callers, and the loadgen service's
# own command (an open loop at 200 calls/s). The defaults refuse none of their calls.
say "run --rm loadgen run --target http://aggregator:50051 -d 2s -c 32"
if bounded 90 "${CC[@]}" run --rm -T loadgen run --target http://aggregator:50051 -d 2s -c 32 >"$tmp/loadgen.log" 2>&1 &&
  grep -q 'calls/s' "$tmp/loadgen.log"; then
  grep -E '^ *(calls|status) ' "$tmp/loadgen.log" | sed 's/^ */  /' || true
  pass "loadgen container reports calls/s"
else
  cat "$tmp/loadgen.log"; fail "loadgen run in its container"
fi
say "run --rm loadgen run --target http://aggregator:50051 --rate 200 -d 3s (the service's command, shorter)"
if bounded 90 "${CC[@]}" run --rm -T loadgen run --target http://aggregator:50051 --rate 200 -d 3s >"$tmp/loadgen-open.log" 2>&1 &&
  grep -q 'calls/s' "$tmp/loadgen-open.log"; then
  grep -E '^ *(calls|status) ' "$tmp/loadgen-open.log" | sed 's/^ */  /' || true
else
  cat "$tmp/loadgen-open.log"; fail "loadgen open loop in its container"
fi
if grep -q RESOURCE_EXHAUSTED "$tmp/loadgen.log" "$tmp/loadgen-open.log"; then
  grep -h -E '^ *status ' "$tmp/loadgen.log" "$tmp/loadgen-open.log"
  fail "the defaults refused calls of the README's loads (RESOURCE_EXHAUSTED)"
fi
pass "the README's loads (32 callers; 200 calls/s): no call refused"

# ---- metrics ----------------------------------------------------------------------------------
# The aggregator's /metrics on the compose network, read by the README's `loadgen watch` while
# the loadgen container drives some load.
say "run --rm loadgen watch --target http://aggregator:9464 --interval 1s --count 2 (under load)"
bounded 60 "${CC[@]}" run --rm -T loadgen run --target http://aggregator:50051 --rate 100 -d 4s >/dev/null 2>&1 &
load_pid=$!
if bounded 60 "${CC[@]}" run --rm -T loadgen watch --target http://aggregator:9464 --interval 1s --count 2 >"$tmp/watch.log" 2>&1 &&
  grep -qE '^fast ' "$tmp/watch.log" && grep -qE '^slow ' "$tmp/watch.log" && grep -qE '^flaky ' "$tmp/watch.log"; then
  sed 's/^/  /' "$tmp/watch.log" | tail -5
  pass "the aggregator's metrics, read by loadgen watch in its container: a row for fast, slow and flaky"
else
  cat "$tmp/watch.log"; wait "$load_pid" || true; fail "loadgen watch against the aggregator's metrics"
fi
wait "$load_pid" || true

say "run --rm loadgen compare (a reduced matrix) into the mounted out directory"
if bounded 120 "${CC[@]}" run --rm -T loadgen compare --target http://aggregator:50051 --latency 20ms \
  --duration 1s --warmup 200ms --modes async --fanouts concurrent,sequential >"$tmp/compare.log" 2>&1 &&
  [ -s "$tmp/out/compare.json" ] && [ -s "$tmp/out/compare.svg" ]; then
  pass "loadgen compare wrote compare.json and compare.svg into the mounted out directory"
else
  cat "$tmp/compare.log"; ls -la "$tmp/out"; fail "loadgen compare in its container"
fi

# ---- a backend goes away ------------------------------------------------------------------------
say "stop backend-slow"
bounded 30 "${CC[@]}" stop -t 5 backend-slow >"$tmp/stop.log" 2>&1 || { cat "$tmp/stop.log"; fail "stop backend-slow"; }
aggregate "$tmp/agg2.json" || { cat "$tmp/agg2.json"; fail "Aggregate failed with backend-slow stopped"; }
if check_results "$tmp/agg2.json" slow-down; then
  pass "backend-slow stopped: Aggregate still succeeds, slow reported as a failure, fast answers"
else
  cat "$tmp/agg2.json"; fail "Aggregate with backend-slow stopped"
fi
# A few calls later it is known down: its part fails at once (not sent), and a call takes what
# the live backends take, not slow's attempt timeouts.
for _ in 1 2 3 4 5 6; do aggregate "$tmp/agg-known.json" || true; done
began=$(date +%s%N)
aggregate "$tmp/agg3.json" || { cat "$tmp/agg3.json"; fail "Aggregate once backend-slow is known down"; }
took_ms=$(( ($(date +%s%N) - began) / 1000000 ))
if check_results "$tmp/agg3.json" slow-down >/dev/null && grep -q 'not sent' "$tmp/agg3.json" &&
  [ "$took_ms" -lt 1000 ]; then
  pass "backend-slow known down: its part fails at once (not sent), the call took ${took_ms} ms"
else
  cat "$tmp/agg3.json"; fail "backend-slow known down: the call took ${took_ms} ms"
fi

# ---- traces -------------------------------------------------------------------------------------
if [ "$has_sink" = 1 ]; then
  sink=$(C ps -q jaeger)
  # check_spans: spans from the aggregator and from a backend, and backend spans whose parent is
  # an aggregator span of the same trace (the W3C traceparent travelled with the call).
  check_spans() {
    docker logs "$sink" 2>/dev/null | python3 -c '
import json, sys
spans = []
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        try:
            spans.append(json.loads(line))
        except ValueError:
            pass
count = {}
for s in spans:
    count[s.get("service", "?")] = count.get(s.get("service", "?"), 0) + 1
print("  %d spans; by service: %s" % (len(spans), ", ".join("%s=%d" % kv for kv in sorted(count.items()))))
agg = {(s.get("trace_id"), s.get("span_id")) for s in spans if s.get("service") == "aggregator"}
backend = [s for s in spans if str(s.get("service", "")).startswith("backend")]
if not agg or not backend:
    sys.exit(1)
linked = [s for s in backend if (s.get("trace_id"), s.get("parent_span_id")) in agg]
print("  backend spans whose parent is an aggregator span: %d (from %s)"
      % (len(linked), ", ".join(sorted({s["service"] for s in linked})) or "none"))
sys.exit(0 if linked else 2)
'
  }
  # Spans leave in batches: give them a little while.
  until_t=$((SECONDS + 20))
  while :; do
    rc=0
    check_spans >"$tmp/spans.txt" || rc=$?
    [ "$rc" = 0 ] && break
    ((SECONDS < until_t)) || break
    sleep 2
  done
  cat "$tmp/spans.txt"
  case $rc in
    0) pass "otlp-sink received spans from the aggregator and the backends, backend spans parented by aggregator spans" ;;
    2) fail "spans from aggregator and backends arrived, but no backend span has an aggregator parent (traceparent not propagated?)" ;;
    *) docker logs --tail 10 "$sink" 2>&1 | sed 's/^/  sink: /'; fail "otlp-sink did not receive spans from both the aggregator and a backend" ;;
  esac
else
  say "traces: not checked (no otlp-sink in the image)"
fi

# ---- the TLS variant ----------------------------------------------------------------------------
command -v openssl >/dev/null 2>&1 || fail "openssl not found: scripts/make-certs.sh needs it (apt-get install openssl)"
scripts/make-certs.sh "$tmp/certs" >"$tmp/certs.log" 2>&1 || { cat "$tmp/certs.log"; fail "scripts/make-certs.sh"; }
export FANOUT_CERT_DIR="$tmp/certs"
files+=(-f docker-compose.tls.yml)
CC=("${compose[@]}" -p "$project" "${files[@]}")
say "TLS variant: up -d with docker-compose.tls.yml (services recreated with TLS on every hop)"
bounded 120 "${CC[@]}" up -d >"$tmp/up-tls.log" 2>&1 || { cat "$tmp/up-tls.log"; fail "up -d (TLS) failed"; }
wait_healthy
pass "TLS variant: all ${#services[@]} services up and healthy (healthchecks over TLS)"

addr=$(C port aggregator 50051 | tail -n 1)
[[ "$addr" == 127.0.0.1:* ]] || fail "aggregator (TLS) not published on loopback: '$addr'"
tls=(-cacert "$tmp/certs/ca.pem" -cert "$tmp/certs/client.pem" -key "$tmp/certs/client-key.pem")
bounded 15 grpcurl "${tls[@]}" -max-time 10 -d '{"query": "compose e2e over TLS", "no_cache": true}' \
  "$addr" fanout.v1.Aggregator/Aggregate >"$tmp/agg-tls.json" 2>&1 || { cat "$tmp/agg-tls.json"; fail "Aggregate over TLS failed"; }
if check_results "$tmp/agg-tls.json" all; then
  pass "Aggregate over mTLS from the host (grpcurl -cacert -cert -key $addr): results for fast, slow and flaky"
else
  cat "$tmp/agg-tls.json"; fail "Aggregate over TLS: missing results"
fi
if bounded 15 grpcurl -connect-timeout 3 -cacert "$tmp/certs/ca.pem" -d '{"query": "no certificate"}' \
  "$addr" fanout.v1.Aggregator/Aggregate >"$tmp/no-cert.log" 2>&1; then
  cat "$tmp/no-cert.log"; fail "a caller without a client certificate was served"
fi
if bounded 15 grpcurl -plaintext -connect-timeout 3 "$addr" list >"$tmp/plain.log" 2>&1; then
  cat "$tmp/plain.log"; fail "a plaintext caller was served by the TLS aggregator"
fi
pass "TLS variant: a caller without a client certificate and a plaintext one are refused"

say "run --rm loadgen run --target https://aggregator:50051 -d 2s -c 32"
if bounded 90 "${CC[@]}" run --rm -T loadgen run --target https://aggregator:50051 -d 2s -c 32 >"$tmp/loadgen-tls.log" 2>&1 &&
  grep -q 'calls/s' "$tmp/loadgen-tls.log" && ! grep -q RESOURCE_EXHAUSTED "$tmp/loadgen-tls.log"; then
  grep -E '^ *(calls|status) ' "$tmp/loadgen-tls.log" | sed 's/^ */  /' || true
  pass "loadgen container reports calls/s over TLS, none refused (32 callers)"
else
  cat "$tmp/loadgen-tls.log"; fail "loadgen run over TLS in its container"
fi
