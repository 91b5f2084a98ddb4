#!/usr/bin/env bash
# Offline checks of the deploy/ folder (no network, no cluster, no Prefect
# server needed). Prints one line per check: ok / FAIL / SKIP; exits 1 if any
# check failed.
#
#   deploy/check.sh
#
# Needs bash and python3. Uses, when present: systemd-analyze (unit files),
# PyYAML (from python3, else from /tmp/peers/bin/python) for the Kubernetes
# manifests.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
skips=0

ok()   { printf 'ok    %s\n' "$*"; }
bad()  { printf 'FAIL  %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf 'SKIP  %s\n' "$*"; skips=$((skips + 1)); }
# Runs "$@" quietly; on failure prints its output indented.
run_check() {
    local what=$1; shift
    local out
    if out=$("$@" 2>&1); then
        ok "$what"
    else
        bad "$what"
        printf '%s\n' "$out" | sed 's/^/      /'
    fi
}

command -v python3 >/dev/null || { echo "FAIL  python3 is required"; exit 1; }

service=$here/systemd/statbank-sync.service
timer=$here/systemd/statbank-sync.timer
k8s_files=("$here"/kubernetes/*.yaml)
flow_py=$here/prefect/statbank_flow.py

# ---------------------------------------------------------------- files
for f in "$service" "$timer" "$here/systemd/statbank.sysusers.conf" \
    "$here/kubernetes/cronjob.yaml" "$here/kubernetes/secret.example.yaml" \
    "$flow_py" "$here/prefect/requirements.txt" "$here/README.md"; do
    if [ -s "$f" ]; then ok "present: ${f#"$here"/}"; else bad "missing or empty: ${f#"$here"/}"; fi
done
if [ -x "$here/check.sh" ]; then ok "check.sh is executable"; else bad "check.sh is not executable"; fi

# ---------------------------------------------------------------- systemd
# Content assertions (plain parsing, no systemd needed).
run_check "systemd: service/timer settings (oneshot, ExecStart, user, hardening, schedule)" \
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
    got = section.get(key, [])
    if value not in got:
        errors.append(f"{where}: {key}={value} expected, found {got}")

want(s, "Type", "oneshot", "service")
want(s, "ExecStart",
     "/usr/local/bin/statbank-flow --data-dir /var/lib/statbank/data/dst "
     "--metrics-file /var/lib/node_exporter/textfile_collector/statbank.prom --log-format json",
     "service")
want(s, "EnvironmentFile", "-/etc/statbank-sync/env", "service")
want(s, "User", "statbank", "service")
want(s, "NoNewPrivileges", "yes", "service")
want(s, "ProtectSystem", "strict", "service")
want(s, "PrivateTmp", "yes", "service")
if not any("statbank" in v.split() for v in s.get("StateDirectory", [])):
    errors.append(f"service: StateDirectory must include 'statbank', found {s.get('StateDirectory')}")
rw = [p.lstrip("-") for v in s.get("ReadWritePaths", []) for p in v.split()]
for p in ("/var/lib/statbank/data/dst", "/var/lib/node_exporter/textfile_collector"):
    if p not in rw:
        errors.append(f"service: ReadWritePaths lacks {p} (has {rw})")
timeout = s.get("TimeoutStartSec", [""])[-1]
if not timeout.endswith("h") or int(timeout[:-1] or 0) < 6:
    errors.append(f"service: TimeoutStartSec should be generous (hours), found {timeout!r}")
want(t, "OnCalendar", "Sun *-*-* 22:00:00 UTC", "timer")
want(t, "Persistent", "true", "timer")
want(tmr.get("Install", {}), "WantedBy", "timers.target", "timer")
if errors:
    print("\n".join(errors))
    sys.exit(1)
PY

if command -v systemd-analyze >/dev/null; then
    # `systemd-analyze verify` fails with "Command ... is not executable" when
    # the ExecStart binary is not installed (here it never is), so verify a
    # copy whose ExecStart (with its '\' continuation lines) is /bin/true.
    # Everything else is checked as written. verify reports unknown keys and
    # bad values as warnings with exit status 0, so any output line naming our
    # units counts as a failure, too.
    mkdir -p "$tmp/units"
    cp "$timer" "$tmp/units/"
    awk 'skip { if ($0 !~ /\\$/) skip = 0; next }
         /^ExecStart=/ { print "ExecStart=/bin/true"; if ($0 ~ /\\$/) skip = 1; next }
         { print }' "$service" >"$tmp/units/statbank-sync.service"
    if ! grep -q '^ExecStart=/bin/true$' "$tmp/units/statbank-sync.service"; then
        bad "systemd-analyze verify: could not rewrite ExecStart"
    else
        rc=0
        out=$(cd "$tmp/units" && systemd-analyze verify --man=no \
            ./statbank-sync.service ./statbank-sync.timer 2>&1) || rc=$?
        noise=$(printf '%s\n' "$out" | grep -i 'statbank' || true)
        if [ "$rc" -eq 0 ] && [ -z "$noise" ]; then
            ok "systemd-analyze verify statbank-sync.service statbank-sync.timer (ExecStart -> /bin/true)"
        else
            bad "systemd-analyze verify (exit $rc)"
            printf '%s\n' "$out" | sed 's/^/      /'
        fi
    fi
    cal=$(sed -n 's/^OnCalendar=//p' "$timer" | head -n 1)
    if norm=$(systemd-analyze calendar "$cal" 2>&1) &&
        printf '%s\n' "$norm" | grep -q 'Normalized form: Sun \*-\*-\* 22:00:00 UTC'; then
        ok "systemd-analyze calendar '$cal' ($(printf '%s\n' "$norm" | sed -n 's/^ *Next elapse: //p'))"
    else
        bad "systemd-analyze calendar '$cal'"
        printf '%s\n' "$norm" | sed 's/^/      /'
    fi
else
    skip "systemd-analyze not installed: unit files only checked by parsing above"
fi
if command -v systemd-sysusers >/dev/null; then
    # --root: against an empty tree, so the result does not depend on this
    # machine's users; --dry-run writes nothing.
    mkdir -p "$tmp/sysroot/etc"
    if out=$(systemd-sysusers --dry-run --root="$tmp/sysroot" "$here/systemd/statbank.sysusers.conf" 2>&1) &&
        printf '%s\n' "$out" | grep -q "Creating user 'statbank'"; then
        ok "systemd-sysusers --dry-run statbank.sysusers.conf (creates user statbank)"
    else
        bad "systemd-sysusers --dry-run statbank.sysusers.conf"
        printf '%s\n' "$out" | sed 's/^/      /'
    fi
else
    skip "systemd-sysusers not installed: statbank.sysusers.conf not checked"
fi

# ---------------------------------------------------------------- kubernetes
yaml_py=""
for py in python3 /tmp/peers/bin/python; do
    if command -v "$py" >/dev/null && "$py" -c 'import yaml' 2>/dev/null; then
        yaml_py=$py
        break
    fi
done

if [ -n "$yaml_py" ]; then
    run_check "kubernetes: YAML parses (${k8s_files[*]##*/}) and CronJob/PVC/Secret assertions ($yaml_py)" \
        "$yaml_py" - "${k8s_files[@]}" <<'PY'
