//! Read-only inspection of a data folder, for `statbank-inspect`: each
//! debugging question ([docs/README.md](../../../docs/README.md#where-to-look))
//! answered by one function returning a [`Report`]: text for a person, JSON
//! for a program (`--json`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde_json::{json, Value};
use sync_state::{
    latest_run, list_runs, pending_runs, ApplyStatus, DataDir, RunId, RunManifest, SyncState,
    TableId, TableStatus,
};

use crate::Error;

mod asof;
mod plan;
mod table;

pub use asof::{asof, parse_instant, revisions};
pub use plan::plan;
pub use table::table;

/// What an inspection found: a text for a person and the same as JSON.
#[derive(Debug, Clone)]
pub struct Report {
    /// Human-readable lines.
    pub text: String,
    /// The same facts as JSON.
    pub json: Value,
}

/// The form a [`Report`] is rendered in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Lines for a person.
    #[default]
    Text,
    /// Pretty JSON, for tools.
    Json,
}

impl Report {
    /// The report in the requested form.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let mut s = serde_json::to_string_pretty(&self.json).unwrap_or_default();
                s.push('\n');
                s
            }
            Format::Text => self.text.clone(),
        }
    }
}

/// Manifests read for histories (newest first).
const HISTORY_RUNS: usize = 50;

pub(crate) fn recent_manifests(dir: &DataDir, n: usize) -> Result<Vec<RunManifest>, Error> {
    let runs = list_runs(dir)?;
    let mut out = Vec::new();
    for id in runs.iter().rev().take(n) {
        out.push(RunManifest::load(dir, id)?);
    }
    Ok(out)
}

/// Consecutive failed runs of each table, counted from the newest run that
/// considered it (runs where the table was not considered are passed over).
pub fn failure_streaks(manifests: &[RunManifest]) -> BTreeMap<TableId, (usize, String)> {
    let mut streak: BTreeMap<TableId, (usize, String)> = BTreeMap::new();
    let mut done: BTreeSet<TableId> = BTreeSet::new();
    for m in manifests {
        for (id, r) in &m.tables {
            if done.contains(id) {
                continue;
            }
            if r.status == TableStatus::Failed {
                let e = streak
                    .entry(id.clone())
                    .or_insert((0, r.error.clone().unwrap_or_default()));
                e.0 += 1;
            } else {
                done.insert(id.clone());
            }
        }
    }
    streak
}

/// `status`: last catalog poll, last run, tables by status, failing tables,
/// changes journaled but not yet reported, runs whose apply is pending,
/// verification debt, tables gone from the catalog.
pub fn status(dir: &DataDir) -> Result<Report, Error> {
    let state = SyncState::load(dir)?;
    let manifests = recent_manifests(dir, HISTORY_RUNS)?;
    let pending = pending_runs(dir)?;
    let last = manifests.first();
    let mut out = String::new();
    summary_lines(&mut out, dir, &state, last);
    let by_status = tables_by_status(&mut out, &state);
    let failing = failing_tables(&mut out, &manifests);
    let journaled = journaled_changes(&mut out, &state);
    pending_applies(&mut out, &pending);
    let debt = verification_debt(&mut out, &state);
    let removed = removed_tables(&mut out, &state);
    vintages_line(&mut out, &state);
    let reconcile = last_reconcile(&mut out, dir);
    let json = json!({
        "data_dir": dir.describe(),
        "last_catalog_poll_at": state.last_catalog_poll_at,
        "last_run": last.map(run_line),
        "tables": state.tables.len(),
        "tables_by_status": by_status,
        "failing_tables": failing,
        "journaled_changes": journaled,
        "pending_applies": pending,
        "verification_debt": debt,
        "removed_from_catalog": removed,
        "keep_vintages": state.keep_vintages,
        "last_reconcile": reconcile,
    });
    Ok(Report { text: out, json })
}

