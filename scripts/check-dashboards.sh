#!/usr/bin/env bash
# Checks the metrics plumbing: Prometheus' config, Grafana's provisioning and the fanout dashboard,
# against docs/metrics.md (the series both servers export) and docker-compose.yml; offline
# (a)-(c), and live (d) when the binaries serve metrics.
#
#   (a) deploy/prometheus/prometheus.yml passes `promtool check config` (Prometheus' own parser;
#       promtool comes from Debian's `prometheus` package, fetched with apt-get and unpacked
#       into a cache directory, never installed: installing it would start a Prometheus server),
#       scrapes every 5 s, and scrapes every compose service that runs a fanout server on the
#       port its metrics listener is given; Prometheus and Grafana sit behind a compose profile
#       (their images cannot be pulled everywhere: `docker compose up` must not need them).
#   (b) deploy/grafana/dashboards/*.json is valid JSON with unique panel ids and a query in every
#       panel, its data source is the provisioned Prometheus, and the provisioning YAML
#       (data source URL, dashboards path) agrees with what docker-compose.yml mounts and runs.
#   (c) every PromQL expression in the dashboard names only series docs/metrics.md lists (a
#       histogram's _bucket, _count and _sum for its name), with only their labels (plus job and
#       instance, and le on _bucket), legends included; and each parses with Prometheus' parser
#       (`promtool check rules` on a rules file made of them: promtool has no offline PromQL check
#       of its own).
#   (d) live, when BIN_DIR has backend and aggregator binaries that take --metrics-listen: starts
#       one backend and one aggregator on free loopback ports with metrics on, makes calls with
#       BIN_DIR/loadgen, scrapes both /metrics and checks that every series the dashboard uses
#       is exported with the labels it uses, that the env var docker-compose.yml and deploy/k8s
#       set is the one the binaries read; then runs a throwaway Prometheus (from the same Debian
#       package) scraping both and evaluates every dashboard query against it. Series documented
#       but not exported (or the other way round), and `promtool check metrics` lints, are
#       printed as warnings. Without such binaries it says so and skips (d).
#
# Usage: scripts/check-dashboards.sh [BIN_DIR]   (default target/debug)
# Environment: PROMTOOL=/path/to/promtool to use that one; FANOUT_TOOLS_CACHE (default
# ~/.cache/fanout) is where the Debian package is unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug}

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "check-dashboards: $*"; }
fail() { echo "FAIL: $*"; exit 1; }

# ---- tools ------------------------------------------------------------------------------------
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml

# The Debian package's binaries (promtool, prometheus), unpacked into the cache, not installed.
cache=${FANOUT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fanout}/prometheus-deb
fetched=
fetch_prometheus_deb() {
  [ -x "$cache/usr/bin/promtool" ] && return 0
  [ -z "$fetched" ] || return 1 # tried already
  fetched=failed
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 1
  mkdir -p "$tmp/deb" && chmod 777 "$tmp/deb"
  if ! (cd "$tmp/deb" && apt-get download -qq prometheus >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] || return 1
    apt-get update -qq >/dev/null 2>&1 || true
    (cd "$tmp/deb" && apt-get download -qq prometheus >/dev/null 2>&1) || return 1
  fi
  mkdir -p "$cache"
  dpkg-deb -x "$tmp"/deb/prometheus_*.deb "$cache" && [ -x "$cache/usr/bin/promtool" ]
}
promtool=${PROMTOOL:-}
if [ -z "$promtool" ]; then
  if command -v promtool >/dev/null; then
    promtool=$(command -v promtool)
  elif fetch_prometheus_deb; then
    promtool=$cache/usr/bin/promtool
  fi
fi
prometheus=
if command -v prometheus >/dev/null; then
  prometheus=$(command -v prometheus)
elif [ -x "$cache/usr/bin/prometheus" ] || fetch_prometheus_deb; then
  prometheus=$cache/usr/bin/prometheus
fi
if [ -n "$promtool" ]; then
  say "promtool: $promtool ($("$promtool" --version 2>&1 | head -n 1))"
