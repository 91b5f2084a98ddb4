//! The steps every apply path shares inside its transaction: conversion, typed
//! period values, the binary COPY into a temp table, the typed DELETE, the
//! INSERT and the row-count checks.

use std::collections::BTreeMap;
use std::time::Instant;

use partition_store::PartitionStore;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::{Client, Transaction};
use sync_state::{PeriodCounts, TableId, Tid};

use crate::catalog::{qualified, quote_ident, TargetColumn};
use crate::conversion::{stream_partition, Conversion, PeriodStats};
use crate::convert::Cell;
use crate::{ApplyOptions, Error};

/// The name of the per-transaction staging table.
pub(crate) const TEMP_TABLE: &str = "statbank_apply_delta";

/// One table's apply: where it reads and writes.
pub(crate) struct Ctx<'a> {
    pub(crate) store: &'a PartitionStore,
    pub(crate) table: &'a TableId,
    pub(crate) opts: &'a ApplyOptions,
    /// The fact table's name (`folk1a`).
    pub(crate) name: String,
    /// `"fact"."folk1a"`.
    pub(crate) target: String,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        store: &'a PartitionStore,
        table: &'a TableId,
        opts: &'a ApplyOptions,
    ) -> Ctx<'a> {
        let name = table.fact_table_name();
        Ctx {
            store,
            table,
            opts,
            target: qualified(&opts.schema, &name),
            name,
        }
    }
}

/// The periods one apply changes, as every apply path takes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delta<'a> {
    /// Changed periods that have partitions: loaded.
    pub(crate) present: &'a [Tid],
    /// Periods gone at the source: deleted.
    pub(crate) deleted: &'a [Tid],
    /// The catalog `updated` of the sync (the end of validity of deleted
    /// periods, for history).
    pub(crate) catalog_updated: Option<&'a str>,
    /// `tid` values no period maps to (as Postgres prints them): deleted.
    pub(crate) extra: &'a [String],
}

impl<'a> Delta<'a> {
    /// Every period of `tids` loaded, none deleted (a create, a rebuild).
    pub(crate) fn load_all(tids: &'a [Tid]) -> Delta<'a> {
        Delta {
            present: tids,
            deleted: &[],
            catalog_updated: None,
            extra: &[],
        }
    }

    /// The loaded periods, then the deleted ones: positions in this list
    /// name a period in the grouped counts and the typed values.
    pub(crate) fn all(&self) -> Vec<Tid> {
        self.present.iter().chain(self.deleted).cloned().collect()
    }
}

/// What a COPY loaded, for the checks after the insert.
pub(crate) struct Loaded<'a, 't> {
    /// The periods loaded.
    pub(crate) tids: &'a [Tid],
    /// Their typed `tid` values, in the same order.
    pub(crate) values: &'a [Cell<'t>],
    /// Their rows as sent.
    pub(crate) stats: &'a [PeriodStats],
    /// Rows the insert reported.
    pub(crate) inserted: u64,
}

/// What a successful table apply did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) periods: BTreeMap<String, PeriodCounts>,
    pub(crate) dropped: u64,
    pub(crate) created: bool,
    pub(crate) partition_swap: bool,
    pub(crate) history_rows: Option<u64>,
    /// Rows the whole old table held (a rebuild replaces them all).
    pub(crate) replaced_rows: Option<u64>,
    /// Rows deleted of `tid` values no period maps to ([`Delta::extra`]).
    pub(crate) extra_rows: u64,
    /// The metadata step (`--metadata`): labels written, or why not.
    pub(crate) metadata: Option<Result<crate::meta::MetaOutcome, String>>,
}

pub(crate) fn begin<'c>(
    client: &'c mut Client,
    table: &TableId,
    read_only: bool,
) -> Result<Transaction<'c>, Error> {
    client
        .build_transaction()
        .read_only(read_only)
        .start()
        .map_err(Error::db(table, "begin"))
}

