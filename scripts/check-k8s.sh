#!/usr/bin/env bash
# Offline check of deploy/k8s: renders the kustomization with `kubectl kustomize` (no cluster
# needed) and checks the objects a deployment relies on: the namespace; per backend a Deployment
# and a headless Service; the aggregator's Deployment and ClusterIP Service; gRPC readiness and
# liveness probes; terminationGracePeriodSeconds above --drain-delay + --grace-period; resource
# requests and limits; a non-root, read-only, capability-free security context; every env var a
# flag of the binary it configures (read from its --help), and every backend URL a Service here;
# metrics: each server's pod template carries the prometheus.io/scrape, /port and /path
# annotations (strings), its container a port named `metrics` on that port, and
# <BINARY>_METRICS_LISTEN listens on it on every interface; and the loadgen Job
# (deploy/k8s/loadgen-job.yaml, applied on its own).
#
# Usage: scripts/check-k8s.sh [BIN_DIR]   (BIN_DIR holds backend/aggregator/loadgen for the
# env var check; default target/debug, skipped with a note when they are not built)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug}
if ! command -v kubectl >/dev/null; then
  apt-get install -y kubernetes-client >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y kubernetes-client >/dev/null; }
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
kubectl kustomize deploy/k8s >"$rendered"
for b in backend aggregator loadgen; do
  if [ -x "$bin/$b" ]; then "$bin/$b" --help >"$rendered.$b.help" 2>&1 || true; fi
  if [ "$b" = loadgen ] && [ -x "$bin/$b" ]; then "$bin/$b" run --help >>"$rendered.$b.help" 2>&1 || true; fi
done
trap 'rm -f "$rendered" "$rendered".*.help' EXIT
python3 - "$rendered" <<'PY'
import os, re, sys
import yaml

path = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
# The loadgen Job is applied on its own (`apply -k` must not start a load): check it too.
job_docs = [d for d in yaml.safe_load_all(open("deploy/k8s/loadgen-job.yaml")) if d]
problems = []
def need(cond, what):
    if not cond:
        problems.append(what)

by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
need(("Namespace", "fanout") in by, "no Namespace fanout")
for d in docs:
    if d["kind"] != "Namespace":
        need(d["metadata"].get("namespace") == "fanout", f'{d["kind"]}/{d["metadata"]["name"]} not in namespace fanout')

def duration(v):
    m = re.fullmatch(r"(\d+)(ms|s|m)", v)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)] if m else None

def check_deployment(name, binary, port, service):
    dep = by.get(("Deployment", name))
    need(dep is not None, f"no Deployment {name}")
    if dep is None:
        return {}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for probe in ("readinessProbe", "livenessProbe"):
        g = c.get(probe, {}).get("grpc", {})
        need(g.get("port") == port, f"{name}: {probe} is not a gRPC probe on {port}")
    need(c["readinessProbe"]["grpc"].get("service") == service,
         f"{name}: readiness should ask about {service} (NOT_SERVING first on SIGTERM)")
    res = c.get("resources", {})
    need(res.get("requests") and res.get("limits"), f"{name}: resource requests and limits")
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, f"{name}: runs as root")
    need(sc.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem writable")
    need(sc.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed")
    need("ALL" in sc.get("capabilities", {}).get("drop", []), f"{name}: capabilities not dropped")
    prefix = binary.upper()
    drain = duration(env.get(f"{prefix}_DRAIN_DELAY", "0s")) or 0
    grace = duration(env.get(f"{prefix}_GRACE_PERIOD", "10s")) or 10
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    need(tgps > drain + grace, f"{name}: terminationGracePeriodSeconds {tgps} <= drain {drain} + grace {grace}")
    # Metrics: Prometheus' pod annotations, the named port they point at, the listener on it.
    ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
    for k, v in ann.items():
        need(isinstance(v, str), f"{name}: annotation {k} is {v!r}, not a string (quote it)")
    need(ann.get("prometheus.io/scrape") == "true", f'{name}: no annotation prometheus.io/scrape: "true"')
    need(ann.get("prometheus.io/path") == "/metrics", f"{name}: no annotation prometheus.io/path: /metrics")
    mport = [p for p in c.get("ports", []) if p.get("name") == "metrics"]
    need(len(mport) == 1 and mport[0].get("containerPort") == 9464,
         f"{name}: no container port named metrics on 9464")
    need(ann.get("prometheus.io/port") == "9464", f'{name}: no annotation prometheus.io/port: "9464"')
    listen = env.get(f"{prefix}_METRICS_LISTEN", "")
    need(listen == "0.0.0.0:9464",
         f"{name}: {prefix}_METRICS_LISTEN is {listen!r}, not 0.0.0.0:9464 (the metrics port, every interface)")
    helpfile = f"{path}.{binary}.help"
    if os.path.exists(helpfile):
        help_text = open(helpfile).read()
        for var in env:
            if var.startswith(prefix + "_"):
                need(f"env: {var}=" in help_text, f"{name}: {var} is not a flag of {binary} (--help)")
    else:
        print(f"  (no {binary} binary built: env vars not checked against --help)")
    return env

for b in ("fast", "slow", "flaky"):
    check_deployment(f"backend-{b}", "backend", 50061, "fanout.v1.Backend")
    svc = by.get(("Service", f"backend-{b}"))
    need(svc is not None and svc["spec"].get("clusterIP") == "None",
         f"backend-{b}: no headless Service (the aggregator needs every pod's address)")
env = check_deployment("aggregator", "aggregator", 50051, "fanout.v1.Aggregator")
svc = by.get(("Service", "aggregator"))
need(svc is not None and svc["spec"].get("clusterIP") != "None", "aggregator: no ClusterIP Service")
for spec in (env.get("AGGREGATOR_BACKENDS") or "").split(","):
    name, _, url = spec.partition("=")
    host = re.sub(r"^https?://", "", url).split(":")[0]
    need(("Service", host) in by, f"aggregator backend {name}: no Service {host}")
jobs = [d for d in job_docs if d["kind"] == "Job"]
need(len(jobs) == 1, "deploy/k8s/loadgen-job.yaml has no Job")
for job in jobs:
    pod = job["spec"]["template"]["spec"]
    need(pod.get("restartPolicy") in ("Never", "OnFailure"), f"Job {job['metadata']['name']}: restartPolicy")
    need(job["spec"].get("parallelism", 1) > 1, "the loadgen Job runs one pod: nothing to merge")
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    helpfile = f"{path}.loadgen.help"
    if os.path.exists(helpfile):
        help_text = open(helpfile).read()
        for var in env:
            need(f"env: {var}=" in help_text, f"loadgen Job: {var} is not a flag of loadgen run (--help)")
    need("{host}" in (env.get("LOADGEN_JSON") or ""), "loadgen Job: its reports would overwrite each other (no {host})")
    claims = {d["metadata"]["name"] for d in job_docs if d["kind"] == "PersistentVolumeClaim"}
    for v in pod.get("volumes", []):
        if "persistentVolumeClaim" in v:
            need(v["persistentVolumeClaim"]["claimName"] in claims, f"loadgen Job: no claim {v}")

kinds = sorted({f'{d["kind"]}/{d["metadata"]["name"]}' for d in docs + job_docs})
print(f"  rendered {len(docs)} objects, and the loadgen Job file: {', '.join(kinds)}")
if problems:
    for p in problems:
        print("FAIL:", p)
    sys.exit(1)
print("deploy/k8s: PASS")
PY