import os, sys
import yaml

docs = {}
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        for d in yaml.safe_load_all(f):
            if d is None:
                continue
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                sys.exit(f"{path}: a document without kind/apiVersion")
            docs.setdefault(d["kind"], []).append((os.path.basename(path), d))

errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

cron = [d for f, d in docs.get("CronJob", []) if f == "cronjob.yaml"]
check(len(cron) == 1, f"cronjob.yaml: expected one CronJob, found {len(cron)}")
if cron:
    cj = cron[0]
    spec = cj["spec"]
    check(cj["apiVersion"] == "batch/v1", f"CronJob apiVersion {cj['apiVersion']!r}")
    check(spec.get("schedule") == "0 22 * * 0", f"schedule {spec.get('schedule')!r} != '0 22 * * 0'")
    check(spec.get("timeZone") == "Etc/UTC", f"timeZone {spec.get('timeZone')!r}")
    check(spec.get("concurrencyPolicy") == "Forbid", f"concurrencyPolicy {spec.get('concurrencyPolicy')!r} != 'Forbid'")
    check(isinstance(spec.get("startingDeadlineSeconds"), int), "startingDeadlineSeconds missing")
    job = spec["jobTemplate"]["spec"]
    check(job.get("backoffLimit") == 0, f"backoffLimit {job.get('backoffLimit')!r} != 0")
    pod = job["template"]["spec"]
    check(pod.get("restartPolicy") == "Never", "restartPolicy should be Never")
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True, "pod runAsNonRoot is not true")
    (c,) = pod["containers"]
    check(c["image"] == "ghcr.io/example/statbank-sync:latest", f"image {c['image']!r}")
    cmd = list(c.get("command", [])) + list(c.get("args", []))
    check(cmd[:1] == ["statbank-flow"] and "--log-format" in cmd and "json" in cmd, f"command {cmd}")
    check(c.get("securityContext", {}).get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    env = {e["name"]: e for e in c.get("env", [])}
    check(env.get("STATBANK_DATA_DIR", {}).get("value") == "/data/dst", "STATBANK_DATA_DIR != /data/dst")
    ref = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
    check(ref.get("name") == "statbank-sync" and ref.get("key") == "database-url",
          f"DATABASE_URL secretKeyRef {ref}")
    check(not ref.get("optional"), "DATABASE_URL secretKeyRef must not be optional")
    limits = c.get("resources", {}).get("limits", {})
    check("memory" in limits and "memory" in c.get("resources", {}).get("requests", {}),
          "memory requests/limits missing")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    data = [n for n, p in mounts.items() if p == "/data"]
    check(len(data) == 1, "no volume mounted at /data")
    if data:
        claim = vols.get(data[0], {}).get("persistentVolumeClaim", {}).get("claimName")
        pvcs = [d["metadata"]["name"] for _, d in docs.get("PersistentVolumeClaim", [])]
        check(claim is not None and claim in pvcs, f"/data claim {claim!r} not among PVC manifests {pvcs}")

secrets = [d for f, d in docs.get("Secret", []) if f == "secret.example.yaml"]
check(len(secrets) == 1, "secret.example.yaml: expected one Secret")
if secrets:
    s = secrets[0]
    keys = set(s.get("stringData", {}) or {}) | set(s.get("data", {}) or {})
    check(s["metadata"]["name"] == "statbank-sync" and "database-url" in keys,
          "Secret must be named statbank-sync with key database-url")

if errors:
    print("\n".join(errors))
    sys.exit(1)
PY
else
    skip "PyYAML not importable (python3, /tmp/peers/bin/python): no YAML parse; grep checks only"
    f=$here/kubernetes/cronjob.yaml
    if grep -Eq '^[[:space:]]*concurrencyPolicy:[[:space:]]*Forbid[[:space:]]*(#.*)?$' "$f" &&
        grep -Eq "^[[:space:]]*schedule:[[:space:]]*[\"']0 22 \\* \\* 0[\"'][[:space:]]*(#.*)?$" "$f"; then
        ok "kubernetes (grep): concurrencyPolicy Forbid, schedule '0 22 * * 0'"
    else
        bad "kubernetes (grep): concurrencyPolicy Forbid / schedule '0 22 * * 0' not found in cronjob.yaml"
    fi
fi

# ---------------------------------------------------------------- prefect
# Byte-compile into a temp cache so no __pycache__ is left in the tree.
run_check "prefect: python3 -m py_compile statbank_flow.py" \
    env PYTHONPYCACHEPREFIX="$tmp/pycache" python3 -m py_compile "$flow_py"

# The flow's decisions, against fake binaries and a minimal stand-in for the
# `prefect` package (decorators that record their options), so this runs
# without Prefect installed. Prefect's own retry machinery is not exercised.
mkdir -p "$tmp/stub/prefect/blocks" "$tmp/stub/prefect/runner" "$tmp/bin"
cat >"$tmp/stub/prefect/__init__.py" <<'PY'
import functools, logging
logging.basicConfig(level=logging.WARNING)
def get_run_logger():
    return logging.getLogger("flow")
def _decorator(**options):
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            return fn(*a, **k)
        inner.options = options
        return inner
    return wrap
def task(**options):
    return _decorator(**options)
def flow(**options):
    return _decorator(**options)
PY
: >"$tmp/stub/prefect/blocks/__init__.py"
cat >"$tmp/stub/prefect/blocks/system.py" <<'PY'
class Secret:
    values = {}
    def __init__(self, value):
        self.value = value
    @classmethod
    def load(cls, name):
        return cls(cls.values[name])
    def get(self):
        return self.value
PY
: >"$tmp/stub/prefect/runner/__init__.py"
echo 'class LocalStorage: pass' >"$tmp/stub/prefect/runner/storage.py"

cat >"$tmp/bin/statbank-sync" <<'SH'
#!/usr/bin/env bash
# fake statbank-sync; FAKE_SYNC: changes|deleted|nochange|partial|failed|usage
while [ $# -gt 0 ]; do
    case $1 in --data-dir) d=$2; shift ;; --run-id) r=$2; shift ;; esac
    shift
