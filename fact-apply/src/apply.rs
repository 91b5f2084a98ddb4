//! The run-level flow and the one-transaction-per-table delta apply.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::Utc;
use partition_store::PartitionStore;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::{Client, Transaction};
use sync_state::{
    ApplyStatus, ApplySummary, ApplyTableResult, DataDir, DbApplyReport, PeriodCounts, RunId,
    RunManifest, RunStatus, TableId, Tid, UtcSecond,
};

use crate::catalog::{qualified, quote_ident, table_columns, table_oid, TargetColumn};
use crate::convert::Cell;
use crate::error::error_chain;
use crate::infer::{infer_table, InferredTable};
use crate::plan::{stream_partition, PeriodStats, Plan};
use crate::Error;

/// How to apply a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Report per table and period what would be deleted and inserted, in a
    /// read-only transaction, changing nothing (not even the manifest).
    pub dry_run: bool,
    /// Create a missing `fact.*` table from its partitions (inferred types,
    /// indexes) and load every partition of it, instead of skipping it.
    pub create_missing: bool,
    /// Fail a table whose changed periods lack partition files before deleting
    /// anything, and fail (roll back) a table whose inserted rows per period
    /// differ from its partitions. Default on. Off, the original's lenient
    /// behaviour: periods without a file are left as they are in the table
    /// (reported in `missing_tids`) and count differences are only logged.
    pub strict: bool,
    /// The schema of the fact tables (default `fact`).
    pub schema: String,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            create_missing: false,
            strict: true,
            schema: "fact".into(),
        }
    }
}

/// The name of the per-transaction staging table.
const TEMP_TABLE: &str = "statbank_apply_delta";

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
    validate_schema(&opts.schema)?;
    let manifest = RunManifest::load(data, run).map_err(|source| Error::Manifest {
        run: run.clone(),
        source: Box::new(source),
    })?;
    let work: Vec<(TableId, Vec<Tid>, Vec<Tid>)> = manifest
        .tables_with_changes()
        .map(|(id, r)| {
            (
                id.clone(),
                r.changed_tids.clone(),
                r.deleted_tids.clone().unwrap_or_default(),
            )
        })
        .collect();
    if work.is_empty() {
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
    let store = PartitionStore::new(data);
    let mut tables = Vec::with_capacity(work.len());
    for (table, changed, deleted) in work {
        let t0 = Instant::now();
        let result = apply_table(client, &store, &table, &changed, &deleted, opts);
        log_result(&result, t0.elapsed().as_secs_f64(), opts.dry_run);
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
        let manifest = RunManifest::load(data, run).map_err(|source| Error::Manifest {
            run: run.clone(),
            source: Box::new(source),
        })?;
        save_report(data, run, manifest, &report)?;
    }
    Ok(report)
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

fn validate_schema(schema: &str) -> Result<(), Error> {
    if schema.is_empty() || schema.len() > 63 || schema.chars().any(char::is_control) {
        return Err(Error::InvalidSchema {
            schema: schema.chars().take(80).collect(),
        });
    }
    Ok(())
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
            error = r.error.as_deref().unwrap_or(""),
            "table failed"
        ),
    }
}