/// Applies of the same table queue up instead of interleaving; readers are
/// not blocked.
pub(crate) fn lock_target(tx: &mut Transaction<'_>, ctx: &Ctx<'_>) -> Result<(), Error> {
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
        ctx.target
    ))
    .map_err(Error::db(ctx.table, "locking the target"))
}

/// The conversion of `tids`' partitions into `target`'s columns, every
/// partition checked against it.
pub(crate) fn build_conversion(
    store: &PartitionStore,
    table: &TableId,
    target: &str,
    columns: &[TargetColumn],
    tids: &[Tid],
) -> Result<Conversion, Error> {
    check_partitions(store, table, target, columns, tids).map(|c| c.conversion)
}

/// What [`check_partitions`] found.
pub(crate) struct Checked {
    /// The conversion every partition fits.
    pub(crate) conversion: Conversion,
    /// Each partition's rows, from its footer.
    pub(crate) rows: Vec<u64>,
}

/// Opens every partition of `tids`, checks it against the conversion
/// into `target`'s columns, and counts its rows.
pub(crate) fn check_partitions(
    store: &PartitionStore,
    table: &TableId,
    target: &str,
    columns: &[TargetColumn],
    tids: &[Tid],
) -> Result<Checked, Error> {
    let mut conv: Option<Conversion> = None;
    let mut rows = Vec::with_capacity(tids.len());
    for tid in tids {
        let reader = store
            .read_partition(table, tid)
            .map_err(|source| Error::Read {
                table: table.clone(),
                tid: tid.clone(),
                path: store.display_partition(table, tid),
                source: Box::new(source),
            })?;
        rows.push(reader.num_rows());
        let schema = reader.schema();
        let p = match conv.take() {
            None => {
                check_partition_columns(table, &schema)?;
                Conversion::build(table, target, columns, tid, &schema)?
            }
            Some(p) => {
                p.map_schema(table, tid, &schema)?;
                p
            }
        };
        p.tid_cell(table, tid)?;
        conv = Some(p);
    }
    let conversion = conv.ok_or_else(|| Error::NoPeriods {
        table: table.clone(),
    })?;
    Ok(Checked { conversion, rows })
}

/// The partition's columns must be usable fact table columns
/// ([`sync_state::check_variable_columns`]), checked before any write.
pub(crate) fn check_partition_columns(
    table: &TableId,
    schema: &arrow_schema::Schema,
) -> Result<(), Error> {
    let names = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| *n != sync_state::VALUE_COLUMN);
    sync_state::check_variable_columns(table, names).map_err(|source| Error::Columns {
        table: table.clone(),
        source: Box::new(source),
    })
}