done
case $FAKE_SYNC in usage) echo "error: unexpected argument" >&2; exit 2 ;; esac
mkdir -p "$d/statbank_tables/_sync/runs"
case $FAKE_SYNC in
    changes)  st=success;         tables='"A":{"status":"success","changed_tids":["2024"]},"B":{"status":"skipped","changed_tids":[]}'; code=0 ;;
    deleted)  st=success;         tables='"A":{"status":"success","changed_tids":[],"deleted_tids":["2019"]}'; code=0 ;;
    nochange) st=skipped;         tables='"A":{"status":"skipped","changed_tids":[]}'; code=0 ;;
    partial)  st=partial_failure; tables='"A":{"status":"failed","changed_tids":[]},"B":{"status":"success","changed_tids":["2024K1"]}'; code=2 ;;
    failed)   st=failed;          tables=''; code=1 ;;
esac
printf '{"run_id":"%s","status":"%s","catalog":{},"summary":{},"tables":{%s},"error":%s}\n' \
    "$r" "$st" "$tables" "$([ "$st" = failed ] && echo '"boom"' || echo null)" \
    >"$d/statbank_tables/_sync/runs/$r.json"
exit $code
SH
cat >"$tmp/bin/statbank-apply" <<'SH'
#!/usr/bin/env bash
# fake statbank-apply; FAKE_APPLY: ok|partial|failed; logs its argv
echo "$*" >>"$FAKE_LOG"
while [ $# -gt 0 ]; do
    case $1 in --data-dir) d=$2; shift ;; --run-id) r=$2; shift ;; esac
    shift