else
  say "promtool: NOT AVAILABLE (no apt-get, or Debian's prometheus package could not be fetched)"
fi

# ---- the checks in Python: (a) without promtool, (b), (c) --------------------------------------
cat >"$tmp/check.py" <<'PY'
import json, os, re, sys
import yaml

problems, warnings = [], []
def need(cond, what):
    if not cond:
        problems.append(what)
    return cond
def finish(label):
    for w in warnings:
        print("  WARN:", w)
    if problems:
        for p in problems:
            print("FAIL:", p)
        sys.exit(1)
    print(f"{label}: PASS")

# ---- docs/metrics.md: the families, their type, labels and servers -----------------------------
def read_docs(path="docs/metrics.md"):
    fams = {}
    section, context, header = None, "", None
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("## "):
            section, header = line[3:].strip().lower(), None
            continue
        if not line.startswith("|"):
            if line.strip():
                context, header = line, None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        m = re.fullmatch(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", cells[0])
        if not m or "type" not in header:
            continue
        name, kind = m.group(1), cells[header.index("type")].lower()
        if "labels" in header:
            labels = re.findall(r"`([a-zA-Z_][a-zA-Z0-9_]*)`", cells[header.index("labels")])
        else:
            lm = re.search(r"\(labels? (.*?)\)", context)
            labels = re.findall(r"`([a-zA-Z_][a-zA-Z0-9_]*)`", lm.group(1)) if lm else []
        servers = {"both servers": ["aggregator", "backend"], "the aggregator": ["aggregator"],
                   "the backend": ["backend"]}.get(section, [])
        fams[name] = {"type": kind, "labels": labels, "servers": servers}
    return fams

def sample_names(fam, info):
    if info["type"] == "histogram":
        return {fam + "_bucket": info["labels"] + ["le"], fam + "_count": info["labels"], fam + "_sum": info["labels"]}
    return {fam: info["labels"]}

# ---- PromQL: metric names and labels an expression uses ----------------------------------------
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
                "__interval_ms": "60000"}

def substitute(expr):
    """Grafana's built-in variables replaced by values PromQL accepts; others are an error."""
    def rep(m):
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARS:
            raise ValueError(f"uses the variable ${name}, which this check cannot substitute")
        return GRAFANA_VARS[name]
    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", rep, expr)

def analyse(expr):
    """(selectors [(metric, {matcher labels})], grouping labels) of a PromQL expression."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    selectors, group = [], set()
    # Grouping and matching clauses: their labels, then out of the way.
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        group |= {l.strip() for l in m.group(2).split(",") if l.strip()}
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    # Ranges and subqueries, and offsets.
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", e)
    # Selectors: a name, with or without {matchers}; {matchers} alone is not supported.
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})?", e):
        name, braces = m.group(1), m.group(2)
        if not name and not braces:
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", braces or ""))
        if not name:
            raise ValueError("a selector without a metric name ({...} alone): name the metric")
        if name in KEYWORDS or (not braces and re.match(r"\s*\(", e[m.end():])):
            continue  # an operator, a function or an aggregation
        if re.fullmatch(r"[0-9]", name[0]):
            continue
        selectors.append((name, labels))
    return selectors, group

def dashboard_queries(dash):
    """[(panel title, refId, expr, legendFormat)] of every panel, rows' panels included."""
    out = []
    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []) or []:
                out.append((p.get("title", "?"), t.get("refId", "?"), t.get("expr", ""), t.get("legendFormat", "")))
    walk(dash.get("panels", []))
    return out