/// The conversion: from the partitions when there are any; with only deleted
/// periods, from the target's `tid` column alone.
pub(crate) fn conversion_for(
    ctx: &Ctx<'_>,
    columns: &[TargetColumn],
    delta: &Delta<'_>,
) -> Result<Conversion, Error> {
    if !delta.present.is_empty() {
        return build_conversion(ctx.store, ctx.table, &ctx.target, columns, delta.present);
    }
    let Some(first) = delta.deleted.first() else {
        return Err(Error::NoPeriods {
            table: ctx.table.clone(),
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
    Conversion::build(ctx.table, &ctx.target, &tid_only, first, &schema)
}

/// The typed `tid` values of `tids`; fails when two periods collide.
pub(crate) fn tid_values<'t>(
    conv: &Conversion,
    table: &TableId,
    tids: &'t [Tid],
) -> Result<Vec<Cell<'t>>, Error> {
    let mut values: Vec<Cell<'t>> = Vec::with_capacity(tids.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, tid) in tids.iter().enumerate() {
        let v = conv.tid_cell(table, tid)?;
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

/// Fails when a period of this apply (`tids`, typed as `values`) has the
/// same `tid` value as another period the table holds: the mirror's other
/// partitions of the table (a new `2024K1` and the stored `2024` are both
/// 2024-01-01 in a `date` column; deleting or replacing one would delete
/// the other's rows).
pub(crate) fn check_against_stored(
    ctx: &Ctx<'_>,
    conv: &Conversion,
    tids: &[Tid],
    values: &[Cell<'_>],
) -> Result<(), Error> {
    let ours: BTreeMap<String, &Tid> = tids
        .iter()
        .zip(values)
        .map(|(t, v)| (format!("{v:?}"), t))
        .collect();
    let stored = ctx
        .store
        .list_tids(ctx.table)
        .map_err(|source| Error::List {
            table: ctx.table.clone(),
            source: Box::new(source),
        })?;
    for other in stored.iter().filter(|t| !tids.contains(t)) {
        // A stored period the column cannot hold is not in the table.
        let Ok(v) = conv.tid_cell(ctx.table, other) else {
            continue;
        };
        if let Some(&first) = ours.get(&format!("{v:?}")) {
            return Err(Error::PeriodCollision {
                table: ctx.table.clone(),
                first: first.clone(),
                second: other.clone(),
                value: v.to_string(),
            });
        }
    }
    Ok(())
}

/// The quoted name of the conversion's `tid` column.
pub(crate) fn tid_column(conv: &Conversion) -> String {
    quote_ident(&conv.columns[conv.tid].name)
}

/// Rows of `target` per period of `values` (by position in `values`), with
/// the periods bound as one array of the tid column's own type.
pub(crate) fn grouped_count(
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
    let mut by_pos = BTreeMap::new();
    for row in &rows {
        let pos: Option<i32> = row.try_get(0).map_err(Error::db(table, step))?;
        let n: i64 = row.try_get(1).map_err(Error::db(table, step))?;
        let n = u64::try_from(n).unwrap_or(0);
        if let Some(p) = pos
            .and_then(|p| usize::try_from(p).ok())
            .filter(|p| *p >= 1)
        {
            *by_pos.entry(p - 1).or_insert(0) += n;
        }
    }
    Ok(by_pos)
}

/// Deletes the rows of the periods (one `DELETE … WHERE tid = ANY($1)`, the
/// array in the column's own type so its index is used) and returns the
/// per-period counts taken just before (the target is locked against other
/// writers, so they are what the delete removes; checked against its total).
pub(crate) fn delete_periods(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    tid_col: &str,
    values: &[Cell<'_>],
) -> Result<BTreeMap<usize, u64>, Error> {
    let (table, target) = (ctx.table, &ctx.target);
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
        if ctx.opts.strict {
            return Err(e);
        }
        tracing::warn!(table = %table, error = %e, "row-count check failed (strict off)");
    }
    Ok(by_pos)
}

/// Deletes the rows of `tid` values no period maps to (the array bound as
/// text and cast to the column's type, so its index is used); how many.
pub(crate) fn delete_values(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    values: &[String],
) -> Result<u64, Error> {
    if values.is_empty() {
        return Ok(0);
    }
    let ty = &conv.columns[conv.tid].pg_type;
    tx.execute(
        &format!(
            "DELETE FROM {} WHERE {} = ANY($1::text[]::{ty}[])",
            ctx.target,
            tid_column(conv)
        ),
        &[&values],
    )
    .map_err(Error::db(ctx.table, "delete of tid values no period has"))
}

/// Streams the partitions of `present` through the conversion into a temp table
/// (`ON COMMIT DROP`) with a binary COPY; per-period figures in order.
pub(crate) fn copy_to_temp(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    present: &[Tid],
) -> Result<Vec<PeriodStats>, Error> {
    let table = ctx.table;
    let col_defs: Vec<String> = conv
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.pg_type))
        .collect();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {TEMP_TABLE} ({}) ON COMMIT DROP",
        col_defs.join(", ")
    ))
    .map_err(Error::db(table, "creating the temp table"))?;
    copy_into(tx, ctx, conv, present, TEMP_TABLE)
}