done
case $FAKE_APPLY in failed) exit 1 ;; partial) st=partial_failure; code=2 ;; *) st=success; code=0 ;; esac
python3 - "$d/statbank_tables/_sync/runs/$r.json" "$st" <<'P'
import json, sys
m = json.load(open(sys.argv[1]))
m["db_apply"] = {"run_id": m["run_id"], "status": sys.argv[2], "summary": {}}
json.dump(m, open(sys.argv[1], "w"))
P
exit $code
SH
chmod +x "$tmp/bin/statbank-sync" "$tmp/bin/statbank-apply"

run_check "prefect: flow decisions (retries; apply only on changes; exit 1 raises; exit 2 applies then fails the run)" \
    env PYTHONPATH="$tmp/stub:$here/prefect" PYTHONPYCACHEPREFIX="$tmp/pycache" \
    STATBANK_BIN_DIR="$tmp/bin" FAKE_LOG="$tmp/apply.log" TMPROOT="$tmp" \
    python3 - <<'PY'
import os, sys
import statbank_flow as sf

assert sf.sync.options["retries"] == 3, sf.sync.options
assert list(sf.sync.options["retry_delay_seconds"]) == [30, 120, 300], sf.sync.options
assert sf.apply.options["retries"] == 1 and sf.apply.options["retry_delay_seconds"] == 60, sf.apply.options
assert sf.CRON == "0 22 * * 0"