# ---- offline: compose, Prometheus config, Grafana provisioning, dashboards --------------------
def offline(tmp, have_promtool):
    docs = read_docs()
    need(docs, "docs/metrics.md: no series found in its tables")
    allowed = {}
    for fam, info in docs.items():
        allowed.update(sample_names(fam, info))
    print(f"  docs/metrics.md: {len(docs)} series ({sum(1 for i in docs.values() if i['type'] == 'histogram')} histograms)")

    compose = yaml.safe_load(open("docker-compose.yml"))
    services = compose.get("services", {})
    # The fanout servers in compose, and where their metrics listen.
    servers = {}
    for name, s in services.items():
        cmd = s.get("command") or []
        cmd = cmd if isinstance(cmd, list) else cmd.split()
        if s.get("entrypoint") or not cmd or cmd[0] not in ("backend", "aggregator"):
            continue
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        var = [k for k in env if k.endswith("METRICS_LISTEN")]
        if need(len(var) == 1, f"docker-compose.yml: service {name} ({cmd[0]}) has no *_METRICS_LISTEN: metrics off"):
            listen = str(env[var[0]])
            need(listen.startswith("0.0.0.0:"), f"docker-compose.yml: {name}: {var[0]}={listen}: not on every interface, Prometheus cannot reach it")
            servers[name] = {"binary": cmd[0], "var": var[0], "port": int(listen.rsplit(":", 1)[1])}
    need(servers, "docker-compose.yml: no backend or aggregator service found")
    json.dump(servers, open(f"{tmp}/compose-servers.json", "w"))
    for name in ("prometheus", "grafana"):
        s = services.get(name)
        if need(s is not None, f"docker-compose.yml: no service {name}"):
            need(s.get("profiles"), f"docker-compose.yml: {name} has no profile: `docker compose up` would pull its image")
            for p in s.get("ports", []):
                need(str(p).startswith("${") or str(p).startswith("127.0.0.1:"), f"docker-compose.yml: {name} publishes {p} beyond loopback")
    def mounts(service):
        out = {}
        for v in (services.get(service) or {}).get("volumes", []) or []:
            parts = str(v).split(":")
            if len(parts) >= 2:
                out[os.path.normpath(parts[1])] = os.path.normpath(parts[0])
        return out

    # (a) Prometheus' config.
    prom_path = "deploy/prometheus/prometheus.yml"
    prom = yaml.safe_load(open(prom_path))
    if not have_promtool:
        print(f"  {prom_path}: parsed as YAML with Python only: promtool is not available, so "
              "Prometheus' own parser did NOT check it")
    need(mounts("prometheus").get("/etc/prometheus/prometheus.yml") == prom_path,
         f"docker-compose.yml: prometheus does not mount {prom_path} on /etc/prometheus/prometheus.yml")
    glob = prom.get("global", {}) or {}
    jobs = prom.get("scrape_configs", []) or []
    scraped = {}
    for job in jobs:
        interval = job.get("scrape_interval", glob.get("scrape_interval"))
        need(interval == "5s", f"{prom_path}: job {job.get('job_name')} scrapes every {interval}, not 5s")
        need(job.get("metrics_path", "/metrics") == "/metrics", f"{prom_path}: job {job.get('job_name')}: metrics_path is not /metrics")
        for sd in job.get("dns_sd_configs", []) or []:
            for n in sd.get("names", []):
                scraped.setdefault(n, set()).add(sd.get("port"))
        for sc in job.get("static_configs", []) or []:
            for t in sc.get("targets", []):
                host, _, port = t.rpartition(":")
                scraped.setdefault(host, set()).add(int(port))
    for name, s in servers.items():
        need(s["port"] in scraped.get(name, set()),
             f"{prom_path}: compose service {name} is not scraped on port {s['port']} (scrapes: {sorted(scraped.get(name, []))})")
    for name in sorted(set(scraped) - set(servers)):
        need(False, f"{prom_path}: scrapes {name}, which is no compose service serving metrics")
    print(f"  {prom_path}: {len(jobs)} jobs, every 5 s: " +
          ", ".join(f"{n}:{'/'.join(map(str, sorted(p)))}" for n, p in sorted(scraped.items())))

    # (b) Grafana's provisioning.
    g_mounts = mounts("grafana")
    prov_dir = g_mounts.get("/etc/grafana/provisioning")
    need(prov_dir == "deploy/grafana/provisioning",
         "docker-compose.yml: grafana does not mount deploy/grafana/provisioning on /etc/grafana/provisioning")
    ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))
    need(ds.get("apiVersion") == 1, "datasources/prometheus.yml: apiVersion is not 1")
    sources = [d for d in ds.get("datasources", []) if d.get("type") == "prometheus"]
    uid = None
    if need(len(sources) == 1, "datasources/prometheus.yml: not exactly one prometheus data source"):
        src = sources[0]
        uid = src.get("uid")
        m = re.fullmatch(r"https?://([^:/]+):(\d+)/?", src.get("url", ""))
        need(m and m.group(1) in services and m.group(2) == "9090",
             f"datasources/prometheus.yml: url {src.get('url')} is not the compose service prometheus on 9090")
        need((src.get("jsonData") or {}).get("timeInterval") == glob.get("scrape_interval"),
             "datasources/prometheus.yml: jsonData.timeInterval is not Prometheus' scrape_interval")
    dp = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/fanout.yml"))
    need(dp.get("apiVersion") == 1, "dashboards/fanout.yml: apiVersion is not 1")
    dash_files = []
    for prov in dp.get("providers", []):
        path = os.path.normpath((prov.get("options") or {}).get("path", ""))
        host = g_mounts.get(path)
        if need(prov.get("type") == "file" and host, f"dashboards/fanout.yml: provider {prov.get('name')}: "
                f"path {path} is not a directory docker-compose.yml mounts into grafana"):
            dash_files += [os.path.join(host, f) for f in sorted(os.listdir(host)) if f.endswith(".json")]
    need("deploy/grafana/dashboards/fanout.json" in dash_files,
         "deploy/grafana/dashboards/fanout.json is not in a provisioned dashboards directory")
    home = ((services.get("grafana") or {}).get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        d, f = os.path.split(os.path.normpath(home))
        need(g_mounts.get(d) and os.path.exists(os.path.join(g_mounts[d], f)),
             f"docker-compose.yml: grafana's home dashboard {home} is not a mounted file")

    # (b) and (c): the dashboards.
    rules, queries = [], []
    for path in dash_files:
        try:
            dash = json.load(open(path))
        except ValueError as e:
            need(False, f"{path}: not valid JSON: {e}")
            continue
        need(dash.get("uid") and dash.get("title"), f"{path}: no uid or title")
        ids, panels = [], []
        def walk(ps):
            for p in ps:
                ids.append(p.get("id")); panels.append(p); walk(p.get("panels", []))
        walk(dash.get("panels", []))
        need(len(ids) == len(set(ids)) and None not in ids, f"{path}: panel ids missing or not unique")
        dvars = {v.get("name"): v for v in (dash.get("templating") or {}).get("list", [])}
        for v in dvars.values():
            need(v.get("type") in ("datasource", "interval", "custom", "constant", "textbox"),
                 f"{path}: variable {v.get('name')} of type {v.get('type')}: its query is not checked here")
        def ds_ok(ref):
            if isinstance(ref, dict):
                u = ref.get("uid")
                if u in (uid,):
                    return True
                m = re.fullmatch(r"\$\{?(\w+)\}?", u or "")
                return bool(m and dvars.get(m.group(1), {}).get("type") == "datasource"
                            and dvars[m.group(1)].get("query") == "prometheus")
            return False
        for p in panels:
            if p.get("type") == "row":
                continue
            title = p.get("title", "?")
            need(p.get("targets"), f"{path}: panel '{title}' has no query")
            need(ds_ok(p.get("datasource")), f"{path}: panel '{title}': data source {p.get('datasource')} is not the provisioned Prometheus nor a prometheus data source variable")
            for t in p.get("targets", []) or []:
                need(ds_ok(t.get("datasource", p.get("datasource"))), f"{path}: panel '{title}' {t.get('refId')}: data source is not Prometheus")
        for title, ref, expr, legend in dashboard_queries(dash):
            where = f"{os.path.basename(path)}: '{title}' {ref}"
            if not need(expr.strip(), f"{where}: empty expression"):
                continue
            try:
                sel, group = analyse(expr)
                promql = substitute(expr)
            except ValueError as e:
                need(False, f"{where}: {e}")
                continue
            metrics = [n for n, _ in sel]
            need(metrics, f"{where}: names no series: {expr}")
            known = {"job", "instance"}
            unknown = [n for n in metrics if n not in allowed]
            for n, labels in sel:
                if not need(n in allowed, f"{where}: {n} is not a series of docs/metrics.md"
                            + (" (a histogram: use its _bucket, _count or _sum)" if n in docs and docs[n]["type"] == "histogram" else "")):
                    continue
                have = set(allowed[n]) | {"job", "instance"}
                known |= have
                for l in labels - have:
                    need(False, f"{where}: {n} has no label {l} (docs/metrics.md: {', '.join(allowed[n]) or 'none'})")
            for l in sorted(group - known) if not unknown else []:
                need(False, f"{where}: groups by {l}, a label none of {', '.join(metrics)} has")
            for l in sorted(set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend)) - known - group) if not unknown else []:
                need(False, f"{where}: legend uses {{{{{l}}}}}, a label none of {', '.join(metrics)} has")
            for l in sorted(set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend))):
                if group and l not in group and re.match(r"\s*(sum|max|min|avg|count|histogram_quantile)\b", expr):
                    need(False, f"{where}: legend uses {{{{{l}}}}}, which the aggregation drops (by {', '.join(sorted(group))})")
            rules.append({"record": f"dashboard:q{len(rules) + 1}", "expr": promql})
            queries.append({"where": where, "expr": promql, "metrics": sorted(set(metrics)),
                            "matchers": {n: sorted(l) for n, l in sel},
                            "labels": sorted((group | set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend))) - {"job", "instance"})})
    used = sorted({m for q in queries for m in q["metrics"]})
    print(f"  dashboards: {', '.join(dash_files)}: {len(queries)} queries over {len(used)} series, all in docs/metrics.md" if not problems else
          f"  dashboards: {', '.join(dash_files)}: {len(queries)} queries checked")
    unused = sorted(f for f in docs if not any(m in sample_names(f, docs[f]) for m in used))
    if unused:
        print(f"  (documented series no panel shows: {', '.join(unused)})")
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(f"{tmp}/rules.json", "w"), indent=1)
    json.dump(queries, open(f"{tmp}/queries.json", "w"), indent=1)
    json.dump({"docs": docs, "allowed": allowed}, open(f"{tmp}/docs.json", "w"))
    finish("config, provisioning and dashboard (offline)")

