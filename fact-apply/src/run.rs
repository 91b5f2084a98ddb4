//! A whole run: every table with changes, one transaction each, and the
//! `db_apply` report written back into the manifest.

use std::time::Instant;

use chrono::Utc;
use partition_store::PartitionStore;
use postgres::Client;
use sync_state::{
    ApplyStatus, ApplySummary, ApplyTableResult, DataDir, DbApplyReport, RunId, RunManifest,
    RunStatus, TableId, UtcSecond,
};

use crate::table::{apply_table, validate_schema};
use crate::{ApplyOptions, Error, TableWork};

/// Applies the run `run` (the original's `apply_incremental_run`).
///
/// Reads `runs/<run>.json`, applies every table with changed or deleted
/// periods into `<schema>.<table id lower-cased>`, one transaction per table
/// (see the crate documentation), and writes the report back into the same
/// manifest as `db_apply`, atomically. A table that fails is rolled back and
/// reported; the other tables go on. A dry run writes nothing at all: the
/// report is only returned, so the manifest keeps the record of what was
/// really applied.
///
/// Errors only when the manifest cannot be read or written; table failures
/// are in the report (status `partial_failure`).
///
/// Blocking: never call this on a tokio worker thread (the synchronous
/// `postgres` client runs its own runtime); use a plain thread or
/// `tokio::task::spawn_blocking`.
pub fn apply_run(
    client: &mut Client,
    data: &DataDir,
    run: &RunId,
    opts: &ApplyOptions,
) -> Result<DbApplyReport, Error> {
    validate_schema(opts)?;
    let manifest = load(data, run)?;
    let mut work: Vec<TableWork> = manifest
        .tables_with_changes()
        .map(|(id, r)| TableWork::of(id, r))
        .collect();
    if !work.is_empty() {
        note_later_removals(data, &manifest, &mut work)?;
    }
    // With metadata on, the schema is made (and filled, when new) even by a
    // run with nothing to apply.
    let store = PartitionStore::new(data);
    let (opts, meta_unavailable) = crate::meta::prepare_run(client, &store, &work, opts);
    let opts = &opts;
    // Tables whose tableinfo changed and no period did: their metadata
    // alone (when metadata is on).
    let metadata_only: Vec<TableId> = match opts.metadata.schema() {
        Some(_) => manifest
            .tables_with_metadata_only()
            .map(|(id, _)| id.clone())
            .collect(),
        None => Vec::new(),
    };
    if work.is_empty() && metadata_only.is_empty() {
        let mut report = DbApplyReport::no_changed_tids(run.clone());
        tracing::info!(run = %run, "no table has changed periods; nothing to apply");
        if opts.dry_run {
            report.dry_run = Some(true);
        } else {
            save_report(data, run, manifest, &report)?;
        }
        return Ok(report);
    }
    let started_at = UtcSecond::new(Utc::now());
    let mut tables = Vec::with_capacity(work.len());
    for w in &work {
        let t0 = Instant::now();
        let mut result = apply_table(client, &store, w, opts);
        if let Some(reason) = &meta_unavailable {
            result.metadata_error = Some(reason.clone());
        }
        log_result(&result, t0.elapsed().as_secs_f64(), opts.dry_run);
        tables.push(result);
    }
    for table in &metadata_only {
        let result = metadata_alone(client, &store, table, opts);
        log_result(&result, 0.0, opts.dry_run);
        tables.push(result);
    }
    let summary = ApplySummary::of(&tables);
    let report = DbApplyReport {
        run_id: run.clone(),
        started_at: Some(started_at),
        finished_at: Some(UtcSecond::new(Utc::now())),
        status: if summary.tables_failed > 0 {
            RunStatus::PartialFailure
        } else {
            RunStatus::Success
        },
        reason: None,
        dry_run: opts.dry_run.then_some(true),
        tables: Some(tables),
        summary,
        extra: Default::default(),
    };
    if !opts.dry_run {
        // Re-read so that nothing written to the manifest meanwhile is lost.
        save_report(data, run, load(data, run)?, &report)?;
    }
    Ok(report)
}

/// A table whose metadata alone changed: written in a transaction of its
/// own (`reason: metadata_only`); failed when it cannot be, so that the run
/// stays pending until it is.
fn metadata_alone(
    client: &mut Client,
    store: &PartitionStore,
    table: &TableId,
    opts: &ApplyOptions,
) -> ApplyTableResult {
    let mut result = ApplyTableResult::new(table.clone(), ApplyStatus::Applied, Vec::new());
    result.reason = Some("metadata_only".into());
    let ctx = crate::tx::Ctx::new(store, table, opts);
    let step = crate::meta::alone(client, &ctx);
    if let Some(Err(e)) = &step {
        result.status = ApplyStatus::Failed;
        result.error = Some(e.clone());
    }
    crate::meta::record(&mut result, step);
    result
}

/// What runs after `manifest` removed from each table of `work` (a run
/// applied late, e.g. a pending one, meets the partitions as they are now).
fn note_later_removals(
    data: &DataDir,
    manifest: &RunManifest,
    work: &mut [TableWork],
) -> Result<(), Error> {
    let runs = sync_state::list_runs(data).map_err(|source| Error::Manifest {
        run: manifest.run_id.clone(),
        source: Box::new(source),
    })?;
    for id in runs.iter().filter(|id| **id != manifest.run_id) {
        let later = load(data, id)?;
        if later.started_at < manifest.started_at {
            continue;
        }
        for w in work.iter_mut() {
            let Some(r) = later.tables.get(&w.table) else {
                continue;
            };
            w.removed_later
                .extend(r.deleted_tids.iter().flatten().cloned());
            w.reshaped_later |= r.schema_change.is_some();
        }
    }
    Ok(())
}

fn load(data: &DataDir, run: &RunId) -> Result<RunManifest, Error> {
    RunManifest::load(data, run).map_err(|source| Error::Manifest {
        run: run.clone(),
        source: Box::new(source),
    })
}

fn save_report(
    data: &DataDir,
    run: &RunId,
    mut manifest: RunManifest,
    report: &DbApplyReport,
) -> Result<(), Error> {
    manifest.db_apply = Some(report.clone());
    manifest.save(data).map_err(|source| Error::SaveManifest {
        run: run.clone(),
        source: Box::new(source),
    })
}

fn log_result(r: &ApplyTableResult, secs: f64, dry_run: bool) {
    match r.status {
        ApplyStatus::Applied => tracing::info!(
            table = %r.table,
            dry_run,
            periods = r.changed_tids.len(),
            deleted_rows = r.deleted_rows.unwrap_or(0),
            inserted_rows = r.inserted_rows.unwrap_or(0),
            dropped_null_rows = r.dropped_null_rows.unwrap_or(0),
            created = r.created.unwrap_or(false),
            rebuilt = r.rebuilt.unwrap_or(false),
            secs,
            "table applied"
        ),
        ApplyStatus::Skipped => tracing::warn!(
            table = %r.table,
            reason = r.reason.as_deref().unwrap_or(""),
            "table skipped"
        ),
        ApplyStatus::Failed => tracing::error!(
            table = %r.table,
            reason = r.reason.as_deref().unwrap_or(""),
            missing_tids = ?r.missing_tids,
            added_columns = ?r.added_columns,
            removed_columns = ?r.removed_columns,
            error = r.error.as_deref().unwrap_or(""),
            "table failed"
        ),
    }
}
