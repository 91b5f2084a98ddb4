//! `table ID`: one table's state, periods, schema history, verification
//! debt, vintages and recent results.

use std::collections::BTreeSet;
use std::fmt::Write;

use partition_store::PartitionStore;
use serde_json::{json, Value};
use sync_state::{
    ApplyTableResult, DataDir, RunId, RunManifest, SchemaChange, SyncState, TableId, TableResult,
    TableState, Tid,
};

use super::{recent_manifests, Report, HISTORY_RUNS};
use crate::Error;

fn list(v: &Option<Vec<Tid>>) -> String {
    v.as_ref()
        .map(|v| v.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","))
        .unwrap_or_else(|| "-".into())
}

/// `table ID`.
pub fn table(dir: &DataDir, table: &TableId) -> Result<Report, Error> {
    let state = SyncState::load(dir)?;
    let store = PartitionStore::new(dir);
    let local = store.list_tids(table)?;
    let entry = state.tables.get(table);
    let mut out = String::new();
    let _ = writeln!(out, "table {table}");
    match entry {
        Some(e) => state_lines(&mut out, e),
        None => {
            let _ = writeln!(out, "state: no entry (never synced)");
        }
    }
    periods_line(&mut out, &local);
    let n_vintages = vintages_line(&mut out, &store, table)?;
    let meta = tableinfo_cache_line(&mut out, dir, table)?;
    let manifests = recent_manifests(dir, HISTORY_RUNS)?;
    let schema_history = schema_history(&mut out, &manifests, table);
    let label_history = label_history(&mut out, &manifests, table);
    let results = recent_results(&mut out, &manifests, table);
    let json = json!({
        "table": table,
        "state": entry,
        "local_periods": local,
        "vintages": n_vintages,
        "tableinfo_cache": dir.display_key(&meta),
        "schema_history": schema_history.iter().map(|(r, c)| json!({"run_id": r, "before": c.before, "after": c.after})).collect::<Vec<_>>(),
        "label_history": label_history,
        "recent_runs": results,
    });
    Ok(Report { text: out, json })
}

/// The table's entry in `state.json`: last sync, schema signature,
/// verification debt, removal from the catalog.
fn state_lines(out: &mut String, e: &TableState) {
    let _ = writeln!(
        out,
        "state: last seen updated {}, last sync {}, {} ({}), frequency {}{}",
        e.last_seen_updated.as_deref().unwrap_or("-"),
        e.last_sync_at
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into()),
        e.last_status.as_deref().unwrap_or("never synced"),
        e.last_run_id.as_ref().map(|r| r.as_str()).unwrap_or("-"),
        e.frequency
            .map(|f| f.to_string())
            .unwrap_or_else(|| "-".into()),
        e.last_error
            .as_deref()
            .map(|x| format!(", last error: {x}"))
            .unwrap_or_default()
    );
    if let Some(v) = &e.variables {
        let _ = writeln!(out, "schema signature: [{}]", v.join(", "));
    }
    let _ = writeln!(
        out,
        "verification debt: {} older period(s){}",
        e.verify_debt.len(),
        e.verify_per_cycle
            .map(|n| format!(", {n} per cycle"))
            .unwrap_or_default()
    );
    if let Some(t) = e.removed_from_catalog_at {
        let _ = writeln!(out, "not in the catalog since {t} (mirror kept)");
    }
}

/// The local partitions: how many, first and last.
fn periods_line(out: &mut String, local: &BTreeSet<Tid>) {
    let _ = writeln!(
        out,
        "local periods: {} ({} … {})",
        local.len(),
        local.first().map(|t| t.as_str()).unwrap_or("-"),
        local.last().map(|t| t.as_str()).unwrap_or("-")
    );
}

/// The kept vintages; returns how many there are.
fn vintages_line(
    out: &mut String,
    store: &PartitionStore,
    table: &TableId,
) -> Result<usize, Error> {
    let vintages = store.list_vintages(table)?;
    let n_vintages: usize = vintages.values().map(Vec::len).sum();
    let _ = writeln!(
        out,
        "vintages: {n_vintages} of {} period(s) (statbank-inspect revisions {table})",
        vintages.len()
    );
    Ok(n_vintages)
}