/// Applies one table's changed and deleted periods in one transaction and
/// returns its result (never an error: a failure is the `failed` result, with
/// the table rolled back).
pub fn apply_table(
    client: &mut Client,
    store: &PartitionStore,
    table: &TableId,
    changed: &[Tid],
    deleted: &[Tid],
    opts: &ApplyOptions,
) -> ApplyTableResult {
    let mut result = ApplyTableResult::new(table.clone(), ApplyStatus::Applied, changed.to_vec());
    // A period both changed and deleted has a fresh partition: it is changed.
    let changed_set: BTreeSet<&Tid> = changed.iter().collect();
    let deleted: Vec<Tid> = dedup(deleted.iter().filter(|t| !changed_set.contains(t)));
    let changed: Vec<Tid> = dedup(changed.iter());
    if !deleted.is_empty() {
        result.deleted_tids = Some(deleted.clone());
    }
    let fail = |mut result: ApplyTableResult, e: &Error| {
        result.status = ApplyStatus::Failed;
        result.error = Some(error_chain(e));
        result
    };
    if let Err(e) = validate_schema(&opts.schema) {
        return fail(result, &e);
    }
    let name = table.fact_table_name();
    let oid = match table_oid(client, &opts.schema, &name) {
        Ok(oid) => oid,
        Err(source) => {
            let e = Error::Db {
                table: table.clone(),
                step: "looking up the target table",
                source,
            };
            return fail(result, &e);
        }
    };
    if oid.is_none() && !opts.create_missing {
        result.status = ApplyStatus::Skipped;
        result.reason = Some("missing_fact_table".into());
        return result;
    }
    // Coverage: every changed period must have its partition file.
    let mut missing = Vec::new();
    for tid in &changed {
        match store.has_partition(table, tid) {
            Ok(true) => {}
            Ok(false) => missing.push(tid.clone()),
            Err(source) => {
                let e = Error::Check {
                    table: table.clone(),
                    tid: tid.clone(),
                    path: store.display_partition(table, tid),
                    source,
                };
                return fail(result, &e);
            }
        }
    }
    if !missing.is_empty()
        && (opts.strict || (missing.len() == changed.len() && deleted.is_empty()))
    {
        result.status = ApplyStatus::Failed;
        result.reason = Some("missing_partition_files".into());
        result.missing_tids = Some(missing);
        return result;
    }
    let missing_set: BTreeSet<&Tid> = missing.iter().collect();
    let present: Vec<Tid> = changed
        .iter()
        .filter(|t| !missing_set.contains(t))
        .cloned()
        .collect();
    drop(missing_set);
    if !missing.is_empty() {
        tracing::warn!(table = %table, missing_tids = ?missing, "periods without partition files are left as they are (strict off)");
        result.missing_tids = Some(missing);
    }
    if present.is_empty() && deleted.is_empty() {
        // Nothing to do (only possible when called with no periods at all).
        result.deleted_rows = Some(0);
        result.inserted_rows = Some(0);
        return result;
    }
    if oid.is_none() && present.is_empty() {
        // Only pruned periods of a table that does not exist: nothing to create.
        result.status = ApplyStatus::Skipped;
        result.reason = Some("missing_fact_table".into());
        return result;
    }
    let outcome = match oid {
        Some(oid) => apply_delta(client, store, table, oid, &present, &deleted, opts),
        None => create_and_load(client, store, table, &present, opts),
    };
    match outcome {
        Ok(o) => {
            result.deleted_rows = Some(o.periods.values().map(|c| c.deleted).sum());
            result.inserted_rows = Some(o.periods.values().map(|c| c.inserted).sum());
            result.dropped_null_rows = Some(o.dropped);
            result.periods = Some(o.periods);
            if o.created {
                result.created = Some(true);
            }
            result
        }
        Err(e) => fail(result, &e),
    }
}

fn dedup<'a>(tids: impl Iterator<Item = &'a Tid>) -> Vec<Tid> {
    let mut seen = BTreeSet::new();
    tids.filter(|t| seen.insert(*t)).cloned().collect()
}

/// What a successful table apply did.
struct Outcome {
    periods: BTreeMap<String, PeriodCounts>,
    dropped: u64,
    created: bool,
}

fn begin<'c>(
    client: &'c mut Client,
    table: &TableId,
    dry_run: bool,
) -> Result<Transaction<'c>, Error> {
    client
        .build_transaction()
        .read_only(dry_run)
        .start()
        .map_err(Error::db(table, "begin"))
}

/// Builds the plan from the first partition (every other one is checked
/// against it, and every period against the tid column, before anything is
/// written).
fn build_plan(
    store: &PartitionStore,
    table: &TableId,
    target: &str,
    columns: &[TargetColumn],
    tids: &[Tid],
) -> Result<Plan, Error> {
    let mut plan: Option<Plan> = None;
    for tid in tids {
        let reader = store
            .read_partition(table, tid)
            .map_err(|source| Error::Read {
                table: table.clone(),
                tid: tid.clone(),
                path: store.display_partition(table, tid),
                source,
            })?;
        let schema = reader.schema();
        let p = match plan.take() {
            None => Plan::build(table, target, columns, tid, &schema)?,
            Some(p) => {
                p.map_schema(table, tid, &schema)?;
                p
            }
        };
        p.tid_cell(table, tid)?;
        plan = Some(p);
    }
    plan.ok_or_else(|| Error::NoPeriods {
        table: table.clone(),
    })
}

/// The typed `tid` values of `tids`; fails when two periods collide.
fn tid_values<'t>(plan: &Plan, table: &TableId, tids: &'t [Tid]) -> Result<Vec<Cell<'t>>, Error> {
    let mut values: Vec<Cell<'t>> = Vec::with_capacity(tids.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, tid) in tids.iter().enumerate() {
        let v = plan.tid_cell(table, tid)?;
        // Debug tells every value apart (Display shows numerics generically).
        let key = format!("{v:?}");
        if let Some(&j) = seen.get(&key) {
            return Err(Error::PeriodCollision {
                table: table.clone(),
                first: tids[j].clone(),
                second: tids[i].clone(),
                value: v.to_string(),
            });
        }
        seen.insert(key, i);
        values.push(v);
    }
    Ok(values)
}