# ---- live: what the binaries export -----------------------------------------------------------
def parse_exposition(text):
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s", line)
        if m:
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"', m.group(2) or ""))
            series.setdefault(m.group(1), set()).update(labels)
    return series

def live(tmp):
    queries = json.load(open(f"{tmp}/queries.json"))
    d = json.load(open(f"{tmp}/docs.json"))
    docs, allowed = d["docs"], d["allowed"]
    scraped = {}
    for server in ("backend", "aggregator"):
        text = open(f"{tmp}/{server}.metrics").read()
        headers = open(f"{tmp}/{server}.headers").read()
        scraped[server] = parse_exposition(text)
        ctype = re.search(r"(?im)^content-type:\s*(.*?)\s*$", headers)
        ctype = ctype.group(1) if ctype else ""
        print(f"  {server}: {len(scraped[server])} series names exported, Content-Type: {ctype or 'none'}")
        openmetrics = "# EOF" in text
        if openmetrics and not ctype.startswith("application/openmetrics-text"):
            warnings.append(f"{server}: the body is OpenMetrics text (it ends with # EOF) but is served as "
                            f"'{ctype}'; Prometheus then parses it as its classic text format, where a counter's "
                            "# TYPE names the family without _total: serve it as "
                            "application/openmetrics-text; version=1.0.0; charset=utf-8")
        if not openmetrics and ctype.startswith("application/openmetrics-text"):
            warnings.append(f"{server}: served as OpenMetrics without the final # EOF")
    exported = {}
    for s in scraped.values():
        for n, l in s.items():
            exported.setdefault(n, set()).update(l)
    # The dashboard's series, exported with the labels it uses.
    for q in queries:
        have = set()
        for n in q["metrics"]:
            if need(n in exported, f"{q['where']}: {n} is not exported by either server after the calls"):
                have |= exported[n]
                for l in q["matchers"].get(n, []):
                    need(l in exported[n] | {"job", "instance"}, f"{q['where']}: {n} is exported without the label {l}")
        if all(n in exported for n in q["metrics"]):
            for l in q["labels"]:
                need(l in have, f"{q['where']}: uses the label {l}, which {', '.join(q['metrics'])} are exported without")
    used = sorted({n for q in queries for n in q["metrics"]})
    missing = [n for n in used if n not in exported]
    if not missing:
        print(f"  every series the dashboard uses is exported ({len(used)}), with the labels it uses")
    # The contract both ways: documented, exported by the right server, with the documented labels.
    for fam, info in docs.items():
        for n, labels in sample_names(fam, info).items():
            for server in info["servers"]:
                if n not in scraped[server]:
                    warnings.append(f"{server}: documented {n} not exported (after calls)")
                elif set(labels) != scraped[server][n]:
                    warnings.append(f"{server}: {n} exported with labels {sorted(scraped[server][n])}, "
                                    f"docs/metrics.md says {sorted(labels)}")
    for server, s in scraped.items():
        for n in sorted(s):
            if n not in allowed and (n.startswith("fanout_") or n.startswith("rpc_")):
                warnings.append(f"{server}: exports {n}, which docs/metrics.md does not list")
    finish("live: the binaries export what the dashboard shows")