/// The newest reconcile report, if any: when, what it found, which tables
/// still differ.
fn last_reconcile(out: &mut String, dir: &DataDir) -> Value {
    let r = match sync_state::ReconcileReport::latest(dir) {
        Ok(Some(r)) => r,
        Ok(None) => {
            let _ = writeln!(out, "last reconcile: never (statbank-apply --reconcile)");
            return Value::Null;
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "last reconcile: unreadable: {}",
                sync_state::error_chain(&e)
            );
            return Value::Null;
        }
    };
    let s = &r.summary;
    let _ = writeln!(
        out,
        "last reconcile: {} {} ({} tables: {} agree, {} differ, {} repaired, {} failed)",
        r.reconcile_id,
        r.status,
        s.tables_total,
        s.tables_agree,
        s.tables_differ,
        s.tables_repaired,
        s.tables_failed
    );
    let unresolved: Vec<&TableId> = r
        .tables
        .iter()
        .filter(|(_, t)| {
            !matches!(
                t.status,
                sync_state::ReconcileStatus::Agrees | sync_state::ReconcileStatus::Repaired
            )
        })
        .map(|(id, _)| id)
        .collect();
    if !unresolved.is_empty() {
        let ids: Vec<&str> = unresolved.iter().map(|id| id.as_str()).collect();
        let _ = writeln!(
            out,
            "  differing from the mirror: {} (statbank-apply --reconcile --repair mends them)",
            ids.join(", ")
        );
    }
    json!({
        "reconcile_id": r.reconcile_id,
        "finished_at": r.finished_at,
        "status": r.status,
        "summary": r.summary,
        "unresolved_tables": unresolved,
    })
}

/// The data folder, the last catalog poll and the last run.
fn summary_lines(out: &mut String, dir: &DataDir, state: &SyncState, last: Option<&RunManifest>) {
    let _ = writeln!(out, "data folder: {}", dir.describe());
    match state.last_catalog_poll_at {
        Some(t) => {
            let _ = writeln!(
                out,
                "last catalog poll: {t} (polled again 6½ days later; --force-catalog-poll overrides)"
            );
        }
        None => {
            let _ = writeln!(out, "last catalog poll: never");
        }
    }
    match last {
        Some(m) => last_run_lines(out, m),
        None => {
            let _ = writeln!(out, "last run: none");
        }
    }
}

/// The tables in `state.json`, counted by their last status.
fn tables_by_status(out: &mut String, state: &SyncState) -> BTreeMap<String, usize> {
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for e in state.tables.values() {
        *by_status
            .entry(
                e.last_status
                    .clone()
                    .unwrap_or_else(|| "never synced".into()),
            )
            .or_default() += 1;
    }
    let _ = writeln!(out, "tables in state.json: {}", state.tables.len());
    for (s, n) in &by_status {
        let _ = writeln!(out, "  {s:<14} {n}");
    }
    by_status
}

/// Tables that failed in more than one consecutive run (JSON entries).
fn failing_tables(out: &mut String, manifests: &[RunManifest]) -> Vec<Value> {
    let streaks = failure_streaks(manifests);
    let chronic: Vec<_> = streaks.iter().filter(|(_, (n, _))| *n > 1).collect();
    if chronic.is_empty() {
        let _ = writeln!(out, "tables failing for more than one run: none");
    } else {
        let _ = writeln!(out, "tables failing for more than one run:");
        for (id, (n, err)) in &chronic {
            let _ = writeln!(out, "  {id:<12} {n} runs  {err}");
        }
    }
    chronic
        .iter()
        .map(|(id, (n, e))| json!({"table": id, "runs": n, "error": e}))
        .collect()
}

/// Changes on the storage journaled in `state.json` but in no manifest yet
/// (JSON entries).
fn journaled_changes(out: &mut String, state: &SyncState) -> Vec<Value> {
    let journal: Vec<_> = state
        .tables
        .iter()
        .filter(|(_, e)| !e.pending_changed_tids.is_empty() || !e.pending_deleted_tids.is_empty())
        .collect();
    if !journal.is_empty() {
        let _ = writeln!(
            out,
            "changes on the storage not yet in a manifest (reported by the next run):"
        );
        for (id, e) in &journal {
            let _ = writeln!(
                out,
                "  {id:<12} changed {:?} deleted {:?}",
                e.pending_changed_tids, e.pending_deleted_tids
            );
        }
    }
    journal
        .iter()
        .map(|(id, e)| {
            json!({"table": id, "changed": e.pending_changed_tids, "deleted": e.pending_deleted_tids})
        })
        .collect()
}