/// Counts per position (1-based) in the bound tid array, from rows of
/// `(array_position, count)`.
fn counts_by_position(
    rows: &[postgres::Row],
    table: &TableId,
    step: &'static str,
) -> Result<(BTreeMap<usize, u64>, u64), Error> {
    let mut by_pos = BTreeMap::new();
    let mut stray = 0u64;
    for row in rows {
        let pos: Option<i32> = row.try_get(0).map_err(Error::db(table, step))?;
        let n: i64 = row.try_get(1).map_err(Error::db(table, step))?;
        let n = u64::try_from(n).unwrap_or(0);
        match pos
            .and_then(|p| usize::try_from(p).ok())
            .filter(|p| *p >= 1)
        {
            Some(p) => *by_pos.entry(p - 1).or_insert(0) += n,
            None => stray += n,
        }
    }
    Ok((by_pos, stray))
}

fn apply_delta(
    client: &mut Client,
    store: &PartitionStore,
    table: &TableId,
    oid: u32,
    present: &[Tid],
    deleted: &[Tid],
    opts: &ApplyOptions,
) -> Result<Outcome, Error> {
    let target = qualified(&opts.schema, &table.fact_table_name());
    let mut tx = begin(client, table, opts.dry_run)?;
    if !opts.dry_run {
        // Applies of the same table queue up instead of interleaving;
        // readers are not blocked.
        tx.batch_execute(&format!("LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE"))
            .map_err(Error::db(table, "locking the target"))?;
    }
    let columns = table_columns(&mut tx, table, oid)?;
    let plan = plan_for(store, table, &target, &columns, present, deleted)?;
    run_plan(tx, store, table, &plan, present, deleted, opts, None)
}

/// The plan: from the partitions when there are any; with only deleted
/// periods, from the target's `tid` column alone.
fn plan_for(
    store: &PartitionStore,
    table: &TableId,
    target: &str,
    columns: &[TargetColumn],
    present: &[Tid],
    deleted: &[Tid],
) -> Result<Plan, Error> {
    if !present.is_empty() {
        return build_plan(store, table, target, columns, present);
    }
    let Some(first) = deleted.first() else {
        return Err(Error::NoPeriods {
            table: table.clone(),
        });
    };
    // Only deletions: a one-column schema `TID: Utf8` is enough to type them.
    let schema = arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "TID",
        arrow_schema::DataType::Utf8,
        false,
    )]);
    let tid_only: Vec<TargetColumn> = columns
        .iter()
        .filter(|c| c.name == "tid")
        .cloned()
        .collect();
    Plan::build(table, target, &tid_only, first, &schema)
}

