"""Prefect flow for statbank-sync, for teams that already run Prefect.

It does what ``statbank-flow`` does, with Prefect's retries, UI and alerting:

1. task ``sync``: runs ``statbank-sync --run-id <UTC %Y%m%dT%H%M%SZ>``
   (3 retries, 30 s / 120 s / 300 s apart);
2. task ``apply``: runs ``statbank-apply --pending`` (1 retry, 60 s), which
   applies every run whose changes were never applied successfully (this
   run's, and any earlier run whose apply failed or never ran), oldest first.
   So an apply that failed last week is caught up by this week's run.
3. task ``reconcile`` (flow parameter ``reconcile_every`` N > 0: once every
   N runs, counted since the newest reconcile report; 1 retry, 60 s): runs
   ``statbank-apply --reconcile`` (``--repair`` with ``reconcile_repair``),
   which compares every table that has partitions with its fact table,
   period by period, and writes ``_sync/reconcile/<id>.json``. Tables left
   differing from the mirror fail the flow run, naming them, as a partial
   failure does; ``reconcile_every=4`` with ``reconcile_repair=True`` is
   the monthly check-and-mend of a weekly schedule.

``metadata=True`` passes ``--metadata`` to the apply (labels and table
metadata in the ``meta`` schema). ``iceberg=True`` passes ``--iceberg`` to
the sync (every table's Iceberg metadata beside the mirror, remembered by
the data folder), ``iceberg=False`` passes ``--no-iceberg``.

Exit codes of both binaries: 0 success/skipped, 2 partial failure, 1 failed.

* 1 (failed, or could not start, e.g. the data folder is locked) raises, so
  Prefect retries the task. Each sync attempt gets its own run id (its own
  manifest); a failed sync does not clear the state's journal of changed
  periods, so the next attempt's manifest still lists them.
* 2 (partial failure: some tables failed) is not retried blindly: a retry
  would re-run the whole cycle for the sake of a few tables, and the next
  weekly cycle retries failed tables anyway (and ``--pending`` re-applies a
  partially applied run). The flow logs a warning, still applies what did
  change, and ends in a Failed state whose message names the failed tables
  and their errors, so that Prefect automations / notifications fire.

The binaries run with ``--log-format json``; each of their log lines is
forwarded to the Prefect run log at its own level (WARN -> warning, ERROR ->
error). Known secrets (the database URL and its password, webhook URLs, object
store keys) are masked in everything this flow logs or raises.

Configuration (environment of the process that runs the flow):

* ``STATBANK_BIN_DIR``: folder of the binaries (default: found on ``PATH``).
* ``STATBANK_DATA_DIR``: data folder (default ``data/dst``, as the binaries),
  or an object store URL (``s3://bucket/prefix``, ``gs://…``, ``az://…``; with
  the standard ``AWS_*``/``GOOGLE_*``/``AZURE_*`` variables). On an object
  store the flow reads manifests through ``statbank-inspect``.
* ``STATBANK_BASE_URL``: read by statbank-sync itself.
* ``DATABASE_URL``: read by statbank-apply itself; or pass the flow parameter
  ``database_url_secret_block`` (name of a Prefect ``Secret`` block). The URL
  is handed to the child through its environment, never on its command line.
* ``PREFECT_API_URL``: the Prefect server to register with (required).
* ``PREFECT_WORK_POOL``: see ``__main__`` below.

Deploy: ``python statbank_flow.py`` (see the Prefect section of deploy/README.md).
"""

# No `from __future__ import annotations` here: Prefect builds a pydantic model
# from the flow's signature when a deployment run starts, and string
# annotations would have to be resolved again in a namespace that lacks the
# typing names ("Weekly_Statbank_Sync_FlowModel is not fully defined").

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Literal, Optional, Tuple
from urllib.parse import urlsplit

from prefect import flow, get_run_logger, task
from prefect.blocks.system import Secret

FLOW_NAME = "weekly_statbank_sync_flow"
DEPLOYMENT_NAME = "weekly-statbank-sync"
CRON = "0 22 * * 0"  # Sunday 22:00 UTC
DEFAULT_DATA_DIR = "data/dst"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2

# Longest error text quoted per table in a failure message.
MAX_ERROR_CHARS = 300
# Tables named per run in a failure message (the rest are counted).
MAX_TABLES_NAMED = 20