/// Where the cached tableinfo is and whether it is there; returns its key.
fn tableinfo_cache_line(out: &mut String, dir: &DataDir, table: &TableId) -> Result<String, Error> {
    let meta = dir.metadata_file_key(table);
    let present = dir.storage().head(&meta)?.is_some();
    let _ = writeln!(
        out,
        "tableinfo cache: {}{}",
        dir.display_key(&meta),
        if present { "" } else { " (missing)" }
    );
    Ok(meta)
}

/// The schema changes of the table in the recent runs, newest first.
fn schema_history(
    out: &mut String,
    manifests: &[RunManifest],
    table: &TableId,
) -> Vec<(RunId, SchemaChange)> {
    let schema_history: Vec<_> = manifests
        .iter()
        .filter_map(|m| {
            let c = m.tables.get(table)?.schema_change.as_ref()?;
            Some((m.run_id.clone(), c.clone()))
        })
        .collect();
    if schema_history.is_empty() {
        let _ = writeln!(out, "schema history: no change in the recent runs");
    } else {
        let _ = writeln!(out, "schema history (newest first):");
        for (run, c) in &schema_history {
            let _ = writeln!(
                out,
                "  {run}: [{}] -> [{}]",
                c.before.join(", "),
                c.after.join(", ")
            );
        }
    }
    schema_history
}

/// The metadata changes of the table in the recent runs, newest first:
/// labels added, removed and relabelled (with examples), texts changed,
/// per language. (Every version, for a database applied with `--metadata
/// --history`, is in `meta_history`.)
fn label_history(out: &mut String, manifests: &[RunManifest], table: &TableId) -> Vec<Value> {
    let changes: Vec<_> = manifests
        .iter()
        .filter_map(|m| {
            let r = m.tables.get(table)?;
            (!r.metadata_changes.is_empty()).then_some((m, r))
        })
        .collect();
    if changes.is_empty() {
        let _ = writeln!(out, "label history: no change in the recent runs");
        return Vec::new();
    }
    let _ = writeln!(out, "label history (newest first):");
    let mut json = Vec::new();
    for (m, r) in changes {
        let at = r.catalog_updated.as_deref().unwrap_or("-");
        for c in &r.metadata_changes {
            let _ = writeln!(out, "  {} (updated {at}) {c}", m.run_id);
        }
        json.push(json!({"run_id": m.run_id, "catalog_updated": r.catalog_updated, "changes": r.metadata_changes}));
    }
    json
}

/// Recent results shown for a table.
const RECENT_RESULTS: usize = 10;

/// The table's results in the recent runs that considered it (at most
/// [`RECENT_RESULTS`], newest first), with their DB apply; returns them as
/// JSON.
fn recent_results(out: &mut String, manifests: &[RunManifest], table: &TableId) -> Vec<Value> {
    let _ = writeln!(out, "recent runs (newest first):");
    let mut results = Vec::new();
    for m in manifests {
        let Some(r) = m.tables.get(table) else {
            continue;
        };
        result_line(out, &m.run_id, r);
        let applied = m
            .db_apply
            .as_ref()
            .and_then(|a| a.tables.iter().flatten().find(|t| &t.table == table));
        if let Some(t) = applied {
            apply_line(out, t);
        }
        results.push(json!({"run_id": m.run_id, "result": r, "db_apply": applied}));
        if results.len() >= RECENT_RESULTS {
            break;
        }
    }
    if results.is_empty() {
        let _ = writeln!(out, "  (not in any recent manifest)");
    }
    results
}

/// One run's result for the table: status, periods, rows, error.
fn result_line(out: &mut String, run: &RunId, r: &TableResult) {
    let _ = writeln!(
        out,
        "  {} {}{} new=[{}] refresh=[{}] changed=[{}] unchanged=[{}] verified=[{}] rows={}{}",
        run,
        r.status.as_str(),
        r.reason
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
        list(&r.new_periods),
        list(&r.refresh_periods),
        r.changed_tids
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(","),
        list(&r.unchanged_refreshed),
        list(&r.verified_periods),
        r.rows_written
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into()),
        r.error
            .as_deref()
            .map(|e| format!(" error: {e}"))
            .unwrap_or_default()
    );
}

/// What that run's DB apply did with the table.
fn apply_line(out: &mut String, t: &ApplyTableResult) {
    let _ = writeln!(
        out,
        "      db_apply {:?}{}{}",
        t.status,
        t.reason
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
        t.error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
}