log = os.environ["FAKE_LOG"]
n = 0
def case(sync_mode, apply_mode="ok", db="postgres://u:secret@h/db", secret_block=None):
    """-> (outcome, apply argv list, result)"""
    global n
    n += 1
    os.environ["FAKE_SYNC"], os.environ["FAKE_APPLY"] = sync_mode, apply_mode
    if db is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = db
    open(log, "w").close()
    data = os.path.join(os.environ["TMPROOT"], f"data{n}")
    try:
        res, outcome = sf.weekly_statbank_sync_flow(data_dir=data, database_url_secret_block=secret_block), "ok"
    except sf.StatbankPartialFailure:
        res, outcome = None, "partial"
    except sf.StatbankCommandFailed:
        res, outcome = None, "failed"
    return outcome, [l.split() for l in open(log).read().splitlines()], res

def expect(name, got, want):
    if got != want:
        sys.exit(f"{name}: got {got!r}, want {want!r}")

o, calls, res = case("changes")
expect("changes: outcome", o, "ok")
expect("changes: apply calls", len(calls), 1)
run_id = res["sync"]["run_id"]
expect("changes: --run-id passed to apply", calls[0][calls[0].index("--run-id") + 1], run_id)
expect("changes: run id format", len(run_id) == 16 and run_id[8] == "T" and run_id.endswith("Z"), True)
expect("changes: no secret on the command line", any("secret" in a for a in calls[0]), False)
expect("changes: apply status", res["apply"]["status"], "success")
o, calls, _ = case("deleted");            expect("deleted_tids only", (o, len(calls)), ("ok", 1))
o, calls, res = case("nochange");         expect("no changes", (o, len(calls), res["apply"]), ("ok", 0, None))
o, calls, _ = case("partial");            expect("sync partial (applies, then fails)", (o, len(calls)), ("partial", 1))
o, calls, _ = case("failed");             expect("sync failed", (o, len(calls)), ("failed", 0))
o, calls, _ = case("usage");              expect("sync exit 2 without manifest", (o, len(calls)), ("failed", 0))
o, calls, _ = case("changes", "partial"); expect("apply partial", (o, len(calls)), ("partial", 1))
o, calls, _ = case("changes", "failed");  expect("apply failed", (o, len(calls)), ("failed", 1))
o, calls, _ = case("changes", db=None);   expect("no DATABASE_URL", (o, len(calls)), ("failed", 0))
sf.Secret.values["pg"] = "postgres://from-block"
o, calls, _ = case("changes", db=None, secret_block="pg")
expect("DATABASE_URL from a Secret block", (o, len(calls)), ("ok", 1))
PY

if python3 -c 'import prefect' 2>/dev/null; then
    run_check "prefect: statbank_flow imports with the installed prefect" \
        env PYTHONPATH="$here/prefect" PYTHONPYCACHEPREFIX="$tmp/pycache" \
        python3 -c 'import statbank_flow as f; assert f.weekly_statbank_sync_flow.name == "weekly_statbank_sync_flow"'
else
    skip "prefect not installed for python3: import with real Prefect not tried (stand-in used above)"
fi

# ---------------------------------------------------------------- summary
echo
if [ "$failures" -gt 0 ]; then
    echo "deploy/check.sh: $failures check(s) FAILED, $skips skipped"
    exit 1
fi
echo "deploy/check.sh: all checks passed ($skips skipped)"
