//! One table's apply, as named decisions: is there a fact table; is every
//! changed period on the storage; do the partitions still fit the table
//! (schema change, too-narrow types); then the path that applies it.

use std::collections::BTreeSet;

use partition_store::PartitionStore;
use postgres::Client;
use sync_state::{shorten_error, ApplyStatus, ApplyTableResult, Tid};

use crate::catalog::table_oid;
use crate::create::create_and_load;
use crate::delta::apply_delta;
use crate::error::error_chain;
use crate::rebuild::{compare_columns, needed_widenings, rebuild, widen_sql, ColumnDiff};
use crate::swap::{apply_swap, is_partitioned_by_tid};
use crate::tx::{Ctx, Delta, Outcome};
use crate::{ApplyOptions, Error, OnSchemaChange, TableWork};

/// The fact schema must be a usable name, and so must the schemas derived
/// from it (`<schema>_history`): at most 63 bytes, 55 with `--history`.
pub(crate) fn validate_schema(opts: &ApplyOptions) -> Result<(), Error> {
    if let Some(meta) = opts.metadata.schema() {
        if meta.is_empty()
            || meta.chars().any(char::is_control)
            || meta.len() > sync_state::MAX_IDENTIFIER_BYTES
        {
            return Err(Error::InvalidSchema {
                schema: meta.chars().take(80).collect(),
                reason: "the meta schema must be 1 to 63 bytes without control characters".into(),
            });
        }
    }
    let schema = opts.schema.as_str();
    // Room for the longest suffix a derived schema adds.
    let history = if opts.history {
        crate::history::SUFFIX.len()
    } else {
        0
    };
    let labeled = if opts.metadata.schema().is_some() {
        crate::meta::LABELED_SUFFIX.len()
    } else {
        0
    };
    let max = sync_state::MAX_IDENTIFIER_BYTES - history.max(labeled);
    let reason = if schema.is_empty() || schema.chars().any(char::is_control) {
        Some("an empty name or one with control characters".to_string())
    } else if schema.len() > max {
        Some(format!(
            "{} bytes; schema names are at most {max} bytes{}",
            schema.len(),
            if opts.history || opts.metadata.schema().is_some() {
                " with --history or --metadata (the history and labeled schemas add \"_history\" and \"_labeled\" within Postgres's 63)"
            } else {
                " (Postgres's limit)"
            }
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidSchema {
            schema: schema.chars().take(80).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Applies one table's changed and deleted periods in one transaction and
/// returns its result (never an error: a failure is the `failed` result,
/// with the table rolled back).
pub fn apply_table(
    client: &mut Client,
    store: &PartitionStore,
    work: &TableWork,
    opts: &ApplyOptions,
) -> ApplyTableResult {
    let table = &work.table;
    let mut result =
        ApplyTableResult::new(table.clone(), ApplyStatus::Applied, work.changed.clone());
    // A period both changed and deleted has a fresh partition: it is changed.
    let changed_set: BTreeSet<&Tid> = work.changed.iter().collect();
    let deleted: Vec<Tid> = dedup(work.deleted.iter().filter(|t| !changed_set.contains(t)));
    let changed: Vec<Tid> = dedup(work.changed.iter());
    if !deleted.is_empty() {
        result.deleted_tids = Some(deleted.clone());
    }
    if let Err(e) = validate_schema(opts) {
        return fail(result, &e);
    }
    let ctx = Ctx::new(store, table, opts);
    let oid = match table_oid(client, &opts.schema, &ctx.name) {
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
        return metadata_alone(client, &ctx, skipped_missing(result, &ctx));
    }
    let (present, deleted) = match coverage(&ctx, work, &changed, deleted, &mut result) {
        Ok(Some(p)) => p,
        Ok(None) => return result,
        Err(e) => return fail(result, &e),
    };
    if present.is_empty() && deleted.is_empty() && work.extra_values.is_empty() {
        // Nothing to do (only possible when called with no periods at all).
        result.deleted_rows = Some(0);
        result.inserted_rows = Some(0);
        return result;
    }
    let outcome = match oid {
        None if present.is_empty() => {
            // Only pruned periods of a table that does not exist.
            return metadata_alone(client, &ctx, skipped_missing(result, &ctx));
        }
        None => create_and_load(client, &ctx, &present).map(Some),
        Some(oid) => {
            if !work.extra_values.is_empty() {
                result.removed_values = Some(work.extra_values.clone());
            }
            let delta = Delta {
                present: &present,
                deleted: &deleted,
                catalog_updated: work.catalog_updated.as_deref(),
                extra: &work.extra_values,
            };
            apply_existing(client, &ctx, oid, work, &delta, &mut result)
        }
    };
    match outcome {
        Ok(Some(o)) => fill(result, o),
        Ok(None) => result,
        Err(e) => fail(result, &e),
    }
}

/// A table with no fact table still gets its metadata (`fact_table` NULL).
fn metadata_alone(
    client: &mut Client,
    ctx: &Ctx<'_>,
    mut result: ApplyTableResult,
) -> ApplyTableResult {
    crate::meta::record(&mut result, crate::meta::alone(client, ctx));
    result
}

fn skipped_missing(mut result: ApplyTableResult, ctx: &Ctx<'_>) -> ApplyTableResult {
    tracing::warn!(
        table = %ctx.table,
        target = %ctx.target,
        "no fact table: skipped (statbank-apply --create-missing creates it from the partitions)"
    );
    result.status = ApplyStatus::Skipped;
    result.reason = Some("missing_fact_table".into());
    result
}

/// The periods to load and the periods to delete.
type Periods = (Vec<Tid>, Vec<Tid>);

/// Every changed period must have its partition, unless a later run
/// removed it (deleted upstream, or gone with a later schema change): that
/// period is applied as deleted, which is what the partitions say now.
/// Strict: another missing one fails the table untouched (`Ok(None)`,
/// `result` filled); lenient: the periods with partitions are applied.
/// Returns the periods to load and the periods to delete.
fn coverage(
    ctx: &Ctx<'_>,
    work: &TableWork,
    changed: &[Tid],
    mut deleted: Vec<Tid>,
    result: &mut ApplyTableResult,
) -> Result<Option<Periods>, Error> {
    let mut missing = Vec::new();
    for tid in changed {
        match ctx.store.has_partition(ctx.table, tid) {
            Ok(true) => {}
            Ok(false) if work.reshaped_later || work.removed_later.contains(tid) => {
                tracing::info!(table = %ctx.table, %tid, "period removed by a later run: applied as deleted");
                deleted.push(tid.clone());
            }
            Ok(false) => missing.push(tid.clone()),
            Err(source) => {
                return Err(Error::Check {
                    table: ctx.table.clone(),
                    tid: tid.clone(),
                    path: ctx.store.display_partition(ctx.table, tid),
                    source: Box::new(source),
                })
            }
        }
    }
    if deleted.len() > result.deleted_tids.as_ref().map_or(0, Vec::len) {
        result.deleted_tids = Some(deleted.clone());
    }
    if !missing.is_empty()
        && (ctx.opts.strict || (missing.len() == changed.len() && deleted.is_empty()))
    {
        result.status = ApplyStatus::Failed;
        result.reason = Some("missing_partition_files".into());
        result.missing_tids = Some(missing);
        return Ok(None);
    }
    let absent: BTreeSet<&Tid> = missing.iter().chain(&deleted).collect();
    let present: Vec<Tid> = changed
        .iter()
        .filter(|t| !absent.contains(t))
        .cloned()
        .collect();
    if !missing.is_empty() {
        tracing::warn!(table = %ctx.table, missing_tids = ?missing, "periods without partition files are left as they are (strict off)");
        result.missing_tids = Some(missing);
    }
    Ok(Some((present, deleted)))
}

/// The fact table an apply writes into.
#[derive(Clone, Copy)]
struct Existing {
    oid: u32,
    /// LIST-partitioned on `tid`: changed periods are swapped in whole.
    partitioned: bool,
}

/// An existing fact table: a schema change upstream is checked first (the
/// partitions must fit the table, or it is rebuilt on request), then the
/// delta; a value its column's type cannot hold is a type change (failed,
/// or widened on request).
fn apply_existing(
    client: &mut Client,
    ctx: &Ctx<'_>,
    oid: u32,
    work: &TableWork,
    delta: &Delta<'_>,
    result: &mut ApplyTableResult,
) -> Result<Option<Outcome>, Error> {
    let target = Existing {
        oid,
        partitioned: is_partitioned_by_tid(client, ctx, oid)?,
    };
    if let (Some(_), Some(first)) = (&work.schema_change, delta.present.first()) {
        let diff = compare_columns(client, ctx, oid, first)?;
        if !diff.is_empty() {
            return schema_changed(client, ctx, target, &diff, result);
        }
    }
    apply_widening_on_demand(client, ctx, target, delta, result)
}

/// The partitions' columns differ from the table's: fail the table
/// untouched, or rebuild it (`--on-schema-change rebuild`; never a
/// partitioned one, which would lose its partitioning).
fn schema_changed(
    client: &mut Client,
    ctx: &Ctx<'_>,
    target: Existing,
    diff: &ColumnDiff,
    result: &mut ApplyTableResult,
) -> Result<Option<Outcome>, Error> {
    result.added_columns = Some(diff.added.clone());
    result.removed_columns = Some(diff.removed.clone());
    let rebuild_on_change = ctx.opts.on_schema_change == OnSchemaChange::Rebuild;
    if !rebuild_on_change || ctx.opts.dry_run {
        result.status = ApplyStatus::Failed;
        result.reason = Some("schema_changed".into());
        result.error = Some(format!(
            "table {}: the partitions' columns no longer match {} (added {:?}, removed {:?}); \
             rebuild it with --on-schema-change rebuild, or migrate it by hand and apply again",
            ctx.table, ctx.target, diff.added, diff.removed
        ));
        return Ok(None);
    }
    if target.partitioned {
        result.status = ApplyStatus::Failed;
        result.reason = Some("schema_changed".into());
        result.error = Some(format!(
            "table {}: {} is partitioned; a rebuild would lose its partitioning: migrate it by hand (add or drop the columns) and apply again",
            ctx.table, ctx.target
        ));
        return Ok(None);
    }
    let r = rebuild(client, ctx, target.oid)?;
    result.rebuilt = Some(true);
    if !r.type_changes.is_empty() {
        result.type_changes = Some(r.type_changes);
    }
    Ok(Some(r.outcome))
}

/// The delta (a partition swap for a partitioned table); a value a
/// column's type cannot hold fails the table as a type change, or widens
/// the column in the same transaction on request.
fn apply_widening_on_demand(
    client: &mut Client,
    ctx: &Ctx<'_>,
    target: Existing,
    delta: &Delta<'_>,
    result: &mut ApplyTableResult,
) -> Result<Option<Outcome>, Error> {
    let run = |client: &mut Client, prelude: &[String]| {
        if target.partitioned && !ctx.opts.dry_run {
            apply_swap(client, ctx, target.oid, delta, prelude)
        } else {
            apply_delta(client, ctx, target.oid, delta, prelude)
        }
    };
    let e = match run(client, &[]) {
        Err(e @ Error::Value { .. }) if !delta.present.is_empty() => e,
        other => return other.map(Some),
    };
    let mut changes = needed_widenings(client, ctx, target.oid, delta.present)?;
    if changes.is_empty() {
        return Err(e); // not a type too narrow for new values
    }
    if let Error::Value {
        tid, column, value, ..
    } = &e
    {
        for c in changes.iter_mut().filter(|c| &c.column == column) {
            c.value = Some(value.clone());
            c.tid = Some(tid.clone());
        }
    }
    if ctx.opts.on_schema_change != OnSchemaChange::Rebuild || ctx.opts.dry_run {
        result.status = ApplyStatus::Failed;
        result.reason = Some("type_changed".into());
        result.error = Some(shorten_error(format!(
            "{}; widen with --on-schema-change rebuild",
            error_chain(&e)
        )));
        result.type_changes = Some(changes);
        return Ok(None);
    }
    let prelude = widen_sql(&ctx.target, &changes);
    tracing::warn!(table = %ctx.table, widen = ?prelude, "widening columns for new values");
    let o = run(client, &prelude)?;
    result.type_changes = Some(changes);
    Ok(Some(o))
}

fn fill(mut result: ApplyTableResult, o: Outcome) -> ApplyTableResult {
    let deleted: u64 = o.periods.values().map(|c| c.deleted).sum::<u64>() + o.extra_rows;
    result.deleted_rows = Some(o.replaced_rows.unwrap_or(deleted));
    result.inserted_rows = Some(o.periods.values().map(|c| c.inserted).sum());
    result.dropped_null_rows = Some(o.dropped);
    result.periods = Some(o.periods);
    if o.created {
        result.created = Some(true);
    }
    if o.partition_swap {
        result.partition_swap = Some(true);
    }
    result.history_rows = o.history_rows;
    crate::meta::record(&mut result, o.metadata);
    result
}

fn fail(mut result: ApplyTableResult, e: &Error) -> ApplyTableResult {
    result.status = ApplyStatus::Failed;
    result.error = Some(shorten_error(error_chain(e)));
    result
}

fn dedup<'a>(tids: impl Iterator<Item = &'a Tid>) -> Vec<Tid> {
    let mut seen = BTreeSet::new();
    tids.filter(|t| seen.insert(*t)).cloned().collect()
}
