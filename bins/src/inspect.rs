//! Read-only inspection of a data folder, for `statbank-inspect`: each
//! question of the guide's debugging section answered by one function that
//! returns printable text.

use std::collections::BTreeMap;
use std::fmt::Write;

use partition_store::PartitionStore;
use statbank_client::StatbankClient;
use sync_state::{
    batches, eligibility, estimate_rows_per_period, latest_run, list_runs, periods_per_request,
    select_periods, ApplyStatus, DataDir, Eligibility, FrequencyOverrides, RunId, RunManifest,
    SyncState, TableId, TableStatus, MAX_ROWS_PER_CALL,
};

use crate::Error;

/// Manifests read for histories (newest first).
const HISTORY_RUNS: usize = 50;

fn recent_manifests(dir: &DataDir, n: usize) -> Result<Vec<RunManifest>, Error> {
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
    let mut done: std::collections::BTreeSet<TableId> = Default::default();
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

/// `status`: last catalog poll, last run, tables by last status, tables
/// failing for more than one run, changes journaled but not yet reported.
pub fn status(dir: &DataDir) -> Result<String, Error> {
    let state = SyncState::load(dir)?;
    let mut out = String::new();
    let _ = writeln!(out, "data folder: {}", dir.describe());
    match state.last_catalog_poll_at {
        Some(t) => {
            let _ = writeln!(
                out,
                "last catalog poll: {t} (the weekly gate opens 7 days later; --force-catalog-poll overrides)"
            );
        }
        None => {
            let _ = writeln!(out, "last catalog poll: never");
        }
    }
    let manifests = recent_manifests(dir, HISTORY_RUNS)?;
    match manifests.first() {
        Some(m) => {
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
                s.tables_synced, s.tables_skipped, s.tables_failed, s.tables_with_changed_tids, s.rows_written
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
        None => {
            let _ = writeln!(out, "last run: none");
        }
    }
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
    let streaks = failure_streaks(&manifests);
    let chronic: Vec<_> = streaks.iter().filter(|(_, (n, _))| *n > 1).collect();
    if chronic.is_empty() {
        let _ = writeln!(out, "tables failing for more than one run: none");
    } else {
        let _ = writeln!(out, "tables failing for more than one run:");
        for (id, (n, err)) in chronic {
            let _ = writeln!(out, "  {id:<12} {n} runs  {err}");
        }
    }
    let pending: Vec<_> = state
        .tables
        .iter()
        .filter(|(_, e)| !e.pending_changed_tids.is_empty() || !e.pending_deleted_tids.is_empty())
        .collect();
    if !pending.is_empty() {
        let _ = writeln!(
            out,
            "changes on disk not yet in a manifest (reported by the next run):"
        );
        for (id, e) in pending {
            let _ = writeln!(
                out,
                "  {id:<12} changed {:?} deleted {:?}",
                e.pending_changed_tids, e.pending_deleted_tids
            );
        }
    }
    Ok(out)
}

/// `run [ID]`: the manifest pretty-printed (the latest run by default).
pub fn run(dir: &DataDir, run: Option<&RunId>) -> Result<String, Error> {
    let id = match run {
        Some(r) => r.clone(),
        None => latest_run(dir)?.ok_or_else(|| {
            Error::Internal(format!(
                "no run manifest in {}",
                dir.display_key(&dir.runs_key())
            ))
        })?,
    };
    let m = RunManifest::load(dir, &id)?;
    let mut text = serde_json::to_string_pretty(&m)
        .map_err(|e| Error::Internal(format!("cannot render manifest {id}: {e}")))?;
    text.push('\n');
    if let Some(a) = &m.db_apply {
        for t in a.tables.iter().flatten() {
            if t.status != ApplyStatus::Applied {
                let _ = writeln!(
                    text,
                    "db_apply {}: {:?} {}{}",
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
    Ok(text)
}

/// `table ID`: state entry, local periods and the table's recent results.
pub fn table(dir: &DataDir, table: &TableId) -> Result<String, Error> {
    let state = SyncState::load(dir)?;
    let store = PartitionStore::new(dir);
    let local = store.list_tids(table)?;
    let mut out = String::new();
    let _ = writeln!(out, "table {table}");
    match state.tables.get(table) {
        Some(e) => {
            let text = serde_json::to_string_pretty(e).unwrap_or_default();
            let _ = writeln!(out, "state: {text}");
        }
        None => {
            let _ = writeln!(out, "state: no entry (never synced)");
        }
    }
    let _ = writeln!(
        out,
        "local periods: {} ({} … {})",
        local.len(),
        local.first().map(|t| t.as_str()).unwrap_or("-"),
        local.last().map(|t| t.as_str()).unwrap_or("-")
    );
    let meta = dir.metadata_file_key(table);
    let present = dir.storage().head(&meta)?.is_some();
    let _ = writeln!(
        out,
        "tableinfo cache: {}{}",
        dir.display_key(&meta),
        if present { "" } else { " (missing)" }
    );
    let _ = writeln!(out, "recent runs (newest first):");
    let mut shown = 0;
    for m in recent_manifests(dir, HISTORY_RUNS)? {
        let Some(r) = m.tables.get(table) else {
            continue;
        };
        let list = |v: &Option<Vec<sync_state::Tid>>| {
            v.as_ref()
                .map(|v| v.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            out,
            "  {} {}{} new=[{}] refresh=[{}] changed=[{}] unchanged=[{}] rows={}{}",
            m.run_id,
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
            r.rows_written
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            r.error
                .as_deref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
        if let Some(a) = &m.db_apply {
            if let Some(t) = a.tables.iter().flatten().find(|t| &t.table == table) {
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
        }
        shown += 1;
        if shown >= 10 {
            break;
        }
    }
    if shown == 0 {
        let _ = writeln!(out, "  (not in any recent manifest)");
    }
    Ok(out)
}

/// `plan ID`: what the next run would fetch for `table` (tableinfo only, no
/// data download), assuming the catalog gate is open.
pub async fn plan(
    dir: &DataDir,
    client: &StatbankClient,
    table: &TableId,
) -> Result<String, Error> {
    let state = SyncState::load(dir)?;
    let overrides = FrequencyOverrides::load(dir)?;
    let store = PartitionStore::new(dir);
    let (info, _) = client.table_info(table).await?;
    let remote = info.tids().map_err(|e| Error::Shape {
        table: table.to_string(),
        message: format!("tableinfo: {e}"),
    })?;
    let local = store.list_tids(table)?;
    let updated = info.updated.clone().unwrap_or_default();
    let entry = state.tables.get(table);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "table {table}: remote updated {updated}, last seen {}",
        entry
            .and_then(|e| e.last_seen_updated.as_deref())
            .unwrap_or("never")
    );
    let bootstrap = match eligibility(entry, &updated, !local.is_empty()) {
        Eligibility::Unchanged => {
            let _ = writeln!(
                out,
                "unchanged: the next run skips it (unchanged_updated) and fetches nothing"
            );
            return Ok(out);
        }
        Eligibility::Sync { bootstrap } => bootstrap,
    };
    let (frequency, source) = match overrides.get(table) {
        Some(f) => (f, "frequency_overrides.json"),
        None => (sync_state::infer_frequency(&remote), "inferred"),
    };
    let sel = select_periods(
        &remote,
        &local,
        frequency,
        sync_state::SelectOptions {
            bootstrap,
            prune: false,
        },
    );
    let per_request = periods_per_request(
        estimate_rows_per_period(&info.value_counts(), remote.len()),
        MAX_ROWS_PER_CALL,
    );
    let join = |v: &[sync_state::Tid]| v.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        out,
        "{}: frequency {frequency} ({source}), {} remote periods, {} local",
        if bootstrap {
            "bootstrap"
        } else {
            "incremental"
        },
        remote.len(),
        local.len()
    );
    let _ = writeln!(
        out,
        "new periods ({}): {}",
        sel.new_periods.len(),
        join(&sel.new_periods)
    );
    let _ = writeln!(
        out,
        "refresh window ({}): {}",
        sel.refresh_periods.len(),
        join(&sel.refresh_periods)
    );
    let b = batches(&sel.fetch, per_request);
    let _ = writeln!(
        out,
        "fetch: {} periods in {} BULK request(s) of at most {per_request} periods",
        sel.fetch.len(),
        b.len()
    );
    Ok(out)
}