# Environment variables whose values are secrets wherever they appear.
SECRET_ENV_VARS = (
    "DATABASE_URL",
    "STATBANK_ALERT_WEBHOOK",
    "STATBANK_METRICS_PUSH_URL",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


class StatbankCommandFailed(RuntimeError):
    """A binary failed as a whole (exit 1, a signal, or a usage error)."""


class StatbankPartialFailure(RuntimeError):
    """Some tables failed; raised at the end of the flow to fail the run."""


# ---------------------------------------------------------------- secrets

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


class _Redactor:
    """Masks known secret values and anything shaped like a password.

    Holds no lock: `.serve()` pickles the flow together with the module
    globals it uses, and the tuple of secrets is replaced as a whole."""

    def __init__(self) -> None:
        self._secrets: Tuple[str, ...] = ()

    def add(self, value: Optional[str]) -> None:
        if not value:
            return
        found = {value}
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.add(password)
        for m in _KV_PASSWORD.finditer(value):
            found.add(m.group(2).strip("'"))
        # Very short values would mask ordinary words.
        merged = set(self._secrets) | {s for s in found if len(s) >= 4}
        self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def add_environment(self, env: Optional[Dict[str, str]] = None) -> None:
        env = os.environ if env is None else env
        for name in SECRET_ENV_VARS:
            self.add(env.get(name))

    def __call__(self, text: Any) -> str:
        text = str(text)
        for s in self._secrets:
            text = text.replace(s, "***")
        text = _URL_PASSWORD.sub(r"\g<head>***@", text)
        return _KV_PASSWORD.sub(r"\g<head>***", text)


redact = _Redactor()
redact.add_environment()


# ---------------------------------------------------------------- helpers


def _binary(name: str) -> str:
    """Path of a statbank binary: ``$STATBANK_BIN_DIR/name`` or from PATH."""
    bin_dir = os.environ.get("STATBANK_BIN_DIR")
    if bin_dir:
        path = Path(bin_dir) / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{path} is not an executable file (STATBANK_BIN_DIR={bin_dir})")
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found on PATH; set STATBANK_BIN_DIR")
    return found


_SUPPORTS: Dict[Tuple[str, str], bool] = {}


def _supports(binary: str, flag: str) -> bool:
    """Whether ``binary --help`` lists ``flag`` (asked once per process)."""
    if (binary, flag) not in _SUPPORTS:
        _SUPPORTS[(binary, flag)] = _help_lists(binary, flag)
    return _SUPPORTS[(binary, flag)]


def _help_lists(binary: str, flag: str) -> bool:
    try:
        out = subprocess.run(
            [binary, "--help"], capture_output=True, text=True, errors="replace", timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(re.escape(flag) + r"\b", out.stdout + out.stderr) is not None


def _data_dir(data_dir: Optional[str]) -> str:
    """The data folder as the binaries take it: a local path, or an object
    store URL such as ``s3://bucket/prefix`` (kept as text: ``Path`` would
    fold its ``//``)."""
    return data_dir or os.environ.get("STATBANK_DATA_DIR") or DEFAULT_DATA_DIR


def _is_url(data_dir: str) -> bool:
    """``s3://…``, ``gs://…``, ``az://…``, ``file://…``: read through
    ``statbank-inspect``, which opens every backend the binaries open."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", data_dir) is not None


def _runs_dir(data_dir: Path) -> Path:
    return data_dir / "statbank_tables" / "_sync" / "runs"


def _manifest_path(data_dir: Path, run_id: str) -> Path:
    return _runs_dir(data_dir) / f"{run_id}.json"


def _manifest_location(data_dir: str, run_id: str) -> str:
    """Where a run's manifest is, for messages."""
    if _is_url(data_dir):
        return f"{data_dir.rstrip('/')}/statbank_tables/_sync/runs/{run_id}.json"
    return str(_manifest_path(Path(data_dir), run_id))


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _load_manifest(path: Path) -> Optional[Dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def _inspect_json(data_dir: str, *args: str) -> Tuple[int, Any, str]:
    """``statbank-inspect --data-dir D --json ARGS…`` -> (exit code, parsed
    stdout or None, stderr)."""
    cmd = [_binary("statbank-inspect"), "--data-dir", data_dir, "--json", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    try:
        data = json.loads(out.stdout) if out.returncode == 0 else None
    except ValueError:
        data = None
    return out.returncode, data, out.stderr


def _run_manifest(data_dir: str, run_id: str) -> Optional[Dict[str, Any]]:
    """A run's manifest, or None when there is none."""
    if not _is_url(data_dir):
        return _load_manifest(_manifest_path(Path(data_dir), run_id))
    code, data, _ = _inspect_json(data_dir, "run", run_id)
    return data if code == 0 and isinstance(data, dict) else None


def _entries(tables: Any, key: str = "table") -> List[Tuple[str, Dict[str, Any]]]:
    """``(table id, result)`` pairs of a manifest's per-table section, which
    is a map keyed by table id or a list of objects with a ``table`` key."""
    if isinstance(tables, dict):
        return [(str(k), v if isinstance(v, dict) else {}) for k, v in tables.items()]
    if isinstance(tables, list):
        return [(str(t.get(key, "?")), t) for t in tables if isinstance(t, dict)]
    return []


def _changes(manifest: Dict[str, Any]) -> Dict[str, Dict[str, int]]:
    """Tables with non-empty ``changed_tids`` or ``deleted_tids``."""
    out: Dict[str, Dict[str, int]] = {}
    for table, result in _entries(manifest.get("tables")):
        changed = result.get("changed_tids") or []
        deleted = result.get("deleted_tids") or []
        if changed or deleted:
            out[table] = {"changed": len(changed), "deleted": len(deleted)}
    return out


def _needs_apply(manifest: Dict[str, Any]) -> bool:
    """Same rule as ``statbank-apply --pending``: the run has changes (periods,
    or a table's metadata alone) and its ``db_apply`` is absent, failed,
    partial, or skipped for want of a database."""
    metadata_only = any(r.get("metadata_changed") for _, r in _entries(manifest.get("tables")))
    if not _changes(manifest) and not metadata_only:
        return False
    report = manifest.get("db_apply")
    if not isinstance(report, dict):
        return True
    status = report.get("status")
    if status in ("failed", "partial_failure"):
        return True
    if status == "skipped":
        return report.get("reason") == "no_database_url"
    return False


def _run_ids(data_dir: Path) -> List[str]:
    """Run ids of the manifests in a local ``runs/``, oldest first."""
    try:
        names = os.listdir(_runs_dir(data_dir))
    except FileNotFoundError:
        return []
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json") and not n.startswith("."))


def _pending_runs(data_dir: str) -> List[str]:
    """Runs whose changes await a DB apply, oldest first."""
    if _is_url(data_dir):
        code, data, err = _inspect_json(data_dir, "status")
        if code != 0 or not isinstance(data, dict):
            raise StatbankCommandFailed(
                f"statbank-inspect status on {data_dir} exited with {code}: {_shorten(err or 'no JSON')}"
            )
        return [str(r) for r in data.get("pending_applies") or []]
    out = []
    folder = Path(data_dir)
    for run_id in _run_ids(folder):
        m = _load_manifest(_manifest_path(folder, run_id))
        if m is not None and _needs_apply(m):
            out.append(run_id)
    return out


def _apply_marks(data_dir: str) -> Dict[str, str]:
    """What an apply may touch, taken before it: locally, run id -> its
    ``db_apply`` as canonical JSON; on an object store (where reading every
    manifest costs a request each), the pending runs, which are exactly
    what ``statbank-apply --pending`` applies."""
    if _is_url(data_dir):
        return {run_id: "pending" for run_id in _pending_runs(data_dir)}
    out = {}
    folder = Path(data_dir)
    for run_id in _run_ids(folder):
        m = _load_manifest(_manifest_path(folder, run_id)) or {}
        out[run_id] = json.dumps(m.get("db_apply"), sort_keys=True)
    return out


def _applied_runs(data_dir: str, before: Dict[str, str]) -> List[str]:
    """The runs an apply touched, given ``_apply_marks`` from before it."""
    if _is_url(data_dir):
        return sorted(before)
    after = _apply_marks(data_dir)
    return sorted(r for r in after if after[r] != before.get(r))


def _shorten(text: Any, limit: int = MAX_ERROR_CHARS) -> str:
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(table: str, result: Dict[str, Any]) -> str:
    """``FOLK1A (reason: …; error: …)``"""
    parts = []
    for key in ("reason", "error"):
        if result.get(key):
            parts.append(f"{key}: {_shorten(result[key])}")
    return f"{table} ({'; '.join(parts)})" if parts else table


def _join_tables(items: List[str]) -> str:
    shown = items[:MAX_TABLES_NAMED]
    rest = len(items) - len(shown)
    return ", ".join(shown) + (f", and {rest} more" if rest > 0 else "")


def sync_failures(manifest: Dict[str, Any]) -> str:
    """The failed tables of a sync manifest, with their errors."""
    failed = [_describe(t, r) for t, r in _entries(manifest.get("tables")) if r.get("status") == "failed"]
    if not failed:
        return "no table marked failed"
    return f"{len(failed)} table(s) failed: {_join_tables(failed)}"


def apply_failures(report: Optional[Dict[str, Any]]) -> str:
    """What went wrong in a manifest's ``db_apply``: its status, cause and
    failed tables (``tables`` is a list with ``table`` keys or a map)."""
    if not isinstance(report, dict):
        return "no db_apply report written"
    text = f"db_apply {report.get('status') or 'without status'}"
    cause = [f"{k}: {_shorten(report[k])}" for k in ("reason", "error") if report.get(k)]
    if cause:
        text += f" ({'; '.join(cause)})"
    failed = [_describe(t, r) for t, r in _entries(report.get("tables")) if r.get("status") == "failed"]
    if failed:
        text += f"; {len(failed)} table(s) failed: {_join_tables(failed)}"
    return text


# ---------------------------------------------------------------- running the binaries

_LEVELS = {"ERROR": "error", "WARN": "warning", "WARNING": "warning", "INFO": "info", "DEBUG": "debug", "TRACE": "debug"}


def _format_json_line(record: Dict[str, Any]) -> Tuple[str, str]:
    """-> (Prefect logger method name, text) for one ``--log-format json`` line
    (``{"timestamp","level","fields":{"message",…},"target"}``)."""
    level = _LEVELS.get(str(record.get("level", "INFO")).upper(), "info")
    fields = record.get("fields")
    fields = dict(fields) if isinstance(fields, dict) else {}
    message = str(fields.pop("message", ""))
    extras = []
    for key, value in fields.items():
        if key.startswith("log.") or value is None or value == "":
            continue
        if not isinstance(value, str):
            value = json.dumps(value)
        extras.append(f"{key}={value}")
    text = " ".join([message] + extras) if message else " ".join(extras)
    return level, text


def _pump(stream: Any, name: str, lines: "queue.Queue[Tuple[str, Optional[str]]]") -> None:
    try:
        for line in stream:
            lines.put((name, line))
    finally:
        lines.put((name, None))


def _run(cmd: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[int, List[str]]:
    """Runs ``cmd``; forwards its output to the Prefect log and returns
    ``(exit code, its ERROR lines)``.

    stderr carries the JSON log lines (forwarded at their own level; a line
    that is not JSON, such as a usage error, at warning, or error when it
    starts with ``error``); stdout carries the human summary (info).

    If the task is interrupted (cancellation, timeout, Ctrl-C) the child gets
    SIGTERM (it finishes the requests in flight and exits) and, after 5
    minutes, SIGKILL. The data folder stays consistent either way.
    """
    logger = get_run_logger()
    logger.info("running: %s", redact(" ".join(cmd)))
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        errors="replace",
        bufsize=1,
    )
    errors: List[str] = []
    lines: "queue.Queue[Tuple[str, Optional[str]]]" = queue.Queue()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", lines), daemon=True),
    ]
    for p in pumps:
        p.start()
    try:
        open_streams = len(pumps)
        while open_streams:
            name, line = lines.get()
            if line is None:
                open_streams -= 1
                continue
            line = line.rstrip("\n")
            if not line.strip():
                continue
            level, text = "info", line
            if name == "stderr":
                record = None
                if line.lstrip().startswith("{"):
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = None
                if isinstance(record, dict):
                    level, text = _format_json_line(record)
                else:
                    level = "error" if line.lower().startswith("error") else "warning"
            text = redact(text)
            getattr(logger, level)("%s", text)
            if level == "error":
                errors.append(text)
        return proc.wait(), errors
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for p in pumps:
            p.join(timeout=5)


def _last_errors(errors: List[str], n: int = 3) -> str:
    return " | ".join(_shorten(e) for e in errors[-n:])


def _database_env(database_url_secret_block: Optional[str]) -> Dict[str, str]:
    """The child's environment with ``DATABASE_URL`` (from the Secret block
    when one is named); raises when there is none."""
    env = dict(os.environ)
    if database_url_secret_block:
        env["DATABASE_URL"] = Secret.load(database_url_secret_block).get()
        redact.add(env["DATABASE_URL"])
    if not env.get("DATABASE_URL"):
        raise StatbankCommandFailed(
            "DATABASE_URL is not set (environment of the process that runs the "
            "flow, or the database_url_secret_block parameter)"
        )
    return env


def _apply_flags(
    binary: str,
    create_missing: bool,
    on_schema_change: str,
    history: bool,
    db_schema: Optional[str],
    metadata: bool,
) -> List[str]:
    """The flags of ``statbank-apply`` that both the apply and the reconcile
    (whose repair applies) take."""
    cmd: List[str] = []
    if create_missing:
        cmd.append("--create-missing")
    if db_schema:
        cmd += ["--schema", db_schema]
    if on_schema_change != "fail":
        cmd += ["--on-schema-change", on_schema_change]
    if history and _supports(binary, "--history"):
        cmd.append("--history")
    if metadata:
        cmd.append("--metadata")
    return cmd


def _last_reconcile(data_dir: str) -> Optional[Dict[str, Any]]:
    """The newest reconcile report's summary (``statbank-inspect status``:
    ``reconcile_id``, ``status``, ``summary``, ``unresolved_tables``), or
    None when the mirror was never reconciled."""
    code, data, err = _inspect_json(data_dir, "status")
    if code != 0 or not isinstance(data, dict):
        raise StatbankCommandFailed(
            f"statbank-inspect status on {data_dir} exited with {code}: {_shorten(err or 'no JSON')}"
        )
    last = data.get("last_reconcile")
    return last if isinstance(last, dict) else None


def reconcile_due(data_dir: str, every: int) -> bool:
    """Whether ``every`` sync runs (this one included) have passed since the
    newest reconcile report, or the mirror was never reconciled. Run ids and
    reconcile ids are both UTC instants (``%Y%m%dT%H%M%SZ``), so they
    compare as text."""
    if every <= 0:
        return False
    last = _last_reconcile(data_dir)
    if last is None or not last.get("reconcile_id"):
        return True
    code, runs, err = _inspect_json(data_dir, "history", "--last", str(every))
    if code != 0 or not isinstance(runs, list):
        raise StatbankCommandFailed(
            f"statbank-inspect history on {data_dir} exited with {code}: {_shorten(err or 'no JSON')}"
        )
    since = [r for r in runs if isinstance(r, dict) and str(r.get("run_id", "")) > str(last["reconcile_id"])]
    return len(since) >= every


def reconcile_failures(last: Optional[Dict[str, Any]]) -> Optional[str]:
    """What a reconcile left unresolved, for a failure message; None when
    the database agrees with the mirror (or was repaired)."""
    if last is None:
        return "no reconcile report was written"
    if last.get("status") in ("agrees", "repaired"):
        return None
    tables = [str(t) for t in last.get("unresolved_tables") or []]
    return f"reconcile {last.get('reconcile_id')} {last.get('status')}: " + (
        "tables differing from the mirror: " + _join_tables(tables) if tables else "see its report"
    )


# ---------------------------------------------------------------- tasks


@task(name="sync", retries=3, retry_delay_seconds=[30, 120, 300])
def sync(
    data_dir: str,
    force_catalog_poll: bool = False,
    tables: Optional[List[str]] = None,
    history: bool = False,
    iceberg: Optional[bool] = None,
) -> Dict[str, Any]:
    """One ``statbank-sync`` cycle. Raises on exit 1 (so Prefect retries);
    returns ``{"run_id", "status", "manifest", "exit_code", "failures"}`` on 0 and 2.
    ``iceberg``: True passes ``--iceberg``, False ``--no-iceberg``, None
    neither (the data folder's remembered setting holds)."""
    logger = get_run_logger()
    # A fresh id per attempt, so a retry does not overwrite the manifest of
    # the attempt that failed (ids are 30 s or more apart).
    run_id = _new_run_id()
    binary = _binary("statbank-sync")
    cmd = [binary, "--data-dir", data_dir, "--run-id", run_id, "--no-progress", "--log-format", "json"]
    if force_catalog_poll:
        cmd.append("--force-catalog-poll")
    if tables:
        cmd += ["--tables", ",".join(tables)]
    if history and _supports(binary, "--history"):
        cmd.append("--history")
    if iceberg is not None:
        if not _supports(binary, "--iceberg"):
            raise StatbankCommandFailed(f"iceberg={iceberg}, but {binary} has no --iceberg")
        cmd.append("--iceberg" if iceberg else "--no-iceberg")
    code, errors = _run(cmd)
    path = _manifest_location(data_dir, run_id)
    manifest = _run_manifest(data_dir, run_id)
    status = (manifest or {}).get("status")
    failures = None
    if code == EXIT_PARTIAL and status == "partial_failure":
        failures = sync_failures(manifest or {})
        logger.warning("sync run %s: partial_failure: %s", run_id, failures)
    elif code != EXIT_OK:
        # Exit 1, a signal, or exit 2 without a partial_failure manifest
        # (clap reports usage errors with 2, too).
        if manifest is None:
            detail = f"no manifest at {path}"
        else:
            detail = _shorten(manifest.get("error") or f"manifest status {status!r}")
            if any(r.get("status") == "failed" for _, r in _entries(manifest.get("tables"))):
                detail += "; " + sync_failures(manifest)
        if errors:
            detail += f"; errors logged: {_last_errors(errors)}"
        raise StatbankCommandFailed(f"statbank-sync exited with {code} (run {run_id}: {detail})")
    elif manifest is None:
        raise StatbankCommandFailed(f"statbank-sync succeeded but wrote no manifest at {path}")
    logger.info("sync run %s: %s; manifest %s", run_id, status, path)
    return {"run_id": run_id, "status": status, "manifest": path, "exit_code": code, "failures": failures}


@task(name="apply", retries=1, retry_delay_seconds=60)
def apply(
    data_dir: str,
    database_url_secret_block: Optional[str] = None,
    create_missing: bool = False,
    on_schema_change: str = "fail",
    history: bool = False,
    db_schema: Optional[str] = None,
    metadata: bool = False,
) -> Dict[str, Any]:
    """``statbank-apply --pending``: applies every run whose changes were
    never applied successfully, oldest first. Raises on exit 1 (Prefect
    retries); on 0 and 2 returns the runs it applied with their outcome:
    ``{"exit_code", "runs": [{"run_id", "status", "failures"}], "still_pending"}``."""
    logger = get_run_logger()
    env = _database_env(database_url_secret_block)
    binary = _binary("statbank-apply")
    cmd = [binary, "--data-dir", data_dir, "--pending", "--log-format", "json"]
    cmd += _apply_flags(binary, create_missing, on_schema_change, history, db_schema, metadata)
    before = _apply_marks(data_dir)
    code, errors = _run(cmd, env=env)
    runs = []
    for run_id in _applied_runs(data_dir, before):
        report = (_run_manifest(data_dir, run_id) or {}).get("db_apply")
        status = report.get("status") if isinstance(report, dict) else None
        failures = None if status in ("success", "skipped") else apply_failures(report)
        runs.append({"run_id": run_id, "status": status, "failures": failures})
        if failures:
            logger.warning("apply of run %s: %s", run_id, failures)
        else:
            logger.info("apply of run %s: %s", run_id, status)
    still_pending = _pending_runs(data_dir)
    # Exit 2 is a partial failure only when some run's db_apply says so; clap
    # also exits 2 on a usage error (e.g. a flag this binary does not have).
    partial = code == EXIT_PARTIAL and any(r["failures"] for r in runs)
    if code != EXIT_OK and not partial:
        detail = [f"{r['run_id']}: {r['failures']}" for r in runs if r["failures"]]
        if errors:
            detail.append(f"errors logged: {_last_errors(errors)}")
        if still_pending:
            detail.append(f"runs still awaiting an apply: {', '.join(still_pending)}")
        raise StatbankCommandFailed(
            f"statbank-apply --pending exited with {code}" + (f" ({'; '.join(detail)})" if detail else "")
        )
    if not runs and code == EXIT_OK:
        logger.info("no run awaited a DB apply")
    return {"exit_code": code, "runs": runs, "still_pending": still_pending}


@task(name="reconcile", retries=1, retry_delay_seconds=60)
def reconcile(
    data_dir: str,
    database_url_secret_block: Optional[str] = None,
    repair: bool = False,
    create_missing: bool = False,
    on_schema_change: str = "fail",
    history: bool = False,
    db_schema: Optional[str] = None,
    metadata: bool = False,
) -> Dict[str, Any]:
    """``statbank-apply --reconcile [--repair]``: compares every table that
    has partitions with its fact table, period by period (and re-applies
    exactly what differs when ``repair``). Raises on exit 1 (Prefect
    retries); exit 2 (differences found, not repaired) is returned:
    ``{"exit_code", "reconcile_id", "status", "failures"}``."""
    logger = get_run_logger()
    env = _database_env(database_url_secret_block)
    binary = _binary("statbank-apply")
    cmd = [binary, "--data-dir", data_dir, "--reconcile", "--log-format", "json"]
    if repair:
        cmd.append("--repair")
    cmd += _apply_flags(binary, create_missing, on_schema_change, history, db_schema, metadata)
    code, errors = _run(cmd, env=env)
    if code not in (EXIT_OK, EXIT_PARTIAL):
        detail = f" (errors logged: {_last_errors(errors)})" if errors else ""
        raise StatbankCommandFailed(f"statbank-apply --reconcile exited with {code}{detail}")
    last = _last_reconcile(data_dir)
    failures = reconcile_failures(last)
    if code == EXIT_PARTIAL and failures is None:
        # Exit 2 without a differing report: a usage error (clap exits 2).
        raise StatbankCommandFailed(
            f"statbank-apply --reconcile exited with {code} but its report says {(last or {}).get('status')!r}"
            + (f" (errors logged: {_last_errors(errors)})" if errors else "")
        )
    if failures:
        logger.warning("%s", failures)
    else:
        logger.info("reconcile %s: %s", (last or {}).get("reconcile_id"), (last or {}).get("status"))
    return {
        "exit_code": code,
        "reconcile_id": (last or {}).get("reconcile_id"),
        "status": (last or {}).get("status"),
        "failures": failures,
    }


# ---------------------------------------------------------------- flow


@flow(name=FLOW_NAME, log_prints=True)
def weekly_statbank_sync_flow(
    force_catalog_poll: bool = False,
    data_dir: Optional[str] = None,
    tables: Optional[List[str]] = None,
    database_url_secret_block: Optional[str] = None,
    create_missing: bool = False,
    on_schema_change: Literal["fail", "rebuild"] = "fail",
    history: bool = False,
    db_schema: Optional[str] = None,
    metadata: bool = False,
    reconcile_every: int = 0,
    reconcile_repair: bool = False,
    iceberg: Optional[bool] = None,
) -> Dict[str, Any]:
    """Sync, then apply into Postgres every run whose changes await an apply
    (this run's and earlier failed ones); with ``reconcile_every`` N > 0,
    then compare the database with the mirror once every N runs (and repair
    what differs with ``reconcile_repair``). Ends Failed, naming the failed
    tables and their errors, when the sync or an apply was a partial
    failure, or a reconcile left tables differing from the mirror.
    ``iceberg`` True turns on the Iceberg metadata beside the mirror
    (``statbank-sync --iceberg``, remembered by the data folder), False
    turns it off and removes it, None (the default) leaves it as it is."""
    logger = get_run_logger()
    if on_schema_change not in ("fail", "rebuild"):
        raise ValueError(f"on_schema_change must be 'fail' or 'rebuild', not {on_schema_change!r}")
    if reconcile_every < 0:
        raise ValueError(f"reconcile_every must be 0 (never) or a number of runs, not {reconcile_every}")
    redact.add_environment()
    folder = _data_dir(data_dir)
    if history:
        found = [b for b in ("statbank-sync", "statbank-apply") if _supports(_binary(b), "--history")]
        if not found:
            raise StatbankCommandFailed("history=True, but neither statbank-sync nor statbank-apply has --history")
        logger.info("history: --history passed to %s", ", ".join(found))

    synced = sync(folder, force_catalog_poll=force_catalog_poll, tables=tables, history=history, iceberg=iceberg)
    manifest = _run_manifest(folder, synced["run_id"]) or {}
    changes = _changes(manifest)
    catalog = manifest.get("catalog") or {}
    if catalog.get("reason") == "weekly_gate":
        # Not an error for a manual run, but a scheduled weekly run should
        # never land here (the gate opens 6.5 days after the last poll).
        logger.warning(
            "weekly gate closed: the catalog was last polled at %s, nothing was synced "
            "(force_catalog_poll=True polls regardless)",
            catalog.get("last_catalog_poll_at"),
        )
    result: Dict[str, Any] = {"sync": synced, "changed_tables": len(changes), "apply": None, "reconcile": None}
    logger.info("run %s: %d table(s) with changed or deleted periods", synced["run_id"], len(changes))

    database_configured = bool(database_url_secret_block or os.environ.get("DATABASE_URL"))
    if database_configured:
        # Always: applies this run's changes and catches up any earlier run
        # whose apply failed or never ran (a no-op when nothing is pending).
        # The apply's settings, which the reconcile's repair applies with.
        settings: Dict[str, Any] = dict(
            database_url_secret_block=database_url_secret_block,
            create_missing=create_missing,
            on_schema_change=on_schema_change,
            history=history,
            db_schema=db_schema,
            metadata=metadata,
        )
        result["apply"] = apply(folder, **settings)
        if reconcile_due(folder, reconcile_every):
            result["reconcile"] = reconcile(folder, repair=reconcile_repair, **settings)
    else:
        pending = _pending_runs(folder)
        if pending:
            raise StatbankCommandFailed(
                f"{len(pending)} run(s) with changes await a DB apply ({', '.join(pending)}), but "
                "DATABASE_URL is not set (environment of the process that runs the flow, or the "
                "database_url_secret_block parameter)"
            )
        logger.info("no database configured and no run awaits a DB apply")

    problems = []
    if synced["status"] == "partial_failure":
        problems.append(f"sync run {synced['run_id']} partial_failure: {synced.get('failures')}")
    applied = result["apply"] or {}
    for run in applied.get("runs", []):
        if run["failures"]:
            problems.append(f"apply of run {run['run_id']}: {run['failures']}")
    if (result["reconcile"] or {}).get("failures"):
        problems.append(result["reconcile"]["failures"])
    if problems:
        # Raised last, after the apply, so that what succeeded is applied but
        # the flow run is Failed and alerts fire.
        raise StatbankPartialFailure(redact("partial failure: " + " | ".join(problems)))
    return result


def _api_url() -> Optional[str]:
    try:
        from prefect.settings import get_current_settings  # Prefect 3

        return get_current_settings().api.url
    except (ImportError, AttributeError):
        from prefect.settings import PREFECT_API_URL  # Prefect 2

        return PREFECT_API_URL.value()


def main(argv: Iterable[str] = ()) -> None:
    if not _api_url():
        raise SystemExit(
            "PREFECT_API_URL is not set. Start a Prefect server (`prefect server start`, "
            "or use Prefect Cloud) and point this process at it, e.g.\n"
            "  export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
            "A deployment cannot be scheduled on the temporary server Prefect starts "
            "when no API URL is set."
        )
    work_pool = os.environ.get("PREFECT_WORK_POOL")
    if work_pool:
        # A work-pool deployment (e.g. a `process` pool): the worker loads the
        # flow from this folder, so it must exist at the same path on the
        # worker's machine (or use a git source instead, see Prefect docs).
        weekly_statbank_sync_flow.from_source(
            source=str(Path(__file__).resolve().parent),
            entrypoint=f"{Path(__file__).name}:weekly_statbank_sync_flow",
        ).deploy(
            name=DEPLOYMENT_NAME,
            work_pool_name=work_pool,
            cron=CRON,  # Prefect evaluates cron schedules in UTC by default
        )
    else:
        # No work pool: this process serves the deployment and runs the flow
        # itself at the scheduled times (keep it running, e.g. under systemd).
        weekly_statbank_sync_flow.serve(name=DEPLOYMENT_NAME, cron=CRON)


if __name__ == "__main__":
    main(sys.argv[1:])