def env_names(tmp):
    """The env var each binary's --metrics-listen reads, against what compose and k8s set."""
    servers = json.load(open(f"{tmp}/compose-servers.json"))
    reads = {}
    for b in ("backend", "aggregator"):
        m = re.search(r"--metrics-listen\b.*?\[env: ([A-Z0-9_]+)=", open(f"{tmp}/{b}.help").read(), re.S)
        reads[b] = m.group(1) if m else None
        need(reads[b], f"{b} --help: --metrics-listen has no env var")
    for name, s in servers.items():
        need(s["var"] == reads.get(s["binary"]),
             f"docker-compose.yml: {name} sets {s['var']}, but {s['binary']} --metrics-listen reads "
             f"{reads.get(s['binary'])}: metrics are off in compose (docs/metrics.md says {s['var']})")
    for path in ("deploy/k8s/backends.yaml", "deploy/k8s/aggregator.yaml"):
        for doc in yaml.safe_load_all(open(path)):
            if not doc or doc.get("kind") != "Deployment":
                continue
            for c in doc["spec"]["template"]["spec"]["containers"]:
                binary = (c.get("command") or [""])[0]
                var = [e["name"] for e in c.get("env", []) if e["name"].endswith("METRICS_LISTEN")]
                if binary in reads:
                    need(var == [reads[binary]], f"{path}: {doc['metadata']['name']} sets {var}, "
                         f"but {binary} --metrics-listen reads {reads[binary]}")
    print(f"  --metrics-listen reads {reads['backend']} (backend), {reads['aggregator']} (aggregator)")
    finish("env var names")