/// Streams the partitions of `present` into `into` (a temp or staging
/// table with the conversion's columns) with one binary COPY.
pub(crate) fn copy_into(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    present: &[Tid],
    into: &str,
) -> Result<Vec<PeriodStats>, Error> {
    let table = ctx.table;
    let copy = tx
        .copy_in(&format!(
            "COPY {into} ({}) FROM STDIN (FORMAT binary)",
            column_list(conv)
        ))
        .map_err(Error::db(table, "starting the copy"))?;
    let t_copy = Instant::now();
    let mut writer = BinaryCopyInWriter::new(copy, &conv.types());
    let mut sink = |cells: &[Cell<'_>]| writer.write_raw(cells.iter());
    let mut stats = Vec::with_capacity(present.len());
    for tid in present {
        stats.push(stream_partition(ctx.store, table, tid, conv, &mut sink)?);
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
    tracing::debug!(table = %table, rows = sent, secs = t_copy.elapsed().as_secs_f64(), "copied");
    Ok(stats)
}

/// The conversion's columns, quoted, comma-separated.
pub(crate) fn column_list(conv: &Conversion) -> String {
    conv.columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT … SELECT` of the temp table into the target; rows inserted.
pub(crate) fn insert_from_temp(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
) -> Result<u64, Error> {
    let cols = column_list(conv);
    tx.execute(
        &format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {TEMP_TABLE}",
            ctx.target
        ),
        &[],
    )
    .map_err(Error::db(ctx.table, "insert of changed periods"))
}

/// What the target holds of each changed period must be exactly the
/// partition's rows minus the dropped ones, and the insert must have stored
/// every copied row (catches triggers, rules or policies that drop, keep or
/// move rows). Strict: a mismatch is an error; otherwise logged.
pub(crate) fn check_inserted(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    loaded: &Loaded<'_, '_>,
) -> Result<BTreeMap<usize, u64>, Error> {
    let table = ctx.table;
    let (stats, inserted) = (loaded.stats, loaded.inserted);
    let by_pos = grouped_count(
        tx,
        table,
        &ctx.target,
        &tid_column(conv),
        loaded.values,
        "counting the inserted rows",
    )?;
    let mut problems = Vec::new();
    for (i, (tid, s)) in loaded.tids.iter().zip(stats).enumerate() {
        let actual = by_pos.get(&i).copied().unwrap_or(0);
        if actual != s.sent {
            problems.push(Error::RowCount {
                table: table.clone(),
                tid: tid.clone(),
                expected: s.sent,
                actual,
            });
        }
    }
    let sent: u64 = stats.iter().map(|s| s.sent).sum();
    if inserted != sent {
        problems.push(Error::InsertCount {
            table: table.clone(),
            sent,
            inserted,
        });
    }
    for e in problems {
        if ctx.opts.strict {
            return Err(e);
        }
        tracing::warn!(table = %table, error = %e, "row-count check failed (strict off)");
    }
    Ok(by_pos)
}

/// Per-period figures for the report, by position in `all`.
pub(crate) fn period_counts(
    all: &[Tid],
    deleted: &BTreeMap<usize, u64>,
    inserted: &BTreeMap<usize, u64>,
) -> BTreeMap<String, PeriodCounts> {
    all.iter()
        .enumerate()
        .map(|(i, tid)| {
            (
                tid.as_str().to_owned(),
                PeriodCounts {
                    deleted: deleted.get(&i).copied().unwrap_or(0),
                    inserted: inserted.get(&i).copied().unwrap_or(0),
                },
            )
        })
        .collect()
}

/// `SELECT count(*)` of `table` (a quoted, qualified name); `step` names
/// the step in an error.
pub(crate) fn count_rows(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    table: &str,
    step: &'static str,
) -> Result<u64, Error> {
    let n: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .map_err(Error::db(ctx.table, step))?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}