#[allow(clippy::too_many_arguments)]
fn run_plan(
    mut tx: Transaction<'_>,
    store: &PartitionStore,
    table: &TableId,
    plan: &Plan,
    present: &[Tid],
    deleted: &[Tid],
    opts: &ApplyOptions,
    create: Option<&InferredTable>,
) -> Result<Outcome, Error> {
    let target = plan.target.clone();
    let tid_col = quote_ident(&plan.columns[plan.tid].name);
    // Changed periods first, then the pruned ones: positions in this array
    // name the period in the grouped counts.
    let all_tids: Vec<Tid> = present.iter().chain(deleted).cloned().collect();
    let all_values = tid_values(plan, table, &all_tids)?;
    let present_values: Vec<Cell<'_>> = all_values[..present.len()].to_vec();

    let mut stats: Vec<PeriodStats> = Vec::with_capacity(present.len());
    let mut deleted_by_pos: BTreeMap<usize, u64> = BTreeMap::new();
    let mut inserted_by_pos: BTreeMap<usize, u64> = BTreeMap::new();

    if opts.dry_run {
        let mut discard = |_: &[Cell<'_>]| Ok(());
        for tid in present {
            stats.push(stream_partition(store, table, tid, plan, &mut discard)?);
        }
        if create.is_none() {
            deleted_by_pos = grouped_count(
                &mut tx,
                table,
                &target,
                &tid_col,
                &all_values,
                "counting rows to delete",
            )?;
        }
        for (i, s) in stats.iter().enumerate() {
            inserted_by_pos.insert(i, s.sent);
        }
        tx.rollback()
            .map_err(Error::db(table, "ending the read-only transaction"))?;
    } else {
        if !present.is_empty() {
            let cols: Vec<String> = plan.columns.iter().map(|c| quote_ident(&c.name)).collect();
            let col_defs: Vec<String> = plan
                .columns
                .iter()
                .map(|c| format!("{} {}", quote_ident(&c.name), c.pg_type))
                .collect();
            let col_list = cols.join(", ");
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE {TEMP_TABLE} ({}) ON COMMIT DROP",
                col_defs.join(", ")
            ))
            .map_err(Error::db(table, "creating the temp table"))?;
            let copy = tx
                .copy_in(&format!(
                    "COPY {TEMP_TABLE} ({col_list}) FROM STDIN (FORMAT binary)"
                ))
                .map_err(Error::db(table, "starting the copy"))?;
            let t_copy = Instant::now();
            let mut writer = BinaryCopyInWriter::new(copy, &plan.types());
            let mut sink = |cells: &[Cell<'_>]| writer.write_raw(cells.iter());
            for tid in present {
                stats.push(stream_partition(store, table, tid, plan, &mut sink)?);
            }
            let copied = writer
                .finish()
                .map_err(Error::db(table, "finishing the copy"))?;
            let sent: u64 = stats.iter().map(|s| s.sent).sum();
            if copied != sent {
                return Err(Error::CopyCount {
                    table: table.clone(),
                    sent,
                    copied,
                });
            }
            let copy_s = t_copy.elapsed().as_secs_f64();
            sync_state::crash::point("apply: copied, before delete");
            let t_delete = Instant::now();
            if create.is_none() {
                deleted_by_pos =
                    delete(&mut tx, table, &target, &tid_col, &all_values, opts.strict)?;
            }
            let delete_s = t_delete.elapsed().as_secs_f64();
            let t_insert = Instant::now();
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {TEMP_TABLE}"
                    ),
                    &[],
                )
                .map_err(Error::db(table, "insert of changed periods"))?;
            let insert_s = t_insert.elapsed().as_secs_f64();
            // What the target now holds of each changed period must be
            // exactly the partition's rows minus the dropped ones.
            let t_verify = Instant::now();
            inserted_by_pos = grouped_count(
                &mut tx,
                table,
                &target,
                &tid_col,
                &present_values,
                "counting the inserted rows",
            )?;
            tracing::debug!(
                table = %table,
                rows = sent,
                copy_s,
                delete_s,
                insert_s,
                verify_s = t_verify.elapsed().as_secs_f64(),
                "delta written"
            );
            let mut problems = Vec::new();
            for (i, (tid, s)) in present.iter().zip(&stats).enumerate() {
                let actual = inserted_by_pos.get(&i).copied().unwrap_or(0);
                if actual != s.sent {
                    problems.push(Error::RowCount {
                        table: table.clone(),
                        tid: tid.clone(),
                        expected: s.sent,
                        actual,
                    });
                }
            }
            if inserted != sent {
                problems.push(Error::InsertCount {
                    table: table.clone(),
                    sent,
                    inserted,
                });
            }
            for e in problems {
                if opts.strict {
                    return Err(e);
                }
                tracing::warn!(table = %table, error = %e, "row-count check failed (strict off)");
            }
        } else {
            deleted_by_pos = delete(&mut tx, table, &target, &tid_col, &all_values, opts.strict)?;
        }
        if let Some(created) = create {
            for sql in created.index_sql(&opts.schema, &table.fact_table_name()) {
                tx.batch_execute(&sql)
                    .map_err(Error::db(table, "creating the indexes"))?;
            }
        }
        sync_state::crash::point("apply: before commit");
        tx.commit().map_err(Error::db(table, "commit"))?;
        sync_state::crash::point("apply: committed");
    }

    let mut periods = BTreeMap::new();
    for (i, tid) in all_tids.iter().enumerate() {
        periods.insert(
            tid.as_str().to_owned(),
            PeriodCounts {
                deleted: deleted_by_pos.get(&i).copied().unwrap_or(0),
                inserted: inserted_by_pos.get(&i).copied().unwrap_or(0),
            },
        );
    }
    Ok(Outcome {
        periods,
        dropped: stats.iter().map(|s| s.dropped).sum(),
        created: create.is_some(),
    })
}