def evaluate(tmp, url, patience=20):
    """Every dashboard query against a Prometheus that scraped both servers: each must be
    accepted; one with no data is asked again for up to `patience` seconds (a busy machine may
    have missed scrapes), then warned about."""
    import time, urllib.parse, urllib.request
    queries = json.load(open(f"{tmp}/queries.json"))
    def get(path):
        with urllib.request.urlopen(f"{url}{path}", timeout=10) as r:
            return json.load(r)
    deadline = time.monotonic() + patience
    pending = list(queries)
    while True:
        empty = []
        for q in pending:
            expr = q["expr"].replace("[1m]", "[20s]")
            try:
                res = get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
            except Exception as e:  # an HTTP 400 is a query Prometheus refused
                body = getattr(e, "read", lambda: b"")().decode(errors="replace")
                need(False, f"{q['where']}: Prometheus refused the query: {body or e}")
                continue
            if need(res.get("status") == "success", f"{q['where']}: {res}") and not res["data"]["result"]:
                empty.append(q)
        pending = empty
        if not pending or problems or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"  Prometheus evaluated all {len(queries)} queries; with data: {len(queries) - len(pending)}")
    for q in pending:
        warnings.append(f"no data for {q['where']}: {q['expr']}")
    if pending:
        for t in get("/api/v1/targets")["data"]["activeTargets"]:
            if t["health"] != "up":
                warnings.append(f"Prometheus' target {t['labels']['job']} is {t['health']}: {t['lastError']}")
    finish("live: every query evaluates")

