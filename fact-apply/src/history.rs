//! `fact_history.<table>` (`--history`): every version of every row, with
//! its validity interval on the source's clock, maintained in the same
//! transaction as the fact table.
//!
//! A row is valid from the catalog `updated` of the sync that published its
//! period's content (the partition footer's `valid_from`) until the
//! `updated` of the sync that superseded or removed it (`valid_to`, `NULL`
//! while current). So
//!
//! ```sql
//! SELECT … FROM fact_history.folk1a
//! WHERE valid_from <= $t AND (valid_to IS NULL OR valid_to > $t)
//! ```
//!
//! is the table as published at `$t`. Created on first use with the fact
//! table's columns plus `valid_from timestamptz NOT NULL, valid_to
//! timestamptz`, and seeded with the fact table's current rows (valid from
//! their partition's `valid_from`; `-infinity` when unknown). Rows of
//! periods that did not change are never touched.

use postgres::Transaction;
use sync_state::{source_time_to_utc, Tid};

use crate::catalog::{qualified, quote_ident, table_columns, table_oid};
use crate::conversion::Conversion;
use crate::convert::Cell;
use crate::tx::{column_list, Ctx, Delta};
use crate::Error;

/// What the history schema's name adds to the fact schema's.
pub(crate) const SUFFIX: &str = "_history";

/// The history schema of fact schema `schema` (`fact` → `fact_history`).
pub(crate) fn schema_of(schema: &str) -> String {
    format!("{schema}{SUFFIX}")
}

/// History work prepared before the delta: old versions closed, the new
/// versions' start times known.
pub(crate) struct Pending<'t> {
    present: Vec<Cell<'t>>,
    valid_from: Vec<String>,
    target: String,
    tid_type: String,
}

/// Creates and seeds the history table on first use, adds columns the fact
/// table gained, and closes the current versions of the changed and
/// deleted periods. `None` (and nothing done) unless `--history` is on.
pub(crate) fn prepare<'t>(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    delta: &Delta<'_>,
    values: &[Cell<'t>],
) -> Result<Option<Pending<'t>>, Error> {
    if !ctx.opts.history {
        return Ok(None);
    }
    let (present, deleted, catalog_updated) = (delta.present, delta.deleted, delta.catalog_updated);
    let schema = schema_of(&ctx.opts.schema);
    let target = qualified(&schema, &ctx.name);
    let tid_type = conv.columns[conv.tid].pg_type.clone();
    let h = HistoryTable {
        schema: &schema,
        target: &target,
        tid_type: &tid_type,
    };
    ensure_table(tx, ctx, conv, &h, delta)?;
    add_missing_columns(tx, ctx, &schema, &target)?;
    let valid_from = valid_from(ctx, present, catalog_updated);
    let present_values: Vec<Cell<'t>> = values[..present.len()].to_vec();
    close_superseded(tx, ctx, &h, &present_values, &valid_from)?;
    close_removed(tx, ctx, &h, &values[present.len()..], deleted, delta)?;
    Ok(Some(Pending {
        present: present_values,
        valid_from,
        target,
        tid_type,
    }))
}

/// When each present period's content became valid: its partition's
/// `valid_from`, else the run's catalog `updated`, else now.
fn valid_from(ctx: &Ctx<'_>, present: &[Tid], catalog_updated: Option<&str>) -> Vec<String> {
    present
        .iter()
        .map(|t| {
            ctx.store
                .footer(ctx.table, t)
                .ok()
                .and_then(|f| f.valid_from)
                .or_else(|| catalog_updated.map(str::to_owned))
                .and_then(|u| source_time_to_utc(&u))
                .map(|u| u.to_rfc3339())
                .unwrap_or_else(|| chrono::Utc::now().to_rfc3339())
        })
        .collect()
}

