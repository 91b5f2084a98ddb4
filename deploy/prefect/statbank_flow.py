"""Prefect flow for statbank-sync, for teams that already run Prefect.

It does what `statbank-flow` does, with Prefect's retries, UI and alerting:

1. task ``sync``: runs ``statbank-sync --run-id <UTC %Y%m%dT%H%M%SZ>``
   (3 retries, 30 s / 120 s / 300 s apart);
2. reads the run manifest ``<data-dir>/statbank_tables/_sync/runs/<run_id>.json``;
3. task ``apply``: only when some table has non-empty ``changed_tids`` or
   ``deleted_tids``, runs ``statbank-apply --run-id <run_id>`` (1 retry, 60 s).

Exit codes of both binaries: 0 success/skipped, 2 partial failure, 1 failed.

* 1 (failed, or could not start, e.g. the data folder is locked) raises, so
  Prefect retries the task. Each attempt gets its own run id (its own
  manifest); a failed sync does not clear the state's journal of changed
  periods, so the next attempt's manifest still lists them.
* 2 (partial failure: some tables failed) is not retried blindly: a retry
  would re-run the whole cycle for the sake of a few tables, and the next
  weekly cycle retries failed tables anyway. The flow logs a warning, still
  applies what did change, and ends in a Failed state so that Prefect
  automations / notifications fire.

Configuration (environment):

* ``STATBANK_BIN_DIR``: folder of the binaries (default: found on ``PATH``).
* ``STATBANK_DATA_DIR``: data folder (default ``data/dst``, as the binaries).
* ``STATBANK_BASE_URL``: read by statbank-sync itself.
* ``DATABASE_URL``: read by statbank-apply itself; or pass the flow parameter
  ``database_url_secret_block`` (name of a Prefect ``Secret`` block). The URL
  is handed to the child through its environment, never on its command line.
* ``PREFECT_WORK_POOL``: see ``__main__`` below.

Deploy: ``python statbank_flow.py`` (see deploy/README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from prefect import flow, get_run_logger, task
from prefect.blocks.system import Secret
from prefect.runner import storage as runner_storage

FLOW_NAME = "weekly_statbank_sync_flow"
DEPLOYMENT_NAME = "weekly-statbank-sync"
CRON = "0 22 * * 0"  # Sunday 22:00
DEFAULT_DATA_DIR = "data/dst"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2


class StatbankCommandFailed(RuntimeError):
    """A binary failed as a whole (exit 1, a signal, or a usage error)."""


class StatbankPartialFailure(RuntimeError):
    """Some tables failed; raised at the end of the flow to fail the run."""


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


def _data_dir(data_dir: Optional[str]) -> Path:
    return Path(data_dir or os.environ.get("STATBANK_DATA_DIR") or DEFAULT_DATA_DIR)


def _manifest_path(data_dir: Path, run_id: str) -> Path:
    return data_dir / "statbank_tables" / "_sync" / "runs" / f"{run_id}.json"


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _load_manifest(path: Path) -> Optional[Dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _run(cmd: List[str], env: Optional[Dict[str, str]] = None) -> int:
    """Runs ``cmd``, forwarding its output line by line to the Prefect log.

    If the task is interrupted (cancellation, timeout, Ctrl-C) the child gets
    SIGTERM (it finishes the requests in flight and exits) and, after 5
    minutes, SIGKILL. The data folder stays consistent either way.
    """
    logger = get_run_logger()
    logger.info("running: %s", " ".join(cmd))
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        errors="replace",
        bufsize=1,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line:
                logger.info("%s", line)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _changes(manifest: Dict[str, Any]) -> Dict[str, Dict[str, int]]:
    """Tables with non-empty ``changed_tids`` or ``deleted_tids``."""
    out: Dict[str, Dict[str, int]] = {}
    for table, result in (manifest.get("tables") or {}).items():
        changed = (result or {}).get("changed_tids") or []
        deleted = (result or {}).get("deleted_tids") or []
        if changed or deleted:
            out[table] = {"changed": len(changed), "deleted": len(deleted)}
    return out


@task(name="sync", retries=3, retry_delay_seconds=[30, 120, 300])
def sync(
    data_dir: str,
    force_catalog_poll: bool = False,
    tables: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """One ``statbank-sync`` cycle. Raises on exit 1 (so Prefect retries);
    returns ``{"run_id", "status", "manifest", "exit_code"}`` on 0 and 2."""
    logger = get_run_logger()
    # A fresh id per attempt, so a retry does not overwrite the manifest of
    # the attempt that failed (ids are 30 s or more apart).
    run_id = _new_run_id()
    cmd = [_binary("statbank-sync"), "--data-dir", data_dir, "--run-id", run_id, "--no-progress"]
    if force_catalog_poll:
        cmd.append("--force-catalog-poll")
    if tables:
        cmd += ["--tables", ",".join(tables)]
    code = _run(cmd)
    path = _manifest_path(Path(data_dir), run_id)
    manifest = _load_manifest(path)
    status = (manifest or {}).get("status")
    if code == EXIT_PARTIAL and status == "partial_failure":
        summary = manifest.get("summary") if manifest else None
        logger.warning("sync run %s: partial_failure (some tables failed; summary %s)", run_id, summary)
    elif code != EXIT_OK:
        # Exit 1, a signal, or exit 2 without a partial_failure manifest
        # (clap reports usage errors with 2, too).
        if manifest is None:
            detail = f"no manifest at {path}"
        else:
            detail = manifest.get("error") or f"manifest status {status!r}"
        raise StatbankCommandFailed(f"statbank-sync exited with {code} (run {run_id}: {detail})")
    elif manifest is None:
        raise StatbankCommandFailed(f"statbank-sync succeeded but wrote no manifest at {path}")
    logger.info("sync run %s: %s; manifest %s", run_id, status, path)
    return {"run_id": run_id, "status": status, "manifest": str(path), "exit_code": code}


@task(name="apply", retries=1, retry_delay_seconds=60)
def apply(
    data_dir: str,
    run_id: str,
    database_url_secret_block: Optional[str] = None,
    create_missing: bool = False,
) -> Dict[str, Any]:
    """``statbank-apply --run-id RUN``. Raises on exit 1 (Prefect retries);
    returns the manifest's ``db_apply`` status on 0 and 2."""
    logger = get_run_logger()
    env = dict(os.environ)
    if database_url_secret_block:
        env["DATABASE_URL"] = Secret.load(database_url_secret_block).get()
    if not env.get("DATABASE_URL"):
        raise StatbankCommandFailed(
            "DATABASE_URL is not set (environment of the worker, or the "
            "database_url_secret_block parameter)"
        )
    cmd = [_binary("statbank-apply"), "--data-dir", data_dir, "--run-id", run_id]
    if create_missing:
        cmd.append("--create-missing")
    code = _run(cmd, env=env)
    manifest = _load_manifest(_manifest_path(Path(data_dir), run_id)) or {}
    report = manifest.get("db_apply") or {}
    status = report.get("status")
    if code == EXIT_PARTIAL and status == "partial_failure":
        logger.warning("apply of run %s: partial_failure (summary %s)", run_id, report.get("summary"))
    elif code != EXIT_OK:
        raise StatbankCommandFailed(f"statbank-apply exited with {code} (run {run_id}, db_apply status {status!r})")
    logger.info("apply of run %s: %s", run_id, status)
    return {"run_id": run_id, "status": status, "exit_code": code, "summary": report.get("summary")}