/// Rows of `target` per period of `values` (by position in `values`), with
/// the periods bound as one array of the tid column's own type.
fn grouped_count(
    tx: &mut Transaction<'_>,
    table: &TableId,
    target: &str,
    tid_col: &str,
    values: &[Cell<'_>],
    step: &'static str,
) -> Result<BTreeMap<usize, u64>, Error> {
    let rows = tx
        .query(
            &format!(
                "SELECT array_position($1, {tid_col}), count(*) FROM {target} \
                 WHERE {tid_col} = ANY($1) GROUP BY {tid_col}"
            ),
            &[&values],
        )
        .map_err(Error::db(table, step))?;
    Ok(counts_by_position(&rows, table, step)?.0)
}

/// Deletes the rows of the periods (one `DELETE … WHERE tid = ANY($1)`, the
/// array in the column's own type so its index is used) and returns the
/// per-period counts taken just before (the target is locked against other
/// writers, so they are what the delete removes; checked against its total).
fn delete(
    tx: &mut Transaction<'_>,
    table: &TableId,
    target: &str,
    tid_col: &str,
    values: &[Cell<'_>],
    strict: bool,
) -> Result<BTreeMap<usize, u64>, Error> {
    let by_pos = grouped_count(
        tx,
        table,
        target,
        tid_col,
        values,
        "counting rows to delete",
    )?;
    let deleted = tx
        .execute(
            &format!("DELETE FROM {target} WHERE {tid_col} = ANY($1)"),
            &[&values],
        )
        .map_err(Error::db(table, "delete of changed periods"))?;
    let counted: u64 = by_pos.values().sum();
    if deleted != counted {
        let e = Error::DeleteCount {
            table: table.clone(),
            counted,
            deleted,
        };
        if strict {
            return Err(e);
        }
        tracing::warn!(table = %table, error = %e, "row-count check failed (strict off)");
    }
    Ok(by_pos)
}

/// `--create-missing`: creates the table from every partition of it on disk
/// (the changed periods included), loads them, and indexes it, in one
/// transaction.
fn create_and_load(
    client: &mut Client,
    store: &PartitionStore,
    table: &TableId,
    present: &[Tid],
    opts: &ApplyOptions,
) -> Result<Outcome, Error> {
    let mut tids: Vec<Tid> = store
        .list_tids(table)
        .map_err(|source| Error::List {
            table: table.clone(),
            source,
        })?
        .into_iter()
        .collect();
    for t in present {
        if !tids.contains(t) {
            tids.push(t.clone());
        }
    }
    let inferred = infer_table(store, table, &tids)?;
    let name = table.fact_table_name();
    let target = qualified(&opts.schema, &name);
    let create_sql = inferred.create_sql(&opts.schema, &name);
    tracing::info!(table = %table, sql = %create_sql, "creating missing fact table");
    let mut tx = begin(client, table, opts.dry_run)?;
    let columns: Vec<TargetColumn> = if opts.dry_run {
        // Nothing is created: plan against the inferred columns.
        inferred
            .columns
            .iter()
            .map(|(n, t)| inferred_column(n, t))
            .collect()
    } else {
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(&opts.schema)
        ))
        .map_err(Error::db(table, "creating the schema"))?;
        tx.batch_execute(&create_sql)
            .map_err(Error::db(table, "creating the table"))?;
        let oid = table_oid(&mut tx, &opts.schema, &name)
            .map_err(Error::db(table, "looking up the created table"))?
            .ok_or_else(|| Error::NoPeriods {
                table: table.clone(),
            })?;
        table_columns(&mut tx, table, oid)?
    };
    let plan = build_plan(store, table, &target, &columns, &tids)?;
    run_plan(tx, store, table, &plan, &tids, &[], opts, Some(&inferred))
}

/// A target column as `CREATE TABLE` would make it (for dry runs).
fn inferred_column(name: &str, ty: &str) -> TargetColumn {
    use postgres_types::Type;
    let (t, typmod) = match ty {
        "smallint" => (Type::INT2, -1),
        "integer" => (Type::INT4, -1),
        "bigint" => (Type::INT8, -1),
        "double precision" => (Type::FLOAT8, -1),
        "date" => (Type::DATE, -1),
        "int4range" => (Type::INT4_RANGE, -1),
        v if v.starts_with("varchar(") => (
            Type::VARCHAR,
            v.trim_start_matches("varchar(")
                .trim_end_matches(')')
                .parse::<i32>()
                .map(|n| n + 4)
                .unwrap_or(-1),
        ),
        _ => (Type::TEXT, -1),
    };
    TargetColumn {
        name: name.to_owned(),
        type_name: ty.to_owned(),
        ty: Some(t),
        typmod,
        not_null: false,
        has_default: false,
        generated: false,
    }
}