/// Closes the current versions of the changed periods at their new
/// content's `valid_from`.
fn close_superseded(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    h: &HistoryTable<'_>,
    present: &[Cell<'_>],
    valid_from: &[String],
) -> Result<(), Error> {
    let (target, tid_type, tid) = (h.target, h.tid_type, quote_ident("tid"));
    tx.execute(
        &format!(
            "UPDATE {target} h SET valid_to = v.vf::timestamptz \
             FROM unnest($1::{tid_type}[], $2::text[]) AS v(tid, vf) \
             WHERE h.{tid} = v.tid AND h.valid_to IS NULL"
        ),
        &[&present, &valid_from],
    )
    .map_err(Error::db(ctx.table, "closing superseded history rows"))?;
    Ok(())
}

/// Closes the current versions of the removed periods (at the run's
/// catalog `updated`) and of values no period has (a repair removes them:
/// gone as of now).
fn close_removed(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    h: &HistoryTable<'_>,
    deleted_values: &[Cell<'_>],
    deleted: &[Tid],
    delta: &Delta<'_>,
) -> Result<(), Error> {
    let (target, tid_type, tid) = (h.target, h.tid_type, quote_ident("tid"));
    if !deleted.is_empty() {
        let gone = delta
            .catalog_updated
            .and_then(source_time_to_utc)
            .map(|u| u.to_rfc3339())
            .unwrap_or_else(|| chrono::Utc::now().to_rfc3339());
        tx.execute(
            &format!(
                "UPDATE {target} SET valid_to = $2::text::timestamptz \
                 WHERE {tid} = ANY($1) AND valid_to IS NULL"
            ),
            &[&deleted_values, &gone],
        )
        .map_err(Error::db(
            ctx.table,
            "closing history rows of removed periods",
        ))?;
    }
    if !delta.extra.is_empty() {
        tx.execute(
            &format!(
                "UPDATE {target} SET valid_to = now() \
                 WHERE {tid} = ANY($1::text[]::{tid_type}[]) AND valid_to IS NULL"
            ),
            &[&delta.extra],
        )
        .map_err(Error::db(
            ctx.table,
            "closing history rows of values no period has",
        ))?;
    }
    Ok(())
}

impl Pending<'_> {
    /// Closes the open versions of every period not among the present ones
    /// (a rebuild's new set lacks them), when the new set starts.
    pub(crate) fn close_absent(
        &self,
        tx: &mut Transaction<'_>,
        ctx: &Ctx<'_>,
    ) -> Result<u64, Error> {
        let Some(start) = self.valid_from.iter().max() else {
            return Ok(0);
        };
        let tid_type = &self.tid_type;
        tx.execute(
            &format!(
                "UPDATE {} SET valid_to = $2::text::timestamptz \
                 WHERE valid_to IS NULL AND NOT (tid = ANY($1::{tid_type}[]))",
                self.target
            ),
            &[&self.present, start],
        )
        .map_err(Error::db(
            ctx.table,
            "closing history rows of periods the rebuild dropped",
        ))
    }

    /// Inserts the new versions (the rows of `source`, the temp table of a
    /// delta or a rebuilt table) with their start; returns how many.
    pub(crate) fn record_from(
        self,
        tx: &mut Transaction<'_>,
        ctx: &Ctx<'_>,
        conv: &Conversion,
        source: &str,
    ) -> Result<u64, Error> {
        if self.present.is_empty() {
            return Ok(0);
        }
        // A rebuilt table may have gained columns since `prepare`.
        add_missing_columns(tx, ctx, &schema_of(&ctx.opts.schema), &self.target)?;
        let cols = column_list(conv);
        let select: Vec<String> = conv
            .columns
            .iter()
            .map(|c| format!("t.{}", quote_ident(&c.name)))
            .collect();
        let tid_type = &self.tid_type;
        tx.execute(
            &format!(
                "INSERT INTO {} ({cols}, valid_from) SELECT {}, v.vf::timestamptz \
                 FROM {source} t JOIN unnest($1::{tid_type}[], $2::text[]) AS v(tid, vf) \
                 ON t.tid = v.tid",
                self.target,
                select.join(", ")
            ),
            &[&self.present, &self.valid_from],
        )
        .map_err(Error::db(ctx.table, "inserting history rows"))
    }
}

/// Creates `schema` unless it exists (no `NOTICE` for every table).
pub(crate) fn ensure_schema(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    schema: &str,
) -> Result<(), Error> {
    let exists = tx
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .map_err(Error::db(ctx.table, "looking up a schema"))?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(schema)))
            .map_err(Error::db(ctx.table, "creating a schema"))?;
    }
    Ok(())
}

/// A table's history table: its schema, its qualified name and the type
/// of its `tid` column.
struct HistoryTable<'a> {
    schema: &'a str,
    target: &'a str,
    tid_type: &'a str,
}