/// Runs whose changes are not in Postgres yet.
fn pending_applies(out: &mut String, pending: &[RunId]) {
    if pending.is_empty() {
        let _ = writeln!(out, "pending applies: none");
    } else {
        let _ = writeln!(
            out,
            "pending applies: {} run(s) whose changes are not in Postgres yet (statbank-apply --pending): {}",
            pending.len(),
            pending.iter().map(RunId::as_str).collect::<Vec<_>>().join(", ")
        );
    }
}

/// Older periods still to verify against the source, in all tables.
fn verification_debt(out: &mut String, state: &SyncState) -> usize {
    let debt: usize = state.tables.values().map(|e| e.verify_debt.len()).sum();
    let owing = state
        .tables
        .values()
        .filter(|e| !e.verify_debt.is_empty())
        .count();
    let _ = writeln!(
        out,
        "verification debt: {debt} older period(s) in {owing} table(s) still to verify against the source"
    );
    debt
}

/// Tables no longer in the catalog, whose mirror is kept.
fn removed_tables<'a>(out: &mut String, state: &'a SyncState) -> Vec<&'a TableId> {
    let removed: Vec<&TableId> = state
        .tables
        .iter()
        .filter(|(_, e)| e.removed_from_catalog_at.is_some())
        .map(|(id, _)| id)
        .collect();
    if !removed.is_empty() {
        let _ = writeln!(
            out,
            "no longer in the catalog (mirror kept): {}",
            removed
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    removed
}

/// Whether old versions of changed partitions are kept.
fn vintages_line(out: &mut String, state: &SyncState) {
    let _ = writeln!(
        out,
        "vintages: {}",
        if state.keep_vintages { "kept" } else { "off" }
    );
}

fn last_run_lines(out: &mut String, m: &RunManifest) {
    let _ = writeln!(
        out,
        "last run: {} {} (started {}, finished {})",
        m.run_id,
        m.status,
        m.started_at,
        m.finished_at
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into())
    );
    if !m.catalog.polled {
        let _ = writeln!(
            out,
            "  catalog not polled: {}{}",
            m.catalog.reason.as_deref().unwrap_or("?"),
            m.catalog
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let s = &m.summary;
    let _ = writeln!(
        out,
        "  tables: {} synced, {} unchanged, {} failed; {} with changed periods, {} rows written",
        s.tables_synced,
        s.tables_skipped,
        s.tables_failed,
        s.tables_with_changed_tids,
        s.rows_written
    );
    match &m.db_apply {
        Some(a) => {
            let _ = writeln!(
                out,
                "  db apply: {}{}",
                a.status,
                a.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "  db apply: not run for this run");
        }
    }
}

/// One run as a history line (JSON).
fn run_line(m: &RunManifest) -> Value {
    let secs = m
        .finished_at
        .map(|f| (f.get() - m.started_at.get()).num_seconds());
    json!({
        "run_id": m.run_id,
        "status": m.status,
        "started_at": m.started_at,
        "seconds": secs,
        "catalog_polled": m.catalog.polled,
        "tables_synced": m.summary.tables_synced,
        "tables_changed": m.summary.tables_with_changed_tids,
        "tables_failed": m.summary.tables_failed,
        "rows_written": m.summary.rows_written,
        "apply": m.db_apply.as_ref().map(|a| a.status),
        "apply_failed": m.db_apply.as_ref().map(|a| a.summary.tables_failed),
        "needs_apply": m.needs_apply(),
    })
}

/// `history [--last N]`: one line per run over time, newest last.
pub fn history(dir: &DataDir, last: usize) -> Result<Report, Error> {
    let mut manifests = recent_manifests(dir, last.max(1))?;
    manifests.reverse();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<16} {:>6} {:>7} {:>6} {:>11} {:>7}  apply",
        "run", "status", "synced", "changed", "failed", "rows", "secs"
    );
    for m in &manifests {
        let s = &m.summary;
        let secs = m
            .finished_at
            .map(|f| (f.get() - m.started_at.get()).num_seconds().to_string())
            .unwrap_or_else(|| "-".into());
        let apply = match &m.db_apply {
            Some(a) if a.summary.tables_failed > 0 => {
                format!("{} ({} failed)", a.status, a.summary.tables_failed)
            }
            Some(a) => a.status.to_string(),
            None if m.needs_apply() => "PENDING".into(),
            None => "-".into(),
        };
        let status = if m.catalog.polled {
            m.status.to_string()
        } else {
            format!(
                "{} ({})",
                m.status,
                m.catalog.reason.as_deref().unwrap_or("not polled")
            )
        };
        let _ = writeln!(
            out,
            "{:<22} {:<16} {:>6} {:>7} {:>6} {:>11} {:>7}  {apply}",
            m.run_id.as_str(),
            status,
            s.tables_synced,
            s.tables_with_changed_tids,
            s.tables_failed,
            s.rows_written,
            secs
        );
    }
    let json = Value::Array(manifests.iter().map(run_line).collect());
    Ok(Report { text: out, json })
}