if __name__ == "__main__":
    cmd, tmp = sys.argv[1], sys.argv[2]
    {"offline": lambda: offline(tmp, sys.argv[3] == "1"), "live": lambda: live(tmp),
     "env": lambda: env_names(tmp), "evaluate": lambda: evaluate(tmp, sys.argv[3])}[cmd]()
PY

say "(a) Prometheus config"
if [ -n "$promtool" ]; then
  rc=0
  "$promtool" check config deploy/prometheus/prometheus.yml >"$tmp/config.out" 2>&1 || rc=$?
  sed 's/^/  /' "$tmp/config.out"
  [ "$rc" = 0 ] || fail "promtool check config deploy/prometheus/prometheus.yml"
fi
say "(b)+(c) provisioning, dashboards and their series against docs/metrics.md"
offline_ok=1
python3 "$tmp/check.py" offline "$tmp" "$([ -n "$promtool" ] && echo 1 || echo 0)" || offline_ok=0

say "(c) every dashboard query parses (Prometheus' parser, as the rules of a throwaway rules file)"
if [ ! -f "$tmp/rules.json" ]; then
  say "SKIPPED: the dashboards could not be read (above)"
elif [ -n "$promtool" ]; then
  if "$promtool" check rules "$tmp/rules.json" >"$tmp/rules.out" 2>&1; then
    sed 's/^/  /; s#'"$tmp"'/##' "$tmp/rules.out"
    echo "PromQL: PASS"
  else
    sed 's/^/  /; s#'"$tmp"'/##' "$tmp/rules.out"
    # Which rule is which query: the numbers are dashboard:qN in order.
    python3 -c '
import json, re, sys
bad = {int(n) for n in re.findall(r"dashboard:q(\d+)", open(sys.argv[2]).read())}
for i, q in enumerate(json.load(open(sys.argv[1]))):
    if i + 1 in bad:
        print("  dashboard:q%d is %s: %s" % (i + 1, q["where"], q["expr"]))' "$tmp/queries.json" "$tmp/rules.out"
    offline_ok=0
    echo "FAIL: promtool check rules: a dashboard query does not parse"
  fi
else
  say "SKIPPED: no promtool, so no PromQL parser (promtool has no offline PromQL check but 'check rules')"
fi
[ "$offline_ok" = 1 ] || fail "offline checks (see above)"

# ---- (d) live ---------------------------------------------------------------------------------
live_ok=1
for b in backend aggregator; do
  if [ ! -x "$bin/$b" ]; then
    say "(d) live check SKIPPED: no $bin/$b (build the binaries, or give BIN_DIR)"
    live_ok=0; break
  fi
  "$bin/$b" --help >"$tmp/$b.help" 2>&1 || true
  if ! grep -q -- '--metrics-listen' "$tmp/$b.help"; then
    say "(d) live check SKIPPED: $bin/$b has no --metrics-listen yet"
    live_ok=0; break
  fi
done
if [ "$live_ok" = 0 ]; then
  say "PASS (offline checks; the live check was skipped)"
  exit 0
fi
[ -x "$bin/loadgen" ] || fail "(d) needs $bin/loadgen to make calls"
command -v curl >/dev/null || fail "(d) needs curl"

# The live checks go on after a failure, to show everything; the script fails at the end.
failed=()
say "(d) the env var the binaries read for --metrics-listen"
python3 "$tmp/check.py" env "$tmp" || failed+=("env var names")