/// Creates the history table on first use, seeded with the fact table's
/// rows of every period `delta` does not change.
fn ensure_table(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    conv: &Conversion,
    h: &HistoryTable<'_>,
    delta: &Delta<'_>,
) -> Result<(), Error> {
    let (schema, target, tid_type) = (h.schema, h.target, h.tid_type);
    let (present, deleted) = (delta.present, delta.deleted);
    if table_oid(tx, schema, &ctx.name)
        .map_err(Error::db(ctx.table, "looking up the history table"))?
        .is_some()
    {
        return Ok(());
    }
    ensure_schema(tx, ctx, schema)?;
    tx.batch_execute(&format!(
        "CREATE TABLE {target} (LIKE {} INCLUDING DEFAULTS); \
         ALTER TABLE {target} ADD COLUMN valid_from timestamptz NOT NULL DEFAULT '-infinity', \
                              ADD COLUMN valid_to timestamptz; \
         ALTER TABLE {target} ALTER COLUMN valid_from DROP DEFAULT; \
         CREATE INDEX ON {target} (tid, valid_to); \
         CREATE INDEX ON {target} (valid_from)",
        ctx.target
    ))
    .map_err(Error::db(ctx.table, "creating the history table"))?;
    // Seed with what the fact table holds now: each period valid from its
    // partition's `valid_from`; the periods this apply replaces or removes
    // hold content of unknown date (`-infinity`).
    let skip: std::collections::BTreeSet<&Tid> = present.iter().chain(deleted).collect();
    let local = ctx.store.list_tids(ctx.table).unwrap_or_default();
    let mut tids: Vec<Cell<'_>> = Vec::new();
    let mut starts: Vec<String> = Vec::new();
    for t in local.iter().filter(|t| !skip.contains(t)) {
        let Ok(cell) = conv.tid_cell(ctx.table, t) else {
            continue;
        };
        let start = ctx
            .store
            .footer(ctx.table, t)
            .ok()
            .and_then(|f| f.valid_from)
            .and_then(|u| source_time_to_utc(&u));
        if let Some(s) = start {
            tids.push(cell.into_owned());
            starts.push(s.to_rfc3339());
        }
    }
    let fact_oid = table_oid(tx, &ctx.opts.schema, &ctx.name)
        .map_err(Error::db(ctx.table, "looking up the target table"))?
        .unwrap_or(0);
    let fact_cols: Vec<String> = table_columns(tx, ctx.table, fact_oid)?
        .into_iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let cols = fact_cols.join(", ");
    let f_cols: Vec<String> = fact_cols.iter().map(|c| format!("f.{c}")).collect();
    let seeded = tx
        .execute(
            &format!(
                "INSERT INTO {target} ({cols}, valid_from) \
                 SELECT {}, coalesce(v.vf::timestamptz, '-infinity') FROM {} f \
                 LEFT JOIN unnest($1::{tid_type}[], $2::text[]) AS v(tid, vf) ON f.tid = v.tid",
                f_cols.join(", "),
                ctx.target
            ),
            &[&tids, &starts],
        )
        .map_err(Error::db(ctx.table, "seeding the history table"))?;
    tracing::info!(table = %ctx.table, history = %target, seeded, "history started");
    Ok(())
}

/// Columns the fact table has and its history lacks (a rebuilt fact table
/// gained a column) are added; old rows have them `NULL`.
fn add_missing_columns(
    tx: &mut Transaction<'_>,
    ctx: &Ctx<'_>,
    schema: &str,
    target: &str,
) -> Result<(), Error> {
    let oid = |tx: &mut Transaction<'_>, s: &str| {
        table_oid(tx, s, &ctx.name).map_err(Error::db(ctx.table, "looking up a table"))
    };
    let (Some(fact), Some(hist)) = (oid(tx, &ctx.opts.schema)?, oid(tx, schema)?) else {
        return Ok(());
    };
    let history_cols = table_columns(tx, ctx.table, hist)?;
    let fact_cols = table_columns(tx, ctx.table, fact)?;
    let have: Vec<&str> = history_cols.iter().map(|c| c.name.as_str()).collect();
    // Columns the fact table lost stay (old rows have them) but become
    // nullable, so new versions without them can be recorded.
    for c in &history_cols {
        let kept = fact_cols.iter().any(|f| f.name == c.name);
        if !kept && c.not_null && c.name != "valid_from" {
            tx.batch_execute(&format!(
                "ALTER TABLE {target} ALTER COLUMN {} DROP NOT NULL",
                quote_ident(&c.name)
            ))
            .map_err(Error::db(ctx.table, "relaxing a history column"))?;
        }
    }
    for c in &fact_cols {
        if !have.contains(&c.name.as_str()) {
            tx.batch_execute(&format!(
                "ALTER TABLE {target} ADD COLUMN {} {}",
                quote_ident(&c.name),
                c.type_name
            ))
            .map_err(Error::db(ctx.table, "adding a column to the history table"))?;
        }
    }
    Ok(())
}