/// `run [ID]`: a summary of one run (the latest by default); `--json`
/// gives the manifest itself.
pub fn run(dir: &DataDir, run: Option<&RunId>) -> Result<Report, Error> {
    let id = run_or_latest(dir, run)?;
    let m = RunManifest::load(dir, &id)?;
    let mut out = String::new();
    last_run_lines(&mut out, &m);
    let mut out = out.replacen("last run: ", "run: ", 1);
    if let Some(e) = &m.error {
        let _ = writeln!(out, "  error: {e}");
    }
    changed_tables(&mut out, &m);
    failed_tables(&mut out, &m);
    apply_problems(&mut out, &m);
    let _ = writeln!(
        out,
        "  manifest: {} (statbank-inspect run {} --json for all of it)",
        dir.display_key(&dir.manifest_key(&id)),
        id
    );
    let json = serde_json::to_value(&m)
        .map_err(|e| Error::Internal(format!("cannot render manifest {id}: {e}")))?;
    Ok(Report { text: out, json })
}

/// `run`, or the latest run with a manifest.
fn run_or_latest(dir: &DataDir, run: Option<&RunId>) -> Result<RunId, Error> {
    match run {
        Some(r) => Ok(r.clone()),
        None => latest_run(dir)?.ok_or_else(|| {
            Error::Internal(format!(
                "no run manifest in {}",
                dir.display_key(&dir.runs_key())
            ))
        }),
    }
}

/// Tables shown with their changes in a run summary.
const CHANGED_TABLES_SHOWN: usize = 20;

/// The tables with changes in the run (the first
/// [`CHANGED_TABLES_SHOWN`]), one line each.
fn changed_tables(out: &mut String, m: &RunManifest) {
    let changed: Vec<_> = m.tables_with_changes().collect();
    for (t, r) in changed.iter().take(CHANGED_TABLES_SHOWN) {
        let _ = writeln!(
            out,
            "  {t:<12} {} changed{}{}{}",
            r.changed_tids.len(),
            r.deleted_tids
                .as_ref()
                .filter(|d| !d.is_empty())
                .map(|d| format!(", {} deleted", d.len()))
                .unwrap_or_default(),
            r.schema_change
                .as_ref()
                .map(|c| format!(
                    ", SCHEMA [{}] -> [{}]",
                    c.before.join(","),
                    c.after.join(",")
                ))
                .unwrap_or_default(),
            r.verified_periods
                .as_ref()
                .map(|v| format!(", {} verified", v.len()))
                .unwrap_or_default()
        );
    }
    if changed.len() > CHANGED_TABLES_SHOWN {
        let _ = writeln!(
            out,
            "  … and {} more tables with changes",
            changed.len() - CHANGED_TABLES_SHOWN
        );
    }
}

/// The tables that failed in the run, with their errors.
fn failed_tables(out: &mut String, m: &RunManifest) {
    for (t, r) in m
        .tables
        .iter()
        .filter(|(_, r)| r.status == TableStatus::Failed)
    {
        let _ = writeln!(out, "  FAILED {t}: {}", r.error.as_deref().unwrap_or(""));
    }
}

/// The tables the run's DB apply did not apply.
fn apply_problems(out: &mut String, m: &RunManifest) {
    let Some(a) = &m.db_apply else {
        return;
    };
    for t in a.tables.iter().flatten() {
        if t.status != ApplyStatus::Applied {
            let _ = writeln!(
                out,
                "  db_apply {}: {:?} {}{}",
                t.table,
                t.status,
                t.reason.as_deref().unwrap_or(""),
                t.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
}