say "(d) live: one backend and one aggregator from $bin, metrics on, calls from loadgen"
read -r bp bm ap am dead pp < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
"$bin/backend" --name fast --listen "127.0.0.1:$bp" --metrics-listen "127.0.0.1:$bm" \
  --latency 'tail:5ms,p=0.1,50ms' --fail-rate 0.2 >"$tmp/backend.log" 2>&1 &
pids+=($!)
# Two backends: fast, and one nobody serves (its endpoint down, its attempts failing).
"$bin/aggregator" --listen "127.0.0.1:$ap" --metrics-listen "127.0.0.1:$am" \
  --backend "fast=http://127.0.0.1:$bp" --backend "gone=http://127.0.0.1:$dead" \
  --hedge-after 20ms --attempt-timeout 500ms >"$tmp/aggregator.log" 2>&1 &
pids+=($!)
logs() {
  local f
  for f in backend aggregator prometheus; do
    [ -f "$tmp/$f.log" ] || continue
    echo "--- $f log:"
    if grep -q 'panicked' "$tmp/$f.log"; then grep -m 1 -A 3 'panicked' "$tmp/$f.log"; else tail -n 15 "$tmp/$f.log"; fi
  done
}
wait_for() { # WHAT CMD...: up to 10 s
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  logs; fail "$what did not come up within 10 s"
}
wait_for "backend (gRPC)" "$bin/loadgen" health "http://127.0.0.1:$bp"
wait_for "aggregator (gRPC)" "$bin/loadgen" health "http://127.0.0.1:$ap"
wait_for "backend /metrics" curl -sf "http://127.0.0.1:$bm/metrics"
wait_for "aggregator /metrics" curl -sf "http://127.0.0.1:$am/metrics"

# A throwaway Prometheus scraping both every second, to evaluate the dashboard's queries.
if [ -n "$prometheus" ]; then
  cat >"$tmp/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: backend
    static_configs: [{targets: ["127.0.0.1:$bm"]}]
  - job_name: aggregator
    static_configs: [{targets: ["127.0.0.1:$am"]}]
EOF
  "$prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
    --web.listen-address="127.0.0.1:$pp" >"$tmp/prometheus.log" 2>&1 &
  pids+=($!)
  wait_for "Prometheus" curl -sf "http://127.0.0.1:$pp/-/ready"
fi

timeout 60 "$bin/loadgen" run --target "http://127.0.0.1:$ap" -d 2s -c 2 >"$tmp/loadgen.log" 2>&1 ||
  { cat "$tmp/loadgen.log"; logs; fail "loadgen run against the aggregator"; }
grep -E '^ *(calls|status) ' "$tmp/loadgen.log" | sed 's/^ */  loadgen: /' || true
for s in backend:$bm aggregator:$am; do
  curl -sf -D "$tmp/${s%%:*}.headers" -o "$tmp/${s%%:*}.metrics" "http://127.0.0.1:${s#*:}/metrics" ||
    { logs; fail "scraping ${s%%:*} /metrics"; }
done
python3 "$tmp/check.py" live "$tmp" || failed+=("series exported")
if [ -n "$promtool" ]; then
  for s in backend aggregator; do
    if ! "$promtool" check metrics <"$tmp/$s.metrics" >"$tmp/$s.lint" 2>&1 || [ -s "$tmp/$s.lint" ]; then
      sed "s/^/  WARN: promtool check metrics ($s): /" "$tmp/$s.lint" | head -n 20
    fi
  done
fi

if [ -n "$prometheus" ]; then
  # A few scrapes after the load (rate() needs two in its window; evaluate asks again if not).
  sleep 2
  python3 "$tmp/check.py" evaluate "$tmp" "http://127.0.0.1:$pp" || failed+=("queries evaluated")
else
  say "(d) dashboard queries not evaluated: no prometheus binary"
fi
[ ${#failed[@]} = 0 ] || fail "live checks: ${failed[*]} (see above)"
say "PASS"