@flow(name=FLOW_NAME, log_prints=True)
def weekly_statbank_sync_flow(
    force_catalog_poll: bool = False,
    data_dir: Optional[str] = None,
    tables: Optional[List[str]] = None,
    database_url_secret_block: Optional[str] = None,
    create_missing: bool = False,
) -> Dict[str, Any]:
    """Sync, then apply into Postgres when some table changed. Ends Failed
    when the sync or the apply was a partial failure."""
    logger = get_run_logger()
    folder = str(_data_dir(data_dir))
    synced = sync(folder, force_catalog_poll=force_catalog_poll, tables=tables)
    manifest = _load_manifest(Path(synced["manifest"])) or {}
    changes = _changes(manifest)
    result: Dict[str, Any] = {"sync": synced, "changed_tables": len(changes), "apply": None}
    if changes:
        logger.info("%d table(s) with changed or deleted periods: applying run %s", len(changes), synced["run_id"])
        result["apply"] = apply(
            folder,
            synced["run_id"],
            database_url_secret_block=database_url_secret_block,
            create_missing=create_missing,
        )
    else:
        logger.info("run %s: no changed or deleted periods; nothing to apply", synced["run_id"])

    partial = []
    if synced["status"] == "partial_failure":
        partial.append(f"sync run {synced['run_id']}")
    if result["apply"] and result["apply"]["status"] == "partial_failure":
        partial.append(f"apply of run {synced['run_id']}")
    if partial:
        # Raised last, after the apply, so that what succeeded is applied but
        # the flow run is Failed and alerts fire.
        raise StatbankPartialFailure("partial failure: " + ", ".join(partial) + f" (manifest {synced['manifest']})")
    return result


if __name__ == "__main__":
    work_pool = os.environ.get("PREFECT_WORK_POOL")
    if work_pool:
        # A work-pool deployment (e.g. a `process` pool): the worker loads the
        # flow from this folder, so it must exist at the same path on the
        # worker's machine (or use a git source instead, see Prefect docs).
        if not hasattr(runner_storage, "LocalStorage"):
            raise SystemExit(
                "deploying from a local folder needs prefect>=2.19.6 (or 3.x); "
                "upgrade, or unset PREFECT_WORK_POOL to serve the flow from this process"
            )
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
